//! The snapshot: the complete, immutable configuration that the proxy workers and the data plane
//! serve, built from scratch by `translate` on every change and published whole by `publish`.
//!
//! Nothing here does I/O. A worker loads the current `Arc<Snapshot>` once per request and routes
//! with `proxy::router::find`; backend selection state (the round-robin cursor) lives inside the
//! snapshot, so it is built once per update and shared by every worker.
//!
//! TLS: `TlsTable` maps the hosts named in `spec.tls` to their certificates (parsed and checked by
//! `translate`); `proxy::tls` resolves SNI against the current snapshot's table on every handshake,
//! and the forwarder consults it to redirect plain HTTP to HTTPS.
use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use rustls::sign::CertifiedKey;

/// A Kubernetes object named in diagnostics, logs and routes: `Kind namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &'static str, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The port of a Service as an Ingress backend names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServicePortRef {
    Number(i32),
    Name(String),
}

impl fmt::Display for ServicePortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServicePortRef::Number(n) => write!(f, "{n}"),
            ServicePortRef::Name(name) => f.write_str(name),
        }
    }
}

/// A backend as an Ingress names it: a Service port in the Ingress's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceBackendRef {
    pub namespace: String,
    pub service: String,
    pub port: ServicePortRef,
}

impl fmt::Display for ServiceBackendRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service {}/{} port {}",
            self.namespace, self.service, self.port
        )
    }
}

/// Index of a `Backend` in `Snapshot::backends`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendIdx(pub usize);

/// A resolved backend: the ready endpoints of one Service port, with its selection state.
#[derive(Debug)]
pub struct Backend {
    pub service: ServiceBackendRef,
    /// Ready endpoints, sorted and deduplicated (so equal inputs give equal snapshots).
    pub endpoints: Vec<SocketAddr>,
    /// Why there are no endpoints, when there are none (answered as 503 and logged).
    pub unavailable: Option<String>,
    /// Round-robin cursor, shared by every worker for this snapshot.
    cursor: AtomicUsize,
}

impl Backend {
    pub fn new(
        service: ServiceBackendRef,
        endpoints: Vec<SocketAddr>,
        unavailable: Option<String>,
    ) -> Self {
        Self {
            service,
            endpoints,
            unavailable,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Round robin over the ready endpoints; `None` when there are none.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let n = self.cursor.fetch_add(1, Ordering::Relaxed);
        Some(self.endpoints[n % self.endpoints.len()])
    }
}

/// How an Ingress path matches (`spec.rules[].http.paths[].pathType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathKind {
    /// The request path equals the rule's path.
    Exact,
    /// The rule's path is an element-wise prefix of the request path (`/foo` matches `/foo` and
    /// `/foo/bar`, not `/foobar`); a trailing slash on either side is ignored.
    Prefix,
}

/// One path of one host, pointing at one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRoute {
    /// As written in the Ingress (for `Prefix`, normalized: no trailing slash except for `/`).
    pub path: String,
    pub kind: PathKind,
    pub backend: BackendIdx,
    /// The Ingress this route came from.
    pub ingress: ObjectRef,
}

/// The routes of one host, precompiled for lookup: longest path first, `Exact` before `Prefix` on
/// equal length (this order is what `router::find` relies on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostRoutes {
    pub paths: Vec<PathRoute>,
}

/// All routes: exact host names (lowercase), and the rules that name no host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub hosts: HashMap<String, HostRoutes>,
    pub any_host: HostRoutes,
}

/// Equal when they serve the same endpoints for the same reason; the cursor is selection state,
/// not configuration, and is ignored.
impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        self.service == other.service
            && self.endpoints == other.endpoints
            && self.unavailable == other.unavailable
    }
}

impl Eq for Backend {}

/// Everything a worker needs to serve a request, and the data plane to steer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Bumped by `publish` on every swap; 0 for the empty snapshot served before the first load.
    pub generation: u64,
    pub routes: RouteTable,
    pub backends: Vec<Backend>,
    pub tls: TlsTable,
}

impl Snapshot {
    pub fn backend(&self, idx: BackendIdx) -> &Backend {
        &self.backends[idx.0]
    }
}

/// A certificate chain (leaf first) with its private key, ready for rustls. Two are equal when
/// their chains are (the key was checked against the leaf when it was built).
#[derive(Clone, Debug)]
pub struct Certificate(pub Arc<CertifiedKey>);

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.cert == other.0.cert
    }
}

impl Eq for Certificate {}

/// How one host named in some Ingress's `spec.tls` is served over TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsHost {
    /// `None` when the entry names no Secret or its Secret is unusable (a diagnostic says why):
    /// the default certificate is served.
    pub certificate: Option<Certificate>,
    /// The Secret named by the winning `spec.tls` entry, if any.
    pub secret: Option<ObjectRef>,
    /// The Ingress whose `spec.tls` entry won this host.
    pub ingress: ObjectRef,
    /// Plain-HTTP requests for this host are answered with `308` to `https://`.
    pub redirect: bool,
}

/// The TLS hosts: exact names (lowercase) and wildcards (`*.example.com` stored under its suffix
/// `example.com`; it matches exactly one more DNS label).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsTable {
    pub exact: HashMap<String, TlsHost>,
    pub wildcard: HashMap<String, TlsHost>,
}

impl TlsTable {
    /// The entry for `host` (lowercase, no port, no trailing dot): the exact name first, then the
    /// wildcard whose suffix follows the first label. The first label must be a plain DNS label,
    /// so nothing else (`a/b.example.com`, `a.b.example.com`) matches `*.example.com`.
    pub fn find(&self, host: &str) -> Option<&TlsHost> {
        if let Some(h) = self.exact.get(host) {
            return Some(h);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let (label, suffix) = host.split_once('.')?;
        let plain = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            return None;
        }
        self.wildcard.get(suffix)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}
