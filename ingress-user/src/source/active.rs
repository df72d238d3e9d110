//! The source a daemon runs with, whichever it is: `run` opens it, waits until it is ready,
//! loads `Inputs` from it and reloads on each debounced change, without knowing which one it is.
//!
//! Flow: `Active::open` (folder: open + start the inotify watch before the first load; Kubernetes:
//! build the client + spawn the watchers) → `ready` (folder: at once; Kubernetes: every store has
//! its first list) → `load` → `changes` (a channel fed by a task of its own, so the control loop
//! can `select!` on it without cancelling a debounce half way) → `load` again, and so on.
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    file::{FileSource, ReadCounts, SourceError, Watch},
    kube::{self, Connection, KubeError, KubeSource},
    Inputs,
};

/// Opening a source failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    File(#[from] SourceError),
    #[error(transparent)]
    Kube(#[from] KubeError),
}

/// What one load produced.
#[derive(Debug)]
pub struct Loaded {
    pub inputs: Inputs,
    /// Problems that left objects out (manifest errors; the API hands over whole objects only).
    pub errors: usize,
    /// Manifest files in the folder (folder only).
    pub files: Option<usize>,
    /// What the load touched in the folder (folder only): `full, checked N, read N, parsed N`.
    pub reads: Option<ReadCounts>,
    /// TLS Secrets known and held (Kubernetes only; see `secret_cache`).
    pub tls_secrets: Option<(usize, usize)>,
}

#[derive(Debug)]
enum Kind {
    File {
        source: FileSource,
        watch: Option<Watch>,
    },
    Kube(Box<KubeSource>),
}

/// An open source.
#[derive(Debug)]
pub struct Active {
    kind: Kind,
    describe: String,
}

impl Active {
    /// A folder of manifests.
    pub fn manifests(dir: &std::path::Path) -> Result<Self, OpenError> {
        let source = FileSource::open(dir)?;
        // Watch before the first load, so an edit made while we start is not missed.
        let watch = Some(source.watch()?);
        Ok(Self {
            kind: Kind::File { source, watch },
            describe: format!("manifests {}", dir.display()),
        })
    }

    /// The Kubernetes API; the watchers start at once (on the current runtime). `classes`
    /// pick our Ingresses (whose TLS Secrets are held).
    pub async fn kube(
        connection: &Connection,
        classes: crate::translate::ClassOptions,
    ) -> Result<Self, OpenError> {
        let client = kube::client(connection).await?;
        Ok(Self {
            kind: Kind::Kube(Box::new(KubeSource::start(client, classes))),
            describe: format!("Kubernetes API ({connection})"),
        })
    }

    /// The Kubernetes client, in Kubernetes mode.
    pub fn client(&self) -> Option<::kube::Client> {
        match &self.kind {
            Kind::Kube(k) => Some(k.client().clone()),
            Kind::File { .. } => None,
        }
    }

    /// What this source is, for logs.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Resolves when the first `load` sees a complete view; fails when it never will (the API
    /// rejects us: see `api_errors`).
    pub async fn ready(&self) -> Result<(), OpenError> {
        if let Kind::Kube(k) = &self.kind {
            k.ready().await?;
        }
        Ok(())
    }

    /// Reads the current configuration.
    pub fn load(&mut self) -> Loaded {
        match &mut self.kind {
            Kind::File { source, .. } => {
                let report = source.load();
                Loaded {
                    inputs: report.inputs,
                    errors: report.errors.len(),
                    files: Some(report.files),
                    reads: Some(report.reads),
                    tls_secrets: None,
                }
            }
            Kind::Kube(k) => {
                let inputs = k.stores.inputs();
                Loaded {
                    inputs,
                    errors: 0,
                    files: None,
                    reads: None,
                    tls_secrets: Some(k.stores.secrets.counts()),
                }
            }
        }
    }

    /// Debounced changes, fed by a task that stops when the receiver is dropped (or, for a
    /// folder, when it can no longer be watched: the channel then closes). Call once.
    pub fn changes(&mut self) -> (mpsc::Receiver<()>, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<()>(1);
        let task = match &mut self.kind {
            Kind::File { watch, .. } => {
                let mut watch = watch.take().expect("Active::changes is called once");
                tokio::spawn(async move {
                    while watch.changed().await {
                        if tx.send(()).await.is_err() {
                            return;
                        }
                    }
                })
            }
            Kind::Kube(k) => {
                let changes = k.changes();
                tokio::spawn(async move {
                    loop {
                        changes.changed().await;
                        if tx.send(()).await.is_err() {
                            return;
                        }
                    }
                })
            }
        };
        (rx, task)
    }

    /// Why the change channel closed, for the error that stops the daemon.
    pub fn closed_reason(&self) -> String {
        match &self.kind {
            Kind::File { source, .. } => format!(
                "the manifests folder watcher stopped ({}); restart xdp-ingress",
                source.dir().display()
            ),
            Kind::Kube(_) => "the Kubernetes watchers stopped; restart xdp-ingress".to_owned(),
        }
    }
}
