//! `h1server` over real loopback sockets: a raw client writes bytes exactly as given (pipelined,
//! split, malformed) and reads what the server answers; the handler echoes the method, target and
//! request body, and obeys `x-status` / `x-skip-body`.
use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Either, Full};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use super::*;
use crate::proxy::{access::Logged, tls::Stream};

const WAIT: Duration = Duration::from_secs(5);

async fn echo(req: Request<RequestBody>) -> Result<Response<ProxyBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let status = parts
        .headers
        .get("x-status")
        .map_or(200, |v| v.to_str().unwrap().parse().unwrap());
    let text = if parts.headers.contains_key("x-skip-body") {
        String::new()
    } else {
        match body.collect().await {
            Ok(c) => String::from_utf8_lossy(&c.to_bytes()).into_owned(),
            Err(e) => format!("error: {e}"),
        }
    };
    let text = format!("{} {} {}", parts.method, parts.uri, text);
    let mut resp = Response::new(Logged::new(
        Either::Right(Full::new(Bytes::from(text))),
        None,
    ));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    Ok(resp)
}

struct Served {
    client: TcpStream,
    server: JoinHandle<Result<Ended, ServeError>>,
    drain: Arc<Drain>,
    /// Bytes read from the client side and not yet taken by `response`.
    unread: Vec<u8>,
}

async fn serve_one(header_read_timeout: Duration) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (io, _) = listener.accept().await.unwrap();
    let drain = Arc::new(Drain::default());
    let settings = Settings {
        header_read_timeout,
        max_header_bytes: 1024,
    };
    let d = drain.clone();
    let server = tokio::spawn(async move { serve(Stream::Plain(io), settings, &d, echo).await });
    Served {
        client,
        server,
        drain,
        unread: Vec::new(),
    }
}

