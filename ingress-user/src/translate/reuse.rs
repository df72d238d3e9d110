//! Reuse of resolved backends from one rebuild to the next.
//!
//! A `Backend` depends only on its key (Service port, strategy, upstream options), the daemon's
//! `Options` (fixed for a `Translator`), the Service and EndpointSlices of that Service (as
//! `backends::Index` holds them) and, for `proxy-ssl-secret`, one Secret. `Index::update` says
//! which Services' objects changed since the previous build (sources hand over the same `Arc` for
//! an object that did not change), so a backend of a Service that did not change, whose CA Secret
//! (if any) is pointer-identical to the previous build's, is what a fresh resolution would give:
//! the previous `Arc<Backend>` is taken as is (with the `Problem` and diagnostics its resolution
//! gave). The Secret is held here, so its address cannot be reused by another object while it is
//! compared.
//!
//! Flow: `BackendCache::resolve` updates the index, then walks the sorted wanted keys and the
//! previous build's entries (sorted the same way) together; an entry whose key is still wanted
//! and whose objects did not change is moved into the new list, anything else is resolved
//! afresh; entries no longer wanted are dropped. The new list replaces the old one. A reused
//! `Backend` is shared by the two snapshots, selection and health state included
//! (`Snapshot::inherit` skips it).
use std::sync::Arc;

use k8s_openapi::api::{
    core::v1::{Secret, Service},
    discovery::v1::EndpointSlice,
};

use super::{
    backends::{Index, Problem, Resolver},
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

/// One resolved backend and the CA Secret it was resolved with.
#[derive(Debug)]
pub(super) struct Built {
    hash: u64,
    service: ServiceBackendRef,
    strategy: Strategy,
    upstream: UpstreamOptions,
    /// The Secret named by `proxy-ssl-secret`, when there is one and it was found.
    ca: Option<Arc<Secret>>,
    pub backend: Arc<Backend>,
    /// Reported on every route naming the backend.
    pub problem: Option<Problem>,
    /// What resolving it reported (bad slice content, unusable CA Secret).
    diags: Vec<Diagnostic>,
}

/// The previous build's backends, sorted by key (hash first), and the index they were resolved
/// from.
#[derive(Debug, Default)]
pub(super) struct BackendCache {
    built: Vec<Built>,
    index: Index,
}

impl BackendCache {
    /// The backends of `wanted` (sorted, distinct), in that order, each reused from the previous
    /// build when its objects did not change, else resolved from `services` and `slices` (the
    /// whole current sets); their diagnostics go to `diags`.
    pub fn resolve(
        &mut self,
        wanted: &[Wanted<'_>],
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        secrets: &[Arc<Secret>],
        key: &SessionKey,
        diags: &mut Vec<Diagnostic>,
    ) -> &[Built] {
        let changed = self.index.update(services, slices);
        let resolver = Resolver::new(&self.index);
        let mut previous = std::mem::take(&mut self.built).into_iter().peekable();
        let mut built = Vec::with_capacity(wanted.len());
        for &w in wanted {
            while previous.next_if(|b| b.key() < w).is_some() {}
            let ca =
                w.3.ssl_secret
                    .as_ref()
                    .and_then(|r| tls::find_secret(secrets, r));
            let same_ca = |b: &Built| match (&b.ca, ca) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            let entry = match previous.next_if(|b| b.key() == w) {
                Some(b) if !changed.contains(&w.1.namespace, &w.1.service) && same_ca(&b) => b,
                _ => fresh(w, ca.cloned(), &resolver, key),
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
fn fresh(
    w: Wanted<'_>,
    ca: Option<Arc<Secret>>,
    resolver: &Resolver<'_>,
    key: &SessionKey,
) -> Built {
    let (hash, service, strategy, upstream) = w;
    let mut diags = Vec::new();
    let (mut backend, problem) = resolver.resolve(service, strategy.clone(), key, &mut diags);
    backend.upstream = upstream.clone();
    if let Some(secret) = &upstream.ssl_secret {
        match tls::upstream_ca(ca.as_deref()) {
            Ok(pem) => backend.upstream.ssl_ca = Some(pem),
            Err(reason) => diags.push(Diagnostic::new(secret, "data[ca.crt]", reason)),
        }
    }
    Built {
        hash,
        service: service.clone(),
        strategy: strategy.clone(),
        upstream: upstream.clone(),
        ca,
        backend: Arc::new(backend),
        problem,
        diags,
    }
}
