//! The Kubernetes API as a source: kube-runtime watchers and reflectors, one per kind, that keep
//! in-memory stores of every object `translate` reads.
//!
//! Flow: `KubeSource::connect` builds a client (a kubeconfig file, or the in-cluster service
//! account) → `start` spawns one task per kind: `watcher` (list, then watch from the list's
//! resourceVersion, with bookmarks; a 410 Gone relists) → `default_backoff` (exponential, so a
//! missing API server is retried, never busy-looped) → `reflector` into a `Store`. Every change
//! that reaches a store pokes one shared `Notify`; `Changes::changed` debounces those pokes (quiet
//! for `DEBOUNCE_QUIET`, at most `DEBOUNCE_MAX`) into one rebuild; `KubeSource::inputs` copies the
//! stores into an owned `Inputs`. `ready` resolves once every store has its first complete list,
//! so nothing is published from a partial view; it fails instead when a watcher meets an error
//! that retrying cannot fix (an untrusted server certificate, 401, 403: `api_errors`).
//!
//! Kinds: Ingress, IngressClass, Service, EndpointSlice (all namespaces), and Secret restricted by
//! the field selector `type=kubernetes.io/tls` (`kube_secrets`), whose data is held only for the
//! Secrets our Ingresses reference, so the cluster's other Secrets are never held.
//! `metadata.managedFields` is dropped on arrival (it is large and nothing reads it).
//!
//! When the API server goes away the stores keep their content, so the last snapshot keeps being
//! served; each watcher logs the loss once (warning) and the recovery once (info), and retries
//! with backoff in between.
use std::{
    fmt::Debug,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::Service,
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        reflector::{self, Store},
        watcher, WatchStreamExt as _,
    },
    Api, Client, Config, Resource, ResourceExt as _,
};
use serde::de::DeserializeOwned;
use tokio::{
    sync::{watch, Notify},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use super::{api_errors, kube_secrets::SecretSource, Inputs};
use crate::translate::ClassOptions;

/// A burst of changes is one rebuild once the API has been quiet this long (changes that come
/// while a rebuild runs wait for the next one, so a short quiet time costs at most a few extra
/// rebuilds during a long burst, and saves its length on every single change)...
const DEBOUNCE_QUIET: Duration = Duration::from_millis(5);
/// ...or this long after its first change, whichever comes first.
const DEBOUNCE_MAX: Duration = Duration::from_millis(200);
/// The only Secrets we list and watch.
pub const TLS_SECRET_SELECTOR: &str = "type=kubernetes.io/tls";

/// Why the API cannot be reached at all (bad configuration, not a transient failure).
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("in-cluster configuration (service account token, KUBERNETES_SERVICE_HOST/PORT): {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("{0}")]
    Unusable(String),
}

/// Where the client's configuration comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    Kubeconfig(PathBuf),
    InCluster,
}

impl std::fmt::Display for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connection::Kubeconfig(p) => write!(f, "kubeconfig {}", p.display()),
            Connection::InCluster => f.write_str("in-cluster service account"),
        }
    }
}

/// A Kubernetes client for `connection`. No request is made yet.
pub async fn client(connection: &Connection) -> Result<Client, KubeError> {
    let config = match connection {
        Connection::Kubeconfig(path) => kubeconfig(path).await?,
        Connection::InCluster => Config::incluster().map_err(KubeError::InCluster)?,
    };
    Client::try_from(config).map_err(KubeError::Client)
}

async fn kubeconfig(path: &Path) -> Result<Config, KubeError> {
    let wrap = |source| KubeError::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let file = Kubeconfig::read_from(path).map_err(wrap)?;
    Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(wrap)
}

/// The stores of every kind we watch (cheap to clone: shared caches).
#[derive(Clone, Debug)]
pub struct Stores {
    ingresses: Store<Ingress>,
    ingress_classes: Store<IngressClass>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    pub secrets: SecretSource,
}

