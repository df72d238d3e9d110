//! Reuse of resolved backends from one rebuild to the next.
//!
//! A `Backend` depends only on its key (Service port, strategy, upstream options), the daemon's
//! `Options` (fixed for a `Translator`), the Service and EndpointSlices of that Service (as
//! `backends::Resolver` finds them) and, for `proxy-ssl-secret`, one Secret. Sources hand over
//! the same `Arc` for an object that did not change, so when every one of those objects is
//! pointer-identical (`Arc::ptr_eq`) to the previous build's, the previous `Arc<Backend>` is
//! what a fresh resolution would give, and is taken as is (with the `Problem` and diagnostics
//! its resolution gave). The objects are held here, so an address cannot be reused by another
//! object while it is compared.
//!
//! Flow: `BackendCache::resolve` walks the sorted wanted keys and the previous build's entries
//! (sorted the same way) together; an entry whose key is still wanted and whose objects are the
//! same is moved into the new list, anything else is resolved afresh; entries no longer wanted
//! are dropped. The new list replaces the old one. A reused `Backend` is shared by the two
//! snapshots, selection and health state included (`Snapshot::inherit` skips it).
use std::sync::Arc;

use k8s_openapi::api::{
    core::v1::{Secret, Service},
    discovery::v1::EndpointSlice,
};

use super::{
    backends::{Problem, Resolver},
    tls, Diagnostic,
};
use crate::{
    model::{Backend, ServiceBackendRef, Strategy, UpstreamOptions},
    proxy::balance::SessionKey,
};

/// What a backend is keyed by: the routes naming it share it. First the key's hash
/// (`routes::Draft::key_hash`), so that sorting and comparing keys rarely compares names.
pub(super) type Wanted<'a> = (
    u64,
    &'a ServiceBackendRef,
    &'a Strategy,
    &'a UpstreamOptions,
);

/// One resolved backend and the objects it was resolved from.
#[derive(Debug)]
pub(super) struct Built {
    hash: u64,
    service: ServiceBackendRef,
    strategy: Strategy,
    upstream: UpstreamOptions,
    inputs: Objects,
    pub backend: Arc<Backend>,
    /// Reported on every route naming the backend.
    pub problem: Option<Problem>,
    /// What resolving it reported (bad slice content, unusable CA Secret).
    diags: Vec<Diagnostic>,
}

/// The objects a backend was resolved from.
#[derive(Debug)]
struct Objects {
    service: Option<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    /// The Secret named by `proxy-ssl-secret`, when there is one and it was found.
    ca: Option<Arc<Secret>>,
}

impl Objects {
    fn same(
        &self,
        service: Option<&Arc<Service>>,
        slices: &[&Arc<EndpointSlice>],
        ca: Option<&Arc<Secret>>,
    ) -> bool {
        fn same_opt<T>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
        }
        same_opt(self.service.as_ref(), service)
            && same_opt(self.ca.as_ref(), ca)
            && self.slices.len() == slices.len()
            && self
                .slices
                .iter()
                .zip(slices)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// The previous build's backends, sorted by key (hash first).
#[derive(Debug, Default)]
pub(super) struct BackendCache {
    built: Vec<Built>,
}

impl BackendCache {
    /// The backends of `wanted` (sorted, distinct), in that order, each reused from the previous
    /// build when its objects are the same, else resolved; their diagnostics go to `diags`.
    pub fn resolve(
        &mut self,
        wanted: &[Wanted<'_>],
        resolver: &Resolver<'_>,
        secrets: &[Arc<Secret>],
        key: &SessionKey,
        diags: &mut Vec<Diagnostic>,
    ) -> &[Built] {
        let mut previous = std::mem::take(&mut self.built).into_iter().peekable();
        let mut built = Vec::with_capacity(wanted.len());
        for &w in wanted {
            while previous.next_if(|b| b.key() < w).is_some() {}
            let (service, slices) = resolver.inputs(w.1);
            let ca =
                w.3.ssl_secret
                    .as_ref()
                    .and_then(|r| tls::find_secret(secrets, r));
            let entry = match previous.next_if(|b| b.key() == w) {
                Some(b) if b.inputs.same(service, slices, ca) => b,
                _ => {
                    let objects = Objects {
                        service: service.cloned(),
                        slices: slices.iter().map(|s| Arc::clone(s)).collect(),
                        ca: ca.cloned(),
                    };
                    fresh(w, objects, resolver, key)
                }
            };
            diags.extend(entry.diags.iter().cloned());
            built.push(entry);
        }
        self.built = built;
        &self.built
    }
}

impl Built {
    fn key(&self) -> Wanted<'_> {
        (self.hash, &self.service, &self.strategy, &self.upstream)
    }
}

/// Resolves one backend (what `translate` did for every backend before reuse).
fn fresh(w: Wanted<'_>, inputs: Objects, resolver: &Resolver<'_>, key: &SessionKey) -> Built {
    let (hash, service, strategy, upstream) = w;
    let mut diags = Vec::new();
    let (mut backend, problem) = resolver.resolve(service, strategy.clone(), key, &mut diags);
    backend.upstream = upstream.clone();
    if let Some(secret) = &upstream.ssl_secret {
        match tls::upstream_ca(inputs.ca.as_deref()) {
            Ok(pem) => backend.upstream.ssl_ca = Some(pem),
            Err(reason) => diags.push(Diagnostic::new(secret, "data[ca.crt]", reason)),
        }
    }
    Built {
        hash,
        service: service.clone(),
        strategy: strategy.clone(),
        upstream: upstream.clone(),
        inputs,
        backend: Arc::new(backend),
        problem,
        diags,
    }
}
