//! The body of a request from an HTTP/1.1 client (`RequestBody`), read from the client's
//! connection only when it is polled, and the connection's side of it (`Feeding`).
//!
//! Data flow: the body and the connection (`h1server`, which owns the socket and the read
//! buffer) share one `Shared` slot. A body polled with nothing in the slot says it wants data and
//! wakes the connection's task; the connection (writing `100 Continue` first if the client waits
//! for it) cuts the next piece from its read buffer with `BodyState` (length or chunked, via
//! `h1codec::ChunkedDecoder`), reading the socket as needed, puts it in the slot and wakes the
//! body's task. When both run in the same task (the HTTP/1.1 upstream client polls the body
//! inside the request's future) no wake-up is sent at all. A body dropped unread tells the
//! connection, which then skips what is left or closes.
use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

use super::{
    h1codec::{Chunk, ChunkedDecoder, CodecError},
    h1conn::{READ_CHUNK, READ_CHUNK_LARGE},
};

/// The interim response a client sending `Expect: 100-continue` waits for.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What is left of a request body on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
}

impl BodyState {
    /// The next frame of the body from the front of `buf`; `None` when more bytes are needed or
    /// the body is done.
    pub(super) fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Frame<Bytes>>, CodecError> {
        match self {
            Self::Done => Ok(None),
            Self::Length(_) if buf.is_empty() => Ok(None),
            Self::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= take as u64;
                if *left == 0 {
                    *self = Self::Done;
                }
                Ok(Some(Frame::data(buf.split_to(take).freeze())))
            }
            Self::Chunked(dec) => match dec.decode(buf)? {
                Some(Chunk::Data(data)) => Ok(Some(Frame::data(data))),
                Some(Chunk::Trailers(t)) => Ok(Some(Frame::trailers(t))),
                Some(Chunk::End) => {
                    *self = Self::Done;
                    Ok(None)
                }
                None => Ok(None),
            },
        }
    }

    /// Read buffer space to make free before the next read of this body.
    pub(super) fn read_size(&self) -> usize {
        match self {
            Self::Length(left) if *left > READ_CHUNK as u64 => READ_CHUNK_LARGE,
            _ => READ_CHUNK,
        }
    }
}

/// The connection's side of a request body being fed.
pub(super) struct Feeding {
    pub(super) state: BodyState,
    pub(super) shared: Arc<Mutex<Shared>>,
    /// Bytes of `100 Continue` not written yet (0: none wanted, or sent).
    pub(super) continue_left: usize,
}

impl Feeding {
    pub(super) fn new(state: BodyState, expect_continue: bool) -> Self {
        Self {
            state,
            shared: Arc::default(),
            continue_left: if expect_continue { CONTINUE.len() } else { 0 },
        }
    }

    /// The whole body was read from the connection.
    pub(super) fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// Bytes of the body still to come, when known.
    pub(super) fn left(&self) -> Option<u64> {
        match self.state {
            BodyState::Length(n) => Some(n),
            BodyState::Done => Some(0),
            BodyState::Chunked(_) => None,
        }
    }

    pub(super) fn deliver(&mut self, cx: &Context<'_>, frame: Frame<Bytes>) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.frame = Some(frame);
        shared.wants = false;
        if self.state == BodyState::Done {
            shared.end = Some(Ok(()));
        }
        wake_other(shared.body.take(), cx);
    }

    pub(super) fn finish(&mut self, cx: &Context<'_>, end: Result<(), String>) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.end = Some(end);
        shared.wants = false;
        wake_other(shared.body.take(), cx);
    }
}

/// Wakes `waker` unless it is the current task's (which polls again anyway).
pub(super) fn wake_other(waker: Option<Waker>, cx: &Context<'_>) {
    if let Some(w) = waker.filter(|w| !w.will_wake(cx.waker())) {
        w.wake();
    }
}

/// What the connection and a request body share.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) frame: Option<Frame<Bytes>>,
    /// `Some` once the body is complete (`Ok`) or broken (`Err`: why).
    pub(super) end: Option<Result<(), String>>,
    /// The body was polled and has nothing.
    pub(super) wants: bool,
    pub(super) dropped: bool,
    /// The task polling the body.
    pub(super) body: Option<Waker>,
    /// The connection's task.
    pub(super) conn: Option<Waker>,
}

/// The body of a request from an HTTP/1.1 client: read from the connection as it is polled.
#[derive(Default)]
pub struct RequestBody {
    /// `None`: the request has no body.
    pub(super) shared: Option<Arc<Mutex<Shared>>>,
    pub(super) exact: Option<u64>,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("exact", &self.exact)
            .finish_non_exhaustive()
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RequestBodyError(String);

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let Some(shared) = &self.shared else {
            return Poll::Ready(None);
        };
        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(frame) = shared.frame.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match &shared.end {
            Some(Ok(())) => return Poll::Ready(None),
            Some(Err(why)) => return Poll::Ready(Some(Err(RequestBodyError(why.clone())))),
            None => {}
        }
        shared.wants = true;
        if !shared
            .body
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            shared.body = Some(cx.waker().clone());
        }
        wake_other(shared.conn.take(), cx);
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        match &self.shared {
            None => true,
            Some(shared) => {
                let shared = shared.lock().unwrap_or_else(|e| e.into_inner());
                shared.frame.is_none() && matches!(shared.end, Some(Ok(())))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) if self.shared.is_none() || n > 0 => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
            shared.dropped = true;
            if let Some(w) = shared.conn.take() {
                w.wake();
            }
        }
    }
}
