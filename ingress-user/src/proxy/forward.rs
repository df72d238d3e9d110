//! The request handler of a worker: route with `router::find` over one snapshot, pick an endpoint
//! from the backend's selection state (`balance`, reading the request as the client sent it),
//! forward with the worker's pooled hyper client, report the upstream outcome back to the pick
//! (latency, failure), add its `Set-Cookie` for a new sticky session, answer.
//! A plain-HTTP request for a TLS host that redirects is answered with 308 to HTTPS first.
//!
//! Errors become short plain-text responses (404 no route, 503 no ready endpoint, 502 upstream
//! failed, 504 upstream timed out); the access log line of the request names the backend, the
//! endpoint and the reason.
use std::{
    convert::Infallible,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, uri::PathAndQuery, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};

use super::{
    balance::{Pick, RequestInfo},
    headers::{self, ClientSide},
    router, tls,
};
use crate::{
    metrics::{code_class, ProxyMetrics, RequestLabels, UpstreamErrorLabels},
    publish::SnapshotReader,
};

/// Body of every response the proxy sends: the upstream's streamed body, or a short one of ours.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Timeouts of the upstream side.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// From request sent to response head received.
    pub response: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(60),
        }
    }
}

/// Per-worker forwarding state: the pooled client, the snapshot handle, metrics.
#[derive(Debug)]
pub struct Forwarder {
    client: Client<HttpConnector, Incoming>,
    snapshots: SnapshotReader,
    metrics: ProxyMetrics,
    timeouts: UpstreamTimeouts,
    ids: RequestIds,
    /// The public HTTPS port, when HTTPS is served (redirects point there).
    https_port: Option<u16>,
}

/// Where a request came in.
#[derive(Clone, Copy, Debug)]
pub struct Downstream {
    pub peer: SocketAddr,
    pub public_port: u16,
    /// The request came over TLS.
    pub tls: bool,
}

impl Forwarder {
    /// Must be called inside the worker's runtime (the client spawns its connection tasks there).
    pub fn new(
        snapshots: SnapshotReader,
        metrics: ProxyMetrics,
        timeouts: UpstreamTimeouts,
        https_port: Option<u16>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Self {
            client,
            snapshots,
            metrics,
            timeouts,
            ids: RequestIds::new(),
            https_port,
        }
    }

    /// Serves one request. Never fails: every error is an HTTP answer.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        down: Downstream,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        let snapshot = self.snapshots.load();
        let host = request_host(&req).unwrap_or_default().to_owned();
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let redirect = match (down.tls, self.https_port) {
            (false, Some(port)) => tls::redirect_location(&snapshot.tls, &host, req.uri(), port),
            _ => None,
        };
        // Route and pick before the forwarding headers change the request: hash keys and sticky
        // cookies read what the client sent.
        let routed = match redirect {
            Some(_) => None,
            None => router::find(&snapshot, &host, &path),
        };
        let chosen = routed.map(|route| {
            let backend = snapshot.backend(route.backend);
            let info = RequestInfo {
                client: down.peer.ip(),
                uri: req.uri().path_and_query().map_or("/", |pq| pq.as_str()),
                headers: req.headers(),
            };
            (backend, backend.pick(&info))
        });
        let request_id = headers::set_forwarded(
            req.headers_mut(),
            ClientSide {
                peer: down.peer.ip(),
                proto: if down.tls { "https" } else { "http" },
                public_port: down.public_port,
                host: &host,
            },
            || self.ids.next(),
        );

        let outcome = match (redirect, chosen) {
            (Some(location), _) => Outcome::redirect(location),
            (None, None) => Outcome::local(
                StatusCode::NOT_FOUND,
                "no_route",
                "no Ingress rule matches this host and path".into(),
            ),
            (None, Some((backend, None))) => {
                let why = backend
                    .unavailable
                    .clone()
                    .unwrap_or_else(|| format!("{} has no ready endpoints", backend.service));
                Outcome::local(StatusCode::SERVICE_UNAVAILABLE, "no_endpoints", why)
                    .with_backend(backend.service.to_string())
            }
            (None, Some((backend, Some(pick)))) => {
                let endpoint = pick.endpoint;
                self.forward(req, pick, &host)
                    .await
                    .with_backend(backend.service.to_string())
                    .with_endpoint(endpoint)
            }
        };

