//! Support code shared by the integration tests: packet builders and checksum checks for
//! `BPF_PROG_TEST_RUN` (`packet`), network-namespace topologies that clean up after
//! themselves (`netns`), the daemon as a child process (`daemon`), certificates plus a
//! rustls/hyper HTTPS client for the TLS tests (`tls`), a raw HTTP/2 frame client for abuse
//! tests (`h2raw`), a fake Kubernetes API server (`fakeapi`), and process guards and free ports
//! for the benchmark programs (`procs`).
pub mod daemon;
pub mod e2e;
pub mod fakeapi;
pub mod h2raw;
pub mod netns;
pub mod packet;
pub mod procs;
pub mod tls;

/// True when the tests run in CI (`CI=true`), where skipping a root-only test is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns `Err(reason)` when this process cannot do privileged BPF/netns work. Tests call it and
/// skip with the printed reason outside CI; in CI they fail instead.
pub fn require_root(test: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return Ok(());
    }
    let reason = format!("{test}: needs root (BPF, network namespaces); euid is {euid}");
    if in_ci() {
        panic!("{reason}; CI must run it as root");
    }
    eprintln!("SKIPPED {reason}");
    Err(reason)
}

/// The `xdp-ingress` binary under test: `$XDP_INGRESS_BIN` (set by `cargo xtask test`), else
/// `target/debug/xdp-ingress` next to this test executable. Panics with what to do if missing.
pub fn daemon_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("XDP_INGRESS_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test>-<hash> -> target/debug/xdp-ingress
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("xdp-ingress"));
    match candidate {
        Some(path) if path.exists() => path,
        _ => panic!("the xdp-ingress binary is not built: run `cargo xtask test` (or `cargo build -p ingress-user` first)"),
    }
}
