//! The request handler of a worker: route with `router::find` over one snapshot, pick an endpoint
//! from the backend's selection state (`balance`, reading the request as the client sent it),
//! forward with the worker's pooled client (`h1pool` for plain HTTP/1.1), report the upstream
//! outcome back to the pick (latency, failure), add its `Set-Cookie` for a new sticky session,
//! answer.
//! A plain-HTTP request for a TLS host that redirects is answered with 308 to HTTPS first.
//!
//! Before forwarding: the body limit (`Limits`, `proxy-body-size`: 413), the upgrade headers of a
//! WebSocket request (`websocket`), the backend's protocol (`upstream`). A connect failure counts
//! against the endpoint's passive health (`balance`) and an idempotent request without body is
//! sent once more to another endpoint.
//!
//! Errors become short plain-text responses (404 no route, 503 no ready endpoint, 502 upstream
//! failed, 504 upstream timed out; for gRPC backends a `grpc-status`, see `outcome`); the access
//! log line of the request (`access`, written when the body is done) names the backend, the
//! endpoint and the reason.
use std::{
    convert::Infallible,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    header, uri::PathAndQuery, HeaderValue, Method, Request, Response, StatusCode, Version,
};
use http_body_util::{Either, Empty, LengthLimitError, Limited};
use hyper::body::Body as _;

use super::request_metrics::{Report, RequestMetrics};
use super::{
    access::{self, AccessLog},
    balance::{self, Pick, RequestInfo},
    client_body::ClientBody,
    h1pool::PooledBody,
    headers::{self, ClientSide, Forwarded, TrustedProxies},
    outcome::{Outcome, RequestIds},
    router, tls,
    upstream::{self, UpstreamError, Upstreams},
    websocket,
};
use crate::{
    metrics::ProxyMetrics,
    model::{Backend, BackendProtocol},
    publish::SnapshotReader,
};

/// Body of every response the proxy sends: the upstream's streamed body, or a short one of ours,
/// counted for the access log.
pub type ProxyBody = access::Logged;

/// Body of a request sent upstream: the client's, capped at `Limits::max_body_bytes`, or none
/// (a retry).
pub type UpstreamBody = Either<Limited<ClientBody>, Empty<Bytes>>;

/// Size limits of requests (ingress-nginx: `proxy-body-size`, `large-client-header-buffers`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Larger request bodies are answered with 413 (`None`: unlimited).
    pub max_body_bytes: Option<u64>,
    /// Request heads larger than this are answered with 431 (`h1server`; HTTP/2: hyper).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: Some(1 << 20),
            max_header_bytes: 64 << 10,
        }
    }
}

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
    upstreams: Upstreams,
    snapshots: SnapshotReader,
    metrics: RequestMetrics,
    timeouts: UpstreamTimeouts,
    limits: Limits,
    trusted: TrustedProxies,
    ids: RequestIds,
    /// The public HTTPS port, when HTTPS is served (redirects point there).
    https_port: Option<u16>,
}

/// Where a request came in: one per client connection.
#[derive(Clone, Debug)]
pub struct Downstream {
    pub peer: SocketAddr,
    pub public_port: u16,
    /// The request came over TLS.
    pub tls: bool,
    /// The forwarding header values of this client, formatted once.
    forwarded: headers::Peer,
}

impl Downstream {
    pub fn new(peer: SocketAddr, public_port: u16, tls: bool) -> Self {
        Self {
            peer,
            public_port,
            tls,
            forwarded: headers::Peer::new(peer.ip(), public_port),
        }
    }
}

impl Forwarder {
    /// Must be called inside the worker's runtime (the client spawns its connection tasks there).
    pub fn new(
        snapshots: SnapshotReader,
        metrics: ProxyMetrics,
        timeouts: UpstreamTimeouts,
        limits: Limits,
        trusted: TrustedProxies,
        https_port: Option<u16>,
        upstream_trust: upstream::UpstreamTrust,
    ) -> Self {
        Self {
            upstreams: Upstreams::new(
                timeouts.connect,
                upstream_trust,
                metrics.upstream_connections.clone(),
            ),
            snapshots,
            metrics: RequestMetrics::new(metrics),
            timeouts,
            limits,
            trusted,
            ids: RequestIds::new(),
            https_port,
        }
    }

