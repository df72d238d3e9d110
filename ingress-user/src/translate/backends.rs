//! Service backend references → `Backend`s: the Service port they name and its ready endpoints.
//!
//! `Index` holds the Services by namespace/name and the EndpointSlices by namespace and
//! `kubernetes.io/service-name` label, from one build to the next (updated by what changed, and
//! saying which Services that concerns: `reuse` re-resolves only their backends); `Resolver`
//! then turns one `ServiceBackendRef` into a `Backend`. A backend that cannot be served (no Service, no such port, ExternalName) still
//! becomes a `Backend`, with no endpoints and the reason in `unavailable`, plus a `Problem` that
//! `translate` reports on every Ingress field naming it. Bad EndpointSlice content is reported on
//! the slice itself.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

// Fast, unkeyed hashing: the keys are names from our own inputs, rebuilt on every change.
use foldhash::{HashMap, HashMapExt as _};

use k8s_openapi::api::{
    core::v1::{Service, ServicePort},
    discovery::v1::EndpointSlice,
};

use super::{Diagnostic, DEFAULT_NAMESPACE};
use crate::{
    model::{Backend, ObjectRef, ServiceBackendRef, ServicePortRef, Strategy},
    proxy::balance::SessionKey,
};

/// The label that ties an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why a backend cannot be served, to report on the Ingress field (`backend.service.<field>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Problem {
    /// `name` or `port`.
    pub field: &'static str,
    pub reason: String,
}

/// A map keyed by namespace, then name, so that a lookup borrows both.
#[derive(Debug)]
pub(super) struct ByName<V>(HashMap<String, HashMap<String, V>>);

impl<V> Default for ByName<V> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<V> ByName<V> {
    pub fn get(&self, namespace: &str, name: &str) -> Option<&V> {
        self.0.get(namespace)?.get(name)
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.get(namespace, name).is_some()
    }

    fn get_mut(&mut self, namespace: &str, name: &str) -> Option<&mut V> {
        self.0.get_mut(namespace)?.get_mut(name)
    }

    fn slot(&mut self, namespace: &str, name: &str) -> &mut V
    where
        V: Default,
    {
        if !self.0.contains_key(namespace) {
            self.0.insert(namespace.to_owned(), HashMap::new());
        }
        let names = self.0.get_mut(namespace).expect("just inserted");
        if !names.contains_key(name) {
            names.insert(name.to_owned(), V::default());
        }
        names.get_mut(name).expect("just inserted")
    }

    fn insert(&mut self, namespace: &str, name: &str, value: V) {
        match self.0.get_mut(namespace) {
            Some(names) => {
                names.insert(name.to_owned(), value);
            }
            None => {
                let names = HashMap::from_iter([(name.to_owned(), value)]);
                self.0.insert(namespace.to_owned(), names);
            }
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) -> Option<V> {
        let names = self.0.get_mut(namespace)?;
        let value = names.remove(name);
        if names.is_empty() {
            self.0.remove(namespace);
        }
        value
    }
}

/// The Services whose Service object or EndpointSlices changed since the last `Index::update`.
pub(super) type Changed = ByName<()>;

/// Services by namespace/name and EndpointSlices by namespace and Service (sorted by name), kept
/// from one build to the next and brought up to date by `update`, which compares the objects by
/// address (sources hand over the same `Arc` for an object that did not change): only the
/// objects that changed are hashed by name and moved, and `update` says which Services they
/// concern. Sources never hand over two objects of one kind with the same namespace/name; if one
/// did, the one indexed last would be used.
#[derive(Debug, Default)]
pub(super) struct Index {
    services: ByName<Arc<Service>>,
    slices: ByName<Vec<Arc<EndpointSlice>>>,
    /// The objects of the last update by address (held, so an address stays theirs), with the
    /// number of the update that last saw them.
    known_services: HashMap<usize, (Arc<Service>, u64)>,
    known_slices: HashMap<usize, (Arc<EndpointSlice>, u64)>,
    updates: u64,
}

/// The key a slice is indexed under: its namespace and `kubernetes.io/service-name` label.
fn slice_key(slice: &EndpointSlice) -> Option<(&str, &str)> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((namespace(&slice.metadata.namespace), service.as_str()))
}

fn service_key(service: &Service) -> (&str, &str) {
    let name = service.metadata.name.as_deref().unwrap_or("");
    (namespace(&service.metadata.namespace), name)
}

impl Index {
    /// Brings the index to `services` and `slices` (the whole current sets); returns the
    /// Services whose objects changed since the last update (every Service named, on the first).
    pub fn update(&mut self, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Changed {
        self.updates += 1;
        let now = self.updates;
        let mut changed = Changed::default();
        for service in services {
            let addr = Arc::as_ptr(service) as usize;
            if let Some((_, seen)) = self.known_services.get_mut(&addr) {
                *seen = now;
                continue;
            }
            let (ns, name) = service_key(service);
            self.services.insert(ns, name, service.clone());
            changed.insert(ns, name, ());
            self.known_services.insert(addr, (service.clone(), now));
        }
        let index = &mut self.services;
        self.known_services.retain(|_, (service, seen)| {
            if *seen == now {
                return true;
            }
            let (ns, name) = service_key(service);
            let current = index.get(ns, name);
            if current.is_some_and(|c| Arc::ptr_eq(c, service)) {
                index.remove(ns, name);
            }
            changed.insert(ns, name, ());
            false
        });

        for slice in slices {
            let addr = Arc::as_ptr(slice) as usize;
            if let Some((_, seen)) = self.known_slices.get_mut(&addr) {
                *seen = now;
                continue;
            }
            self.known_slices.insert(addr, (slice.clone(), now));
            let Some((ns, service)) = slice_key(slice) else {
                continue;
            };
            let list = self.slices.slot(ns, service);
            // Replaces the previous version of the slice (same name), if any.
            list.retain(|s| s.metadata.name != slice.metadata.name);
            let at = list.partition_point(|s| s.metadata.name < slice.metadata.name);
            list.insert(at, slice.clone());
            changed.insert(ns, service, ());
        }
        let index = &mut self.slices;
        self.known_slices.retain(|_, (slice, seen)| {
            if *seen == now {
                return true;
            }
            if let Some((ns, service)) = slice_key(slice) {
                if let Some(list) = index.get_mut(ns, service) {
                    list.retain(|s| !Arc::ptr_eq(s, slice));
                    if list.is_empty() {
                        index.remove(ns, service);
                    }
                }
                changed.insert(ns, service, ());
            }
            false
        });
        changed
    }
}

/// Resolves backends from an up-to-date `Index`.
pub(super) struct Resolver<'a> {
    index: &'a Index,
}