        let status = outcome.response.status();
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                code: code_class(status.as_u16()),
            })
            .inc();
        self.metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64());
        if let Some(kind) = outcome.error_kind {
            self.metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels { kind })
                .inc();
        }
        tracing::info!(
            target: "access",
            client = %down.peer,
            host = %host,
            method = %method,
            path = %path,
            status = status.as_u16(),
            backend = outcome.backend.as_deref().unwrap_or("-"),
            upstream = %outcome.endpoint.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            request_id = request_id.to_str().unwrap_or("-"),
            error = outcome.error.as_deref().unwrap_or(""),
        );
        Ok(outcome.response)
    }

    async fn forward(&self, mut req: Request<Incoming>, mut pick: Pick<'_>, host: &str) -> Outcome {
        let endpoint = pick.endpoint;
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme("http")
            .authority(endpoint.to_string())
            .path_and_query(path_and_query)
            .build();
        let Ok(uri) = uri else {
            return Outcome::local(
                StatusCode::BAD_REQUEST,
                "protocol",
                "request target cannot be forwarded".into(),
            );
        };
        // HTTP/2 requests carry the host in the URI: make it the Host header for HTTP/1.1.
        if !req.headers().contains_key(header::HOST) {
            if let Ok(value) = HeaderValue::from_str(host) {
                req.headers_mut().insert(header::HOST, value);
            }
        }
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        headers::strip_hop_by_hop(req.headers_mut());

        let sent = Instant::now();
        let result = tokio::time::timeout(self.timeouts.response, self.client.request(req)).await;
        let set_cookie = pick.set_cookie.take();
        pick.done(sent.elapsed(), matches!(result, Ok(Ok(_))));
        match result {
            Err(_) => Outcome::local(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "upstream {endpoint} sent no response within {:?}",
                    self.timeouts.response
                ),
            ),
            Ok(Err(err)) => {
                let kind = if err.is_connect() {
                    "connect"
                } else {
                    "protocol"
                };
                Outcome::local(
                    StatusCode::BAD_GATEWAY,
                    kind,
                    format!(
                        "upstream {endpoint}: {}",
                        crate::dataplane::error_chain(&err)
                    ),
                )
            }
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers);
                if let Some(cookie) = set_cookie {
                    parts.headers.append(header::SET_COOKIE, cookie);
                }
                Outcome {
                    response: Response::from_parts(parts, Either::Left(body)),
                    backend: None,
                    endpoint: None,
                    error_kind: None,
                    error: None,
                }
            }
        }
    }
}

/// The host a request is for: the URI authority (HTTP/2, absolute-form) or the Host header.
fn request_host(req: &Request<Incoming>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// What happened to a request, for the response, the metrics and the access log.
#[derive(Debug)]
struct Outcome {
    response: Response<ProxyBody>,
    backend: Option<String>,
    endpoint: Option<SocketAddr>,
    error_kind: Option<&'static str>,
    error: Option<String>,
}

impl Outcome {
    fn local(status: StatusCode, kind: &'static str, error: String) -> Self {
        let reason = status.canonical_reason().unwrap_or("");
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!(
            "{} {reason}\n",
            status.as_u16()
        )))));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Self {
            response,
            backend: None,
            endpoint: None,
            error_kind: Some(kind),
            error: Some(error),
        }
    }

    /// `308 Permanent Redirect` to `location` (not an error).
    fn redirect(location: String) -> Self {
        let mut outcome = Self::local(StatusCode::PERMANENT_REDIRECT, "redirect", String::new());
        if let Ok(value) = HeaderValue::from_str(&location) {
            outcome
                .response
                .headers_mut()
                .insert(header::LOCATION, value);
        }
        outcome.error_kind = None;
        outcome.error = None;
        outcome
    }

    fn with_backend(mut self, backend: String) -> Self {
        self.backend = Some(backend);
        self
    }

    fn with_endpoint(mut self, endpoint: SocketAddr) -> Self {
        self.endpoint = Some(endpoint);
        self
    }
}

/// Request ids: 128 random bits as 32 hex digits, from a per-worker generator seeded by the OS.
#[derive(Debug)]
struct RequestIds(std::sync::atomic::AtomicU64, u64);

impl RequestIds {
    fn new() -> Self {
        let mut seed = [0u8; 16];
        // SAFETY: getrandom writes at most seed.len() bytes into seed.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        if n != seed.len() as isize {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            seed[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
        }
        let a = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(seed[8..].try_into().expect("8 bytes"));
        Self(std::sync::atomic::AtomicU64::new(a), b | 1)
    }

    fn next(&self) -> String {
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let s = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        format!("{:016x}{:016x}", mix(s), mix(s ^ self.1))
    }
}