    /// Serves one request. Never fails: every error is an HTTP answer.
    pub async fn handle(
        &self,
        req: Request<ClientBody>,
        down: &Downstream,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        let snapshot = self.snapshots.load();
        // Shared handles, not copies: the request's URI and Host are replaced below.
        let host_value = request_host(&req);
        let host = host_value.to_str().unwrap_or_default();
        let uri = req.uri().clone();
        let path = uri.path();
        let method = req.method().clone();
        let redirect = match (down.tls, self.https_port) {
            (false, Some(port)) => tls::redirect_location(&snapshot.tls, host, req.uri(), port),
            _ => None,
        };
        // Route and pick before the forwarding headers change the request: hash keys and sticky
        // cookies read what the client sent.
        let routed = match redirect {
            Some(_) => None,
            None => router::find(&snapshot, host, path),
        };
        let chosen = routed.map(|route| {
            let backend = &*route.backend;
            let info = RequestInfo {
                client: down.peer.ip(),
                uri: req.uri().path_and_query().map_or("/", |pq| pq.as_str()),
                headers: req.headers(),
            };
            (backend, backend.pick(&info))
        });
        let forwarded = headers::forwarded(
            req.headers(),
            ClientSide {
                peer: &down.forwarded,
                trusted: self.trusted.contains(down.forwarded.ip),
                proto: if down.tls { "https" } else { "http" },
                // Shared, not copied; empty when it is not visible ASCII (as `host` is).
                host: match host.is_empty() {
                    true => &EMPTY_HOST,
                    false => &host_value,
                },
            },
            || self.ids.next(),
        );

        let grpc = matches!(&chosen, Some((b, _)) if b.upstream.protocol == BackendProtocol::Grpc);
        let mut outcome = match (redirect, chosen) {
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
                let mut outcome =
                    Outcome::local(StatusCode::SERVICE_UNAVAILABLE, "no_endpoints", why);
                outcome.backend = Some(backend.label.clone());
                outcome
            }
            (None, Some((backend, Some(pick)))) => {
                let mut outcome = self.forward(req, backend, pick, host, &forwarded).await;
                outcome.backend = Some(backend.label.clone());
                outcome
            }
        };
        if grpc {
            outcome.grpc();
        }
        let status = outcome.response.status();
        let duration = started.elapsed();
        self.metrics.record(&Report {
            generation: snapshot.generation,
            status: status.as_u16(),
            duration_secs: duration.as_secs_f64(),
            error_kind: outcome.error_kind,
            route: routed.map(|route| &route.metric),
            upstream: outcome.endpoint.zip(outcome.upstream_ms),
            backend: outcome.backend.as_ref(),
        });
        // Off (`--log-level` without `access` at info): no record made, boxed and dropped.
        let request_id = access::enabled().then(|| forwarded.request_id().clone());
        let log = request_id.map(|request_id| AccessLog {
            client: down.peer,
            host: host_value,
            method,
            uri,
            status: status.as_u16(),
            backend: outcome.backend,
            upstream: outcome.endpoint,
            duration_ms: duration.as_secs_f64() * 1000.0,
            upstream_ms: outcome.upstream_ms,
            request_id,
            error: outcome.error,
        });
        Ok(outcome.response.map(|body| access::Logged::new(body, log)))
    }

    async fn forward(
        &self,
        mut req: Request<ClientBody>,
        backend: &Backend,
        mut pick: Pick<'_>,
        host: &str,
        forwarded: &Forwarded<'_>,
    ) -> Outcome {
        let service: &str = &backend.label;
        let protocol = backend.upstream.protocol;
        let max_body = match backend.upstream.max_body_bytes {
            Some(0) => None,
            Some(n) => Some(n),
            None => self.limits.max_body_bytes,
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(max), Some(len)) = (max_body, declared) {
            if len > max {
                return Outcome::local(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body of {len} bytes exceeds the limit of {max} bytes"),
                );
            }
        }
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let Some(uri) = upstream::uri(protocol, pick.authority, &path_and_query) else {
            return Outcome::local(
                StatusCode::BAD_REQUEST,
                "protocol",
                "request target cannot be forwarded".into(),
            );
        };
        // An HTTP/1.1 upgrade (WebSocket): keep its headers.
        let upgrade = match (req.version(), protocol) {
            (Version::HTTP_11, BackendProtocol::Http | BackendProtocol::Https) => {
                websocket::requested(req.headers())
            }
            _ => None,
        };
        // gRPC servers want `TE: trailers` (the only TE value HTTP/2 allows).
        let te_trailers = req
            .headers()
            .get_all(header::TE)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("trailers")));
        // HTTP/2 requests carry the host in the URI: make it the Host header for HTTP/1.1.
        if !req.headers().contains_key(header::HOST) {
            if let Ok(value) = HeaderValue::from_str(host) {
                req.headers_mut().insert(header::HOST, value);
            }
        }
        *req.uri_mut() = uri;
        headers::strip_hop_by_hop(req.headers_mut());
        if te_trailers && matches!(protocol, BackendProtocol::H2c | BackendProtocol::Grpc) {
            req.headers_mut()
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(upgrade) = upgrade.clone() {
            websocket::restore(req.headers_mut(), upgrade);
        }
        // A request without a body and with an idempotent method can be sent again after a
        // connect failure (nothing reached the first endpoint).
        // Only worth the copy of the headers when there is another endpoint to retry on.
        let replay = (backend.endpoints.len() > 1
            && is_idempotent(req.method())
            && req.body().is_end_stream())
        .then(|| (req.method().clone(), req.headers().clone()));
        let limit = max_body.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        let req = req.map(|body| Either::Left(Limited::new(body, limit)));

        let sent = Instant::now();
        let mut result = self.send(backend, pick.endpoint, req, forwarded).await;
        if let Ok(Err(err)) = &result {
            if err.is_connect() {
                self.connect_failed(service, &pick, err);
                let retry = replay.and_then(|(method, headers)| {
                    let next = backend.retry(&pick)?;
                    let mut req = Request::new(Either::Right(Empty::new()));
                    *req.method_mut() = method;
                    *req.uri_mut() = upstream::uri(protocol, next.authority, &path_and_query)?;
                    *req.headers_mut() = headers;
                    Some((next, req))
                });
                if let Some((next, req)) = retry {
                    tracing::info!(backend = %service, failed = %pick.endpoint, endpoint = %next.endpoint, "retrying on another endpoint after a connect failure");
                    pick.done(sent.elapsed(), false);
                    pick = next;
                    result = self.send(backend, pick.endpoint, req, forwarded).await;
                    if let Ok(Err(err)) = &result {
                        if err.is_connect() {
                            self.connect_failed(service, &pick, err);
                        }
                    }
                }
            }
        }
        let endpoint = pick.endpoint;
        let upstream_time = sent.elapsed();
        let upstream_ms = upstream_time.as_secs_f64() * 1000.0;
        if let Ok(Ok(_)) = &result {
            pick.connected(true);
        }
        let set_cookie = pick.set_cookie.take();
        pick.done(upstream_time, matches!(result, Ok(Ok(_))));
        let mut outcome = match result {
            Err(_) => Outcome::local(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "upstream {endpoint} sent no response within {:?}",
                    self.timeouts.response
                ),
            ),
            Ok(Err(err)) if is_length_limit(&err) => Outcome::local(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "request body exceeds the limit of {} bytes",
                    max_body.unwrap_or_default()
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
            Ok(Ok(mut resp)) => {
                let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                // The backend side goes with the 101 to the client's connection, which joins
                // the two once the 101 is sent.
                let backend_upgrade = (switching && upgrade.is_some()).then(|| {
                    let backend = match resp.body_mut().take_upgraded() {
                        Some((io, read_ahead)) => websocket::Backend::Pooled { io, read_ahead },
                        None => websocket::Backend::Hyper(hyper::upgrade::on(&mut resp)),
                    };
                    let value = websocket::requested(resp.headers());
                    (value, websocket::Upgrade::new(backend, endpoint))
                });
                let (mut parts, body) = resp.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers);
                if let Some((value, joined)) = backend_upgrade {
                    if let Some(value) = value {
                        websocket::restore(&mut parts.headers, value);
                    }
                    parts.extensions.insert(joined);
                }
                if let Some(cookie) = set_cookie {
                    parts.headers.append(header::SET_COOKIE, cookie);
                }
                Outcome {
                    response: Response::from_parts(parts, Either::Left(body)),
                    backend: None,
                    endpoint: None,
                    upstream_ms: None,
                    error_kind: None,
                    error: None,
                }
            }
        };
        outcome.endpoint = Some(endpoint);
        outcome.upstream_ms = Some(upstream_ms);
        outcome
    }

    /// Sends one request upstream, bounded by the response timeout.
    async fn send(
        &self,
        backend: &Backend,
        endpoint: SocketAddr,
        req: Request<UpstreamBody>,
        forwarded: &Forwarded<'_>,
    ) -> Result<Result<Response<PooledBody>, UpstreamError>, TimedOut> {
        let deadline = tokio::time::Instant::now() + self.timeouts.response;
        match self
            .upstreams
            .send(&backend.upstream, endpoint, req, forwarded, deadline)
            .await
        {
            Err(err) if err.is_timeout() => Err(TimedOut),
            sent => Ok(sent),
        }
    }

    /// Counts a connect failure for passive health; logs it, and the ejection it may cause.
    fn connect_failed(&self, service: &str, pick: &Pick<'_>, err: &UpstreamError) {
        let reason = crate::dataplane::error_chain(err);
        if pick.connected(false) {
            tracing::warn!(
                backend = %service,
                endpoint = %pick.endpoint,
                reason = %reason,
                failures = balance::FAILURES,
                cool_down = ?balance::COOL_DOWN,
                "endpoint ejected after consecutive connect failures"
            );
        } else {
            tracing::warn!(backend = %service, endpoint = %pick.endpoint, reason = %reason, "upstream connect failed");
        }
    }
}

/// The upstream sent no response head within the response timeout.
struct TimedOut;

/// Methods that may be sent twice (RFC 9110 §9.2.2): retried on another endpoint after a connect
/// failure, and on a new connection by `h1pool` when an idle one turns out closed.
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// The client failed because the request body went over `Limits::max_body_bytes`.
fn is_length_limit(err: &UpstreamError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

static EMPTY_HOST: HeaderValue = HeaderValue::from_static("");

/// The host a request is for: the URI authority (HTTP/2, absolute-form) or the Host header; empty
/// when neither is there. A Host header is shared, not copied.
fn request_host(req: &Request<ClientBody>) -> HeaderValue {
    let from_uri = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    from_uri
        .or_else(|| req.headers().get(header::HOST).cloned())
        .unwrap_or_else(|| HeaderValue::from_static(""))
}
