//! One worker's pool of HTTP/1.1 connections to plain-HTTP endpoints, on the proxy's own client
//! (`h1conn` over `h1codec`).
//!
//! The request path of a keep-alive proxy is dominated by what happens per request. hyper-util's
//! general-purpose client spends much of it on things a worker does not need (a pool shared
//! across threads, a task per connection with channels to it, a task per response waiting for
//! the connection to be idle again), and hyper's own connection API still runs each connection as
//! a task fed through a channel. Here (as in Pingora), each worker owns its pool and each request
//! drives its connection itself:
//!
//! - `send` encodes the request head once, takes the most recently used idle connection to the
//!   endpoint (LIFO keeps few connections warm) that the backend has not closed meanwhile
//!   (`Conn::closed_while_idle`), and runs the exchange on it. A connection found closed before any
//!   byte of the response (the backend's keep-alive timeout crossed the request) costs no failed
//!   request when it is safe to send it again (an idempotent method without a body): the next
//!   idle connection is tried, and at last a new one.
//! - The response body (`PooledBody`) reads from the connection and hands it back when the body
//!   is done, if both messages were complete and the backend did not ask to close. A body dropped
//!   before its end (the client went away) closes its connection: nothing else could tell where
//!   the next response starts.
//! - Idle connections are kept up to `MAX_IDLE_PER_ENDPOINT` per endpoint and `IDLE_TIMEOUT`;
//!   closed and expired ones are pruned when an endpoint's list is touched and by `sweep`, which
//!   the worker runs every `SWEEP_EVERY`.
//!
//! A `101 Switching Protocols` response keeps its connection in the body for the WebSocket splice
//! (`PooledBody::take_upgraded`).
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt as _};
use http::{header, HeaderMap, Method, Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;

use super::{
    forward::is_idempotent,
    h1codec::{self, Framing, RequestFraming},
    h1conn::{BodyState, Conn, ExchangeError},
    headers::Forwarded,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// After the request was handed to a connection.
    #[error("{0}")]
    Exchange(#[source] ExchangeError),
}

impl PoolError {
    /// Nothing reached the endpoint: the request may go to another one.
    pub fn is_connect(&self) -> bool {
        !matches!(self, Self::Exchange(_))
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
    conn: Conn,
    since: Instant,
}

impl H1Pool {
    pub fn new(connect_timeout: Duration, opened: Counter) -> Arc<Self> {
        Arc::new(Self {
            connect_timeout,
            opened,
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `req` (origin-form URI, Host header set, hop-by-hop headers removed) with the
    /// `forwarded` fields (in place of the request's own of those names) to `endpoint` on an idle
    /// connection, or a new one; its response head must be there by `deadline` (connecting has
    /// its own timeout).
    pub async fn send<B>(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        req: Request<B>,
        forwarded: &Forwarded<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<PooledBody>, PoolError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let (parts, mut body) = req.into_parts();
        let framing = request_framing(&parts.headers, &body);
        let head_request = parts.method == Method::HEAD;
        let mut head = Vec::with_capacity(512);
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        h1codec::encode_head(
            &mut head,
            &parts.method,
            target,
            parts
                .headers
                .iter()
                .filter(|(name, _)| !forwarded.replaces(name)),
            forwarded.fields(),
            framing,
        );
        // Sent again on another connection if this one turns out closed before any response.
        let replayable = body.is_end_stream() && is_idempotent(&parts.method);
        while let Some(mut conn) = self.checkout(endpoint) {
            match conn
                .exchange(&head, &mut body, framing, head_request, deadline)
                .await
            {
                Ok(resp) => return Ok(self.pooled(endpoint, conn, resp)),
                Err(err) if replayable && err.is_closed_before_head() => {
                    tracing::debug!(%endpoint, %err, "idle upstream connection was closed; next one");
                }
                Err(err) => return Err(PoolError::Exchange(err)),
            }
        }
        let mut conn = self.connect(endpoint).await?;
        match conn
            .exchange(&head, &mut body, framing, head_request, deadline)
            .await
        {
            Ok(resp) => Ok(self.pooled(endpoint, conn, resp)),
            Err(err) => Err(PoolError::Exchange(err)),
        }
    }

    /// The most recently returned usable idle connection to `endpoint`.
    fn checkout(&self, endpoint: SocketAddr) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&endpoint)?;
        while let Some(mut idle) = list.pop() {
            if idle.usable(now) {
                return Some(idle.conn);
            }
        }
        None
    }

    async fn connect(&self, endpoint: SocketAddr) -> Result<Conn, PoolError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(endpoint))
            .await
            .map_err(|_| PoolError::ConnectTimeout(self.connect_timeout))?
            .map_err(PoolError::Connect)?;
        stream.set_nodelay(true).map_err(PoolError::Connect)?;
        self.opened.inc();
        Ok(Conn::new(stream))
    }

    /// The response with its connection attached, handed back now if there is no body to read.
    fn pooled(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        conn: Conn,
        resp: super::h1conn::Response,
    ) -> Response<PooledBody> {
        let head = resp.head;
        let upgrade = head.framing == Framing::Upgrade;
        let mut body = PooledBody(Inner::H1 {
            conn: Some(conn),
            state: BodyState::new(head.framing),
            release: (resp.reusable && !upgrade).then(|| Release {
                pool: Arc::downgrade(self),
                endpoint,
            }),
        });
        if !upgrade {
            body.release_if_done();
        }
        let mut out = Response::new(body);
        *out.status_mut() = head.status;
        *out.version_mut() = head.version;
        *out.headers_mut() = head.headers;
        out
    }

    fn put(&self, endpoint: SocketAddr, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(endpoint).or_default();
        if list.len() >= MAX_IDLE_PER_ENDPOINT {
            list.retain_mut(|c| c.usable(now));
            if list.len() >= MAX_IDLE_PER_ENDPOINT {
                return;
            }
        }
        list.push(Idle { conn, since: now });
    }

    /// Drops closed and expired idle connections, and endpoints left without any.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            list.retain_mut(|c| c.usable(now));
            !list.is_empty()
        });
    }

    /// Idle connections to `endpoint` (tests).
    pub fn idle_count(&self, endpoint: SocketAddr) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get(&endpoint).map_or(0, Vec::len)
    }
}

