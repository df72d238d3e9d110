//! The usual Kubernetes-mode fixture: a fake API server, demo backends, and a folder for the
//! kubeconfig; `daemon` starts the real binary against it. Test files add their own object
//! fixtures on top (as extension traits).
use crate::daemon::{Backends, Daemon, DaemonConfig};

use super::FakeApi;

#[derive(Debug)]
pub struct Cluster {
    pub api: FakeApi,
    pub backends: Backends,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn new() -> Self {
        Self::with_api(FakeApi::start())
    }

    /// The fake API server over HTTPS with a bearer token (`FakeApi::start_https`).
    pub fn https() -> Self {
        Self::with_api(FakeApi::start_https())
    }

    fn with_api(api: FakeApi) -> Self {
        Self {
            api,
            backends: Backends::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// `xdp-ingress run --kubeconfig` (pointing at the fake API) with `extra` arguments.
    pub fn daemon(&self, worker_port_base: u16, extra: &[&str]) -> Daemon {
        let kubeconfig = self.api.kubeconfig(self.dir.path());
        let mut config = DaemonConfig::kube(&kubeconfig, worker_port_base);
        config
            .extra_args
            .extend(extra.iter().map(|s| s.to_string()));
        Daemon::start(config)
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}
