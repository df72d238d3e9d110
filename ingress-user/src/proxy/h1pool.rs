//! One worker's pool of HTTP/1.1 connections to plain-HTTP endpoints, on hyper's connection API.
//!
//! The request path of a keep-alive proxy is dominated by what happens per request, and hyper-util's
//! general-purpose client spends much of it on things a worker does not need: a pool shared across
//! threads (a lock and a SipHash of scheme and authority per checkout and per return), a lazy
//! connect future raced against the checkout, and a task spawned per response to wait for the
//! connection to become idle again. Here (as in Pingora), each worker owns its pool:
//!
//! - `send` takes the most recently used idle connection to the endpoint (LIFO keeps few
//!   connections warm), waits for it to be ready, and sends. A request the connection never
//!   started to write (the backend closed it while idle) moves on to the next idle connection, and
//!   at last to a new one, so a stale keep-alive connection costs no failed request.
//! - The response body (`PooledBody`) hands its connection back when the body is done. A body
//!   dropped before its end (the client went away) drops the connection with it: hyper closes
//!   it, as nothing else could tell where the next response starts.
//! - Idle connections are kept up to `MAX_IDLE_PER_ENDPOINT` per endpoint and `IDLE_TIMEOUT`;
//!   closed and expired ones are pruned when an endpoint's list is touched and by `sweep`, which
//!   the worker runs every `SWEEP_EVERY`.
//!
//! A connection is a tokio task running hyper's `Connection` with upgrades, so a WebSocket
//! handshake (101) hands the socket over (`hyper::upgrade::on` on the response).
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt as _};
use http::{Request, Response};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::http1::{self, SendRequest},
};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;

use super::forward::UpstreamBody;

/// Idle connections kept per endpoint. At least the requests a worker has in flight to one
/// endpoint at busy times: every response that finds the list full closes its connection, and
/// the next request beyond the idle ones connects anew (HTTP/2 clients multiplex hundreds of
/// streams: with 500 in flight and 256 kept, one request in ten opened a connection).
pub const MAX_IDLE_PER_ENDPOINT: usize = 1024;
/// An idle connection older than this is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `sweep` runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Why a request could not be sent or got no response head.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("tcp connect error: {0}")]
    Connect(#[source] std::io::Error),
    #[error("tcp connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("HTTP/1.1 handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// After the request was handed to a connection.
    #[error("{0}")]
    Http(#[source] hyper::Error),
}

impl PoolError {
    /// Nothing reached the endpoint: the request may go to another one.
    pub fn is_connect(&self) -> bool {
        !matches!(self, Self::Http(_))
    }
}

/// One worker's idle HTTP/1.1 connections, by endpoint.
#[derive(Debug)]
pub struct H1Pool {
    connect_timeout: Duration,
    /// Counts the connections opened (`xdp_ingress_upstream_connections_total`).
    opened: Counter,
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

impl Idle {
    fn usable(&self, now: Instant) -> bool {
        !self.sender.is_closed() && now.duration_since(self.since) < IDLE_TIMEOUT
    }
}

impl H1Pool {
    pub fn new(connect_timeout: Duration, opened: Counter) -> Arc<Self> {
        Arc::new(Self {
            connect_timeout,
            opened,
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `req` (origin-form URI, Host header set) to `endpoint` on an idle connection, or a
    /// new one.
    pub async fn send(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        while let Some(mut sender) = self.checkout(endpoint) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.pooled(endpoint, sender, resp)),
                Err(mut err) => match err.take_message() {
                    // Never written: the connection closed while idle. The next one, then.
                    Some(back) => req = back,
                    None => return Err(PoolError::Http(err.into_error())),
                },
            }
        }
        let mut sender = self.connect(endpoint).await?;
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(self.pooled(endpoint, sender, resp)),
            Err(err) => Err(PoolError::Http(err.into_error())),
        }
    }

    /// The most recently returned usable idle connection to `endpoint`.
    fn checkout(&self, endpoint: SocketAddr) -> Option<SendRequest<UpstreamBody>> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&endpoint)?;
        while let Some(conn) = list.pop() {
            if conn.usable(now) {
                return Some(conn.sender);
            }
        }
        None
    }

    async fn connect(&self, endpoint: SocketAddr) -> Result<SendRequest<UpstreamBody>, PoolError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(endpoint))
            .await
            .map_err(|_| PoolError::ConnectTimeout(self.connect_timeout))?
            .map_err(PoolError::Connect)?;
        stream.set_nodelay(true).map_err(PoolError::Connect)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(PoolError::Handshake)?;
        self.opened.inc();
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(%endpoint, %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// The response with its connection attached, handed back now if there is no body to read.
    fn pooled(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        sender: SendRequest<UpstreamBody>,
        resp: Response<Incoming>,
    ) -> Response<PooledBody> {
        let release = Release {
            pool: Arc::downgrade(self),
            endpoint,
            sender,
        };
        resp.map(|inner| {
            let mut body = PooledBody {
                inner,
                release: Some(release),
            };
            if body.inner.is_end_stream() {
                body.release();
            }
            body
        })
    }

    fn put(&self, endpoint: SocketAddr, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(endpoint).or_default();
        if list.len() >= MAX_IDLE_PER_ENDPOINT {
            list.retain(|c| c.usable(now));
            if list.len() >= MAX_IDLE_PER_ENDPOINT {
                return;
            }
        }
        list.push(Idle { sender, since: now });
    }

    /// Drops closed and expired idle connections, and endpoints left without any.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            list.retain(|c| c.usable(now));
            !list.is_empty()
        });
    }

    /// Idle connections to `endpoint` (tests).
    pub fn idle_count(&self, endpoint: SocketAddr) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get(&endpoint).map_or(0, Vec::len)
    }
}