impl Idle {
    fn usable(&mut self, now: Instant) -> bool {
        now.duration_since(self.since) < IDLE_TIMEOUT && !self.conn.closed_while_idle()
    }
}

/// How the request body goes out: a body the client framed with Content-Length keeps it; one of
/// known size without it (HTTP/2) gets one; any other gets chunked.
fn request_framing(headers: &HeaderMap, body: &impl Body) -> RequestFraming {
    if body.is_end_stream() || headers.contains_key(header::CONTENT_LENGTH) {
        return RequestFraming::AsIs;
    }
    match body.size_hint().exact() {
        Some(n) => RequestFraming::Length(n),
        None => RequestFraming::Chunked,
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
}

/// An upstream response body: read from a pooled connection, which goes back to its pool when
/// the body is done; or a body of hyper-util's clients (h2c, HTTPS).
#[derive(Debug)]
pub struct PooledBody(Inner);

#[derive(Debug)]
enum Inner {
    Hyper(Incoming),
    H1 {
        /// `None` once the body ended (the connection went back or was closed).
        conn: Option<Conn>,
        state: BodyState,
        /// `Some`: the connection goes back to the pool when the body is done.
        release: Option<Release>,
    },
}

impl PooledBody {
    /// A body whose connection is not ours to pool (another client's).
    pub fn unpooled(inner: Incoming) -> Self {
        Self(Inner::Hyper(inner))
    }

    /// After `101 Switching Protocols` from a pooled connection: its socket and the bytes read
    /// past the response head.
    pub fn take_upgraded(&mut self) -> Option<(TcpStream, Bytes)> {
        match &mut self.0 {
            Inner::H1 { conn, .. } => conn.take().map(Conn::into_upgraded),
            Inner::Hyper(_) => None,
        }
    }

    /// At the end of the body: the connection back to the pool, or closed.
    fn release_if_done(&mut self) {
        let Inner::H1 {
            conn,
            state,
            release,
        } = &mut self.0
        else {
            return;
        };
        if *state != BodyState::Done {
            return;
        }
        let (Some(c), Some(r)) = (conn.take(), release.take()) else {
            return;
        };
        if c.has_unread() {
            return;
        }
        if let Some(pool) = r.pool.upgrade() {
            pool.put(r.endpoint, c);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.0 {
            Inner::Hyper(inner) => return Pin::new(inner).poll_frame(cx).map_err(Into::into),
            Inner::H1 {
                conn: Some(conn),
                state,
                ..
            } => conn.poll_body(cx, state),
            Inner::H1 { conn: None, .. } => return Poll::Ready(None),
        };
        match polled {
            Poll::Ready(Some(Err(err))) => {
                // Not reusable: dropping it closes it.
                self.0 = Inner::H1 {
                    conn: None,
                    state: BodyState::Done,
                    release: None,
                };
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(other) => {
                self.release_if_done();
                Poll::Ready(other.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Hyper(inner) => inner.is_end_stream(),
            Inner::H1 { state, .. } => *state == BodyState::Done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Hyper(inner) => inner.size_hint(),
            Inner::H1 { state, .. } => match state {
                BodyState::Done => SizeHint::with_exact(0),
                BodyState::Length(n) => SizeHint::with_exact(*n),
                _ => SizeHint::default(),
            },
        }
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
    use crate::proxy::forward::UpstreamBody;
    use http::HeaderValue;

    /// A raw HTTP/1.1 server: the n-th request head on a connection is answered with what
    /// `answer(n)` says, after its delay; the connection closes after the last answer. Counts accepted
    /// connections.
    async fn scripted_server<F>(answer: F) -> (SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(usize) -> Option<(Duration, Vec<u8>)> + Clone + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for n in 0.. {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let Some((delay, out)) = answer(n) else {
                            return;
                        };
                        tokio::time::sleep(delay).await;
                        // Closed right after the last answer.
                        if s.write_all(&out).await.is_err() || answer(n + 1).is_none() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// Answers each request head with `body_len` bytes; closes the connection after `per_conn`
    /// responses.
    async fn server(body_len: usize, per_conn: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        scripted_server(move |n| {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n");
            let mut out = head.into_bytes();
            out.resize(out.len() + body_len, b'x');
            (n < per_conn).then_some((Duration::ZERO, out))
        })
        .await
    }

    /// A response deadline no test reaches.
    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(30)
    }

    fn get() -> Request<UpstreamBody> {
        Request::builder()
            .uri("/")
            .header("host", "pool.test")
            .body(Either::Right(Empty::new()))
            .unwrap()
    }

    async fn fetch(pool: &Arc<H1Pool>, addr: SocketAddr) -> usize {
        let resp = pool
            .send(addr, get(), &Forwarded::default(), soon())
            .await
            .expect("response");
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
            let resp = pool
                .send(empty, get(), &Forwarded::default(), soon())
                .await
                .unwrap();
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
            // Let the reactor see the close: the checkout skips the connection.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(pool.opened.get(), 3);
        pool.sweep();
        assert_eq!(pool.idle_count(addr), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_close_not_yet_seen_costs_an_idempotent_request_nothing() {
        use std::io::{Read as _, Write as _};
        // A backend (threads, blocking sockets) that closes each connection 10 ms after its
        // response.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                    std::thread::sleep(Duration::from_millis(10));
                });
            }
        });
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        for i in 0..3 {
            let resp = pool.send(addr, get(), &Forwarded::default(), soon()).await;
            let body = resp
                .unwrap_or_else(|e| panic!("request {i}: {e}"))
                .into_body();
            assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"ok");
            // The thread blocks, so the reactor does not run: the close arrives unseen, and the
            // next request is written to the closed connection before it is found out.
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(pool.opened.get(), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_dropped_before_its_end_takes_its_connection_with_it() {
        let (addr, accepted) = server(1 << 20, usize::MAX).await;
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        let mut body = pool
            .send(addr, get(), &Forwarded::default(), soon())
            .await
            .unwrap()
            .into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some_and(|d| d.len() < 1 << 20));
        drop(body);
        assert_eq!(pool.idle_count(addr), 0);
        assert_eq!(fetch(&pool, addr).await, 1 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// Reads one request (head, then a Content-Length or chunked body) from `s` into `buf`;
    /// `None` at EOF.
    async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        let complete = |b: &[u8]| -> Option<usize> {
            let end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
            let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
            if head.contains("transfer-encoding: chunked") {
                let tail = b[end..].windows(5).position(|w| w == b"0\r\n\r\n")?;
                return Some(end + tail + 5);
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            (b.len() >= end + len).then_some(end + len)
        };
        loop {
            if let Some(n) = complete(buf) {
                return Some(buf.drain(..n).collect());
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A server that answers the requests of each connection with `script`'s responses in turn
    /// (a response ending the script closes the connection after it) and sends what it received.
    async fn scripted(
        script: &'static [u8],
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    if let Some(req) = read_request(&mut s, &mut buf).await {
                        let _ = tx.send(req);
                        let _ = s.write_all(script).await;
                    }
                    // Keep the connection open until the client closes it.
                    let _ = s.read(&mut [0u8; 1]).await;
                });
            }
        });
        (addr, rx)
    }

    /// Status, body, trailer names, and whether the connection went back to the pool.
    async fn round_trip<B>(
        script: &'static [u8],
        req: Request<B>,
    ) -> (u16, Vec<u8>, Vec<String>, bool, Vec<u8>)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let (addr, mut received) = scripted(script).await;
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        let resp = pool
            .send(addr, req, &Forwarded::default(), soon())
            .await
            .expect("response head");
        let status = resp.status().as_u16();
        let collected = resp.into_body().collect().await.expect("body");
        let trailers = collected
            .trailers()
            .map(|t| t.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        let body = collected.to_bytes().to_vec();
        (
            status,
            body,
            trailers,
            pool.idle_count(addr) == 1,
            received.recv().await.unwrap(),
        )
    }

    fn request(method: Method) -> Request<Empty<Bytes>> {
        Request::builder()
            .method(method)
            .uri("/r")
            .header("host", "pool.test")
            .body(Empty::new())
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_response_framing_is_read_and_only_complete_exchanges_are_pooled() {
        // (method, backend's bytes, status, body, trailer names, pooled)
        type Case = (
            Method,
            &'static [u8],
            u16,
            &'static [u8],
            &'static [&'static str],
            bool,
        );
        let cases: &[Case] = &[
            (Method::GET, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", 200, b"hello", &[], true),
            (Method::GET, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\nx-sum: 1\r\n\r\n", 200, b"hello", &["x-sum"], true),
            (Method::GET, b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi", 200, b"hi", &[], false),
            (Method::HEAD, b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n", 200, b"", &[], true),
            (Method::GET, b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", &[], true),
            (Method::GET, b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n", 304, b"", &[], true),
            (Method::GET, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 200, b"ok", &[], true),
            (Method::GET, b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", 200, b"ok", &[], false),
            // More bytes than the body: the backend is not trusted with another request.
            (Method::GET, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA", 200, b"ok", &[], false),
        ];
        for (method, script, status, body, trailers, pooled) in cases {
            let got = round_trip(script, request(method.clone())).await;
            let want = (
                *status,
                body.to_vec(),
                trailers.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                *pooled,
            );
            assert_eq!(
                (got.0, got.1, got.2, got.3),
                want,
                "{method} {}",
                String::from_utf8_lossy(script)
            );
            let head = String::from_utf8(got.4).unwrap();
            assert!(
                head.starts_with(&format!("{method} /r HTTP/1.1\r\nhost: pool.test\r\n")),
                "{head}"
            );
        }
    }

    /// A server that answers one request with `parts`, written one by one, then closes.
    async fn one_shot(parts: &'static [&'static [u8]]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s, &mut Vec::new()).await.unwrap();
            for part in parts {
                s.write_all(part).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_to_the_close_ends_with_the_close_and_is_not_pooled() {
        let addr = one_shot(&[b"HTTP/1.1 200 OK\r\n\r\nuntil", b" the end"]).await;
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        let resp = pool
            .send(addr, request(Method::GET), &Forwarded::default(), soon())
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"until the end");
        assert_eq!(pool.idle_count(addr), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_cut_short_is_an_error_not_a_short_response() {
        let scripts: [&'static [&'static [u8]]; 2] = [
            &[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
            &[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"],
        ];
        for script in scripts {
            let addr = one_shot(script).await;
            let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
            let resp = pool
                .send(addr, request(Method::GET), &Forwarded::default(), soon())
                .await
                .unwrap();
            let err = resp.into_body().collect().await.unwrap_err();
            assert!(err.to_string().contains("closed"), "{err}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn request_bodies_keep_their_length_or_go_chunked() {
        use http_body_util::{Full, StreamBody};
        const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        // Declared length: sent as is. Known size, no header (an HTTP/2 client's body): a
        // content-length is added.
        for declared in [true, false] {
            let mut req = Request::post("/r").header("host", "pool.test");
            if declared {
                req = req.header("content-length", "5");
            }
            let req = req.body(Full::new(Bytes::from_static(b"hello"))).unwrap();
            let got = round_trip(OK, req).await;
            assert!(
                got.4.ends_with(b"content-length: 5\r\n\r\nhello"),
                "declared {declared}: {:?}",
                String::from_utf8_lossy(&got.4)
            );
        }
        // Unknown size: chunked.
        let frames = futures::stream::iter(
            [&b"hel"[..], b"", b"lo"]
                .map(|d| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(d)))),
        );
        let req = Request::post("/r")
            .header("host", "pool.test")
            .body(StreamBody::new(frames))
            .unwrap();
        let got = round_trip(OK, req).await;
        assert_eq!(got.0, 200);
        assert!(got.3, "the exchange was complete");
        assert!(
            got.4
                .ends_with(b"transfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"),
            "{:?}",
            String::from_utf8_lossy(&got.4)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_response_before_the_request_body_ends_stops_the_upload() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            let _ = s.read(&mut buf).await;
        });
        // A body that never ends.
        let body = http_body_util::StreamBody::new(futures::stream::pending::<
            Result<Frame<Bytes>, std::io::Error>,
        >());
        let req = Request::post("/r")
            .header("host", "pool.test")
            .body(body)
            .unwrap();
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            pool.send(addr, req, &Forwarded::default(), soon()),
        )
        .await
        .expect("the response ends the exchange")
        .unwrap();
        assert_eq!(resp.status(), 413);
        drop(resp);
        assert_eq!(
            pool.idle_count(addr),
            0,
            "an unfinished request leaves the connection unusable"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_101_hands_over_the_socket_with_the_bytes_read_past_the_head() {
        let (addr, _received) = scripted(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nEARLY").await;
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        let mut resp = pool
            .send(addr, request(Method::GET), &Forwarded::default(), soon())
            .await
            .unwrap();
        assert_eq!(resp.status(), 101);
        assert!(resp.body().is_end_stream());
        // Give the read-ahead a chance to be in the buffer (it came with the head here).
        let (mut io, read_ahead) = resp.body_mut().take_upgraded().expect("the socket");
        assert_eq!(&read_ahead[..], b"EARLY");
        io.write_all(b"up").await.unwrap();
        assert_eq!(pool.idle_count(addr), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn forwarding_fields_replace_the_clients_own_in_the_head() {
        use crate::proxy::headers::{self, ClientSide, Peer};
        let (addr, mut received) = scripted(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let mut req = request(Method::GET);
        for (name, value) in [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-request-id", "keep-me"),
        ] {
            req.headers_mut()
                .append(name, HeaderValue::from_static(value));
        }
        let peer = Peer::new("198.18.0.7".parse().unwrap(), 8080);
        let host = HeaderValue::from_static("pool.test");
        let client = ClientSide {
            peer: &peer,
            trusted: false,
            proto: "http",
            host: &host,
        };
        let fields = headers::forwarded(req.headers(), client, || unreachable!("the id is kept"));
        assert_eq!(fields.request_id(), "keep-me");
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        pool.send(addr, req, &fields, soon()).await.unwrap();
        let head = String::from_utf8(received.recv().await.unwrap()).unwrap();
        let want = "GET /r HTTP/1.1\r\nhost: pool.test\r\nx-request-id: keep-me\r\n\
                    x-forwarded-for: 198.18.0.7\r\nx-real-ip: 198.18.0.7\r\n\
                    x-forwarded-proto: http\r\nx-forwarded-port: 8080\r\n\
                    x-forwarded-host: pool.test\r\n\r\n";
        assert_eq!(head, want);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_connect_is_a_connect_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        let err = pool
            .send(addr, get(), &Forwarded::default(), soon())
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err}");
        assert!(matches!(err, PoolError::Connect(_)), "{err}");
    }

    /// Answers the n-th request on a connection with "ok" after `delays[n]`.
    async fn slow_server(delays: Vec<Duration>) -> (SocketAddr, Arc<AtomicUsize>) {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
        scripted_server(move |n| delays.get(n).map(|d| (*d, ok.clone()))).await
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_backend_silent_past_the_deadline_times_out() {
        let (addr, _) = slow_server(vec![Duration::from_secs(30)]).await;
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        let err = pool
            .send(addr, get(), &Forwarded::default(), deadline)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PoolError::Exchange(ExchangeError::TimedOut)),
            "{err}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_timer_left_by_an_earlier_request_does_not_cut_a_later_one() {
        // The second answer comes after the first request's deadline has long passed: the
        // connection's timer, set for the first request, must be moved, not fire.
        let (addr, accepted) = slow_server(vec![Duration::ZERO, Duration::from_millis(400)]).await;
        let pool = H1Pool::new(Duration::from_secs(1), Counter::default());
        let first = tokio::time::Instant::now() + Duration::from_millis(150);
        let resp = pool
            .send(addr, get(), &Forwarded::default(), first)
            .await
            .unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = tokio::time::Instant::now() + Duration::from_secs(5);
        let resp = pool
            .send(addr, get(), &Forwarded::default(), second)
            .await
            .unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection, one timer"
        );
    }
}
