//! One client connection served as HTTP/1.1 by the proxy's own server: requests one after the
//! other (pipelined ones wait in the read buffer), each handled by the worker's request handler
//! inside the connection's task. No task, channel or allocation per request beyond the request's
//! own head and header map; the wire format is `h1request`'s.
//!
//! Data flow: `serve` reads a request head (bounded by the header-read timeout, which also closes
//! idle keep-alive connections; a bad head is answered 400/431 and the connection closed), and
//! calls the handler. A request with a body gets a `RequestBody` (`h1body`) whose bytes this
//! connection reads and decodes (length or chunked) only when the body is polled: `100 Continue`
//! goes out then, so a request refused from its head (413) never has its body sent. While the handler
//! runs and while its response is written (head and first body frame in one write, chunked when
//! the size is unknown), the connection feeds the request body as it is asked for. After the
//! response, the connection waits for the next request, unless the client or the response asked
//! to close, the request body was left unread (what is left of a short one is skipped), or the
//! worker drains (`Drain`: `Connection: close` on responses, idle connections closed). A `101`
//! response carrying a `websocket::Upgrade` joins the client connection (and what it sent past
//! the request head) with the backend's. A connection that opens with the HTTP/2 preface is
//! handed back to the caller for hyper's HTTP/2 server.
use std::{
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    sync::atomic::{AtomicBool, Ordering},
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Request, Response, StatusCode, Version};
use hyper::body::Body as _;
use tokio::{
    io::AsyncWrite,
    sync::{futures::Notified, Notify},
    time::{Instant, Sleep},
};
use tokio_util::io::poll_read_buf;

use super::{
    forward::ProxyBody,
    h1body::{BodyState, Feeding, CONTINUE},
    h1codec::{self, ChunkedDecoder},
    h1conn::{reserve, READ_CHUNK},
    h1request::{self, BodyFraming, Persistence, RequestError, RequestHead, ResponseFraming},
    websocket,
};

pub use super::h1body::{RequestBody, RequestBodyError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Response bytes queued for writing before the body is polled again.
const WRITE_HIGH: usize = 64 << 10;
/// What is left of an unread request body that is read and dropped to keep the connection.
const SKIP_BODY_MAX: u64 = 64 << 10;
/// How long a connection closed with input possibly in flight keeps reading (and dropping) it, so
/// that the kernel does not answer that input with a reset that could destroy the response.
const LINGER: Duration = Duration::from_secs(2);

/// The settings of the worker's HTTP/1.1 connections.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// From waiting for a request to having its whole head (slowloris; idle keep-alive).
    pub header_read_timeout: Duration,
    /// Larger request heads are answered with 431.
    pub max_header_bytes: usize,
}

/// How a worker tells its connections to finish: shared by all of them.
#[derive(Debug, Default)]
pub struct Drain {
    /// Responses say `Connection: close` and the connection closes after them.
    announce: AtomicBool,
    /// Connections waiting for a request close now.
    close_idle: AtomicBool,
    idle_closed: Notify,
}

impl Drain {
    /// Phase 1: every connection closes after its current response.
    pub fn announce(&self) {
        self.announce.store(true, Ordering::Relaxed);
    }

    /// Phase 2: connections waiting for a request close now.
    pub fn close_idle(&self) {
        self.announce();
        self.close_idle.store(true, Ordering::Relaxed);
        self.idle_closed.notify_waiters();
    }

    fn announced(&self) -> bool {
        self.announce.load(Ordering::Relaxed)
    }
}