/// Runs `sweep` every `SWEEP_EVERY` until the pool is gone. Spawn it on the worker's runtime.
pub async fn sweep_while_alive(pool: Weak<H1Pool>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.sweep(),
            None => return,
        }
    }
}

#[derive(Debug)]
struct Release {
    pool: Weak<H1Pool>,
    endpoint: SocketAddr,
    sender: SendRequest<UpstreamBody>,
}

/// An upstream response body; a pooled connection goes back to its pool when the body is done.
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    release: Option<Release>,
}

impl PooledBody {
    /// A body whose connection is not ours to pool (another client's).
    pub fn unpooled(inner: Incoming) -> Self {
        Self {
            inner,
            release: None,
        }
    }

    fn release(&mut self) {
        if let Some(r) = self.release.take() {
            if let Some(pool) = r.pool.upgrade() {
                pool.put(r.endpoint, r.sender);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            // An error: the connection is not reusable; dropping it closes it.
            Poll::Ready(Some(Err(_))) => self.release = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt as _, Either, Empty};
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    use super::*;

    /// A raw HTTP/1.1 server: answers each request head with `body_len` bytes; closes the
    /// connection after `per_conn` responses. Counts accepted connections.
    async fn server(body_len: usize, per_conn: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_conn {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n");
                        let mut out = head.into_bytes();
                        out.resize(out.len() + body_len, b'x');
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get() -> Request<UpstreamBody> {
        Request::builder()
            .uri("/")
            .header("host", "pool.test")
            .body(Either::Right(Empty::new()))
            .unwrap()
    }

    async fn fetch(pool: &Arc<H1Pool>, addr: SocketAddr) -> usize {
        let resp = pool.send(addr, get()).await.expect("response");
        resp.into_body().collect().await.unwrap().to_bytes().len()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_is_reused_once_its_body_is_read() {
        let (addr, accepted) = server(100, usize::MAX).await;
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        for _ in 0..5 {
            assert_eq!(fetch(&pool, addr).await, 100);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.opened.get(), 1);
        assert_eq!(pool.idle_count(addr), 1);
        // An empty body goes back at once.
        let (empty, accepted) = server(0, usize::MAX).await;
        for _ in 0..3 {
            let resp = pool.send(empty, get()).await.unwrap();
            assert_eq!(pool.idle_count(empty), 1);
            drop(resp);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_backend_closed_while_idle_costs_no_request() {
        let (addr, accepted) = server(10, 1).await;
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        for _ in 0..3 {
            assert_eq!(fetch(&pool, addr).await, 10);
            // Let the connection task see the close.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(pool.opened.get(), 3);
        pool.sweep();
        assert_eq!(pool.idle_count(addr), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_dropped_before_its_end_takes_its_connection_with_it() {
        let (addr, accepted) = server(1 << 20, usize::MAX).await;
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        let mut body = pool.send(addr, get()).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some_and(|d| d.len() < 1 << 20));
        drop(body);
        assert_eq!(pool.idle_count(addr), 0);
        assert_eq!(fetch(&pool, addr).await, 1 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_connect_is_a_connect_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        let err = pool.send(addr, get()).await.unwrap_err();
        assert!(err.is_connect(), "{err}");
        assert!(matches!(err, PoolError::Connect(_)), "{err}");
    }
}
