//! The fake API server's state: objects as JSON by (kind, namespace, name), one global
//! resourceVersion counter, and the log of watch events that lets a watch resume from any
//! resourceVersion newer than the compaction horizon (older ones get 410 Gone, as from etcd).
//!
//! Everything is behind one `Mutex` in `Shared`; every change bumps `changed` (a tokio watch
//! channel) so open watch streams wake up and read the log from where they are.
use std::collections::BTreeMap;

use serde_json::{json, Value};

/// A kind the fake server knows: where it lives in the API and how it is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    Secret,
    Lease,
    Event,
    Pod,
    Node,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Ingress,
        Kind::IngressClass,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::Lease,
        Kind::Event,
        Kind::Pod,
        Kind::Node,
    ];

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Ingress | Kind::IngressClass => "networking.k8s.io/v1",
            Kind::Service | Kind::Secret | Kind::Pod | Kind::Node => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Lease => "coordination.k8s.io/v1",
            Kind::Event => "events.k8s.io/v1",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::Lease => "Lease",
            Kind::Event => "Event",
            Kind::Pod => "Pod",
            Kind::Node => "Node",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Ingress => "ingresses",
            Kind::IngressClass => "ingressclasses",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Secret => "secrets",
            Kind::Lease => "leases",
            Kind::Event => "events",
            Kind::Pod => "pods",
            Kind::Node => "nodes",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::IngressClass | Kind::Node)
    }

    /// `(api prefix, plural)` → kind, e.g. `("/apis/networking.k8s.io/v1", "ingresses")`.
    pub fn from_path(prefix: &str, plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| {
            let want = match k.api_version() {
                "v1" => "/api/v1".to_owned(),
                group => format!("/apis/{group}"),
            };
            want == prefix && k.plural() == plural
        })
    }

    pub fn from_manifest(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.name() == kind)
    }
}

/// `(kind, namespace, name)`; the namespace is empty for cluster-scoped kinds.
pub type Key = (Kind, String, String);

/// One entry of the watch log.
#[derive(Clone, Debug)]
pub struct LogEvent {
    pub rv: u64,
    pub kind: Kind,
    /// ADDED, MODIFIED or DELETED.
    pub type_: &'static str,
    pub object: Value,
}

/// The objects, the log, and the counters.
#[derive(Debug, Default)]
pub struct State {
    pub rv: u64,
    pub objects: BTreeMap<Key, Value>,
    pub log: Vec<LogEvent>,
    /// Events at or below this resourceVersion are forgotten: resuming a watch from an older
    /// one answers 410 Gone.
    pub horizon: u64,
    /// Bumped to close every open watch stream (they compare it with the value they started
    /// with).
    pub watch_epoch: u64,
    /// Request lines seen (`GET /api/v1/secrets?...`), for assertions.
    pub requests: Vec<String>,
    /// Kinds every request for which is answered 403 Forbidden (RBAC that lacks them).
    pub forbidden: Vec<Kind>,
    next_uid: u64,
}

/// The namespace and name of `object`, with the namespace set to `default` when a namespaced
/// kind names none (and removed for a cluster-scoped kind).
fn place(kind: Kind, object: &mut Value) -> Result<(String, String), String> {
    let meta = object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or("object has no metadata")?;
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("object has no metadata.name")?
        .to_owned();
    let ns = if kind.namespaced() {
        let ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_owned();
        meta.insert("namespace".into(), json!(ns));
        ns
    } else {
        meta.remove("namespace");
        String::new()
    };
    Ok((ns, name))
}

pub fn resource_version(object: &Value) -> Option<&str> {
    object.pointer("/metadata/resourceVersion")?.as_str()
}

impl State {
    /// Creates or replaces an object (apiVersion/kind decide its kind); returns its key.
    /// A replaced object keeps its uid, creationTimestamp and (when none is given) status;
    /// `generation` grows when the spec changes. Fails on an unknown kind or a missing name.
    pub fn apply(&mut self, mut object: Value) -> Result<Key, String> {
        let api_version = object["apiVersion"].as_str().unwrap_or("").to_owned();
        let kind_name = object["kind"].as_str().unwrap_or("").to_owned();
        let kind = Kind::from_manifest(&api_version, &kind_name)
            .ok_or_else(|| format!("unknown apiVersion/kind {api_version}/{kind_name}"))?;
        let (ns, name) = place(kind, &mut object)?;
        let key = (kind, ns, name);
        self.rv += 1;
        let old = self.objects.get(&key);
        let (uid, created, generation) = match old {
            Some(o) => {
                let g = o.pointer("/metadata/generation").and_then(Value::as_u64);
                let g = g.unwrap_or(1) + u64::from(o.get("spec") != object.get("spec"));
                (
                    o["metadata"]["uid"].clone(),
                    o["metadata"]["creationTimestamp"].clone(),
                    g,
                )
            }
            None => {
                self.next_uid += 1;
                let ts = format!(
                    "2024-01-01T00:{:02}:{:02}Z",
                    (self.rv / 60) % 60,
                    self.rv % 60
                );
                (json!(format!("uid-{}", self.next_uid)), json!(ts), 1)
            }
        };
        // Like the real server, writing an object without a status keeps the status it had
        // (status belongs to the `status` subresource).
        if let (Some(old_status), None) = (old.and_then(|o| o.get("status")), object.get("status"))
        {
            object["status"] = old_status.clone();
        }
        let meta = object["metadata"].as_object_mut().expect("placed");
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        meta.insert("uid".into(), uid);
        meta.entry("creationTimestamp").or_insert(created);
        meta.insert("generation".into(), json!(generation));
        let type_ = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.log.push(LogEvent {
            rv: self.rv,
            kind,
            type_,
            object: object.clone(),
        });
        self.objects.insert(key.clone(), object);
        Ok(key)
    }