/// How a connection ended.
#[derive(Debug)]
pub enum Ended {
    /// Closed, by the client or by us.
    Closed,
    /// The client opened with the HTTP/2 preface (h2c prior knowledge): the connection and the
    /// bytes read so far, for the HTTP/2 server.
    Http2 { io: super::tls::Stream, read: Bytes },
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading: {0}")]
    Read(#[source] io::Error),
    #[error("writing: {0}")]
    Write(#[source] io::Error),
    #[error("bad request head: {0}")]
    Head(#[from] RequestError),
    #[error("no complete request head within {0:?}")]
    HeaderTimeout(Duration),
    #[error("connection closed inside a request head")]
    ClosedInHead,
    #[error("response body: {0}")]
    ResponseBody(#[source] BoxError),
}

/// Serves HTTP/1.1 on `io` until the connection ends; `handle` answers each request.
pub async fn serve<F, Fut>(
    io: super::tls::Stream,
    settings: Settings,
    drain: &Drain,
    mut handle: F,
) -> Result<Ended, ServeError>
where
    F: FnMut(Request<RequestBody>) -> Fut,
    Fut: Future<Output = Result<Response<ProxyBody>, std::convert::Infallible>>,
{
    let mut conn = Conn {
        io,
        read: BytesMut::new(),
        out: Out::default(),
        scratch: BytesMut::new(),
    };
    let timer = tokio::time::sleep(settings.header_read_timeout);
    tokio::pin!(timer);
    // Registered once for the connection's life, not per wait for a request.
    let closing = drain.idle_closed.notified();
    tokio::pin!(closing);
    closing.as_mut().enable();
    let mut first = true;
    loop {
        let deadline = Instant::now() + settings.header_read_timeout;
        let head = conn
            .read_head(
                first,
                deadline,
                (timer.as_mut(), closing.as_mut()),
                settings,
                drain,
            )
            .await;
        let head = match head {
            Ok(Some(Next::Request(head))) => head,
            Ok(Some(Next::Http2)) => {
                return Ok(Ended::Http2 {
                    io: conn.io,
                    read: conn.read.freeze(),
                })
            }
            Ok(None) => return Ok(Ended::Closed),
            Err(err) => {
                if let Some(status) = err.answer() {
                    conn.refuse(status, &err).await;
                }
                return Err(err);
            }
        };
        first = false;
        let RequestHead {
            method,
            uri,
            version,
            headers,
            body,
            keep_alive,
            expect_continue,
        } = head;
        let feed = match body {
            BodyFraming::Empty => None,
            BodyFraming::Length(n) => Some(Feeding::new(BodyState::Length(n), expect_continue)),
            BodyFraming::Chunked => Some(Feeding::new(
                BodyState::Chunked(ChunkedDecoder::default()),
                expect_continue,
            )),
        };
        let mut req = Request::new(RequestBody {
            shared: feed.as_ref().map(|f| f.shared.clone()),
            exact: match body {
                BodyFraming::Length(n) => Some(n),
                BodyFraming::Empty => Some(0),
                BodyFraming::Chunked => None,
            },
        });
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        let trailers_wanted = version == Version::HTTP_11
            && req.headers().get_all(header::TE).iter().any(|v| {
                v.as_bytes()
                    .windows(8)
                    .any(|w| w.eq_ignore_ascii_case(b"trailers"))
            });
        let mut feed = feed;
        let responding = handle(req);
        tokio::pin!(responding);
        let mut resp = std::future::poll_fn(|cx| loop {
            if let Poll::Ready(Ok(resp)) = responding.as_mut().poll(cx) {
                return Poll::Ready(Ok(resp));
            }
            match feed.as_mut() {
                Some(f) => match conn.poll_feed(cx, f) {
                    Poll::Ready(Ok(true)) => continue,
                    Poll::Ready(Ok(false)) | Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                },
                None => return Poll::Pending,
            }
        })
        .await?;

        let status = resp.status();
        let upgrade = match status {
            StatusCode::SWITCHING_PROTOCOLS => resp.extensions_mut().remove::<websocket::Upgrade>(),
            _ => None,
        };
        let framing = h1request::response_framing(
            &method,
            version,
            status,
            resp.headers().contains_key(header::CONTENT_LENGTH),
            resp.body().size_hint().exact(),
        );
        let mut persist = keep_alive
            && !drain.announced()
            && framing != ResponseFraming::Close
            && (status != StatusCode::SWITCHING_PROTOCOLS || upgrade.is_some());
        // A body the client is still sending that nobody will read: keep the connection only if
        // what is left is small enough to skip. One the client holds back (no `100 Continue`
        // was sent) is not coming: the connection cannot be reused.
        let unread = feed.as_ref().is_some_and(|f| !f.is_done());
        let skippable = feed
            .as_ref()
            .is_some_and(|f| f.continue_left == 0 && f.left().is_some_and(|n| n <= SKIP_BODY_MAX));
        if unread && !skippable {
            persist = false;
        }
        let persistence = match (persist, version) {
            (false, _) if upgrade.is_none() => Persistence::Close,
            (true, Version::HTTP_10) => Persistence::KeepAlive,
            _ => Persistence::Default,
        };
        let (parts, body) = resp.into_parts();
        conn.out.head.clear();
        with_date(|date| {
            h1request::encode_response_head(
                &mut conn.out.head,
                parts.status,
                &parts.headers,
                framing,
                persistence,
                date,
            )
        });
        drop(parts);
        conn.write_response(body, framing, trailers_wanted, &mut feed)
            .await?;
        if let Some(upgrade) = upgrade {
            websocket::splice(conn.io, conn.read.freeze(), upgrade);
            return Ok(Ended::Closed);
        }
        if persist {
            if let Some(f) = feed.as_mut().filter(|f| !f.is_done()) {
                persist = conn.skip_body(f, settings.header_read_timeout).await;
            }
        }
        if !persist {
            let linger = unread || !conn.read.is_empty();
            conn.close(linger).await;
            return Ok(Ended::Closed);
        }
    }
}

/// What comes next on a connection.
// Returned once per request and taken apart at once: a box would cost an allocation each.
#[expect(clippy::large_enum_variant)]
enum Next {
    Request(RequestHead),
    Http2,
}

impl ServeError {
    /// The status a client is answered with before the connection is closed, if any.
    fn answer(&self) -> Option<StatusCode> {
        match self {
            Self::Head(err) => Some(err.status()),
            Self::HeaderTimeout(_) => Some(StatusCode::REQUEST_TIMEOUT),
            _ => None,
        }
    }
}

struct Conn {
    io: super::tls::Stream,
    read: BytesMut,
    out: Out,
    /// Chunk size lines are cut from here.
    scratch: BytesMut,
}

impl Conn {
    /// The next request head; `None` when the client closed between requests or the worker
    /// closes idle connections.
    async fn read_head(
        &mut self,
        first: bool,
        deadline: Instant,
        (mut timer, mut closing): (Pin<&mut Sleep>, Pin<&mut Notified<'_>>),
        settings: Settings,
        drain: &Drain,
    ) -> Result<Option<Next>, ServeError> {
        std::future::poll_fn(|cx| loop {
            if first && self.read.starts_with(h1request::H2_PREFACE) {
                return Poll::Ready(Ok(Some(Next::Http2)));
            }
            let maybe_h2 = first && h1request::H2_PREFACE.starts_with(&self.read);
            if !self.read.is_empty() && !maybe_h2 {
                if let Some(head) =
                    h1request::parse_request(&mut self.read, settings.max_header_bytes)?
                {
                    return Poll::Ready(Ok(Some(Next::Request(head))));
                }
            }
            reserve(&mut self.read, READ_CHUNK);
            match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
                Poll::Ready(Ok(0)) if self.read.iter().all(|b| matches!(b, b'\r' | b'\n')) => {
                    return Poll::Ready(Ok(None))
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ServeError::ClosedInHead)),
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ServeError::Read(e))),
                Poll::Pending => {}
            }
            let idle = self.read.is_empty();
            if idle
                && (drain.close_idle.load(Ordering::Relaxed)
                    || closing.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Ok(None));
            }
            // One timer per connection, moved only when it fires early: requests do not each
            // reset it.
            if timer.as_mut().poll(cx).is_ready() {
                if Instant::now() < deadline {
                    timer.as_mut().reset(deadline);
                    continue;
                }
                return Poll::Ready(match self.read.is_empty() {
                    true => Ok(None),
                    false => Err(ServeError::HeaderTimeout(settings.header_read_timeout)),
                });
            }
            return Poll::Pending;
        })
        .await
    }

