//! `cargo xtask run`: the standalone demo. Starts the demo backends that the cafe example's
//! EndpointSlices point at (four loopback addresses), then `xdp-ingress run` on `examples/cafe`
//! with XDP on `lo` (generic mode) unless `--interface` says otherwise, prints what to try, and on
//! Ctrl-C (or SIGTERM) stops everything it started, by PID, which also detaches the programs and
//! removes the pins.
use std::{
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::util::{display, workspace_root};

/// The cafe example's endpoints (examples/cafe/*.yaml EndpointSlices): name, address.
const CAFE_BACKENDS: [(&str, &str); 4] = [
    ("coffee-1", "127.0.0.11:8080"),
    ("coffee-2", "127.0.0.12:8080"),
    ("tea-1", "127.0.0.21:8080"),
    ("tea-2", "127.0.0.22:8080"),
];

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Interface for XDP and TC (default: lo, generic mode).
    #[arg(long, default_value = "lo")]
    interface: String,
    /// Public HTTP port.
    #[arg(long, default_value_t = 80)]
    http_port: u16,
    /// Public HTTPS port.
    #[arg(long, default_value_t = 443)]
    https_port: u16,
    /// Worker threads (default: number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Use the debug build (faster to compile, slower to serve).
    #[arg(long)]
    pub debug: bool,
    /// Extra arguments passed to `xdp-ingress run`.
    #[arg(last = true)]
    extra: Vec<String>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Children we started; killed (SIGINT, then SIGKILL after a while) and reaped on drop.
struct Children(Vec<(&'static str, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in self.0.iter_mut().rev() {
            // SAFETY: kill with a PID we spawned and have not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        }
        for (name, child) in self.0.iter_mut().rev() {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if std::time::Instant::now() > deadline => {
                        eprintln!("xtask: {name} did not stop within 15 s; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let profile = if args.debug { "debug" } else { "release" };
    let bin_dir = workspace_root().join("target").join(profile);
    let mut children = Children(Vec::new());

    let mut backends = Command::new(bin_dir.join("demo-backend"));
    for (name, addr) in CAFE_BACKENDS {
        backends.args(["--name", name, "--listen", addr]);
    }
    children.0.push(("demo backends", spawn(&mut backends)?));

    let mut daemon = Command::new(bin_dir.join("xdp-ingress"));
    daemon
        .args(["run", "--manifests"])
        .arg(workspace_root().join("examples/cafe"))
        .args([
            "--interface",
            &args.interface,
            "--http-port",
            &args.http_port.to_string(),
            "--https-port",
            &args.https_port.to_string(),
        ]);
    if let Some(n) = args.workers {
        daemon.args(["--workers", &n.to_string()]);
    }
    daemon.args(&args.extra);
    children.0.push(("xdp-ingress", spawn(&mut daemon)?));

    wait_ready(&mut children)?;
    let port = if args.http_port == 80 {
        String::new()
    } else {
        format!(":{}", args.http_port)
    };
    let (tls, https) = (
        format!("--resolve cafe.example.com:{0}:127.0.0.1", args.https_port),
        match args.https_port {
            443 => "https://cafe.example.com".to_owned(),
            p => format!("https://cafe.example.com:{p}"),
        },
    );
    println!(
        "\nThe cafe example is served through XDP on {iface}, over HTTPS with a self-signed example certificate. Try:\n\
         \n  curl {tls} -k {https}/coffee     # alternates coffee-1 / coffee-2\
         \n  curl {tls} -k {https}/tea\
         \n  curl {tls} -ki {https}/other     # 404\
         \n  curl -i -H 'Host: cafe.example.com' http://127.0.0.1{port}/coffee  # 308 to HTTPS\
         \n  curl -s http://127.0.0.1:10254/metrics | grep -E 'datapath|tls_handshakes'  # XDP and TC verdicts, TLS handshakes\
         \n  bpftool prog show name xdp_steer\
         \n  bpftool map dump pinned /sys/fs/bpf/xdp-ingress/v1/STATE\
         \n\nEdit examples/cafe/*.yaml and the change is served without a restart. Ctrl-C stops everything.\n",
        iface = args.interface
    );

    while !STOP.load(Ordering::SeqCst) {
        for (name, child) in children.0.iter_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited ({status}); see its output above");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("\nxtask: stopping the daemon and the demo backends");
    drop(children);
    Ok(())
}

fn spawn(cmd: &mut Command) -> anyhow::Result<Child> {
    eprintln!("xtask: $ {}", display(cmd));
    cmd.spawn()
        .with_context(|| format!("cannot start {}", display(cmd)))
}

/// Waits until the daemon's /readyz answers 200 (or it exits).
fn wait_ready(children: &mut Children) -> anyhow::Result<()> {
    for _ in 0..150 {
        for (name, child) in children.0.iter_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited ({status}) while starting; see its output above");
            }
        }
        let ok = Command::new("curl")
            .args([
                "-fsS",
                "-o",
                "/dev/null",
                "--max-time",
                "1",
                "http://127.0.0.1:10254/readyz",
            ])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("xdp-ingress did not become ready within 15 s")
}