fn namespace(ns: &Option<String>) -> &str {
    ns.as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

impl<'a> Resolver<'a> {
    pub fn new(index: &'a Index) -> Self {
        Self { index }
    }

    /// The backend for `r` selecting with `strategy` (`key` signs sticky cookies).
    pub fn resolve(
        &self,
        r: &ServiceBackendRef,
        strategy: Strategy,
        key: &SessionKey,
        diags: &mut Vec<Diagnostic>,
    ) -> (Backend, Option<Problem>) {
        let (endpoints, unavailable, problem) = match self.endpoints(r, diags) {
            Ok(endpoints) => {
                let unavailable = endpoints
                    .is_empty()
                    .then(|| format!("no ready endpoints for {r}"));
                (endpoints, unavailable, None)
            }
            Err(problem) => (Vec::new(), Some(problem.reason.clone()), Some(problem)),
        };
        let backend = Backend::with_strategy(r.clone(), endpoints, unavailable, strategy, key);
        (backend, problem)
    }

    fn endpoints(
        &self,
        r: &ServiceBackendRef,
        diags: &mut Vec<Diagnostic>,
    ) -> Result<Vec<SocketAddr>, Problem> {
        // Only built for a problem: resolving 10,000 backends allocates no name.
        let service_name = || format!("{}/{}", r.namespace, r.service);
        let found = self.index.services.get(&r.namespace, &r.service);
        let Some(service) = found else {
            return Err(Problem {
                field: "name",
                reason: format!("service {} not found", service_name()),
            });
        };
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Err(Problem {
                field: "name",
                reason: format!(
                    "service {} is of type ExternalName, not supported",
                    service_name()
                ),
            });
        }
        let port = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter(|p| matches!(p.protocol.as_deref(), None | Some("TCP")))
            .find(|p| match &r.port {
                ServicePortRef::Number(n) => p.port == *n,
                ServicePortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
            });
        let Some(port) = port else {
            return Err(Problem {
                field: "port",
                reason: format!(
                    "service port {} not found in Service {}",
                    r.port,
                    service_name()
                ),
            });
        };
        let mut endpoints = Vec::new();
        for slice in (self.index.slices.get(&r.namespace, &r.service))
            .into_iter()
            .flatten()
        {
            slice_endpoints(slice, port, &mut endpoints, diags);
        }
        endpoints.sort();
        endpoints.dedup();
        Ok(endpoints)
    }
}

/// The endpoints of one slice for one Service port that may take new requests: `ready` (when
/// the slice does not say, `serving`; when neither says, ready, as the EndpointSlice API asks
/// consumers to assume) and not `terminating`. A terminating endpoint that is still `serving`
/// finishes what it has but gets nothing new.
fn slice_endpoints(
    slice: &EndpointSlice,
    port: &ServicePort,
    out: &mut Vec<SocketAddr>,
    diags: &mut Vec<Diagnostic>,
) {
    // Only built for a diagnostic.
    let me = || {
        ObjectRef::new(
            "EndpointSlice",
            namespace(&slice.metadata.namespace),
            slice.metadata.name.as_deref().unwrap_or(""),
        )
    };
    if slice.address_type == "FQDN" {
        let reason = "addressType FQDN is not supported; slice skipped".to_owned();
        diags.push(Diagnostic::new(&me(), "addressType".to_owned(), reason));
        return;
    }
    // Service and slice ports pair up by name; an unnamed port is `None` or "" on either side.
    let wanted = port.name.as_deref().unwrap_or("");
    let found = slice
        .ports
        .iter()
        .flatten()
        .enumerate()
        .find(|(_, p)| p.name.as_deref().unwrap_or("") == wanted);
    let Some((i, slice_port)) = found else {
        return; // this slice serves other ports only
    };
    let number = match slice_port.port {
        Some(n @ 1..=65535) => n as u16,
        other => {
            let reason = match other {
                Some(n) => format!("port {n} is out of range; slice skipped"),
                None => "port has no number; slice skipped".to_owned(),
            };
            diags.push(Diagnostic::new(&me(), format!("ports[{i}].port"), reason));
            return;
        }
    };
    for (e, endpoint) in slice.endpoints.iter().flatten().enumerate() {
        let conditions = endpoint.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready.or(c.serving)) != Some(false);
        let terminating = conditions.and_then(|c| c.terminating) == Some(true);
        if !ready || terminating {
            continue;
        }
        for (a, address) in endpoint.addresses.iter().enumerate() {
            match address.parse::<IpAddr>() {
                Ok(ip) => out.push(SocketAddr::new(ip, number)),
                Err(_) => diags.push(Diagnostic::new(
                    &me(),
                    format!("endpoints[{e}].addresses[{a}]"),
                    format!("invalid IP address {address:?}; skipped"),
                )),
            }
        }
    }
}