    /// Answers a refused request head with `status` and closes.
    async fn refuse(&mut self, status: StatusCode, why: &ServeError) {
        let body = format!("{}: {why}\n", status.canonical_reason().unwrap_or("error"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        self.out.head.clear();
        with_date(|date| {
            h1request::encode_response_head(
                &mut self.out.head,
                status,
                &headers,
                ResponseFraming::Length(body.len() as u64),
                Persistence::Close,
                date,
            )
        });
        self.out.head.extend_from_slice(body.as_bytes());
        self.out.head_at = 0;
        let wrote = std::future::poll_fn(|cx| self.out.poll_write(&mut self.io, cx)).await;
        if wrote.is_ok() {
            self.close(true).await;
        }
    }

    /// Feeds the request body when it asks for data: `Ready(Ok(true))` when something changed
    /// for it (data, end, error), `Ready(Ok(false))` when it needs nothing now.
    fn poll_feed(
        &mut self,
        cx: &mut Context<'_>,
        feed: &mut Feeding,
    ) -> Poll<Result<bool, ServeError>> {
        {
            let mut shared = feed.shared.lock().unwrap_or_else(|e| e.into_inner());
            if shared.end.is_some() || shared.dropped {
                return Poll::Ready(Ok(false));
            }
            if !shared.wants || shared.frame.is_some() {
                if !shared
                    .conn
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    shared.conn = Some(cx.waker().clone());
                }
                return Poll::Ready(Ok(false));
            }
        }
        if feed.continue_left > 0 {
            while feed.continue_left > 0 {
                let sent = CONTINUE.len() - feed.continue_left;
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &CONTINUE[sent..]))
                    .map_err(ServeError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(ServeError::Write(io::ErrorKind::WriteZero.into())));
                }
                feed.continue_left -= n;
            }
            ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(ServeError::Write)?;
        }
        loop {
            let next = match feed.state.next(&mut self.read) {
                Ok(next) => next,
                Err(err) => {
                    feed.finish(cx, Err(err.to_string()));
                    return Poll::Ready(Ok(true));
                }
            };
            if let Some(frame) = next {
                feed.deliver(cx, frame);
                return Poll::Ready(Ok(true));
            }
            if feed.state == BodyState::Done {
                feed.finish(cx, Ok(()));
                return Poll::Ready(Ok(true));
            }
            reserve(&mut self.read, feed.state.read_size());
            match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
                Poll::Ready(Ok(0)) => {
                    feed.finish(
                        cx,
                        Err("client closed the connection inside the request body".into()),
                    );
                    return Poll::Ready(Ok(true));
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => {
                    feed.finish(cx, Err(format!("reading the request body: {e}")));
                    return Poll::Ready(Err(ServeError::Read(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Writes the response head (in `out.head`) and `body`, feeding the request body meanwhile.
    async fn write_response(
        &mut self,
        body: ProxyBody,
        framing: ResponseFraming,
        trailers_wanted: bool,
        feed: &mut Option<Feeding>,
    ) -> Result<(), ServeError> {
        self.out.head_at = 0;
        let mut body = match framing {
            ResponseFraming::NoBody => None,
            _ => Some(body),
        };
        let chunked = framing == ResponseFraming::Chunked;
        let mut flushed = false;
        std::future::poll_fn(|cx| loop {
            if let Some(f) = feed.as_mut() {
                if let Poll::Ready(Err(err)) = self.poll_feed(cx, f) {
                    return Poll::Ready(Err(err));
                }
            }
            if let Some(b) = body.as_mut().filter(|_| self.out.queued() < WRITE_HIGH) {
                match Pin::new(b).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        match frame.into_data() {
                            Ok(data) if data.is_empty() => {}
                            Ok(data) if chunked => {
                                h1codec::put_chunk_size(&mut self.scratch, data.len());
                                self.out.parts.push_back(self.scratch.split().freeze());
                                self.out.parts.push_back(data);
                                self.out.parts.push_back(Bytes::from_static(b"\r\n"));
                            }
                            Ok(data) => self.out.parts.push_back(data),
                            Err(frame) => {
                                if let (Ok(trailers), true) = (frame.into_trailers(), chunked) {
                                    let wanted = trailers_wanted.then_some(&trailers);
                                    h1codec::encode_last_chunk(&mut self.scratch, wanted);
                                    self.out.parts.push_back(self.scratch.split().freeze());
                                    body = None;
                                }
                            }
                        }
                        continue;
                    }
                    Poll::Ready(None) => {
                        if chunked {
                            self.out
                                .parts
                                .push_back(Bytes::from_static(h1codec::LAST_CHUNK));
                        }
                        body = None;
                        continue;
                    }
                    Poll::Ready(Some(Err(err))) => {
                        // Cut short: the client sees the connection close before the end.
                        return Poll::Ready(Err(ServeError::ResponseBody(err)));
                    }
                    Poll::Pending if self.out.is_empty() => return Poll::Pending,
                    Poll::Pending => {}
                }
            }
            if !self.out.is_empty() {
                ready!(self.out.poll_write(&mut self.io, cx)).map_err(ServeError::Write)?;
                continue;
            }
            if body.is_some() {
                return Poll::Pending;
            }
            if !flushed {
                ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(ServeError::Write)?;
                flushed = true;
            }
            return Poll::Ready(Ok(()));
        })
        .await
    }

    /// Reads and drops what is left of a short request body nobody read, so the connection can
    /// carry the next request; `false` if it could not.
    async fn skip_body(&mut self, feed: &mut Feeding, within: Duration) -> bool {
        let skipping = std::future::poll_fn(|cx| loop {
            match feed.state.next(&mut self.read) {
                Ok(Some(_)) => continue,
                Ok(None) if feed.state == BodyState::Done => return Poll::Ready(true),
                Ok(None) => {}
                Err(_) => return Poll::Ready(false),
            }
            reserve(&mut self.read, READ_CHUNK);
            match ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)) {
                Ok(0) | Err(_) => return Poll::Ready(false),
                Ok(_) => {}
            }
        });
        tokio::time::timeout(within, skipping)
            .await
            .unwrap_or(false)
    }

    /// Closes the connection: the write side first, then, when the client may still be sending,
    /// reads and drops its input for a while (`LINGER`) so that our last response is not lost to
    /// a reset.
    async fn close(&mut self, linger: bool) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        if self.io.shutdown().await.is_err() || !linger {
            return;
        }
        // Into the read buffer, not a stack array: that would grow every connection's future.
        let _ = tokio::time::timeout(LINGER, async {
            self.read.clear();
            reserve(&mut self.read, READ_CHUNK);
            while matches!(self.io.read_buf(&mut self.read).await, Ok(n) if n > 0) {
                self.read.clear();
            }
        })
        .await;
    }
}

