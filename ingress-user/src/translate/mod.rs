//! `Inputs` → `Snapshot` plus diagnostics. Pure: no I/O, no logging, no clock; equal inputs in
//! any order give equal snapshots and equal diagnostics.
//!
//! Flow: `classes` picks the Ingresses that are ours (IngressClass rules, `Options::classes`;
//! the others are ignored without a word); `routes::ingress_routes` turns each served Ingress's
//! rules into route drafts (hosts checked, wildcard included; paths checked, regexes compiled;
//! the strategy from the Ingress's annotations, see `annotations`), kept per Ingress by
//! `route_reuse`; `routes::collect` settles conflicts and picks the oldest
//! `spec.defaultBackend`; the distinct (`ServiceBackendRef`, `Strategy`, `UpstreamOptions`) keys
//! of the winners, in key-hash order, become `Snapshot::backends` (`reuse` over
//! `backends::Index`; routes naming the same Service port the same way share one `Backend` and
//! its selection state); the daemon's `--default-backend` (`Options`) is resolved the same way
//! when no Ingress sets one; finally the drafts become each host's `HostRoutes` (sorted and
//! indexed for `proxy::router::find`; an unchanged host's are the previous build's,
//! `route_reuse`). `tls::collect` builds the TLS hosts and their certificates from the served
//! Ingresses' `spec.tls` and the Secrets. Anything invalid is left out with a `Diagnostic`
//! naming the object and field; the rest is built as if it were absent.
use std::fmt;

use crate::{
    model::{ObjectRef, PathKind, ServiceBackendRef, Snapshot, Strategy, UpstreamOptions},
    proxy::balance::SessionKey,
    source::Inputs,
};

pub mod annotations;
mod backends;
pub mod classes;
#[cfg(test)]
mod options_tests;
mod reuse;
#[cfg(test)]
mod reuse_tests;
mod route_reuse;
mod routes;
#[cfg(test)]
mod tests;
pub mod tls;
#[cfg(test)]
mod tls_tests;

pub(crate) use crate::source::DEFAULT_NAMESPACE;
pub(crate) use backends::SERVICE_NAME_LABEL;
pub use classes::{ClassOptions, CONTROLLER};

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

/// A plausible Kubernetes object name (lowercase DNS subdomain characters, at most 253).
pub fn object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Daemon-wide settings that shape the snapshot.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--default-backend`: served when no rule and no Ingress default backend matches.
    pub default_backend: Option<ServiceBackendRef>,
    /// `--load-balance`: the strategy of backends whose Ingress does not choose (`RoundRobin` or
    /// `Ewma`).
    pub load_balance: Strategy,
    /// Keys persistent sticky-session cookies.
    pub session_key: SessionKey,
    /// Which Ingresses are ours (IngressClass rules); the default is standalone's.
    pub classes: ClassOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            default_backend: None,
            load_balance: Strategy::RoundRobin,
            session_key: SessionKey::default(),
            classes: ClassOptions::default(),
        }
    }
}

/// The object diagnostics about `--default-backend` name: the Service it points at.
fn flag_object(r: &ServiceBackendRef) -> ObjectRef {
    ObjectRef::new("Service", r.namespace.clone(), r.service.clone())
}

/// `translate_with` and the default `Options`.
pub fn translate(inputs: &Inputs) -> (Snapshot, Vec<Diagnostic>) {
    translate_with(inputs, &Options::default())
}

/// Builds the snapshot (generation 0: `publish` numbers it) and the sorted diagnostics, from
/// scratch.
pub fn translate_with(inputs: &Inputs, options: &Options) -> (Snapshot, Vec<Diagnostic>) {
    Translator::new(options.clone()).translate(inputs)
}

/// Rebuilds snapshots one after the other with the same `Options`, reusing what the previous
/// build made from objects that did not change (`reuse` for backends, `route_reuse` for each
/// Ingress's checked routes and each host's route table): each result equals `translate_with` of
/// the same inputs.
#[derive(Debug)]
pub struct Translator {
    options: Options,
    backends: reuse::BackendCache,
    routes: route_reuse::RouteCache,
}

impl Translator {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            backends: reuse::BackendCache::default(),
            routes: route_reuse::RouteCache::default(),
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Builds the snapshot (generation 0: `publish` numbers it) and the sorted diagnostics.
    pub fn translate(&mut self, inputs: &Inputs) -> (Snapshot, Vec<Diagnostic>) {
        let Self {
            options,
            backends,
            routes,
        } = self;
        build(inputs, options, backends, routes)
    }
}

fn build(
    inputs: &Inputs,
    options: &Options,
    cache: &mut reuse::BackendCache,
    route_cache: &mut route_reuse::RouteCache,
) -> (Snapshot, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let ingresses = classes::served(&inputs.ingresses, &inputs.ingress_classes, &options.classes);
    let units = route_cache.units(&ingresses, &options.load_balance);
    for unit in &units {
        diags.extend_from_slice(&unit.diags);
    }
    let collected = routes::collect(&units, &mut diags);
    // The daemon's default backend stands in when no Ingress sets one.
    let flag_default = match (&collected.default_backend, &options.default_backend) {
        (None, Some(service)) => Some(routes::Draft {
            host: None,
            path: "/".to_owned(),
            kind: PathKind::Prefix,
            regex: None,
            service: service.clone(),
            strategy: options.load_balance.clone(),
            upstream: UpstreamOptions::default(),
            ingress: flag_object(service),
            at: routes::Declared::Flag,
            key_hash: routes::key_hash(service, &options.load_balance, &UpstreamOptions::default()),
        }),
        _ => None,
    };
    let default_draft = collected.default_backend.or(flag_default.as_ref());

    // The distinct (service, strategy, upstream) keys in sorted order (hash first), and which
    // of them each draft (the routes, then the default backend) names.
    let drafts: Vec<&routes::Draft> = (collected.routes.iter().copied())
        .chain(default_draft)
        .collect();
    let mut keyed: Vec<_> = (drafts.iter().enumerate())
        .map(|(i, d)| ((d.key_hash, &d.service, &d.strategy, &d.upstream), i))
        .collect();
    keyed.sort_unstable();
    let mut wanted: Vec<reuse::Wanted<'_>> = Vec::new();
    let mut key_of = vec![0; drafts.len()];
    for (key, i) in keyed {
        if wanted.last() != Some(&key) {
            wanted.push(key);
        }
        key_of[i] = wanted.len() - 1;
    }
    let built = cache.resolve(
        &wanted,
        &inputs.services,
        &inputs.endpoint_slices,
        &inputs.secrets,
        &options.session_key,
        &mut diags,
    );
    let backends = built.iter().map(|b| b.backend.clone()).collect();
    // Each draft's backend; a problem of that backend is reported on the draft's field.
    let resolved: Vec<_> = (drafts.iter().zip(&key_of))
        .map(|(&d, &k)| {
            let b = &built[k];
            if let Some(p) = &b.problem {
                let field = d.service_field(p.field);
                diags.push(Diagnostic::new(&d.ingress, field, p.reason.clone()));
            }
            (d, &b.backend)
        })
        .collect();
    let (resolved, default_backend) = match default_draft {
        Some(_) => {
            let (d, b) = resolved[resolved.len() - 1];
            (
                &resolved[..resolved.len() - 1],
                Some(route_reuse::path_route(d, b)),
            )
        }
        None => (&resolved[..], None),
    };
    let routes = route_cache.table(resolved, default_backend);
    let tls = tls::collect(&ingresses, &inputs.secrets, &mut diags);

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
