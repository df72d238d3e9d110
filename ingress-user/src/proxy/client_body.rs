//! The body of a client's request, from whichever server read it: the proxy's own HTTP/1.1
//! server (`h1server::RequestBody`, read from the connection as it is polled) or hyper's HTTP/2
//! server (`Incoming`). `forward` and the upstream clients see one type.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::h1server::RequestBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body from a client.
#[derive(Debug)]
pub enum ClientBody {
    Http1(RequestBody),
    Http2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Http2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http1(b) => b.is_end_stream(),
            Self::Http2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Http1(b) => b.size_hint(),
            Self::Http2(b) => b.size_hint(),
        }
    }
}