/// Response bytes waiting to be written: the head, then body pieces (with their chunk framing).
#[derive(Default)]
struct Out {
    head: Vec<u8>,
    head_at: usize,
    parts: std::collections::VecDeque<Bytes>,
}

impl Out {
    fn is_empty(&self) -> bool {
        self.head_at == self.head.len() && self.parts.is_empty()
    }

    fn queued(&self) -> usize {
        self.head.len() - self.head_at + self.parts.iter().map(Bytes::len).sum::<usize>()
    }

    /// Writes everything queued, several pieces per write.
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let mut slices = [IoSlice::new(&[]); 8];
            let mut n = 0;
            if self.head_at < self.head.len() {
                slices[0] = IoSlice::new(&self.head[self.head_at..]);
                n = 1;
            }
            for part in self.parts.iter().take(slices.len() - n) {
                slices[n] = IoSlice::new(part);
                n += 1;
            }
            let mut wrote = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))?;
            if wrote == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_head = wrote.min(self.head.len() - self.head_at);
            self.head_at += from_head;
            wrote -= from_head;
            while wrote > 0 {
                let Some(front) = self.parts.front_mut() else {
                    break;
                };
                if wrote >= front.len() {
                    wrote -= front.len();
                    self.parts.pop_front();
                } else {
                    let _ = front.split_to(wrote);
                    wrote = 0;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The `date` value of responses, formatted once a second per worker thread.
struct CachedDate {
    second: u64,
    text: Vec<u8>,
}

thread_local! {
    static DATE: std::cell::RefCell<CachedDate> =
        const { std::cell::RefCell::new(CachedDate { second: 0, text: Vec::new() }) };
}

/// Calls `f` with the current `date` value.
fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|date| {
        if date.second != second || date.text.is_empty() {
            date.text = httpdate::fmt_http_date(now).into_bytes();
            date.second = second;
        }
        f(&date.text)
    })
}

#[cfg(test)]
#[path = "h1server_tests.rs"]
mod tests;
