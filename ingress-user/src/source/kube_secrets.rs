//! TLS Secrets from the Kubernetes API, holding only those our Ingresses reference
//! (`secret_cache` says how).
//!
//! Flow: `SecretSource::spawn` starts one task that waits for the Ingress and IngressClass
//! stores' first lists, sets the references they make, then watches Secrets with the field
//! selector `type=kubernetes.io/tls` (list, watch with bookmarks, backoff, relist on 410) and
//! applies every event to the cache (data kept only for referenced Secrets), poking the shared
//! change `Notify`. Each rebuild calls `secrets` with the Ingresses it is about to translate: the
//! references are updated, and each newly referenced Secret whose data is not held is fetched
//! with a GET in a task of its own (retried with backoff while it is still wanted); its arrival
//! pokes `Notify` again, so the next rebuild serves it.
use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::Secret,
    networking::v1::{Ingress, IngressClass},
};
use kube::{
    runtime::{reflector::Store, watcher, WatchStreamExt as _},
    Api, Client, ResourceExt as _,
};
use tokio::{
    sync::{watch, Notify},
    task::JoinHandle,
};
use tracing::{debug, warn};

use super::{
    kube::{Health, TLS_SECRET_SELECTOR},
    secret_cache::{self, SecretCache, SecretKey},
};
use crate::translate::{classes::ClassFilter, ClassOptions};

/// First and longest wait between attempts to fetch a newly referenced Secret.
const FETCH_RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// The TLS Secrets of the Kubernetes source (cheap to clone: shared).
#[derive(Clone)]
pub struct SecretSource {
    cache: Arc<Mutex<SecretCache>>,
    client: Client,
    changes: Arc<Notify>,
    listed: watch::Receiver<bool>,
    classes: ClassOptions,
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (known, held) = self.counts();
        f.debug_struct("SecretSource")
            .field("known", &known)
            .field("held", &held)
            .finish_non_exhaustive()
    }
}

impl SecretSource {
    /// Starts the watcher task (pushed to `tasks`) on the current runtime.
    /// `ingresses` and `ingress_classes`: their stores, and whether each has been listed.
    pub fn spawn(
        client: &Client,
        ingresses: (&Store<Ingress>, watch::Receiver<bool>),
        ingress_classes: (&Store<IngressClass>, watch::Receiver<bool>),
        classes: ClassOptions,
        (changes, fatal): (&Arc<Notify>, &watch::Sender<Option<String>>),
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Self {
        let (listed_tx, listed) = watch::channel(false);
        let source = Self {
            cache: Arc::default(),
            client: client.clone(),
            changes: changes.clone(),
            listed,
            classes,
        };
        let task = source.clone();
        let fatal = fatal.clone();
        let (ingresses, mut ingresses_listed) = (ingresses.0.clone(), ingresses.1);
        let (ingress_classes, mut classes_listed) = (ingress_classes.0.clone(), ingress_classes.1);
        tasks.push(tokio::spawn(async move {
            // The references first, so the list keeps the data it needs and no more. (These
            // fail only when the watchers ended: shutdown.)
            tokio::join!(
                async { ingresses_listed.wait_for(|l| *l).await.is_ok() },
                async { classes_listed.wait_for(|l| *l).await.is_ok() },
            );
            let classes = ingress_classes.state();
            let filter = ClassFilter::new(&classes, &task.classes);
            let state = ingresses.state();
            let references = secret_cache::referenced(state.iter().map(|i| &**i), &filter);
            task.lock().set_referenced(references);
            task.watch(listed_tx, fatal).await;
        }));
        source
    }

    fn lock(&self) -> MutexGuard<'_, SecretCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn watch(&self, listed: watch::Sender<bool>, fatal: watch::Sender<Option<String>>) {
        let api: Api<Secret> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(TLS_SECRET_SELECTOR);
        let stream = watcher(api, config)
            .modify(|s: &mut Secret| s.managed_fields_mut().clear())
            .default_backoff();
        let mut events = std::pin::pin!(stream);
        let mut health = Health::new("Secret");
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => {
                    health.ok();
                    event
                }
                Err(err) => {
                    if let Some(reason) = super::api_errors::fatal(&err) {
                        fatal.send_replace(Some(reason));
                    }
                    health.failed(&err);
                    continue;
                }
            };
            let mut cache = self.lock();
            match event {
                watcher::Event::Init => {
                    cache.relist_start();
                    continue;
                }
                watcher::Event::InitApply(s) => {
                    cache.apply(s);
                    continue;
                }
                watcher::Event::InitDone => {
                    cache.relist_done();
                    let (known, held) = cache.counts();
                    debug!(kind = "Secret", known, held, "list complete");
                    listed.send_replace(true);
                }
                watcher::Event::Apply(s) => cache.apply(s),
                watcher::Event::Delete(s) => cache.delete(&s),
            }
            drop(cache);
            self.changes.notify_one();
        }
    }

    /// Resolves once the first list of TLS Secrets is in.
    pub async fn ready(&self) {
        let mut listed = self.listed.clone();
        // Fails only when the task ended (shutdown): nothing more to wait for.
        let _ = listed.wait_for(|l| *l).await;
    }

    /// `(known, held)` TLS Secrets: reported by the watch, and with their data in memory.
    pub fn counts(&self) -> (usize, usize) {
        self.lock().counts()
    }

    /// The Secrets `ingresses` (those we serve, by `classes`) reference, as far as they are
    /// held; starts fetching the referenced ones that are not.
    pub fn secrets(
        &self,
        ingresses: &[Arc<Ingress>],
        classes: &[Arc<IngressClass>],
    ) -> Vec<Secret> {
        let filter = ClassFilter::new(classes, &self.classes);
        let references = secret_cache::referenced(ingresses.iter().map(|i| &**i), &filter);
        let mut cache = self.lock();
        for key in cache.set_referenced(references) {
            tokio::spawn(self.clone().fetch(key));
        }
        cache.secrets()
    }

    /// GETs one Secret until it is held or no longer wanted.
    async fn fetch(self, key: SecretKey) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &key.0);
        let mut delay = FETCH_RETRY.0;
        let mut warned = false;
        loop {
            match api.get_opt(&key.1).await {
                Ok(mut found) => {
                    if let Some(s) = &mut found {
                        s.managed_fields_mut().clear();
                    }
                    if self.lock().fetched(&key, found) {
                        debug!(secret = %format!("{}/{}", key.0, key.1), "newly referenced Secret fetched");
                        self.changes.notify_one();
                    }
                    return;
                }
                Err(err) => {
                    if !std::mem::replace(&mut warned, true) {
                        warn!(secret = %format!("{}/{}", key.0, key.1), error = %err, "fetching a newly referenced Secret failed; retrying");
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(FETCH_RETRY.1);
            let mut cache = self.lock();
            if !cache.wants(&key) {
                cache.fetched(&key, None);
                return;
            }
        }
    }
}
