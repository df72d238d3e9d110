//! A tiny HTTP server for the examples and tests, like the `nginxdemos/hello` image of the classic
//! cafe demo: every response names the server, its address, the URI it received and the request
//! id, so a person (or a test) can see which replica served a request and what the proxy sent.
//! `GET /stream?seconds=N` instead streams one line every 100 ms for N seconds (at most 600): a
//! long download, to watch connections survive reloads and upgrades.
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::{body::Incoming, header, service::service_fn, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

/// The plain-text body a demo backend answers with.
pub fn describe(name: &str, local: SocketAddr, req: &Request<Incoming>) -> String {
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    format!(
        "Server name: {name}\nServer address: {local}\nURI: {}\nMethod: {}\nHost: {}\nRequest ID: {}\nX-Forwarded-For: {}\nX-Forwarded-Proto: {}\nX-Forwarded-Port: {}\n",
        req.uri(),
        req.method(),
        header("host"),
        header("x-request-id"),
        header("x-forwarded-for"),
        header("x-forwarded-proto"),
        header("x-forwarded-port"),
    )
}

/// Serves `listener` forever (until the runtime stops), answering every request with `describe`.
pub async fn serve(listener: tokio::net::TcpListener, name: String) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let name: Arc<str> = name.into();
    loop {
        let (stream, _) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let body = describe(&name, local, &req);
                let stream = stream_seconds(&req);
                let name = name.clone();
                async move {
                    let body = match stream {
                        Some(seconds) => Either::Right(Ticks::new(seconds * 10)),
                        None => Either::Left(Full::new(Bytes::from(body))),
                    };
                    let mut resp = Response::new(body);
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("text/plain"),
                    );
                    resp.headers_mut().insert(
                        "x-served-by",
                        header::HeaderValue::from_str(&name).expect("names are ascii"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `Some(seconds)` for `/stream?seconds=N`.
fn stream_seconds(req: &Request<Incoming>) -> Option<u32> {
    if req.uri().path() != "/stream" {
        return None;
    }
    let seconds = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("seconds="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    Some(u32::min(seconds, 600))
}

/// A body of `left` lines, one every 100 ms.
struct Ticks {
    interval: tokio::time::Interval,
    sent: u32,
    left: u32,
}

impl Ticks {
    fn new(left: u32) -> Self {
        Self {
            interval: tokio::time::interval(std::time::Duration::from_millis(100)),
            sent: 0,
            left,
        }
    }
}

impl hyper::body::Body for Ticks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.interval.poll_tick(cx));
        self.left -= 1;
        self.sent += 1;
        let line = format!("tick {}\n", self.sent);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(line)))))
    }
}
