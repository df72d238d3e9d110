//! Compiles `ingress-ebpf` for the BPF target with aya-build; `src/lib.rs` embeds the object.
//!
//! The eBPF toolchain (nightly `rust-src` and `bpf-linker`) is checked first so that a machine
//! without it gets one actionable line instead of pages of linker errors.
use std::process::Command;

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    if let Err(missing) = check_toolchain() {
        println!("cargo::error=eBPF toolchain missing ({missing}): run `cargo xtask setup`");
        return Ok(());
    }
    let package = aya_build::Package {
        name: "ingress-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../ingress-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
        .context("building the eBPF programs (ingress-ebpf) failed")
}

/// Returns what is missing, if anything.
fn check_toolchain() -> anyhow::Result<()> {
    println!("cargo::rerun-if-env-changed=PATH");
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        return Ok(());
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !matches!(linker, Ok(ref out) if out.status.success()) {
        return Err(anyhow!("bpf-linker not found on PATH"));
    }
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .env_remove("RUSTC")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .ok_or_else(|| anyhow!("the nightly toolchain is not installed"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let core = std::path::Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
    if !core.exists() {
        return Err(anyhow!(
            "rust-src is not installed for the nightly toolchain"
        ));
    }
    Ok(())
}
