//! One measured setup: where the objects live (`Store`: the fake API server, or a manifests
//! folder), and the daemon under test started against it (`Daemon`).
//!
//! Kubernetes mode writes through the fake API server's store (`FakeApi::apply_yaml`: open
//! watches get the event at once, as from a real API server); standalone mode replaces one
//! manifest file atomically (write a hidden temp file, rename it over the old one), as editors
//! and ConfigMap volumes do.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use integration_tests::{
    daemon::{write_manifest, HttpConn},
    fakeapi::FakeApi,
    procs::{FreePorts, Proc},
};

use crate::objects::{self, Real};

/// The two sources the daemon can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Kube,
    Files,
}

impl SourceKind {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "kube" => Ok(Self::Kube),
            "files" => Ok(Self::Files),
            other => bail!("unknown --source {other} (kube or files)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Kube => "kube",
            Self::Files => "files",
        }
    }
}

/// Where the objects live.
#[derive(Debug)]
pub enum Store {
    Kube { api: FakeApi, kubeconfig: PathBuf },
    Files { dir: PathBuf },
}

impl Store {
    /// Creates the store in `dir` holding `units` units with `endpoints` endpoints each, plus
    /// the probe objects (flip on `flip-a`).
    pub fn fill(
        kind: SourceKind,
        dir: &Path,
        units: usize,
        endpoints: usize,
        real: &Real,
    ) -> anyhow::Result<Self> {
        match kind {
            SourceKind::Kube => {
                let api = FakeApi::start();
                api.apply_yaml(&objects::probe(real, false));
                for i in 0..units {
                    api.apply_yaml(&objects::unit(i, endpoints, None));
                }
                let kubeconfig = api.kubeconfig(dir);
                Ok(Self::Kube { api, kubeconfig })
            }
            SourceKind::Files => {
                let dir = dir.join("manifests");
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join(objects::PROBE_FILE), objects::probe(real, false))?;
                for i in 0..units {
                    std::fs::write(
                        dir.join(objects::unit_file(i)),
                        objects::unit(i, endpoints, None),
                    )?;
                }
                Ok(Self::Files { dir })
            }
        }
    }

    /// The daemon's source arguments.
    fn args(&self) -> [String; 2] {
        match self {
            Self::Kube { kubeconfig, .. } => {
                ["--kubeconfig".into(), kubeconfig.display().to_string()]
            }
            Self::Files { dir } => ["--manifests".into(), dir.display().to_string()],
        }
    }

    /// Change `k` of unit `i`: its Ingress gains the path `/conv-<k>` (and loses the last one).
    pub fn change_unit(&self, i: usize, endpoints: usize, k: usize) {
        match self {
            Self::Kube { api, .. } => api.apply_yaml(&objects::unit_ingress(i, Some(k))),
            Self::Files { dir } => write_manifest(
                dir,
                &objects::unit_file(i),
                &objects::unit(i, endpoints, Some(k)),
            ),
        }
    }

    /// Points the slice of `flip` at `flip-b` (or back at `flip-a`).
    pub fn flip(&self, real: &Real, b: bool) {
        match self {
            Self::Kube { api, .. } => api.apply_yaml(&objects::flip_slice(real, b)),
            Self::Files { dir } => {
                write_manifest(dir, objects::PROBE_FILE, &objects::probe(real, b))
            }
        }
    }
}

/// The daemon under test, stopped (by PID) on drop.
#[derive(Debug)]
pub struct Daemon {
    pub proc: Proc,
    pub http: SocketAddr,
    pub log: PathBuf,
    /// From spawn until `/readyz` answered 200.
    pub ready_after: Duration,
}

/// How long a start at 10,000 Ingresses may take on a slow machine.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

impl Daemon {
    /// Starts `bin run` on `store` with `workers` workers (no `--interface`: the proxy alone,
    /// no XDP) and waits until `/readyz` is 200 and the steady route answers.
    pub fn start(
        bin: &Path,
        store: &Store,
        dir: &Path,
        workers: usize,
        ports: &mut FreePorts,
    ) -> anyhow::Result<Self> {
        let http = SocketAddr::from(([127, 0, 0, 1], ports.one()?));
        let admin = SocketAddr::from(([127, 0, 0, 1], ports.one()?));
        let worker_base = ports.run_below_ephemeral(workers)?;
        let log = dir.join("xdp-ingress.log");
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .args(store.args())
            .args(["--http-port", &http.port().to_string()])
            .args(["--https-port", "0"])
            .args(["--workers", &workers.to_string()])
            .args(["--worker-port-base", &worker_base.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .arg("--bpffs-dir")
            .arg(dir.join("bpffs"))
            .args(["--drain-seconds", "1"])
            .env("NO_COLOR", "1")
            // Info: one `configuration published ... took_ms=` line per rebuild; no access log.
            .env("XDP_INGRESS_LOG", "info,access=warn");
        let started = Instant::now();
        let mut proc = Proc::spawn("xdp-ingress", cmd, &log)?;
        loop {
            proc.exited("xdp-ingress", &log)?;
            if HttpConn::get(admin, "localhost", "/readyz").is_ok_and(|r| r.status == 200) {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "xdp-ingress is not ready after {READY_TIMEOUT:?}; log in {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let ready_after = started.elapsed();
        let r = HttpConn::get(http, objects::STEADY_HOST, "/")
            .context("the steady route after ready")?;
        if r.status != 200 || r.server() != "steady" {
            bail!(
                "the steady route answers {} from {:?}",
                r.status,
                r.server()
            );
        }
        Ok(Self {
            proc,
            http,
            log,
            ready_after,
        })
    }
}
