//! One proxy worker: a thread with its own current-thread tokio runtime, its own listening sockets
//! (its worker port per public port, and its member of each public port's SO_REUSEPORT group),
//! its own pooled upstream client. Share-nothing except the snapshot handle and the metrics.
//!
//! Accept tasks feed accepted connections to the worker loop; each connection gets its own task
//! that, on the HTTPS port, first runs the TLS handshake (`tls::handshake`), then is served by
//! hyper-util's auto server (HTTP/1.1 keep-alive and upgrades such as WebSocket, HTTP/2 by ALPN over TLS or h2c prior knowledge,
//! with the stream and reset limits of `http2`)
//! through `Forwarder`; the HTTP/2 streams of a connection run inside its task
//! (`h2streams::ConnectionStreams`), not as tasks of their own. On
//! shutdown the worker stops accepting, lets in-flight requests finish (HTTP/1.1 connections are
//! closed after their current response, HTTP/2 gets GOAWAY), and gives up after the grace period.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpStream, sync::mpsc, sync::watch};
use tokio_rustls::TlsAcceptor;

use super::{
    forward::{Downstream, Forwarder, Limits, UpstreamTimeouts},
    h2streams::ConnectionStreams,
    tls::{self, Stream},
};
use crate::{metrics::ProxyMetrics, publish::SnapshotReader};

/// The sockets of one worker for one public port.
#[derive(Debug)]
pub struct WorkerListener {
    pub public_port: u16,
    /// `Some`: this is the HTTPS port; connections start with a TLS handshake.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// This worker's port (where XDP steers), exclusive to the worker.
    pub worker: std::net::TcpListener,
    /// This worker's member of the public port's SO_REUSEPORT group.
    pub public: std::net::TcpListener,
}

/// Everything a worker thread needs.
#[derive(Debug)]
pub struct WorkerSpec {
    pub slot: usize,
    pub listeners: Vec<WorkerListener>,
    pub snapshots: SnapshotReader,
    pub metrics: ProxyMetrics,
    pub timeouts: UpstreamTimeouts,
    pub limits: Limits,
    pub trusted_proxies: super::headers::TrustedProxies,
    pub header_read_timeout: Duration,
    pub grace: Duration,
    pub upstream_trust: super::upstream::UpstreamTrust,
    /// Test hook: notified → the main loop panics, as a bug in the worker would.
    pub crash: Arc<tokio::sync::Notify>,
}

/// What a connection's requests share.
struct ConnState {
    forwarder: Arc<Forwarder>,
    down: Downstream,
    /// The worker is shutting down: responses say `Connection: close`.
    draining: Arc<std::sync::atomic::AtomicBool>,
}

/// A connection accepted on one of the worker's sockets.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    public_port: u16,
    tls: Option<TlsAcceptor>,
}

/// How long a draining worker announces `Connection: close` before closing idle connections.
const ANNOUNCE_CLOSE: Duration = Duration::from_secs(1);

/// The HTTP/1.1 and HTTP/2 server settings of one connection, whose HTTP/2 streams run on
/// `streams` (inside the connection's task).
fn connection_builder(
    streams: ConnectionStreams,
    header_read_timeout: Duration,
    max_header_bytes: usize,
) -> auto::Builder<ConnectionStreams> {
    let mut builder = auto::Builder::new(streams);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        .max_buf_size(max_header_bytes.max(8192));
    super::http2::configure(&mut builder, max_header_bytes);
    builder
}

