//! `Inputs` → `Snapshot` plus diagnostics. Pure: no I/O, no logging, no clock; equal inputs in
//! any order give equal snapshots and equal diagnostics.
//!
//! Flow: `classes` picks the Ingresses that are ours (IngressClass rules, `Options::classes`;
//! the others are ignored without a word); `routes::collect` turns every served Ingress rule
//! into route drafts (hosts checked, wildcard included; paths checked, regexes compiled; the
//! strategy from the Ingress's annotations, see `annotations`) and settles conflicts, and picks
//! the oldest `spec.defaultBackend`; the distinct (`ServiceBackendRef`, `Strategy`) pairs of the
//! winners, in sorted order, become `Snapshot::backends` through `backends::Resolver` (so routes
//! naming the same Service port the same way share one `Backend` and its selection state); the
//! daemon's `--default-backend` (`Options`) is resolved the same way when no Ingress sets one;
//! finally the drafts become each host's `HostRoutes` (sorted and indexed for
//! `proxy::router::find`). `tls::collect` builds the TLS hosts and their certificates from the
//! served Ingresses' `spec.tls` and the Secrets. Anything invalid is left out with a `Diagnostic`
//! naming the object and field; the rest is built as if it were absent.
use std::{collections::HashMap, fmt};

use crate::{
    model::{
        BackendIdx, HostRoutes, ObjectRef, PathKind, PathRoute, RouteTable, ServiceBackendRef,
        Snapshot, Strategy, UpstreamOptions,
    },
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
/// build resolved from objects that did not change (`reuse`): each result equals
/// `translate_with` of the same inputs.
#[derive(Debug)]
pub struct Translator {
    options: Options,
    backends: reuse::BackendCache,
}

impl Translator {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            backends: reuse::BackendCache::default(),
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Builds the snapshot (generation 0: `publish` numbers it) and the sorted diagnostics.
    pub fn translate(&mut self, inputs: &Inputs) -> (Snapshot, Vec<Diagnostic>) {
        build(inputs, &self.options, &mut self.backends)
    }
}

fn build(
    inputs: &Inputs,
    options: &Options,
    cache: &mut reuse::BackendCache,
) -> (Snapshot, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let ingresses = classes::served(&inputs.ingresses, &inputs.ingress_classes, &options.classes);
    let collected = routes::collect(&ingresses, &options.load_balance, &mut diags);
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
            backend_field: "--default-backend".to_owned(),
        }),
        _ => None,
    };
    let default_draft = collected.default_backend.as_ref().or(flag_default.as_ref());

    let resolver = backends::Resolver::new(&inputs.services, &inputs.endpoint_slices);
    // The distinct (service, strategy, upstream) keys in sorted order; a route finds its
    // backend's index by binary search (a sorted Vec: no tree nodes to allocate per rebuild).
    let mut wanted: Vec<_> = collected
        .routes
        .iter()
        .chain(default_draft)
        .map(|d| (&d.service, &d.strategy, &d.upstream))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let built = cache.resolve(
        &wanted,
        &resolver,
        &inputs.secrets,
        &options.session_key,
        &mut diags,
    );
    let backends = built.iter().map(|b| b.backend.clone()).collect();
    let mut route = |d: &routes::Draft| {
        let i = wanted
            .binary_search(&(&d.service, &d.strategy, &d.upstream))
            .expect("every draft's backend is wanted");
        let problem = &built[i].problem;
        if let Some(p) = problem {
            let field = match d.backend_field.as_str() {
                "--default-backend" => format!("--default-backend ({})", p.field),
                f => format!("{f}.service.{}", p.field),
            };
            diags.push(Diagnostic::new(&d.ingress, field, p.reason.clone()));
        }
        PathRoute {
            host: d.host.clone(),
            path: d.path.clone(),
            kind: d.kind,
            backend: BackendIdx(i),
            ingress: d.ingress.clone(),
            regex: d.regex.clone(),
            metric: crate::model::RouteMetric::new(&d.ingress, d.host.as_deref(), &d.path),
        }
    };

    let mut hosts: HashMap<String, Vec<PathRoute>> = HashMap::new();
    let mut wildcards: HashMap<String, Vec<PathRoute>> = HashMap::new();
    let mut any_host = Vec::new();
    for d in &collected.routes {
        let path = route(d);
        match d.host.as_deref() {
            None => any_host.push(path),
            Some(h) => match h.strip_prefix("*.") {
                Some(rest) => wildcards.entry(rest.to_owned()).or_default().push(path),
                None => hosts.entry(h.to_owned()).or_default().push(path),
            },
        }
    }
    let default_backend = default_draft.map(&mut route);
    let compile = |m: HashMap<String, Vec<PathRoute>>| {
        m.into_iter()
            .map(|(h, paths)| (h, HostRoutes::new(paths)))
            .collect()
    };
    let routes = RouteTable {
        hosts: compile(hosts),
        wildcards: compile(wildcards),
        any_host: HostRoutes::new(any_host),
        default_backend,
    };
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
