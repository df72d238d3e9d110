//! The access log line of a request, written when its response body is done: `Logged` wraps the
//! response body, counts the bytes it sends to the client, and emits the `AccessLog` record (filled
//! by `forward::Forwarder::handle` when the response head is ready) at the end of the body, or
//! when hyper drops it (client gone: `complete=false`). With access logging off, no record is made.
use std::{
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};

use super::h1pool::PooledBody;

/// The body of a response before logging: the upstream's streamed body, or a short one of ours.
pub type ResponseBody = Either<PooledBody, Full<Bytes>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything the access log line says but the byte count.
#[derive(Debug)]
pub struct AccessLog {
    pub client: SocketAddr,
    /// The Host header (or HTTP/2 authority), shared with the request.
    pub host: HeaderValue,
    pub method: Method,
    /// The URI as received (its path is logged), shared with the request.
    pub uri: Uri,
    pub status: u16,
    pub backend: Option<std::sync::Arc<String>>,
    pub upstream: Option<SocketAddr>,
    /// Request head received → response head ready.
    pub duration_ms: f64,
    /// Request sent upstream → upstream response head (a retry included).
    pub upstream_ms: Option<f64>,
    pub request_id: HeaderValue,
    pub error: Option<String>,
}

impl AccessLog {
    fn emit(&self, bytes: u64, complete: bool) {
        tracing::info!(
            target: "access",
            client = %self.client,
            host = %self.host.to_str().unwrap_or("-"),
            method = %self.method,
            path = %self.uri.path(),
            status = self.status,
            bytes,
            complete,
            backend = self.backend.as_deref().map_or("-", String::as_str),
            upstream = %self.upstream.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
            duration_ms = self.duration_ms,
            upstream_ms = self.upstream_ms.unwrap_or(-1.0),
            request_id = self.request_id.to_str().unwrap_or("-"),
            error = self.error.as_deref().unwrap_or(""),
        );
    }
}

/// A response body that writes the access log line when it is done.
#[derive(Debug)]
pub struct Logged {
    inner: ResponseBody,
    bytes: u64,
    log: Option<Box<AccessLog>>,
}

/// Access log lines are written (the `access` target is enabled at info).
pub fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

impl Logged {
    /// `log`: `None` when access logging is off (`enabled`).
    pub fn new(inner: ResponseBody, log: Option<AccessLog>) -> Self {
        Self {
            inner,
            bytes: 0,
            log: log.map(Box::new),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(log) = self.log.take() {
            log.emit(self.bytes, complete);
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
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

impl Drop for Logged {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}
