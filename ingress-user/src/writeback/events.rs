//! Diagnostics as Kubernetes Events (events.k8s.io/v1) on the objects they are about.
//!
//! Each diagnostic becomes a `Warning` with a stable reason (`reason`) and a note naming the
//! field; the same diagnostic is not repeated within `REPEAT_AFTER`, and at most `BURST` Events
//! go out per round (the rest wait for the next round: `pending`). An object that had warnings
//! and has none any more gets one `Normal` event, reason `Recovered`. Only served objects have
//! diagnostics (`translate` ignores the others), so Ingresses of other classes get no Events.
//! `kube::runtime::events::Recorder` does the writing (it folds repeats into an Event series).
use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client,
};

use crate::{model::ObjectRef, source::Inputs, translate::Diagnostic};

/// The same warning about the same object is not repeated sooner than this.
pub const REPEAT_AFTER: Duration = Duration::from_secs(600);
/// At most this many Events per round.
pub const BURST: usize = 20;
/// `reportingController` of our Events.
pub const REPORTING_CONTROLLER: &str = "xdp-ingress.io/controller";

/// The stable `reason` of a diagnostic's Event.
pub fn reason(d: &Diagnostic) -> &'static str {
    if d.object.kind == "EndpointSlice" {
        "InvalidEndpointSlice"
    } else if d.reason.contains("already routed") {
        "RouteConflict"
    } else if d.field.ends_with(".service.name") || d.field.ends_with(".service.port") {
        "BackendUnavailable"
    } else {
        "InvalidIngress"
    }
}

/// What an Event about `d` says.
pub fn note(d: &Diagnostic) -> String {
    let text = if d.field.is_empty() {
        d.reason.clone()
    } else {
        format!("{}: {}", d.field, d.reason)
    };
    // The API caps notes at 1 kB.
    text.chars().take(1000).collect()
}

pub struct EventSink {
    recorder: Recorder,
    /// (object, note) → when it was last sent.
    sent: HashMap<(ObjectRef, String), Instant>,
    /// Objects that had warnings in the last round.
    troubled: BTreeSet<ObjectRef>,
    /// Some Events were held back by `BURST`.
    pub pending: bool,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("sent", &self.sent.len())
            .field("troubled", &self.troubled)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl EventSink {
    pub fn new(client: Client, instance: &str) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance: Some(instance.to_owned()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            sent: HashMap::new(),
            troubled: BTreeSet::new(),
            pending: false,
        }
    }

    /// Sends what this round of diagnostics calls for.
    pub async fn publish(&mut self, diagnostics: &[Diagnostic], inputs: &Inputs) {
        let mut budget = BURST;
        self.pending = false;
        let now_troubled: BTreeSet<ObjectRef> =
            diagnostics.iter().map(|d| d.object.clone()).collect();
        for d in diagnostics {
            let note = note(d);
            let key = (d.object.clone(), note.clone());
            if self
                .sent
                .get(&key)
                .is_some_and(|at| at.elapsed() < REPEAT_AFTER)
            {
                continue;
            }
            if budget == 0 {
                self.pending = true;
                break;
            }
            budget -= 1;
            let event = Event {
                type_: EventType::Warning,
                reason: reason(d).to_owned(),
                note: Some(note),
                action: "Translate".to_owned(),
                secondary: None,
            };
            if self.send(&event, &d.object, inputs).await {
                self.sent.insert(key, Instant::now());
            }
        }
        for recovered in self.troubled.difference(&now_troubled) {
            if uid(recovered, inputs).is_none() {
                continue; // deleted: nobody to tell
            }
            let event = Event {
                type_: EventType::Normal,
                reason: "Recovered".to_owned(),
                note: Some("configuration is valid again and served".to_owned()),
                action: "Translate".to_owned(),
                secondary: None,
            };
            self.send(&event, recovered, inputs).await;
        }
        self.sent.retain(|(o, _), _| now_troubled.contains(o));
        self.troubled = now_troubled;
    }

    async fn send(&self, event: &Event, object: &ObjectRef, inputs: &Inputs) -> bool {
        let reference = ObjectReference {
            api_version: Some(api_version(object.kind).to_owned()),
            kind: Some(object.kind.to_owned()),
            namespace: Some(object.namespace.clone()),
            name: Some(object.name.clone()),
            uid: uid(object, inputs),
            ..ObjectReference::default()
        };
        match self.recorder.publish(event, &reference).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(object = %object, error = %err, "publishing an Event failed");
                false
            }
        }
    }
}

fn api_version(kind: &str) -> &'static str {
    match kind {
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        _ => "v1",
    }
}

/// The object's uid, when it still exists.
fn uid(object: &ObjectRef, inputs: &Inputs) -> Option<String> {
    let matches = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.name.as_deref() == Some(object.name.as_str())
            && m.namespace.as_deref() == Some(object.namespace.as_str())
    };
    let meta = match object.kind {
        "Ingress" => inputs
            .ingresses
            .iter()
            .map(|o| &o.metadata)
            .find(|m| matches(m)),
        "Service" => inputs
            .services
            .iter()
            .map(|o| &o.metadata)
            .find(|m| matches(m)),
        "EndpointSlice" => inputs
            .endpoint_slices
            .iter()
            .map(|o| &o.metadata)
            .find(|m| matches(m)),
        _ => None,
    }?;
    Some(meta.uid.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_stable_per_kind_of_problem() {
        let ing = ObjectRef::new("Ingress", "default", "i");
        let slice = ObjectRef::new("EndpointSlice", "default", "s");
        let cases = [
            (&ing, "spec.rules[0].http.paths[0].backend.service.name", "service default/x not found", "BackendUnavailable"),
            (&ing, "spec.rules[0].http.paths[0].backend.service.port", "service port 8 not found in Service default/x", "BackendUnavailable"),
            (&ing, "spec.rules[0].http.paths[1]", "host h, path /p (Prefix) is already routed by Ingress default/a (older, or same age and first by name); ignored", "RouteConflict"),
            (&ing, "spec.rules[0].host", "invalid host \"a_b\"; rule skipped", "InvalidIngress"),
            (&slice, "addressType", "addressType FQDN is not supported; slice skipped", "InvalidEndpointSlice"),
        ];
        for (object, field, why, want) in cases {
            let d = Diagnostic::new(object, field, why);
            assert_eq!(reason(&d), want, "{d}");
            assert_eq!(note(&d), format!("{field}: {why}"));
        }
    }
}
