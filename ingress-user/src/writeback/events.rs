//! Diagnostics as Kubernetes Events (events.k8s.io/v1) on the objects they are about.
//!
//! Each diagnostic becomes a `Warning` with a stable reason (`reason`) and a note naming the
//! field; the same diagnostic is not repeated within `REPEAT_AFTER`, and at most `BURST` Events
//! go out per round (the rest wait for the next round: `pending`). An object that had warnings
//! and has none any more gets one `Normal` event, reason `Recovered` — when it is still ours
//! (`ours`: an Ingress we serve, or a Service or EndpointSlice of a Service we route to); one
//! that left us (an Ingress moved to another class, a Service no Ingress of ours uses any more)
//! gets nothing. Only served objects have diagnostics (`translate` ignores the others), so
//! objects that only foreign-class Ingresses use never get Events.
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

use super::Report;
use crate::{
    model::ObjectRef,
    source::Inputs,
    translate::{classes::ClassFilter, ClassOptions, Diagnostic, SERVICE_NAME_LABEL},
};

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
    classes: ClassOptions,
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
    pub fn new(client: Client, instance: &str, classes: ClassOptions) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance: Some(instance.to_owned()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            sent: HashMap::new(),
            troubled: BTreeSet::new(),
            pending: false,
            classes,
        }
    }

    /// Sends what this round of diagnostics calls for.
    pub async fn publish(&mut self, report: &Report) {
        let (diagnostics, inputs) = (&report.diagnostics, &report.inputs);
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
        let filter = ClassFilter::new(&inputs.ingress_classes, &self.classes);
        for recovered in self.troubled.difference(&now_troubled) {
            if uid(recovered, inputs).is_none() {
                continue; // deleted: nobody to tell
            }
            if !ours(recovered, report, &filter) {
                continue; // no longer ours: not a word
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

/// Whether `object` is still one of ours: an Ingress we serve, a Service we route to, or an
/// EndpointSlice of such a Service.
fn ours(object: &ObjectRef, report: &Report, filter: &ClassFilter<'_>) -> bool {
    let same = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.name.as_deref() == Some(object.name.as_str())
            && m.namespace.as_deref() == Some(object.namespace.as_str())
    };
    let routed = |service: &str| {
        (report.backends.iter())
            .any(|b| b.service.namespace == object.namespace && b.service.service == service)
    };
    match object.kind {
        "Ingress" => report
            .inputs
            .ingresses
            .iter()
            .find(|i| same(&i.metadata))
            .is_some_and(|i| filter.serves(i)),
        "Service" => routed(&object.name),
        "EndpointSlice" => report
            .inputs
            .endpoint_slices
            .iter()
            .find(|s| same(&s.metadata))
            .and_then(|s| s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL))
            .is_some_and(|service| routed(service)),
        _ => false,
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
    fn only_served_ingresses_and_routed_services_and_their_slices_are_ours() {
        let inputs = Inputs::from_yaml(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: xdp}\n\
             spec: {controller: xdp-ingress.io/controller}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: mine}\n\
             spec: {ingressClassName: xdp}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: theirs}\n\
             spec: {ingressClassName: nginx}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, \
             labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: []\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: b-1, \
             labels: {kubernetes.io/service-name: b}}\naddressType: IPv4\nendpoints: []\n",
        )
        .unwrap();
        let report = Report {
            inputs,
            diagnostics: Vec::new(),
            backends: vec![std::sync::Arc::new(crate::model::Backend::new(
                crate::model::ServiceBackendRef {
                    namespace: "default".to_owned(),
                    service: "a".to_owned(),
                    port: crate::model::ServicePortRef::Number(80),
                },
                Vec::new(),
                None,
            ))],
        };
        let options = crate::translate::ClassOptions::cluster(crate::translate::CONTROLLER, false);
        let filter = ClassFilter::new(&report.inputs.ingress_classes, &options);
        let cases = [
            ("Ingress", "mine", true),
            ("Ingress", "theirs", false),
            ("Ingress", "gone", false),
            ("Service", "a", true),
            ("Service", "b", false),
            ("EndpointSlice", "a-1", true),
            ("EndpointSlice", "b-1", false),
            ("Secret", "a", false),
        ];
        for (kind, name, want) in cases {
            let object = ObjectRef::new(kind, "default", name);
            assert_eq!(ours(&object, &report, &filter), want, "{object}");
        }
    }

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