impl Stores {
    /// Resolves once every store holds its first complete list.
    pub async fn ready(&self) {
        // `wait_until_ready` only fails when the writer is gone, i.e. the watcher task ended
        // (shutdown): then there is nothing more to wait for.
        let _ = tokio::join!(
            self.ingresses.wait_until_ready(),
            self.ingress_classes.wait_until_ready(),
            self.services.wait_until_ready(),
            self.endpoint_slices.wait_until_ready(),
            self.secrets.ready(),
        );
    }

    /// What the stores hold now (the objects are shared with the stores, not copied).
    pub fn inputs(&self) -> Inputs {
        fn owned<K: Clone + Resource + 'static>(s: &Store<K>) -> Vec<Arc<K>>
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            s.state()
        }
        let ingresses = owned(&self.ingresses);
        let ingress_classes = owned(&self.ingress_classes);
        Inputs {
            secrets: (self
                .secrets
                .secrets(&ingresses, &ingress_classes)
                .into_iter())
            .map(Arc::new)
            .collect(),
            ingresses,
            ingress_classes,
            services: owned(&self.services),
            endpoint_slices: owned(&self.endpoint_slices),
        }
    }
}

/// The watchers of one client; they stop when this is dropped.
pub struct KubeSource {
    pub stores: Stores,
    client: Client,
    changes: Arc<Notify>,
    /// Set by a watcher that met an error retrying cannot fix.
    fatal: watch::Receiver<Option<String>>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSource {
    /// Spawns one watcher task per kind on the current runtime; `classes` decide which
    /// Ingresses are ours (their TLS Secrets are the ones held).
    pub fn start(client: Client, classes: ClassOptions) -> Self {
        let changes = Arc::new(Notify::new());
        let (fatal_tx, fatal) = watch::channel(None);
        let mut tasks = Vec::new();
        let all = watcher::Config::default();
        let shared = (&changes, &fatal_tx);
        let ingresses = spawn(&client, "Ingress", all.clone(), shared, &mut tasks);
        let ingress_classes = spawn(&client, "IngressClass", all.clone(), shared, &mut tasks);
        let services = spawn(&client, "Service", all.clone(), shared, &mut tasks).0;
        let endpoint_slices = spawn(&client, "EndpointSlice", all, shared, &mut tasks).0;
        let secrets = SecretSource::spawn(
            &client,
            (&ingresses.0, ingresses.1),
            (&ingress_classes.0, ingress_classes.1),
            classes,
            shared,
            &mut tasks,
        );
        let stores = Stores {
            ingresses: ingresses.0,
            ingress_classes: ingress_classes.0,
            services,
            endpoint_slices,
            secrets,
        };
        Self {
            stores,
            client,
            changes,
            fatal,
            tasks,
        }
    }

    /// Resolves once every store holds its first complete list, or fails with the first error
    /// that retrying cannot fix.
    pub async fn ready(&self) -> Result<(), KubeError> {
        let mut fatal = self.fatal.clone();
        tokio::select! {
            _ = self.stores.ready() => Ok(()),
            reason = fatal.wait_for(Option::is_some) => match reason {
                Ok(reason) => Err(KubeError::Unusable(reason.clone().unwrap_or_default())),
                // The watchers ended (shutdown): nothing more to wait for.
                Err(_) => Ok(()),
            },
        }
    }

    /// The client the watchers use (for writing back).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Debounced change notifications (hand it to a task of its own; it is cancel-safe).
    pub fn changes(&self) -> Changes {
        Changes(self.changes.clone())
    }
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("stores", &self.stores)
            .field("watchers", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Resolves when the stores changed, debounced.
#[derive(Clone, Debug)]
pub struct Changes(Arc<Notify>);

impl Changes {
    /// Waits for a change, then for the burst it starts to end (`DEBOUNCE_QUIET` without a new
    /// change, or `DEBOUNCE_MAX` after the first).
    pub async fn changed(&self) {
        self.0.notified().await;
        let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
        loop {
            let quiet = tokio::time::Instant::now() + DEBOUNCE_QUIET;
            if quiet >= deadline {
                break;
            }
            if tokio::time::timeout_at(quiet, self.0.notified())
                .await
                .is_err()
            {
                break;
            }
        }
    }
}

/// Spawns the watcher of one kind: its store, and whether it has had its first complete list
/// (a `watch`, because `Store::wait_until_ready` wakes only one of several waiters).
fn spawn<K>(
    client: &Client,
    kind: &'static str,
    config: watcher::Config,
    (changes, fatal): (&Arc<Notify>, &watch::Sender<Option<String>>),
    tasks: &mut Vec<JoinHandle<()>>,
) -> (Store<K>, watch::Receiver<bool>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let api: Api<K> = Api::all(client.clone());
    let stream = watcher(api, config)
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .default_backoff();
    let changes = changes.clone();
    let fatal = fatal.clone();
    let (listed_tx, listed) = watch::channel(false);
    tasks.push(tokio::spawn(async move {
        let mut events = std::pin::pin!(reflector::reflector(writer, stream));
        let mut health = Health::new(kind);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    health.ok();
                    if matches!(
                        event,
                        watcher::Event::Apply(_)
                            | watcher::Event::Delete(_)
                            | watcher::Event::InitDone
                    ) {
                        if matches!(event, watcher::Event::InitDone) {
                            debug!(kind, "list complete");
                            listed_tx.send_replace(true);
                        }
                        changes.notify_one();
                    }
                }
                Err(err) => {
                    if let Some(reason) = api_errors::fatal(&err) {
                        fatal.send_replace(Some(reason));
                    }
                    health.failed(&err);
                }
            }
        }
    }));
    (store, listed)
}

