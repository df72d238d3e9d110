//! `cargo xtask bench <what>`: benchmarks. Not timed tests: each prints measurements and the
//! ratios between things measured in the same run, on this machine, now.
//!
//! `bench xdp` builds the measuring programs of the `integration-tests` crate in release and runs:
//! 1. `bench_xdp`: ns/packet of `xdp_steer` through `BPF_PROG_TEST_RUN`, against a floor;
//! 2. `bench_connect`: new connections/s through XDP against an iptables DNAT behind 10,000
//!    rules, in network namespaces (installs iptables with apt when it is missing).
//!
//! Options are routed to the program that owns them; see `docs/benchmarks.md`.
//!
//! `bench http` installs nginx, HAProxy, wrk and h2load from Debian when one is missing, builds
//! xdp-ingress, `bench_http` and `bench_backend` in release and runs `bench_http`, which puts
//! xdp-ingress (no XDP), nginx and HAProxy side by side in front of the same backend on loopback
//! (with `--callgrind`, also valgrind: instructions per request instead of req/s).
//!
//! `bench convergence` builds xdp-ingress and `bench_convergence` in release and runs it: the
//! time from an object change (fake API server or manifests folder) to the first request served
//! by it, at 10 and 10,000 Ingresses, with the daemon's peak RSS and a background load's failures.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _};

use crate::util::{self, workspace_root};

/// Options of `bench_xdp` (each takes a value).
const XDP_OPTIONS: [&str; 3] = ["--repeat", "--runs", "--cpu"];
/// Options of `bench_connect` (each takes a value).
const CONNECT_OPTIONS: [&str; 7] = [
    "--seconds",
    "--rounds",
    "--client-threads",
    "--server-threads",
    "--rules",
    "--iptables",
    "--xdp-mode",
];

const USAGE: &str = "usage: cargo xtask bench http [--seconds S] [--rounds N] [--workers N]
    [--proxy-cpus LIST] [--load-cpus LIST] [--connections N] [--streams N]
    [--load-threads N] [--scenarios h1,h1-10k,h1-1m,h2-tls,tls-new]
    [--plot FILE.svg] [--callgrind]                        (bench_http)
       cargo xtask bench convergence [--scale 10,10000] [--changes 100] [--source kube,files]
    [--endpoints N] [--workers N] [--load-clients N] [--load-pause-ms MS]
    [--probe-interval-ms MS] [--pause-ms MS] [--timeout-s S]      (bench_convergence)
       cargo xtask bench xdp [--part all|test-run|connect]
    [--repeat N] [--runs N] [--cpu N]                      (part 1, bench_xdp)
    [--seconds S] [--rounds N] [--client-threads N] [--server-threads N]
    [--rules N] [--iptables auto|legacy|nft] [--xdp-mode native|generic]
                                                           (part 2, bench_connect)";

pub fn run(what: &str, args: &[String]) -> anyhow::Result<()> {
    match what {
        "xdp" => xdp(args),
        "http" => http(args),
        "convergence" => convergence(args),
        other => bail!("unknown benchmark `{other}`\n{USAGE}"),
    }
}

#[derive(Debug, Default)]
struct Routed {
    part: String,
    xdp: Vec<String>,
    connect: Vec<String>,
}

fn route(args: &[String]) -> anyhow::Result<Routed> {
    let mut routed = Routed {
        part: "all".to_owned(),
        ..Default::default()
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), v.to_owned()),
            None => {
                let v = it
                    .next()
                    .with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
                (arg.clone(), v.clone())
            }
        };
        if flag == "--part" {
            if !["all", "test-run", "connect"].contains(&value.as_str()) {
                bail!("--part must be all, test-run or connect\n{USAGE}");
            }
            routed.part = value;
        } else if XDP_OPTIONS.contains(&flag.as_str()) {
            routed.xdp.extend([flag, value]);
        } else if CONNECT_OPTIONS.contains(&flag.as_str()) {
            routed.connect.extend([flag, value]);
        } else {
            bail!("unknown option {flag}\n{USAGE}");
        }
    }
    Ok(routed)
}

