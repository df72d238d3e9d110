//! The snapshot: the complete, immutable configuration that the proxy workers and the data plane
//! serve, built by `translate` on every change (backends whose objects did not change are shared
//! with the previous snapshot) and published whole by `publish`.
//!
//! Nothing here does I/O. A worker loads the current `Arc<Snapshot>` once per request and routes
//! with `proxy::router::find` (host maps and per-host path indexes built here, at snapshot build);
//! backend selection state (`proxy::balance::Balancer`: cursors, latency averages, hash rings)
//! lives inside the snapshot's `Backend`s, so it is built once per update and shared by every
//! worker; `Snapshot::inherit` carries the per-endpoint part of it (passive health, latency
//! averages, round-robin position) over from the snapshot it replaces.
//!
//! TLS: `TlsTable` maps the hosts named in `spec.tls` to their certificates (parsed and checked by
//! `translate`); `proxy::tls` resolves SNI against the current snapshot's table on every handshake,
//! and the forwarder consults it to redirect plain HTTP to HTTPS.
use std::{collections::HashMap, fmt, net::SocketAddr, sync::Arc};

use crate::proxy::{
    balance::{Balancer, Pick, RequestInfo, SessionKey},
    router::PathIndex,
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

/// A resolved backend: the ready endpoints of one Service port, with its selection strategy and
/// state. Routes naming the same Service port with the same strategy share one `Backend`.
#[derive(Debug)]
pub struct Backend {
    pub service: ServiceBackendRef,
    /// Ready endpoints, sorted and deduplicated (so equal inputs give equal snapshots).
    pub endpoints: Vec<SocketAddr>,
    /// Why there are no endpoints, when there are none (answered as 503 and logged).
    pub unavailable: Option<String>,
    /// How an endpoint is chosen (annotations of the Ingress, else the global default).
    pub strategy: Strategy,
    /// How requests are sent to the endpoints (annotations of the Ingress).
    pub upstream: UpstreamOptions,
    /// `service NS/NAME port P`, formatted once per snapshot for logs and metric labels.
    pub label: Arc<String>,
    /// Selection state, shared by every worker for this snapshot.
    balancer: Balancer,
}

impl Backend {
    /// A round-robin backend.
    pub fn new(
        service: ServiceBackendRef,
        endpoints: Vec<SocketAddr>,
        unavailable: Option<String>,
    ) -> Self {
        Self::with_strategy(
            service,
            endpoints,
            unavailable,
            Strategy::RoundRobin,
            &SessionKey::default(),
        )
    }

    /// A backend that selects with `strategy`; `key` signs sticky-session cookies.
    pub fn with_strategy(
        service: ServiceBackendRef,
        endpoints: Vec<SocketAddr>,
        unavailable: Option<String>,
        strategy: Strategy,
        key: &SessionKey,
    ) -> Self {
        let balancer = Balancer::new(&endpoints, &strategy, key);
        Self {
            label: Arc::new(service.to_string()),
            service,
            endpoints,
            unavailable,
            strategy,
            upstream: UpstreamOptions::default(),
            balancer,
        }
    }

    /// Chooses an endpoint for a request; `None` when there is none. Report the outcome on the
    /// returned `Pick` (`done`), so latency-aware strategies learn from it.
    pub fn pick(&self, req: &RequestInfo<'_>) -> Option<Pick<'_>> {
        self.balancer.pick(req)
    }

    /// Another endpoint than `failed`'s, for one retry after a connect failure.
    pub fn retry(&self, failed: &Pick<'_>) -> Option<Pick<'_>> {
        self.balancer.retry(failed)
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
    /// Ours to define: the path is a regular expression (`regex` crate syntax) anchored at the
    /// start of the request path, not at its end (`/api/v[0-9]+` matches `/api/v2/users`).
    ImplementationSpecific,
}

/// A compiled `ImplementationSpecific` path. Equal when the patterns are equal.
#[derive(Clone, Debug)]
pub struct PathRegex(pub regex::Regex);

impl PathRegex {
    /// Largest compiled program accepted for one path (a guard against pathological patterns).
    pub const SIZE_LIMIT: usize = 1 << 20;

    /// Compiles an `ImplementationSpecific` path: `^(?:pattern)`, case-sensitive.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        regex::RegexBuilder::new(&format!("^(?:{pattern})"))
            .size_limit(Self::SIZE_LIMIT)
            .build()
            .map(Self)
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for PathRegex {}

/// One path of one host, pointing at one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRoute {
    /// The rule's host as written (lowercase, `*.` for wildcards); `None` for rules without host.
    pub host: Option<String>,
    /// As written in the Ingress (for `Prefix`, normalized: no trailing slash except for `/`).
    pub path: String,
    pub kind: PathKind,
    /// One of `Snapshot::backends` (compared by value).
    pub backend: Arc<Backend>,
    /// The Ingress this route came from.
    pub ingress: ObjectRef,
    /// The compiled pattern of an `ImplementationSpecific` path (anchored at the start).
    pub regex: Option<PathRegex>,
    /// The route's metric labels, built once per snapshot (a request only bumps refcounts).
    pub metric: RouteMetric,
}

/// Label values of `xdp_ingress_route_requests_total` for one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMetric {
    /// `namespace/name` of the Ingress.
    pub ingress: Arc<String>,
    /// The rule's host (`*.example.com` for a wildcard, `*` for rules without host).
    pub host: Arc<String>,
    pub path: Arc<String>,
}

impl RouteMetric {
    pub fn new(ingress: &ObjectRef, host: Option<&str>, path: &str) -> Self {
        Self {
            ingress: Arc::new(format!("{}/{}", ingress.namespace, ingress.name)),
            host: Arc::new(host.unwrap_or("*").to_owned()),
            path: Arc::new(path.to_owned()),
        }
    }
}

/// The routes of one host, precompiled for lookup: `paths` sorted longest path first, then
/// `Exact` before `Prefix` before `ImplementationSpecific` on equal length, then by path; `index`
/// finds the best match without scanning them (see `router`). Build it with `HostRoutes::new`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostRoutes {
    pub paths: Vec<PathRoute>,
    pub index: PathIndex,
}

impl HostRoutes {
    /// Sorts `paths` and builds their lookup index.
    pub fn new(mut paths: Vec<PathRoute>) -> Self {
        paths.sort_by(|a, b| (b.path.len(), a.kind, &a.path).cmp(&(a.path.len(), b.kind, &b.path)));
        let index = PathIndex::build(&paths);
        Self { paths, index }
    }
}

/// All routes: exact host names (lowercase), wildcard hosts, the rules that name no host, and the
/// default backend for requests nothing else matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Each host's routes behind an `Arc`, so a rebuild that leaves a host alone shares them
    /// with the previous snapshot (`translate::Translator`).
    pub hosts: foldhash::HashMap<Arc<str>, Arc<HostRoutes>>,
    /// Wildcard hosts by the suffix after `*.` (`*.example.com` is under `example.com`).
    pub wildcards: foldhash::HashMap<Arc<str>, Arc<HostRoutes>>,
    pub any_host: Arc<HostRoutes>,
    /// The oldest Ingress's `spec.defaultBackend`, else the daemon's `--default-backend`.
    pub default_backend: Option<PathRoute>,
}

/// The protocol spoken to a backend's endpoints (`backend-protocol` annotation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendProtocol {
    /// HTTP/1.1 (upgrades such as WebSocket included).
    #[default]
    Http,
    /// HTTP/2 with prior knowledge, cleartext.
    H2c,
    /// HTTP/1.1 over TLS.
    Https,
    /// gRPC: HTTP/2 cleartext; the proxy's own failures are answered the gRPC way.
    Grpc,
}