/// Runs the worker until `shutdown` becomes true, then drains. Blocks the calling thread.
pub fn run(spec: WorkerSpec, mut shutdown: watch::Receiver<bool>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let slot = spec.slot;
        let https_port = spec.listeners.iter().find(|l| l.tls.is_some()).map(|l| l.public_port);
        let forwarder = Arc::new(Forwarder::new(spec.snapshots, spec.metrics.clone(), spec.timeouts, spec.limits, spec.trusted_proxies, https_port, spec.upstream_trust));
        let (tx, mut accepted) = mpsc::channel::<Accepted>(1024);
        let mut acceptors = tokio::task::JoinSet::new();
        for l in spec.listeners {
            let tls = l.tls.map(TlsAcceptor::from);
            for std_listener in [l.worker, l.public] {
                let listener = tokio::net::TcpListener::from_std(std_listener)?;
                let tx = tx.clone();
                let public_port = l.public_port;
                let tls = tls.clone();
                acceptors.spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, peer)) => {
                                // Responses go out whole (one write per head and body chunk):
                                // Nagle would only hold back the last segment of a response.
                                if let Err(err) = stream.set_nodelay(true) {
                                    tracing::debug!(slot, %peer, %err, "TCP_NODELAY not set");
                                }
                                let next = Accepted { stream, peer, public_port, tls: tls.clone() };
                                if tx.send(next).await.is_err() {
                                    return;
                                }
                            }
                            // Out of fds or a transient error: back off briefly, keep accepting.
                            Err(err) => {
                                tracing::warn!(slot, %err, "accept failed");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                });
            }
        }
        drop(tx);

        let (header_read_timeout, max_header_bytes) = (spec.header_read_timeout, spec.limits.max_header_bytes);
        let graceful = GracefulShutdown::new();
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tracing::debug!(slot, "worker running");
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                _ = spec.crash.notified() => panic!("worker {slot} crashed on purpose (test hook)"),
                next = accepted.recv() => {
                    let Some(Accepted { stream, peer, public_port, tls }) = next else { break };
                    // One reference count per request for all the connection's state.
                    let conn = Arc::new(ConnState {
                        forwarder: forwarder.clone(),
                        down: Downstream::new(peer, public_port, tls.is_some()),
                        draining: draining.clone(),
                    });
                    let service = service_fn(move |req| {
                        let conn = conn.clone();
                        async move {
                            let mut resp = conn.forwarder.handle(req, &conn.down).await?;
                            if conn.draining.load(std::sync::atomic::Ordering::Relaxed) {
                                // HTTP/1.1: the client closes after this response, so it never
                                // sends on a connection we are about to close.
                                resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    // Taken now, so a connection still in its TLS handshake counts as open for
                    // the drain below.
                    let watcher = graceful.watcher();
                    let metrics = spec.metrics.clone();
                    metrics.connections.inc();
                    metrics.open_connections.inc();
                    tokio::spawn(async move {
                        let stream = match tls {
                            None => Some(Stream::Plain(stream)),
                            Some(acceptor) => tls::handshake(&acceptor, stream, peer, &metrics).await,
                        };
                        if let Some(stream) = stream {
                            let streams = ConnectionStreams::default();
                            let builder = connection_builder(streams.clone(), header_read_timeout, max_header_bytes);
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            if let Err(err) = streams.serve(watcher.watch(conn.into_owned())).await {
                                tracing::debug!(%peer, error = %err, "connection ended with an error");
                            }
                        }
                        metrics.open_connections.dec();
                    });
                }
            }
        }
        // Stop accepting: close our sockets so the kernel stops queueing connections to them.
        acceptors.abort_all();
        while acceptors.join_next().await.is_some() {}
        drop(accepted);
        // Phase 1: busy HTTP/1.1 connections get `Connection: close` on their next response and
        // close themselves; closing them from our side could meet a request already on its way
        // (which the kernel would answer with a reset).
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
        let announce = ANNOUNCE_CLOSE.min(spec.grace);
        let deadline = tokio::time::Instant::now() + announce;
        while graceful.count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Phase 2: what is left is idle (closed now) or mid-response (finished first); HTTP/2
        // gets GOAWAY.
        let open = graceful.count();
        let rest = spec.grace.saturating_sub(announce);
        if tokio::time::timeout(rest.max(Duration::from_millis(100)), graceful.shutdown()).await.is_err() {
            tracing::warn!(slot, open, grace = ?spec.grace, "grace period over, closing remaining connections");
        }
        tracing::debug!(slot, "worker stopped");
        Ok(())
    })
}
