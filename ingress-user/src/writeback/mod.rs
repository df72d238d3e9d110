//! Writing back to Kubernetes (Kubernetes mode only, leader only): Ingress status and Events.
//!
//! Flow: every reload of the control loop hands a `Report` (the `Inputs` it translated, which
//! carry the Ingresses' current status, and the diagnostics) to a `watch` channel; the
//! write-back task keeps only the newest. The task runs leader election (`lease`) every retry
//! period; while it leads, it keeps an `address_watch` of the addresses to publish (`addresses`:
//! `--publish-status-address`, `--publish-service`, or the nodes that run our pods), and each new
//! report, each change of those addresses (and becoming leader) triggers one round: `status`
//! plans the writes that differ from what the API shows and applies them (clearing from Ingresses
//! we no longer serve any address set we published), `events` turns
//! diagnostics into Events. A round that failed, or held Events back, is retried on the next
//! tick. When the control loop drops its sender (shutdown), the task releases the Lease and ends.
use std::{sync::Arc, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    source::Inputs,
    translate::{ClassOptions, Diagnostic},
};

pub mod address_watch;
pub mod addresses;
pub mod events;
pub mod lease;
pub mod status;

/// What one reload saw.
#[derive(Debug)]
pub struct Report {
    pub inputs: Inputs,
    pub diagnostics: Vec<Diagnostic>,
    /// The backends of the snapshot (their Services are, with the served Ingresses, the objects
    /// Events may be about). Shared with the snapshot: no copy per reload.
    pub backends: Vec<Arc<crate::model::Backend>>,
}

/// How the write-back task runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace and name of the leader election Lease.
    pub lease_namespace: String,
    pub lease_name: String,
    /// Who we are in the Lease and in Events.
    pub identity: String,
    pub lease_duration: Duration,
    /// Where the addresses written into Ingress status come from.
    pub publish: addresses::Publish,
    pub classes: ClassOptions,
}

impl Config {
    /// Leader election retries (and renews) this often.
    pub fn retry_period(&self) -> Duration {
        (self.lease_duration / 7).max(Duration::from_millis(200))
    }
}

/// Spawns the task on the current runtime. Dropping the sender of `reports` stops it.
pub fn spawn(
    client: Client,
    config: Config,
    reports: watch::Receiver<Option<Arc<Report>>>,
) -> JoinHandle<()> {
    tokio::spawn(run(client, config, reports))
}

async fn run(client: Client, config: Config, mut reports: watch::Receiver<Option<Arc<Report>>>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.lease_namespace);
    let mut elector = lease::Elector::new(
        leases,
        &config.lease_name,
        &config.identity,
        config.lease_duration,
    );
    let mut events =
        events::EventSink::new(client.clone(), &config.identity, config.classes.clone());
    // While we lead: the addresses to publish.
    let mut addresses: Option<address_watch::AddressWatch> = None;
    let mut tick = tokio::time::interval(config.retry_period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry = false;
    let mut sent = status::Sent::default();
    let mut published = status::Published::default();
    loop {
        let round = tokio::select! {
            _ = tick.tick() => {
                let was = elector.is_leader();
                let leads = elector.step().await;
                if leads != addresses.is_some() {
                    addresses = leads.then(|| address_watch::AddressWatch::start(&client, &config.publish));
                }
                leads && (!was || retry)
            }
            changed = reports.changed() => {
                if changed.is_err() {
                    break;
                }
                elector.is_leader()
            }
            _ = async { addresses.as_mut()?.changed().await; Some(()) }, if addresses.is_some() => {
                elector.is_leader()
            }
        };
        if !round {
            continue;
        }
        let Some(report) = reports.borrow_and_update().clone() else {
            continue;
        };
        {
            let ours =
                status::entries(&addresses.as_ref().map(|a| a.current()).unwrap_or_default());
            published.remember(&ours);
            let changes = status::plan(
                &report.inputs.ingresses,
                &report.inputs.ingress_classes,
                &config.classes,
                &ours,
                &published,
            );
            let changes = sent.unsent(changes);
            let failed = status::apply(&client, &changes, &mut sent).await;
            events.publish(&report).await;
            retry = failed > 0 || events.pending;
        }
    }
    elector.release().await;
}
