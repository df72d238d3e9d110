//! `Inputs` → `Snapshot` plus diagnostics. Pure: no I/O, no logging, no clock; equal inputs in
//! any order give equal snapshots and equal diagnostics.
//!
//! Flow: `routes::collect` turns every Ingress rule (and default backend) into route drafts and
//! settles conflicts; the distinct `ServiceBackendRef`s of the winners, in sorted order, become
//! `Snapshot::backends` through `backends::Resolver` (so two routes naming the same Service port
//! share one `Backend` and its round-robin cursor); finally the drafts become each host's
//! `HostRoutes`, sorted for `proxy::router::find`. `tls::collect` builds the TLS hosts and their
//! certificates from `spec.tls` and the Secrets. Anything invalid is left out with a
//! `Diagnostic` naming the object and field; the rest is built as if it were absent.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use crate::{
    model::{BackendIdx, HostRoutes, ObjectRef, PathRoute, RouteTable, Snapshot},
    source::Inputs,
};

mod backends;
mod routes;
#[cfg(test)]
mod tests;
pub mod tls;
#[cfg(test)]
mod tls_tests;

pub(crate) use crate::source::DEFAULT_NAMESPACE;

/// Why (part of) an object was left out or cannot be served.
/// Displayed as `Ingress default/cafe: spec.rules[0].http.paths[1].backend.service.port: reason`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diagnostic {
    pub object: ObjectRef,
    /// Path of the offending field in the object, e.g. `spec.rules[0].host`; may be empty.
    pub field: String,
    pub reason: String,
}

impl Diagnostic {
    pub fn new(object: &ObjectRef, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            object: object.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.object, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.object, self.field, self.reason)
        }
    }
}

/// Builds the snapshot (generation 0: `publish` numbers it) and the sorted diagnostics.
pub fn translate(inputs: &Inputs) -> (Snapshot, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let drafts = routes::collect(&inputs.ingresses, &mut diags);

    let resolver = backends::Resolver::new(&inputs.services, &inputs.endpoint_slices);
    let wanted: BTreeSet<_> = drafts.iter().map(|d| &d.service).collect();
    let mut backends = Vec::with_capacity(wanted.len());
    let mut index = BTreeMap::new();
    for service in wanted {
        let (backend, problem) = resolver.resolve(service, &mut diags);
        index.insert(service, (BackendIdx(backends.len()), problem));
        backends.push(backend);
    }

    let mut routes = RouteTable::default();
    for d in &drafts {
        let (idx, problem) = &index[&d.service];
        if let Some(p) = problem {
            let field = format!("{}.service.{}", d.backend_field, p.field);
            diags.push(Diagnostic::new(&d.ingress, field, p.reason.clone()));
        }
        let host_routes = match &d.host {
            Some(h) => routes.hosts.entry(h.clone()).or_default(),
            None => &mut routes.any_host,
        };
        host_routes.paths.push(PathRoute {
            path: d.path.clone(),
            kind: d.kind,
            backend: *idx,
            ingress: d.ingress.clone(),
        });
    }
    sort_routes(&mut routes.any_host);
    routes.hosts.values_mut().for_each(sort_routes);
    let tls = tls::collect(&inputs.ingresses, &inputs.secrets, &mut diags);

    diags.sort();
    diags.dedup();
    let snapshot = Snapshot {
        generation: 0,
        routes,
        backends,
        tls,
    };
    (snapshot, diags)
}

/// Longest path first, `Exact` before `Prefix` on equal length (what `router::find` relies on);
/// then by path, so the order is total.
fn sort_routes(host: &mut HostRoutes) {
    host.paths
        .sort_by(|a, b| (b.path.len(), a.kind, &a.path).cmp(&(a.path.len(), b.kind, &b.path)));
}