/// One response: status, head text (lowercase), body (by content-length).
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Served {
    async fn send(&mut self, bytes: &str) {
        self.client.write_all(bytes.as_bytes()).await.unwrap();
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.client.read(&mut chunk))
            .await
            .expect("no answer in time")
            .unwrap_or(0);
        self.unread.extend_from_slice(&chunk[..n]);
        n
    }

    async fn response(&mut self) -> Answer {
        loop {
            if let Some(end) = find(&self.unread, b"\r\n\r\n") {
                let head = String::from_utf8(self.unread[..end + 4].to_vec())
                    .unwrap()
                    .to_lowercase();
                let status = head[9..12].parse().unwrap();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                let len = if status < 200 { 0 } else { len };
                while self.unread.len() < end + 4 + len {
                    assert!(self.fill().await > 0, "closed inside a body");
                }
                let body = String::from_utf8(self.unread[end + 4..end + 4 + len].to_vec()).unwrap();
                self.unread.drain(..end + 4 + len);
                return Answer { status, head, body };
            }
            assert!(
                self.fill().await > 0,
                "closed before a response: {:?}",
                String::from_utf8_lossy(&self.unread)
            );
        }
    }

    /// The server closed the connection, and sent nothing more.
    async fn closed(&mut self) {
        assert_eq!(
            self.fill().await,
            0,
            "more bytes: {:?}",
            String::from_utf8_lossy(&self.unread)
        );
        assert!(self.unread.is_empty());
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_the_connection_kept() {
    let mut s = serve_one(WAIT).await;
    s.send(concat!(
        "GET /a HTTP/1.1\r\nhost: x\r\n\r\n",
        "POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello",
        "GET /c?q=1 HTTP/1.1\r\nhost: x\r\n\r\n",
    ))
    .await;
    for want in ["GET /a ", "POST /b hello", "GET /c?q=1 "] {
        let a = s.response().await;
        assert_eq!((a.status, a.body.as_str()), (200, want));
        assert!(a.head.contains("\r\ndate: "), "{}", a.head);
        assert!(!a.head.contains("connection:"), "{}", a.head);
    }
    s.send("GET /d HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(s.response().await.body, "GET /d ");
}

#[tokio::test]
async fn a_chunked_body_split_anywhere_is_decoded() {
    let mut s = serve_one(WAIT).await;
    let request = "POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-t: 1\r\n\r\n";
    for piece in request.as_bytes().chunks(7) {
        s.client.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(s.response().await.body, "POST /up hello world");
    s.send("GET /next HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(s.response().await.body, "GET /next ");
}

#[tokio::test]
async fn continue_is_sent_only_when_the_body_is_read() {
    let mut s = serve_one(WAIT).await;
    s.send("PUT /f HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n")
        .await;
    let first = s.response().await;
    assert_eq!(first.status, 100);
    s.send("data").await;
    assert_eq!(s.response().await.body, "PUT /f data");

    // Refused from its head: no 100, the body is never asked for, the connection closes.
    let mut s = serve_one(WAIT).await;
    s.send("PUT /f HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\nx-status: 413\r\nx-skip-body: 1\r\n\r\n").await;
    let a = s.response().await;
    assert_eq!(a.status, 413);
    assert!(a.head.contains("connection: close"), "{}", a.head);
    s.closed().await;
}

#[tokio::test]
async fn an_unread_body_is_skipped_when_short_else_the_connection_closes() {
    let mut s = serve_one(WAIT).await;
    s.send("POST /s HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nx-skip-body: 1\r\n\r\n")
        .await;
    assert_eq!(s.response().await.body, "POST /s ");
    s.send("hello").await;
    s.send("GET /after HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(s.response().await.body, "GET /after ");

    let mut s = serve_one(WAIT).await;
    s.send(
        "POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\nx-skip-body: 1\r\n\r\nsome",
    )
    .await;
    let a = s.response().await;
    assert!(a.head.contains("connection: close"), "{}", a.head);
    s.closed().await;
}

#[tokio::test]
async fn bad_heads_are_answered_with_their_status_and_closed() {
    for (request, status) in [
        ("GET / HTTP/1.1\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            400,
        ),
        (
            &*format!(
                "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "a".repeat(2000)
            ),
            431,
        ),
    ] {
        let mut s = serve_one(WAIT).await;
        s.send(request).await;
        let a = s.response().await;
        assert_eq!(a.status, status, "{request:?}");
        assert!(a.head.contains("connection: close"), "{}", a.head);
        s.closed().await;
        // The server lingers until the client closes too.
        drop(s.client);
        let ended = s.server.await.unwrap();
        assert!(matches!(ended, Err(ServeError::Head(_))), "{ended:?}");
    }
}

#[tokio::test]
async fn http10_clients_keep_the_connection_only_when_asking() {
    let mut s = serve_one(WAIT).await;
    s.send("GET /old HTTP/1.0\r\n\r\n").await;
    let a = s.response().await;
    assert!(a.head.contains("connection: close"), "{}", a.head);
    s.closed().await;

    let mut s = serve_one(WAIT).await;
    s.send("GET /old HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        .await;
    let a = s.response().await;
    assert!(a.head.contains("connection: keep-alive"), "{}", a.head);
    s.send("GET /again HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(s.response().await.body, "GET /again ");
}

#[tokio::test]
async fn idle_connections_close_at_the_header_timeout_and_slow_heads_get_408() {
    let mut s = serve_one(Duration::from_millis(200)).await;
    s.send("GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await;
    s.response().await;
    s.closed().await;
    assert!(matches!(s.server.await.unwrap(), Ok(Ended::Closed)));

    let mut s = serve_one(Duration::from_millis(200)).await;
    s.send("GET /slow HTTP/1.1\r\nhost:").await;
    assert_eq!(s.response().await.status, 408);
    s.closed().await;
}

#[tokio::test]
async fn a_drain_closes_idle_connections_and_announces_close_on_busy_ones() {
    let mut s = serve_one(WAIT).await;
    s.send("GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await;
    s.response().await;
    s.drain.announce();
    s.send("GET /b HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let a = s.response().await;
    assert!(a.head.contains("connection: close"), "{}", a.head);
    s.closed().await;

    let mut s = serve_one(WAIT).await;
    s.send("GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await;
    s.response().await;
    let started = std::time::Instant::now();
    s.drain.close_idle();
    s.closed().await;
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn the_http2_preface_is_handed_back_with_what_followed() {
    let mut s = serve_one(WAIT).await;
    let mut opening = h1request::H2_PREFACE.to_vec();
    opening.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    // Split inside the preface: the server must wait, not answer 400.
    s.client.write_all(&opening[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.client.write_all(&opening[10..]).await.unwrap();
    match tokio::time::timeout(WAIT, s.server).await.unwrap().unwrap() {
        Ok(Ended::Http2 { read, .. }) => assert!(read.starts_with(h1request::H2_PREFACE)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_101_joins_the_client_with_the_backend_side_and_early_bytes_cross() {
    let backend_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend_listener.local_addr().unwrap();
    let to_backend = TcpStream::connect(backend_addr).await.unwrap();
    let (mut backend, _) = backend_listener.accept().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (io, _) = listener.accept().await.unwrap();
    let mut side = Some(to_backend);
    tokio::spawn(async move {
        let drain = Drain::default();
        let settings = Settings {
            header_read_timeout: WAIT,
            max_header_bytes: 1024,
        };
        serve(Stream::Plain(io), settings, &drain, move |_req| {
            let io = side.take().expect("one upgrade");
            async move {
                let empty = Logged::new(Either::Right(Full::new(Bytes::new())), None);
                let mut resp = Response::new(empty);
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let h = resp.headers_mut();
                h.insert("connection", http::HeaderValue::from_static("upgrade"));
                h.insert("upgrade", http::HeaderValue::from_static("websocket"));
                let read_ahead = Bytes::from_static(b"early-down");
                let backend = websocket::Backend::Pooled { io, read_ahead };
                resp.extensions_mut()
                    .insert(websocket::Upgrade::new(backend, backend_addr));
                Ok(resp)
            }
        })
        .await
    });
    // The client's first frame rides with its request head.
    client
        .write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nearly-up")
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"early-down") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, client.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(
        text.starts_with("http/1.1 101 switching protocols\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nupgrade: websocket\r\n"), "{text}");
    assert!(!text.contains("connection: close"), "{text}");
    let mut up = [0u8; 8];
    tokio::time::timeout(WAIT, backend.read_exact(&mut up))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&up, b"early-up");
    // Then both ways, until either side closes.
    client.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    tokio::time::timeout(WAIT, backend.read_exact(&mut four))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&four, b"ping");
    backend.write_all(b"pong").await.unwrap();
    tokio::time::timeout(WAIT, client.read_exact(&mut four))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&four, b"pong");
    drop(backend);
    let n = tokio::time::timeout(WAIT, client.read(&mut four))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the client side closes with the backend");
}
