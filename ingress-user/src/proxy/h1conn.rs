//! One HTTP/1.1 connection to a plain-HTTP endpoint, driven by the request that uses it: no task,
//! no channel. The wire format is `h1codec`'s; the pool that keeps idle connections is `h1pool`.
//! The response timeout is one timer per connection, moved only when it fires before the current
//! request's deadline (deadlines only grow on a connection): requests do not each register and
//! remove a timer.
//!
//! Data flow: `exchange` writes the encoded request head, then the request body frames (as they
//! are, or as chunks), while it watches the read side: the response head may come before the
//! request body is done (a backend refusing an upload), and then writing stops. The head is parsed
//! from the connection's read buffer; `poll_body` then cuts the response body from the same
//! buffer, reading more as needed, until its framing says it is done, when the connection can go
//! back to the pool if both messages were complete and the backend did not ask to close. A 101
//! response hands the socket and whatever was read past the head to the upgrade (`into_upgraded`).
use std::{
    future::Future as _,
    io::{self, IoSlice},
    pin::Pin,
    task::{ready, Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame};
use tokio::{
    io::AsyncWrite as _,
    net::TcpStream,
    time::{Instant, Sleep},
};
use tokio_util::io::poll_read_buf;

use super::h1codec::{self, Chunk, ChunkedDecoder, CodecError, Framing, Head, RequestFraming};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Read buffer space made free before a read of a head or a small body.
pub(super) const READ_CHUNK: usize = 8 << 10;
/// Read buffer space made free before a read of a large body.
pub(super) const READ_CHUNK_LARGE: usize = 64 << 10;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("writing the request: {0}")]
    Write(#[source] io::Error),
    #[error("reading the response: {0}")]
    Read(#[source] io::Error),
    #[error("connection closed before the response head")]
    ClosedBeforeHead,
    #[error("connection closed {0} bytes before the end of the response body")]
    ClosedInBody(u64),
    #[error("connection closed inside a chunked response body")]
    ClosedInChunks,
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
    #[error("no response head before the deadline")]
    TimedOut,
}

impl ExchangeError {
    /// The connection was found closed or reset before any byte of a response: on a connection
    /// that was idle, the backend closed it meanwhile (keep-alive timeout), and the request can
    /// be sent again elsewhere if that is safe.
    pub fn is_closed_before_head(&self) -> bool {
        match self {
            Self::ClosedBeforeHead => true,
            Self::Write(e) | Self::Read(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// An HTTP/1.1 connection with its read buffer.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    read: BytesMut,
    /// Free buffer space wanted for the next response's first read: the size of the last
    /// response, when it was larger than `READ_CHUNK` (up to `READ_CHUNK_LARGE`), so that a
    /// backend sending ~10 KiB responses is read in one go, not two.
    first_read: usize,
    /// The response timer, made on the first exchange and kept for the connection's life.
    timer: Option<Pin<Box<Sleep>>>,
}

/// A response head, and whether the connection may be reused after its body.
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    /// Both the request and the response head were complete, and the backend keeps the
    /// connection open (`Head::keep_alive`).
    pub reusable: bool,
}

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            first_read: READ_CHUNK,
            timer: None,
        }
    }

    /// An idle connection the backend closed, reset, or sent bytes on unasked: not to be used.
    /// Costs a syscall only when the socket was seen readable (the last response's read left
    /// readiness set, or something arrived since).
    pub fn closed_while_idle(&mut self) -> bool {
        if !self.read.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                !matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends `head` (from `h1codec::encode_head`) and `body` (chunked when `framing` says so),
    /// and reads the response head, by `deadline` (else `TimedOut`). `head_request`: the method
    /// was HEAD.
    pub async fn exchange<B>(
        &mut self,
        head: &[u8],
        body: B,
        framing: RequestFraming,
        head_request: bool,
        deadline: Instant,
    ) -> Result<Response, ExchangeError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut send = Sending {
            head,
            written: 0,
            pending: Bytes::new(),
            body: Some(body),
            chunked: framing == RequestFraming::Chunked,
        };
        if send.body.as_ref().is_some_and(Body::is_end_stream) {
            send.body = None;
        }
        std::future::poll_fn(|cx| match self.poll_exchange(cx, &mut send, head_request) {
            Poll::Pending if self.poll_deadline(cx, deadline).is_ready() => {
                Poll::Ready(Err(ExchangeError::TimedOut))
            }
            polled => polled,
        })
        .await
    }

    /// `Ready` once `deadline` has passed; otherwise the connection's timer will wake the task
    /// by then.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            // Set for an earlier request: moved to this one's deadline only now.
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }

    fn poll_exchange<B>(
        &mut self,
        cx: &mut Context<'_>,
        send: &mut Sending<'_, B>,
        head_request: bool,
    ) -> Poll<Result<Response, ExchangeError>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        loop {
            // The response first: once its head is here, what is left of the request is not sent.
            match self.first_read {
                READ_CHUNK => reserve(&mut self.read, READ_CHUNK),
                want => {
                    if self.read.capacity() - self.read.len() < want {
                        self.read.reserve(want);
                    }
                }
            }
            match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ExchangeError::ClosedBeforeHead)),
                Poll::Ready(Ok(_)) => {
                    let before = self.read.len();
                    if let Some(head) = h1codec::parse_head(&mut self.read, head_request)? {
                        let head_len = (before - self.read.len()) as u64;
                        self.first_read = match head.framing {
                            Framing::Length(n) => usize::try_from(n.saturating_add(head_len))
                                .unwrap_or(usize::MAX)
                                .clamp(READ_CHUNK, READ_CHUNK_LARGE),
                            _ => READ_CHUNK,
                        };
                        let reusable = head.keep_alive && send.is_done();
                        return Poll::Ready(Ok(Response { head, reusable }));
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ExchangeError::Read(e))),
                Poll::Pending => {}
            }
            if send.is_done() {
                return Poll::Pending;
            }
            // The next body frame, so that it leaves with the head in one write.
            if send.pending.is_empty() {
                if let Some(body) = send.body.as_mut() {
                    match Pin::new(body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data() {
                                send.queue(data);
                            }
                            // Trailers of a request are not forwarded (HTTP/1.1 backends rarely
                            // read them; hyper's client drops them as well).
                            continue;
                        }
                        Poll::Ready(Some(Err(e))) => {
                            return Poll::Ready(Err(ExchangeError::RequestBody(e.into())))
                        }
                        Poll::Ready(None) => {
                            send.body = None;
                            if send.chunked {
                                send.pending = Bytes::from_static(h1codec::LAST_CHUNK);
                            }
                        }
                        // Nothing to send yet; the head goes out alone.
                        Poll::Pending if send.written < send.head.len() => {}
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
            let head_left = &send.head[send.written..];
            if head_left.is_empty() && send.pending.is_empty() {
                continue;
            }
            let wrote = if head_left.is_empty() {
                Pin::new(&mut self.io).poll_write(cx, &send.pending)
            } else {
                let parts = [IoSlice::new(head_left), IoSlice::new(&send.pending)];
                let parts = if send.pending.is_empty() {
                    &parts[..1]
                } else {
                    &parts[..]
                };
                Pin::new(&mut self.io).poll_write_vectored(cx, parts)
            };
            match wrote {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ExchangeError::Write(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => send.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ExchangeError::Write(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next frame of a response body delimited by `state`; `Ready(None)` at its end.
    pub fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        state: &mut BodyState,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        loop {
            match state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) if !self.read.is_empty() => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(self.read.len());
                    *left -= take as u64;
                    if *left == 0 {
                        *state = BodyState::Done;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(self.read.split_to(take).freeze()))));
                }
                BodyState::Close if !self.read.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(self.read.split().freeze()))));
                }
                BodyState::Chunked(dec) => match dec.decode(&mut self.read)? {
                    Some(Chunk::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Some(Chunk::Trailers(t)) => return Poll::Ready(Some(Ok(Frame::trailers(t)))),
                    Some(Chunk::End) => {
                        *state = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    None => {}
                },
                _ => {}
            }
            let want = match state {
                BodyState::Length(left) if *left > READ_CHUNK as u64 => READ_CHUNK_LARGE,
                BodyState::Chunked(dec) if dec.data_left().unwrap_or(0) > READ_CHUNK as u64 => {
                    READ_CHUNK_LARGE
                }
                BodyState::Close => READ_CHUNK_LARGE,
                _ => READ_CHUNK,
            };
            reserve(&mut self.read, want);
            let n = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read))
                .map_err(ExchangeError::Read)?;
            if n == 0 {
                return Poll::Ready(match std::mem::replace(state, BodyState::Done) {
                    BodyState::Close => None,
                    BodyState::Length(left) => Some(Err(ExchangeError::ClosedInBody(left))),
                    _ => Some(Err(ExchangeError::ClosedInChunks)),
                });
            }
        }
    }

    /// Bytes read past the end of the last message: a backend that sends them is not to be
    /// trusted with another request on this connection.
    pub fn has_unread(&self) -> bool {
        !self.read.is_empty()
    }

    /// The socket after a 101, and what was read past the response head.
    pub fn into_upgraded(self) -> (TcpStream, Bytes) {
        (self.io, self.read.freeze())
    }
}

