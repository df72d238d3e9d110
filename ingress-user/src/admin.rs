//! The admin HTTP server on its own address: `/metrics` (Prometheus text), `/healthz` (the process
//! and its workers are alive) and `/readyz` (a configuration has been loaded and the data plane is
//! programmed). Runs on the control runtime, never on a proxy worker.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

use crate::{
    metrics::Metrics,
    proxy::{listener, CrashHooks},
};

/// What the probes report; flipped by the control loop.
#[derive(Debug, Default)]
pub struct Health {
    pub ready: AtomicBool,
    pub healthy: AtomicBool,
}

/// Binds the admin address (failing early, with the flag to change it) and returns the server task.
pub fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, listener::ListenError> {
    let std_listener = listener::bind(addr, false, "--admin-addr")?;
    tokio::net::TcpListener::from_std(std_listener)
        .map_err(|source| listener::ListenError::Other { addr, source })
}

/// Serves the admin endpoints until the task is dropped.
/// `hooks` (only with `--test-hooks`) adds `POST /debug/crash-worker?slot=N`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    hooks: Option<CrashHooks>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let health = health.clone();
        let hooks = hooks.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = match (&hooks, req.method(), req.uri().path()) {
                    (Some(hooks), &Method::POST, "/debug/crash-worker") => {
                        crash_worker(&req, hooks)
                    }
                    _ => respond(&req, &metrics, &health),
                };
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => match metrics.encode() {
            Ok(body) => {
                let mut resp = text(StatusCode::OK, body);
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                resp
            }
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n".into(),
            ),
        },
        "/healthz" => probe(health.healthy.load(Ordering::Relaxed), "a worker exited"),
        "/readyz" => probe(
            health.ready.load(Ordering::Relaxed),
            "no configuration served yet",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn crash_worker(req: &Request<Incoming>, hooks: &CrashHooks) -> Response<Full<Bytes>> {
    let slot = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("slot="))
        .and_then(|s| s.parse::<usize>().ok());
    match slot {
        Some(slot) if hooks.crash(slot) => text(
            StatusCode::ACCEPTED,
            format!("worker {slot} told to crash\n"),
        ),
        _ => text(StatusCode::BAD_REQUEST, "want ?slot=<worker slot>\n".into()),
    }
}

fn probe(ok: bool, why_not: &str) -> Response<Full<Bytes>> {
    if ok {
        text(StatusCode::OK, "ok\n".into())
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, format!("{why_not}\n"))
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
