//! Keeps the leader's published addresses current (`addresses` says which they are): started
//! when a daemon becomes the leader, dropped (its watchers stopped) when it stops leading.
//!
//! Flow: `AddressWatch::start(client, publish)` → `Static`: the flag's addresses, no task;
//! `Service`: a watcher on that one Service (field selector on its name) → `addresses::service`;
//! `Nodes`: GET our own Pod (retried with backoff while the API fails; not found, no name, or
//! no labels is said once in the log and publishes nothing), then a watcher on the Pods with its
//! labels in its namespace and one on Nodes (each Node cut down to its name and addresses on
//! arrival) → `addresses::nodes` once both have listed. Each result goes to a `watch` channel
//! only when it differs, and the write-back loop plans a round on each change.
use std::{fmt::Debug, time::Duration};

use futures::{Stream, StreamExt as _};
use k8s_openapi::{
    api::core::v1::{Node, NodeStatus, Pod, Service},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    runtime::{
        reflector::{self, Store},
        watcher, WatchStreamExt as _,
    },
    Api, Client, Resource, ResourceExt as _,
};
use serde::de::DeserializeOwned;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info, warn};

use super::addresses::{self, NamespacedName, Publish};
use crate::source::kube::Health;

/// The current addresses, and the task that keeps them so (aborted on drop).
#[derive(Debug)]
pub struct AddressWatch {
    rx: watch::Receiver<Vec<String>>,
    /// Kept so the channel never closes while we watch (a closed one would wake `changed` at
    /// once, forever).
    _tx: watch::Sender<Vec<String>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for AddressWatch {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl AddressWatch {
    /// Starts watching on the current runtime.
    pub fn start(client: &Client, publish: &Publish) -> Self {
        let (tx, rx) = watch::channel(Vec::new());
        let task = match publish {
            Publish::Static(addresses) => {
                tx.send_replace(addresses.clone());
                None
            }
            Publish::Service(service) => Some(tokio::spawn(watch_service(
                client.clone(),
                service.clone(),
                tx.clone(),
            ))),
            Publish::Nodes {
                pod: Some(pod),
                unknown_pod: _,
            } => Some(tokio::spawn(watch_nodes(
                client.clone(),
                pod.clone(),
                tx.clone(),
            ))),
            Publish::Nodes {
                pod: None,
                unknown_pod,
            } => {
                error!("cannot identify our own Pod ({unknown_pod}): Ingress status is not written; set POD_NAME/POD_NAMESPACE from the downward API (deploy/daemonset.yaml does), or give --publish-status-address or --publish-service");
                None
            }
        };
        Self { rx, _tx: tx, task }
    }

    /// The addresses to publish now (empty: nothing to publish).
    pub fn current(&self) -> Vec<String> {
        self.rx.borrow().clone()
    }

    /// Resolves when the addresses changed.
    pub async fn changed(&mut self) {
        // The sender lives in `self`: this cannot fail.
        let _ = self.rx.changed().await;
    }
}

fn publish(tx: &watch::Sender<Vec<String>>, addresses: Vec<String>, from: &str) {
    tx.send_if_modified(|current| {
        if *current == addresses {
            return false;
        }
        info!(addresses = ?addresses, from, "addresses for Ingress status");
        *current = addresses;
        true
    });
}

/// A reflector over `api` as a stream that yields once per change, with whether the store has
/// had its first complete list.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, impl Stream<Item = bool> + Send)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = watcher(api, config).modify(trim).default_backoff();
    let mut health = Health::new(kind);
    let mut listed = false;
    let changes = reflector::reflector(writer, stream).filter_map(move |event| {
        let out = match event {
            Ok(event) => {
                health.ok();
                match event {
                    watcher::Event::InitDone => {
                        listed = true;
                        Some(true)
                    }
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) => Some(listed),
                    _ => None,
                }
            }
            Err(err) => {
                health.failed(&err);
                None
            }
        };
        std::future::ready(out)
    });
    (store, changes)
}

async fn watch_service(client: Client, service: NamespacedName, tx: watch::Sender<Vec<String>>) {
    let api: Api<Service> = Api::namespaced(client, &service.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", service.name));
    let (store, changes) = reflect(api, config, "Service (--publish-service)", |s| {
        s.managed_fields_mut().clear()
    });
    let mut changes = std::pin::pin!(changes);
    let from = format!("Service {service}");
    while let Some(listed) = changes.next().await {
        if !listed {
            continue;
        }
        let state = store.state();
        match state.first() {
            Some(svc) => publish(&tx, addresses::service(svc), &from),
            None => {
                warn!(service = %service, "--publish-service names a Service that does not exist: Ingress status is not written until it does");
                publish(&tx, Vec::new(), &from);
            }
        }
    }
}

/// How long to wait before asking for our own Pod again after the API failed.
const POD_RETRY: Duration = Duration::from_secs(2);

async fn watch_nodes(client: Client, pod: NamespacedName, tx: watch::Sender<Vec<String>>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let mut failing = false;
    let own = loop {
        match pods.get_opt(&pod.name).await {
            Ok(Some(own)) => break own,
            Ok(None) => {
                error!(pod = %pod, "cannot identify our own Pod: it does not exist (check POD_NAME/POD_NAMESPACE or --pod-name/--pod-namespace): Ingress status is not written");
                return;
            }
            Err(err) => {
                if !std::mem::replace(&mut failing, true) {
                    warn!(pod = %pod, error = %err, "reading our own Pod failed; retrying");
                }
                tokio::time::sleep(POD_RETRY).await;
            }
        }
    };
    let Some(selector) = addresses::own_selector(own.labels()) else {
        error!(pod = %pod, "cannot find the pods of our DaemonSet: our Pod has no labels besides revision hashes; Ingress status is not written");
        return;
    };
    info!(pod = %pod, selector, "publishing the addresses of the nodes that run pods with our labels");
    let config = watcher::Config::default().labels(&selector);
    let (pod_store, pod_changes) = reflect(pods, config, "Pod", |p: &mut Pod| {
        p.managed_fields_mut().clear()
    });
    let nodes: Api<Node> = Api::all(client);
    let (node_store, node_changes) =
        reflect(nodes, watcher::Config::default(), "Node", |n: &mut Node| {
            // Only the name and the addresses are read: the rest of a Node is large.
            n.metadata = ObjectMeta {
                name: n.metadata.name.take(),
                resource_version: n.metadata.resource_version.take(),
                ..ObjectMeta::default()
            };
            n.spec = None;
            let addresses = n.status.take().and_then(|s| s.addresses);
            n.status = Some(NodeStatus {
                addresses,
                ..NodeStatus::default()
            });
        });
    let (mut pods_listed, mut nodes_listed) = (false, false);
    let mut changes = std::pin::pin!(futures::stream::select(
        pod_changes.map(|l| (true, l)),
        node_changes.map(|l| (false, l)),
    ));
    while let Some((is_pod, listed)) = changes.next().await {
        if is_pod {
            pods_listed = listed;
        } else {
            nodes_listed = listed;
        }
        if pods_listed && nodes_listed {
            let (p, n) = (pod_store.state(), node_store.state());
            let found = addresses::nodes(p.iter().map(|p| &**p), n.iter().map(|n| &**n));
            publish(&tx, found, "nodes");
        }
    }
}