fn xdp(args: &[String]) -> anyhow::Result<()> {
    let routed = route(args)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("benchmarks need root (BPF_PROG_TEST_RUN, XDP, network namespaces, iptables)");
    }
    let (part1, part2) = match routed.part.as_str() {
        "test-run" => (true, false),
        "connect" => (false, true),
        _ => (true, true),
    };
    if part2 {
        ensure_iptables()?;
    }
    util::cargo(&[
        "build",
        "--release",
        "--package",
        "integration-tests",
        "--bins",
    ])?;
    let bin = |name: &str| target_dir().join("release").join(name);

    println!("{}", machine());
    let mut failed = Vec::new();
    if part1 {
        println!("\n== part 1: xdp_steer per packet (BPF_PROG_TEST_RUN)\n");
        if let Err(e) = util::run(Command::new(bin("bench_xdp")).args(&routed.xdp)) {
            failed.push(format!("{e:#}"));
        }
    }
    if part2 {
        println!("\n== part 2: new connections/s, XDP against iptables (network namespaces)\n");
        if let Err(e) = util::run(Command::new(bin("bench_connect")).args(&routed.connect)) {
            failed.push(format!("{e:#}"));
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

/// Debian packages `bench http` needs, and a file each one installs.
const HTTP_PACKAGES: [(&str, &str); 4] = [
    ("nginx", "/usr/sbin/nginx"),
    ("haproxy", "/usr/sbin/haproxy"),
    ("wrk", "/usr/bin/wrk"),
    ("nghttp2-client", "/usr/bin/h2load"),
];

fn http(args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    // `--callgrind` (instructions per request) runs the proxies under valgrind.
    let valgrind = args
        .iter()
        .any(|a| a == "--callgrind")
        .then_some(("valgrind", "/usr/bin/valgrind"));
    let missing: Vec<&str> = HTTP_PACKAGES
        .iter()
        .chain(&valgrind)
        .filter(|(_, file)| !std::path::Path::new(file).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask bench: installing {} with apt-get", missing.join(" "));
        apt_install(&missing)?;
    }
    let release = build_release(&["bench_http", "bench_backend"])?;
    util::run(
        Command::new(release.join("bench_http"))
            .arg("--xdp-ingress")
            .arg(release.join("xdp-ingress"))
            .arg("--backend")
            .arg(release.join("bench_backend"))
            .args(args),
    )
}

/// Builds xdp-ingress and `bench_convergence` in release and runs it (options pass through).
fn convergence(args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let release = build_release(&["bench_convergence"])?;
    util::run(
        Command::new(release.join("bench_convergence"))
            .arg("--xdp-ingress")
            .arg(release.join("xdp-ingress"))
            .args(args),
    )
}

/// Builds xdp-ingress and the `integration-tests` programs `bins` in release, prints the machine
/// line, and returns the release folder.
fn build_release(bins: &[&str]) -> anyhow::Result<PathBuf> {
    let mut args = vec![
        "build",
        "--release",
        "--package",
        "ingress-user",
        "--package",
        "integration-tests",
        "--bin",
        "xdp-ingress",
    ];
    for bin in bins {
        args.extend(["--bin", bin]);
    }
    util::cargo(&args)?;
    println!("{}", machine());
    Ok(target_dir().join("release"))
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let install = || {
        util::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        util::run(Command::new("apt-get").args(["update", "-qq"]))?;
        install()?;
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// One line that says where the numbers come from.
fn machine() -> String {
    let kernel = util::output("uname", &["-r"]).unwrap_or_else(|_| "?".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into());
    format!("machine: Linux {kernel}, {cpus} CPUs ({model})")
}

fn has_command(cmd: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(cmd).exists())
}

/// `cargo xtask setup` does not install iptables (only the benchmark needs it).
fn ensure_iptables() -> anyhow::Result<()> {
    if has_command("iptables") {
        return Ok(());
    }
    eprintln!("xtask bench: iptables is missing; installing it with apt-get");
    apt_install(&["iptables"])
}
