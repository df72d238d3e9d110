//! Service backend references → `Backend`s: the Service port they name and its ready endpoints.
//!
//! `Resolver` indexes the Services by namespace/name and the EndpointSlices by namespace and
//! `kubernetes.io/service-name` label once; `resolve` then turns one `ServiceBackendRef` into a
//! `Backend`. A backend that cannot be served (no Service, no such port, ExternalName) still
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

pub(super) struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Arc<Service>>,
    /// (namespace, service name) → slices, sorted by name.
    slices: HashMap<(&'a str, &'a str), Vec<&'a Arc<EndpointSlice>>>,
}

fn namespace(ns: &Option<String>) -> &str {
    ns.as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

impl<'a> Resolver<'a> {
    pub fn new(services: &'a [Arc<Service>], slices: &'a [Arc<EndpointSlice>]) -> Self {
        let mut by_name = HashMap::with_capacity(services.len());
        for s in services {
            let name = s.metadata.name.as_deref().unwrap_or("");
            // Sources never hand over duplicates; if one does, the first one wins.
            by_name
                .entry((namespace(&s.metadata.namespace), name))
                .or_insert(s);
        }
        let mut by_service: HashMap<_, Vec<&Arc<EndpointSlice>>> =
            HashMap::with_capacity(slices.len());
        for slice in slices {
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            by_service
                .entry((namespace(&slice.metadata.namespace), service.as_str()))
                .or_default()
                .push(slice);
        }
        for list in by_service.values_mut() {
            list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        Self {
            services: by_name,
            slices: by_service,
        }
    }

    /// The objects `resolve(r, ..)` reads: the Service (if any) and its slices, sorted by name.
    /// A backend resolved from pointer-identical objects is the same (`reuse`).
    pub fn inputs<'s>(
        &'s self,
        r: &'s ServiceBackendRef,
    ) -> (Option<&'s Arc<Service>>, &'s [&'s Arc<EndpointSlice>]) {
        let key = (r.namespace.as_str(), r.service.as_str());
        let slices = self.slices.get(&key).map_or(&[][..], |v| v.as_slice());
        (self.services.get(&key).copied(), slices)
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
        let key = (r.namespace.as_str(), r.service.as_str());
        // Only built for a problem: resolving 10,000 backends allocates no name.
        let service_name = || format!("{}/{}", r.namespace, r.service);
        let Some(service) = self.services.get(&key) else {
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
        for slice in self.slices.get(&key).into_iter().flatten() {
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