/// What is left of a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the backend closes.
    Close,
    Done,
}

impl BodyState {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Upgrade => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(ChunkedDecoder::default()),
            Framing::Close => Self::Close,
        }
    }
}

/// The request side of an exchange in progress.
struct Sending<'a, B> {
    head: &'a [u8],
    /// Bytes of `head` written.
    written: usize,
    /// Body bytes (a chunk with its framing) not written yet.
    pending: Bytes,
    /// `None` once its last frame was taken.
    body: Option<B>,
    chunked: bool,
}

impl<B> Sending<'_, B> {
    fn is_done(&self) -> bool {
        self.written == self.head.len() && self.pending.is_empty() && self.body.is_none()
    }

    fn queue(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.pending = if self.chunked {
            let mut framed = BytesMut::with_capacity(18 + data.len() + 2);
            h1codec::put_chunk_size(&mut framed, data.len());
            framed.extend_from_slice(&data);
            framed.extend_from_slice(b"\r\n");
            framed.freeze()
        } else {
            data
        };
    }

    fn advance(&mut self, mut n: usize) {
        let from_head = n.min(self.head.len() - self.written);
        self.written += from_head;
        n -= from_head;
        let _ = self.pending.split_to(n);
    }
}

/// Makes at least `want` bytes of spare capacity in `buf` when it has less than half of that.
pub(super) fn reserve(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() < want / 2 {
        buf.reserve(want);
    }
}