/// How requests are sent to a backend, from the annotations of the Ingress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamOptions {
    pub protocol: BackendProtocol,
    /// `proxy-ssl-verify: on`: verify the backend's certificate (HTTPS).
    pub ssl_verify: bool,
    /// `proxy-ssl-name`: the name sent as SNI and verified in the backend's certificate (HTTPS);
    /// `None`: the endpoint's IP address.
    pub ssl_name: Option<Arc<str>>,
    /// `proxy-ssl-secret`: the Secret whose `ca.crt` verifies the backend (HTTPS).
    pub ssl_secret: Option<ObjectRef>,
    /// The PEM CA bundle read from `ssl_secret` (filled by `translate`); `None`: the daemon's
    /// trust (`--upstream-ca-file`, else the system roots).
    pub ssl_ca: Option<Arc<str>>,
    /// `proxy-body-size`: `Some(0)` unlimited, `None` the global `--max-body-bytes`.
    pub max_body_bytes: Option<u64>,
}

/// How a backend chooses an endpoint per request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strategy {
    /// Smooth weighted round robin (every weight is 1 today).
    RoundRobin,
    /// Peak-EWMA of upstream latency, power of two random choices.
    Ewma,
    /// Consistent hash of a request key onto a ring of endpoints.
    ConsistentHash(HashKey),
    /// Consistent hash of a request key onto a subset of `size` endpoints, round robin inside.
    SubsetHash { key: HashKey, size: usize },
    /// Session affinity by cookie.
    Sticky(StickyCookie),
}