/// One watcher's connection state, to log transitions once instead of every retry (also used by
/// the write-back watchers).
pub(crate) struct Health {
    kind: &'static str,
    failing: bool,
}

impl Health {
    pub(crate) fn new(kind: &'static str) -> Self {
        Self {
            kind,
            failing: false,
        }
    }

    pub(crate) fn ok(&mut self) {
        if std::mem::take(&mut self.failing) {
            info!(kind = self.kind, "watch of the API server recovered");
        }
    }

    pub(crate) fn failed(&mut self, err: &watcher::Error) {
        let kind = self.kind;
        if let watcher::Error::WatchError(status) = err {
            if status.code == 410 {
                // Not a failure: our resourceVersion is too old; the watcher relists at once.
                info!(kind, "resourceVersion expired (410 Gone): relisting");
                return;
            }
        }
        let error = api_errors::chain(err);
        if self.failing {
            debug!(
                kind,
                error, "API watch still failing; retrying with backoff"
            );
        } else {
            self.failing = true;
            warn!(
                kind,
                error, "API watch failed; serving the last snapshot and retrying with backoff"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_change_and_a_stream_of_changes_is_capped() {
        let notify = Arc::new(Notify::new());
        let changes = Changes(notify.clone());
        // A burst: one change, reported once the burst is quiet.
        for _ in 0..5 {
            notify.notify_one();
        }
        let started = tokio::time::Instant::now();
        changes.changed().await;
        assert!(started.elapsed() >= DEBOUNCE_QUIET);
        assert!(started.elapsed() < DEBOUNCE_MAX);
        let quiet = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
        assert!(quiet.is_err(), "the burst was reported twice");

        // Changes every 10 ms for a long time: still reported within DEBOUNCE_MAX.
        let feeder = notify.clone();
        let task = tokio::spawn(async move {
            loop {
                feeder.notify_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let started = tokio::time::Instant::now();
        changes.changed().await;
        assert!(
            started.elapsed() <= DEBOUNCE_MAX + DEBOUNCE_QUIET,
            "{:?}",
            started.elapsed()
        );
        task.abort();
    }
}
