//! `cargo xtask`: the project's orchestration. Nothing here is product logic; each command runs
//! tools and the project's binaries in order and says what it does.
//!
//! - `setup`: installs what building and testing need, idempotently (`setup.rs`).
//! - `build`: builds the daemon (with its embedded eBPF object) and the demo backend.
//! - `run`: the standalone demo: the cafe example served through XDP on `lo` (`demo.rs`).
//! - `test`: every test, the root-only ones included.
//! - `lint`: rustfmt and clippy as CI runs them.
//! - `bench`: benchmarks that print ratios measured in the same run (`bench.rs`).
mod bench;
mod demo;
mod setup;
mod util;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Build, run and test xdp-ingress")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the eBPF toolchain (nightly rust-src, bpf-linker) and the Debian tools the tests use.
    Setup,
    /// Build the daemon and the demo backend.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Run the cafe demo: demo backends + xdp-ingress with XDP on an interface. Ctrl-C stops it.
    Run(demo::RunArgs),
    /// Run every test (unit, BPF_PROG_TEST_RUN, network-namespace end to end).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// rustfmt --check and clippy -D warnings over the workspace.
    Lint,
    /// Benchmarks (not timed tests): `bench xdp` prints ns/packet and connections/s ratios,
    /// `bench http` requests/s, latency, CPU and memory against nginx and HAProxy,
    /// `bench convergence` the time from an object change to the first request it serves.
    Bench {
        /// Which benchmark: xdp, http or convergence.
        what: String,
        /// Options for it (see docs/benchmarks.md), e.g. --seconds 5 --rounds 3.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::setup(),
        Command::Build { release } => {
            setup::ensure()?;
            build(release)
        }
        Command::Run(args) => {
            setup::ensure()?;
            build(!args.debug)?;
            demo::run(args)
        }
        Command::Test { args } => {
            setup::ensure()?;
            test(&args)
        }
        Command::Bench { what, args } => {
            setup::ensure()?;
            bench::run(&what, &args)
        }
        Command::Lint => {
            setup::ensure()?;
            util::cargo(&["fmt", "--all", "--", "--check"])?;
            util::cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                "ingress-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
        }
    }
}

fn build(release: bool) -> anyhow::Result<()> {
    let mut args = vec![
        "build",
        "--package",
        "ingress-user",
        "--package",
        "demo-backend",
    ];
    if release {
        args.push("--release");
    }
    util::cargo(&args)
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    // The end-to-end tests run the real binary: build it first, and tell them where it is.
    build(false)?;
    let bin = util::workspace_root().join("target/debug/xdp-ingress");
    let mut args: Vec<&str> = vec!["test", "--workspace", "--exclude", "ingress-ebpf"];
    if !extra.is_empty() {
        args.push("--");
        args.extend(extra.iter().map(String::as_str));
    }
    let totals = util::cargo_test(&args, &[("XDP_INGRESS_BIN", bin.as_os_str())])?;
    // One closing line over every test binary (cargo's own last line is often an empty doc-test run).
    println!(
        "xtask: {} passed, {} failed, {} ignored",
        totals.passed, totals.failed, totals.ignored
    );
    if totals.failed > 0 || !totals.success {
        anyhow::bail!("tests failed");
    }
    if totals.passed == 0 {
        anyhow::bail!("no test ran");
    }
    Ok(())
}
