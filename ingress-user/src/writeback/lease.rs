//! Leader election on a coordination.k8s.io/v1 Lease, so one daemon of the cluster writes
//! Ingress status and Events.
//!
//! `Elector::step` runs every retry period: no Lease → create it holding it; ours → renew it
//! (replace with its resourceVersion: a conflict means someone else won); someone else's →
//! take it over only when it has not changed for `duration` by our own clock (the time we saw
//! its resourceVersion change, as client-go does, so clocks need not agree) or when it is
//! released. A leader that cannot renew for `renew_deadline` steps down. `release` hands the
//! Lease back at shutdown so a successor need not wait for it to expire.
use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api, ResourceExt as _};
use tracing::{info, warn};

#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    renew_deadline: Duration,
    /// The Lease's resourceVersion as last seen, and when it changed.
    observed: Option<(String, Instant)>,
    /// Last successful create or renew, while leader.
    renewed: Option<Instant>,
    failing: bool,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            renew_deadline: duration * 2 / 3,
            observed: None,
            renewed: None,
            failing: false,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.renewed.is_some()
    }

    /// One round; returns whether we lead afterwards.
    pub async fn step(&mut self) -> bool {
        match self.try_step().await {
            Ok(leader) => {
                if std::mem::take(&mut self.failing) {
                    info!(lease = %self.name, "leader election reaches the API server again");
                }
                self.set(leader);
            }
            Err(err) => {
                if !self.failing {
                    warn!(lease = %self.name, error = %err, "leader election: API request failed; retrying");
                    self.failing = true;
                }
                if self
                    .renewed
                    .is_some_and(|at| at.elapsed() > self.renew_deadline)
                {
                    self.set(false);
                }
            }
        }
        self.is_leader()
    }

    fn set(&mut self, leader: bool) {
        match (self.renewed.is_some(), leader) {
            (false, true) => {
                info!(lease = %self.name, identity = %self.identity, "became the leader: writing Ingress status and Events");
                self.renewed = Some(Instant::now());
            }
            (true, true) => self.renewed = Some(Instant::now()),
            (true, false) => {
                info!(lease = %self.name, "no longer the leader");
                self.renewed = None;
            }
            (false, false) => {}
        }
    }

    fn spec(&self, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    async fn try_step(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0)),
            };
            return ok_unless_conflict(self.api.create(&PostParams::default(), &lease).await);
        };
        let rv = lease.resource_version().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != rv) {
            self.observed = Some((rv, Instant::now()));
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder == self.identity {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        } else {
            let expired = self
                .observed
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() > self.duration);
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            let transitions = spec.lease_transitions.unwrap_or(0) + 1;
            *spec = self.spec(transitions);
        }
        let replaced = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await;
        ok_unless_conflict(replaced)
    }

    /// Gives the Lease up (at shutdown), if we hold it.
    pub async fn release(&mut self) {
        if !self.is_leader() {
            return;
        }
        self.renewed = None;
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.name, "leadership released"),
            Err(err) => {
                warn!(lease = %self.name, error = %err, "releasing the Lease failed; a successor waits for it to expire")
            }
        }
    }
}

/// `Ok(true)` when the write went through, `Ok(false)` when someone else got there first.
fn ok_unless_conflict(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}