    /// Deletes an object; false when there was none.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> bool {
        let ns = if kind.namespaced() { namespace } else { "" };
        let Some(mut object) = self.objects.remove(&(kind, ns.to_owned(), name.to_owned())) else {
            return false;
        };
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.log.push(LogEvent {
            rv: self.rv,
            kind,
            type_: "DELETED",
            object,
        });
        true
    }

    /// Forgets the log up to now: a watch resuming from an older resourceVersion gets 410 Gone.
    pub fn compact(&mut self) {
        self.horizon = self.rv;
        self.log.clear();
    }

    /// The objects of `kind` (in `namespace` when given) that pass `selector`.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, ns, _), o)| {
                *k == kind && namespace.is_none_or(|n| n == ns) && selector.matches(o)
            })
            .map(|(_, o)| o.clone())
            .collect()
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Value> {
        let ns = if kind.namespaced() { namespace } else { "" };
        self.objects.get(&(kind, ns.to_owned(), name.to_owned()))
    }
}

/// A field selector: `a=b,c!=d` over `metadata.name`, `metadata.namespace` and `type`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses a selector; unknown fields are an error (the real server answers 400 too).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            if !matches!(field, "metadata.name" | "metadata.namespace" | "type") {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), equal, value.to_owned()));
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let pointer = match field.as_str() {
                "metadata.name" => "/metadata/name",
                "metadata.namespace" => "/metadata/namespace",
                _ => "/type",
            };
            let actual = object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == value) == *equal
        })
    }
}

/// A label selector: `a=b,c!=d,e` (equality, inequality, existence) over `metadata.labels`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<(String, Option<(bool, String)>)>);

impl LabelSelector {
    /// Parses a selector; set-based terms (`in`, `notin`) are an error (no test needs them).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if term.contains(' ') || term.contains('(') {
                return Err(format!("label selector term not supported: {term:?}"));
            }
            let term = if let Some((k, v)) = term.split_once("!=") {
                (k.to_owned(), Some((false, v.to_owned())))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k.to_owned(), Some((true, v.to_owned())))
            } else {
                (term.to_owned(), None)
            };
            terms.push(term);
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.0.iter().all(|(key, test)| {
            let actual = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            match test {
                None => actual.is_some(),
                Some((equal, value)) => (actual == Some(value.as_str())) == *equal,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_delete_and_selectors() {
        let mut s = State::default();
        let secret = |name: &str, type_: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": type_});
        s.apply(secret("tls", "kubernetes.io/tls")).unwrap();
        s.apply(secret("opaque", "Opaque")).unwrap();
        let tls = FieldSelector::parse("type=kubernetes.io/tls").unwrap();
        let names: Vec<_> = s
            .list(Kind::Secret, None, &tls)
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["tls"]);
        assert!(FieldSelector::parse("spec.x=1").is_err());
        let key = s.apply(secret("tls", "kubernetes.io/tls")).unwrap();
        assert_eq!(key.1, "default");
        assert_eq!(s.log.last().unwrap().type_, "MODIFIED");
        assert_eq!(resource_version(&s.objects[&key]), Some("3"));
        assert!(s.delete(Kind::Secret, "default", "tls"));
        assert!(!s.delete(Kind::Secret, "default", "tls"));
        assert_eq!(s.rv, 4);
        s.compact();
        assert_eq!((s.horizon, s.log.len()), (4, 0));
    }

    #[test]
    fn label_selectors_and_cluster_scoped_nodes() {
        let pod = |name: &str, app: &str| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "x", "labels": {"app": app}}});
        let selector = LabelSelector::parse("app=ingress").unwrap();
        assert!(selector.matches(&pod("a", "ingress")));
        assert!(!selector.matches(&pod("b", "web")));
        assert!(LabelSelector::parse("app!=web")
            .unwrap()
            .matches(&pod("a", "ingress")));
        assert!(LabelSelector::parse("app")
            .unwrap()
            .matches(&pod("a", "web")));
        assert!(!LabelSelector::parse("tier")
            .unwrap()
            .matches(&pod("a", "web")));
        assert!(LabelSelector::parse("app in (a)").is_err());
        let mut s = State::default();
        let key = s
            .apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "namespace": "x"}}))
            .unwrap();
        assert_eq!(key, (Kind::Node, String::new(), "n1".to_owned()));
        assert_eq!(Kind::from_path("/api/v1", "pods"), Some(Kind::Pod));
    }
}