/// What a consistent hash is computed from (nginx variable syntax in annotations).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashKey {
    /// `$remote_addr`: the client's IP address.
    RemoteAddr,
    /// `$request_uri`: path and query as the client sent them.
    RequestUri,
    /// `$http_<name>`: a request header (name lowercase, `_` read as `-`).
    Header(String),
    /// `$cookie_<name>`: a request cookie (name case-sensitive).
    Cookie(String),
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::RemoteAddr => f.write_str("$remote_addr"),
            HashKey::RequestUri => f.write_str("$request_uri"),
            HashKey::Header(h) => write!(f, "$http_{}", h.replace('-', "_")),
            HashKey::Cookie(c) => write!(f, "$cookie_{c}"),
        }
    }
}

/// The affinity cookie of a sticky backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StickyCookie {
    pub name: String,
    /// `Max-Age` in seconds; `None`: a session cookie.
    pub max_age: Option<u64>,
    pub path: String,
    pub same_site: Option<SameSite>,
    pub secure: bool,
    pub mode: AffinityMode,
}

impl Default for StickyCookie {
    fn default() -> Self {
        Self {
            name: "INGRESSCOOKIE".to_owned(),
            max_age: None,
            path: "/".to_owned(),
            same_site: None,
            secure: false,
            mode: AffinityMode::Balanced,
        }
    }
}

/// What a sticky session does when the endpoint set changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AffinityMode {
    /// The cookie holds a session token mapped to an endpoint by consistent hash: a session
    /// whose endpoint is gone moves to another one, and scaling up moves a share of sessions to
    /// the new endpoints.
    Balanced,
    /// The cookie names one endpoint (by a keyed hash): the session stays there as long as it
    /// exists, and is re-picked (with a new cookie) only when it is gone.
    Persistent,
}

/// The cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::None => "None",
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

/// Equal when they serve the same endpoints the same way for the same reason; the balancer is
/// selection state built from those, and is ignored.
impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        self.service == other.service
            && self.endpoints == other.endpoints
            && self.unavailable == other.unavailable
            && self.strategy == other.strategy
            && self.upstream == other.upstream
    }
}

impl Eq for Backend {}

/// Everything a worker needs to serve a request, and the data plane to steer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Bumped by `publish` on every swap; 0 for the empty snapshot served before the first load.
    pub generation: u64,
    pub routes: RouteTable,
    /// Shared with the previous snapshot when nothing it was built from changed (`Translator`).
    pub backends: Vec<Arc<Backend>>,
    pub tls: TlsTable,
}

impl Snapshot {
    /// Takes over the selection and health state of `previous` (the snapshot this one replaces)
    /// for every backend both have (same Service port, strategy and upstream options), endpoint
    /// by endpoint where the endpoint is still there: a reload neither sends traffic back to an
    /// ejected endpoint nor forgets latency averages. A backend shared with `previous` (the same
    /// `Arc`, reused by `translate::Translator`) already has that state and is skipped. Called
    /// by `publish` before the swap.
    pub fn inherit(&self, previous: &Snapshot) {
        if previous.backends.is_empty() {
            return;
        }
        // Backends shared with `previous` are left alone; the others look up their predecessor
        // among the previous backends that this snapshot does not share.
        let ptrs = |s: &Snapshot| -> foldhash::HashSet<*const Backend> {
            s.backends.iter().map(Arc::as_ptr).collect()
        };
        let (mine, theirs) = (ptrs(self), ptrs(previous));
        let fresh = (self.backends.iter()).filter(|b| !theirs.contains(&Arc::as_ptr(b)));
        let mut old: HashMap<&ServiceBackendRef, Vec<&Backend>> = HashMap::new();
        for b in &previous.backends {
            if !mine.contains(&Arc::as_ptr(b)) {
                old.entry(&b.service).or_default().push(&**b);
            }
        }
        for b in fresh {
            let same = old.get(&b.service).and_then(|list| {
                list.iter()
                    .find(|o| o.strategy == b.strategy && o.upstream == b.upstream)
            });
            if let Some(o) = same {
                b.balancer.inherit(&o.balancer);
            }
        }
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
