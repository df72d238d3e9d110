//! `cargo xtask setup`: makes this machine able to build the eBPF programs and run every test.
//! Idempotent: each step checks first, says "ok" when there is nothing to do, and acts otherwise.
//!
//! Steps: Debian tools (bpftool, iproute2, curl, ethtool) → nightly toolchain with `rust-src` →
//! `bpf-linker` built against the nightly's own LLVM (with an rpath to it, so it runs without
//! LD_LIBRARY_PATH) → a bpffs mount at /sys/fs/bpf.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _};

use crate::util::{output, run, succeeds};

const APT_PACKAGES: [(&str, &str); 4] = [
    ("bpftool", "bpftool"),
    ("ip", "iproute2"),
    ("curl", "curl"),
    ("ethtool", "ethtool"),
];
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every step. With `XTASK_SETUP_BUILD_ONLY=1` (image builds: no root tools, no bpffs
/// mount possible), only what compiling needs.
pub fn setup() -> anyhow::Result<()> {
    let build_only = std::env::var_os("XTASK_SETUP_BUILD_ONLY").is_some_and(|v| v == "1");
    if !build_only {
        apt_packages()?;
    }
    nightly_rust_src()?;
    bpf_linker()?;
    if !build_only {
        bpffs()?;
    }
    eprintln!("xtask setup: done");
    Ok(())
}

/// Runs `setup` only when something is missing (cheap checks).
pub fn ensure() -> anyhow::Result<()> {
    let missing = APT_PACKAGES.iter().any(|(cmd, _)| !has_command(cmd))
        || rust_src_dir().is_none_or(|d| !d.exists())
        || !succeeds("bpf-linker", &["--version"])
        || !bpffs_mounted();
    if missing {
        eprintln!("xtask: the toolchain or test tools are incomplete; running `cargo xtask setup`");
        setup()?;
    }
    Ok(())
}

fn has_command(cmd: &str) -> bool {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ]
    .iter()
    .any(|d| std::path::Path::new(d).join(cmd).exists())
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(cmd, _)| !has_command(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        eprintln!(
            "xtask setup: Debian tools ({}) ok",
            APT_PACKAGES.map(|(_, p)| p).join(", ")
        );
        return Ok(());
    }
    eprintln!("xtask setup: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn nightly_sysroot() -> Option<PathBuf> {
    output("rustc", &["+nightly", "--print", "sysroot"])
        .ok()
        .map(PathBuf::from)
}

fn rust_src_dir() -> Option<PathBuf> {
    nightly_sysroot().map(|s| s.join("lib/rustlib/src/rust/library/core"))
}

fn nightly_rust_src() -> anyhow::Result<()> {
    if nightly_sysroot().is_none() {
        eprintln!(
            "xtask setup: installing the nightly toolchain (eBPF programs need -Z build-std)"
        );
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    if rust_src_dir().is_some_and(|d| d.exists()) {
        eprintln!("xtask setup: nightly rust-src ok");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> anyhow::Result<()> {
    if succeeds("bpf-linker", &["--version"]) {
        eprintln!("xtask setup: bpf-linker ok");
        return Ok(());
    }
    let sysroot = nightly_sysroot().context("the nightly toolchain is missing")?;
    let lib = sysroot.join("lib");
    // The nightly ships its LLVM as lib/libLLVM.so.<ver>-rust-<ver>-nightly; bpf-linker's build
    // (llvm-sys) wants <prefix>/lib/libLLVM.so, so point a prefix folder at it.
    let libllvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let verbose = output("rustc", &["+nightly", "-vV"])?;
    let major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV does not say its LLVM version")?
        .to_owned();
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    let prefix = home.join(".cache/xdp-ingress/llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} ({})", libllvm.display());
    let rustflags = format!(
        "-L {} -C link-args=-Wl,-rpath,{}",
        lib.display(),
        lib.display()
    );
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix)
        .env("RUSTFLAGS", rustflags))?;
    if !succeeds("bpf-linker", &["--version"]) {
        bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            l.split(' ').nth(1) == Some("/sys/fs/bpf") && l.split(' ').nth(2) == Some("bpf")
        })
    })
}

fn bpffs() -> anyhow::Result<()> {
    if bpffs_mounted() {
        eprintln!("xtask setup: bpffs at /sys/fs/bpf ok");
        return Ok(());
    }
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
