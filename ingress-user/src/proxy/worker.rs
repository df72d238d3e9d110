//! One proxy worker: a thread with its own current-thread tokio runtime, its own listening sockets
//! (its worker port per public port, and its member of each public port's SO_REUSEPORT group),
//! its own pooled upstream client. Share-nothing except the snapshot handle and the metrics.
//!
//! Accept tasks feed accepted connections to the worker loop; each connection gets its own task
//! that, on the HTTPS port, first runs the TLS handshake (`tls::handshake`), then is served as
//! HTTP/1.1 by the proxy's own server (`h1server`: keep-alive, pipelining, upgrades such as
//! WebSocket), or as HTTP/2 by hyper's server when TLS negotiated `h2` (ALPN) or the client opened
//! with the HTTP/2 preface (h2c prior knowledge), with the stream and reset limits of `http2`;
//! requests go to `Forwarder`. The HTTP/2 streams of a connection run inside its task
//! (`h2streams::ConnectionStreams`), not as tasks of their own. On shutdown the worker stops
//! accepting, lets in-flight requests finish (HTTP/1.1 connections are closed after their current
//! response, idle ones at once; HTTP/2 gets GOAWAY), and gives up after the grace period.
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf as _, Bytes};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::mpsc,
    sync::watch,
};
use tokio_rustls::TlsAcceptor;

use super::{
    client_body::ClientBody,
    forward::{Downstream, Forwarder, Limits, UpstreamTimeouts},
    h1server::{self, Drain, Ended},
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

/// The HTTP/2 server settings of one connection, whose streams run on `streams` (inside the
/// connection's task).
fn http2_builder(
    streams: ConnectionStreams,
    max_header_bytes: usize,
) -> hyper::server::conn::http2::Builder<ConnectionStreams> {
    let mut builder = hyper::server::conn::http2::Builder::new(streams);
    builder.timer(TokioTimer::new());
    super::http2::configure(&mut builder, max_header_bytes);
    builder
}

/// Counts a connection as open (for the drain and the metric) until dropped.
struct OpenConnection {
    open: Arc<AtomicUsize>,
    metrics: crate::metrics::ProxyMetrics,
}

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>, metrics: &crate::metrics::ProxyMetrics) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        metrics.connections.inc();
        metrics.open_connections.inc();
        Self {
            open: open.clone(),
            metrics: metrics.clone(),
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.open_connections.dec();
    }
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

        let settings = h1server::Settings {
            header_read_timeout: spec.header_read_timeout,
            max_header_bytes: spec.limits.max_header_bytes,
        };
        let graceful = GracefulShutdown::new();
        let drain = Arc::new(Drain::default());
        let open = Arc::new(AtomicUsize::new(0));
        tracing::debug!(slot, "worker running");
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                _ = spec.crash.notified() => panic!("worker {slot} crashed on purpose (test hook)"),
                next = accepted.recv() => {
                    let Some(Accepted { stream, peer, public_port, tls }) = next else { break };
                    let conn = Arc::new(ConnState {
                        forwarder: forwarder.clone(),
                        down: Downstream::new(peer, public_port, tls.is_some()),
                    });
                    // Counted now, so a connection still in its TLS handshake is open for the
                    // drain below.
                    let counted = OpenConnection::new(&open, &spec.metrics);
                    let watcher = graceful.watcher();
                    let drain = drain.clone();
                    tokio::spawn(async move {
                        let stream = match tls {
                            None => Some(Stream::Plain(stream)),
                            Some(acceptor) => tls::handshake(&acceptor, stream, peer, &counted.metrics).await,
                        };
                        let Some(stream) = stream else { return };
                        let (io, read) = if stream.alpn_h2() {
                            (stream, Bytes::new())
                        } else {
                            let served = h1server::serve(stream, settings, &drain, |req| {
                                conn.forwarder.handle(req.map(ClientBody::Http1), &conn.down)
                            })
                            .await;
                            match served {
                                Ok(Ended::Closed) => return,
                                Ok(Ended::Http2 { io, read }) => (io, read),
                                Err(err) => {
                                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                                    return;
                                }
                            }
                        };
                        let service = service_fn(move |req: http::Request<Incoming>| {
                            let conn = conn.clone();
                            async move { conn.forwarder.handle(req.map(ClientBody::Http2), &conn.down).await }
                        });
                        let streams = ConnectionStreams::default();
                        let builder = http2_builder(streams.clone(), settings.max_header_bytes);
                        let served = builder.serve_connection(TokioIo::new(Rewound { read, io }), service);
                        if let Err(err) = streams.serve(watcher.watch(served)).await {
                            tracing::debug!(%peer, error = %err, "connection ended with an error");
                        }
                        drop(counted);
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
        drain.announce();
        let announce = ANNOUNCE_CLOSE.min(spec.grace);
        let deadline = tokio::time::Instant::now() + announce;
        while open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Phase 2: what is left is idle (closed now) or mid-response (finished first); HTTP/2
        // gets GOAWAY.
        drain.close_idle();
        let deadline = tokio::time::Instant::now() + spec.grace.saturating_sub(announce).max(Duration::from_millis(100));
        let _ = tokio::time::timeout_at(deadline, graceful.shutdown()).await;
        while open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = open.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(slot, open = left, grace = ?spec.grace, "grace period over, closing remaining connections");
        }
        tracing::debug!(slot, "worker stopped");
        Ok(())
    })
}

/// A connection with bytes already read from it (the HTTP/2 preface the HTTP/1.1 server saw)
/// put back in front of what is still to be read.
struct Rewound {
    read: Bytes,
    io: Stream,
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
