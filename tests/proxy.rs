//! Protocol support and resilience of the real `xdp-ingress run` binary, from the outside (like
//! `tests/routing.rs`: one daemon per test, manifests in a tempdir, backends on 127.0.0.1, worker
//! ports from `BASES`, requests hand-written).
//!
//! Covered:
//! - WebSocket: the upgrade reaches the backend with its headers, the 101 comes back, and text
//!   frames echo through the spliced connection;
//! - `--max-body-bytes`: a declared Content-Length over the limit is 413 before forwarding, a
//!   chunked body that grows over it is 413 too, one under it is forwarded;
//! - a request head over `--max-header-bytes` is 431;
//! - `backend-protocol: H2C`: an HTTP/2 cleartext backend's trailers reach an h2c client;
//!   `backend-protocol: GRPC` with an unreachable backend answers HTTP 200 with `grpc-status` 14,
//!   with a backend slower than `--upstream-timeout` `grpc-status` 4 (plain H2C: a short 504;
//!   plain HTTP/1.1: 504 after about the timeout);
//! - (`backend-protocol: HTTPS` and its verification: `tests/upstream.rs`);
//! - one endpoint of two refuses connections: every GET still succeeds (retried on the other
//!   endpoint), and the refusing endpoint is ejected with a log line naming it; the route,
//!   endpoint and backend metrics and the access log's bytes and upstream latency count them;
//! - one endpoint of two is killed (its runtime, listener and connections gone) under a stream of
//!   GETs: at most the request in flight fails, every later one succeeds;
//! - a streamed response reaches an HTTP/1.1 client chunked, and a HEAD answer carries no body:
//!   the next response on the same connection still parses.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use integration_tests::daemon::{
    write_route as setup, Backends, Daemon, DaemonConfig, HttpConn, IO_TIMEOUT,
};

/// Worker-port bases, one per test, in ranges no other test binary uses.
const BASES: [u16; 6] = [14000, 14600, 15200, 15800, 16400, 17000];

/// A backend on its own threads: each connection is handed to `serve` (bounded: the listener
/// lives as long as the test process, each connection ends with its peer).
fn raw_backend(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = listener.local_addr().expect("local_addr");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Reads a request head (up to the empty line) from `r`.
fn read_head(r: &mut impl BufRead) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            return Some(lines);
        }
        lines.push(line);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Writes one WebSocket frame (FIN, `opcode`), masked when `mask` (client to server).
fn write_frame(w: &mut impl Write, opcode: u8, payload: &[u8], mask: bool) -> std::io::Result<()> {
    let mut frame = vec![0x80 | opcode];
    let m = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(m | n as u8),
        n => {
            frame.push(m | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    let key = [0x12, 0x34, 0x56, 0x78];
    if mask {
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    w.write_all(&frame)
}

/// Reads one WebSocket frame: (opcode, unmasked payload).
fn read_frame(r: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h)?;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b)?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        len = u64::from_be_bytes(b);
    }
    let mut key = [0u8; 4];
    if h[1] & 0x80 != 0 {
        r.read_exact(&mut key)?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    if h[1] & 0x80 != 0 {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok((h[0] & 0x0f, payload))
}

/// A WebSocket echo server: answers the handshake (when the upgrade headers arrived), then
/// echoes text frames until a close frame or EOF.
fn websocket_echo(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let Some(head) = read_head(&mut reader) else {
        return;
    };
    let upgrade = header(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && header(&head, "connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"));
    if !upgrade || header(&head, "sec-websocket-key").is_none() {
        let _ = writer.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\nconnection: close\r\n\r\nno upgrade\n");
        return;
    }
    // The accept value is not checked by the test client (the proxy passes it through).
    let _ = writer.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
          sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    );
    while let Ok((opcode, payload)) = read_frame(&mut reader) {
        match opcode {
            0x8 => {
                let _ = write_frame(&mut writer, 0x8, &payload, false);
                return;
            }
            0x1 => {
                let mut echo = b"echo: ".to_vec();
                echo.extend_from_slice(&payload);
                if write_frame(&mut writer, 0x1, &echo, false).is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}

#[test]
fn websocket_text_frames_echo_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let echo = raw_backend(websocket_echo);
    setup(dir.path(), "ws.example", "ws-svc", &[echo], &[]);
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[0]));

    let stream = TcpStream::connect(d.http_addr()).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    writer
        .write_all(
            b"GET /chat HTTP/1.1\r\nhost: ws.example\r\nupgrade: websocket\r\n\
              connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              sec-websocket-version: 13\r\n\r\n",
        )
        .unwrap();
    let head =
        read_head(&mut reader).unwrap_or_else(|| panic!("no response; log:\n{}", d.log.text()));
    assert!(
        head[0].starts_with("HTTP/1.1 101"),
        "{head:?}; log:\n{}",
        d.log.text()
    );
    assert_eq!(header(&head, "upgrade"), Some("websocket"), "{head:?}");
    assert!(header(&head, "sec-websocket-accept").is_some(), "{head:?}");
    for text in ["hello", "second message", &"x".repeat(300)] {
        write_frame(&mut writer, 0x1, text.as_bytes(), true).unwrap();
        let (opcode, payload) = read_frame(&mut reader).expect("echo frame");
        assert_eq!(opcode, 0x1);
        assert_eq!(String::from_utf8(payload).unwrap(), format!("echo: {text}"));
    }
    write_frame(&mut writer, 0x8, &[0x03, 0xe8], true).unwrap();
    let (opcode, _) = read_frame(&mut reader).expect("close frame");
    assert_eq!(opcode, 0x8);
}

/// A backend that reads the whole request body (Content-Length or chunked) and answers
/// `200 read N`.
fn body_sink(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    while let Some(head) = read_head(&mut reader) {
        let mut n = 0usize;
        if let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            n = len;
        } else if header(&head, "transfer-encoding").is_some() {
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                    return;
                };
                let mut chunk = vec![0u8; size + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                if size == 0 {
                    break;
                }
                n += size;
            }
        }
        let body = format!("read {n}\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Sends a chunked POST of `chunks` chunks of `size` bytes on a new connection; the status.
fn post_chunked(addr: SocketAddr, host: &str, chunks: usize, size: usize) -> u16 {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let _ = w.write_all(head.as_bytes());
    for _ in 0..chunks {
        // The proxy may answer and close before all chunks are written.
        if w.write_all(format!("{size:x}\r\n{}\r\n", "a".repeat(size)).as_bytes())
            .is_err()
        {
            break;
        }
    }
    let _ = w.write_all(b"0\r\n\r\n");
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader).expect("a response");
    head[0][9..12].parse().expect("status code")
}

#[test]
fn bodies_over_the_limit_are_413_and_huge_heads_431() {
    let dir = tempfile::tempdir().unwrap();
    let sink = raw_backend(body_sink);
    setup(dir.path(), "up.example", "up-svc", &[sink], &[]);
    let mut config = DaemonConfig::new(dir.path(), BASES[1]);
    config.extra_args = ["--max-body-bytes", "4k", "--max-header-bytes", "16k"]
        .map(String::from)
        .to_vec();
    let d = Daemon::start(config);

    let mut conn = HttpConn::connect(d.http_addr()).unwrap();
    let r = conn
        .send("POST", "up.example", "/upload", &[], &[b'a'; 1000])
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "read 1000\n"));
    let r = conn
        .send(
            "POST",
            "up.example",
            "/upload",
            &[("connection", "close")],
            &[b'a'; 5000],
        )
        .unwrap();
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.len() < 40, "short body: {:?}", r.body);
    d.log.wait_for(
        &["status=413", "exceeds the limit of 4096 bytes"],
        Duration::from_secs(5),
    );

    assert_eq!(post_chunked(d.http_addr(), "up.example", 3, 1000), 200);
    assert_eq!(post_chunked(d.http_addr(), "up.example", 10, 1000), 413);

    let mut conn = HttpConn::connect(d.http_addr()).unwrap();
    let big = "b".repeat(20 << 10);
    let r = conn.request("up.example", "/", &[("x-big", &big)]).unwrap();
    assert_eq!(r.status, 431, "{r:?}");
    let mut conn = HttpConn::connect(d.http_addr()).unwrap();
    let fits = "b".repeat(8 << 10);
    let r = conn
        .request("up.example", "/", &[("x-big", &fits)])
        .unwrap();
    assert_eq!(r.status, 200);
}

/// A loopback port where nothing listens (bound, then closed): connections are refused.
fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn a_refusing_endpoint_is_retried_around_and_ejected() {
    let b = Backends::new();
    let dir = tempfile::tempdir().unwrap();
    let alive = b.demo("alive");
    let dead = dead_port();
    setup(
        dir.path(),
        "retry.example",
        "retry-svc",
        &[alive, dead],
        &[],
    );
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[2]));

    for i in 0..30 {
        let mut conn = HttpConn::connect(d.http_addr()).unwrap();
        let r = conn
            .request("retry.example", &format!("/r/{i}"), &[])
            .unwrap();
        assert_eq!(
            (r.status, r.server()),
            (200, "alive"),
            "GET {i}; log:\n{}",
            d.log.text()
        );
    }
    let line = d.log.wait_for(
        &["endpoint ejected", &dead.to_string()],
        Duration::from_secs(5),
    );
    assert!(line.contains("retry-svc"), "{line}");
    d.log.wait_for(
        &["retrying on another endpoint", &alive.to_string()],
        Duration::from_secs(1),
    );

    // Observability: per route (the rule's host and path, not the request's), per endpoint, and
    // the access log's bytes and upstream latency.
    let route = "xdp_ingress_route_requests_total{ingress=\"default/retry-svc-ing\",host=\"retry.example\",path=\"/\",code=\"200\"}";
    assert_eq!(
        d.metric(route),
        Some(30.0),
        "{}",
        d.admin_get("/metrics").body
    );
    let endpoint =
        format!("xdp_ingress_upstream_requests_total{{endpoint=\"{alive}\",code=\"200\"}}");
    assert_eq!(d.metric(&endpoint), Some(30.0));
    // 30 requests one after the other: the workers' pools reuse their connections to `alive`
    // (refused connects to `dead` open none).
    let opened = d.metric("xdp_ingress_upstream_connections_total");
    assert!(
        opened.is_some_and(|n| (1.0..=4.0).contains(&n)),
        "upstream connections opened: {opened:?}"
    );
    let histogram =
        "xdp_ingress_upstream_duration_seconds_count{backend=\"service default/retry-svc port 80\"}";
    assert_eq!(
        d.metric(histogram),
        Some(30.0),
        "{}",
        d.admin_get("/metrics").body
    );
    let line = d
        .log
        .wait_for(&["path=/r/29", "status=200"], Duration::from_secs(5));
    let bytes: u64 = field(&line, "bytes").parse().expect("bytes=N");
    assert!(bytes > 50, "{line}");
    let upstream_ms: f64 = field(&line, "upstream_ms").parse().expect("upstream_ms=N");
    assert!(upstream_ms >= 0.0, "{line}");
}

/// The value of `name=value` in a log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        + name.len()
        + 2;
    line[start..].split_whitespace().next().unwrap_or("")
}

/// An HTTP/2-only (prior knowledge) backend answering `h2 <version> te=<TE>` with trailers
/// `grpc-status: 0` and `x-trailer: from-backend`.
fn h2c_backend(rt: &tokio::runtime::Runtime) -> SocketAddr {
    use http_body_util::{BodyExt as _, Full};
    let std_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        if req.uri().path() == "/slow" {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        let te = req
                            .headers()
                            .get("te")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned();
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        trailers
                            .insert("x-trailer", http::HeaderValue::from_static("from-backend"));
                        let body = Full::new(bytes::Bytes::from(format!(
                            "h2 {:?} te={te}\n",
                            req.version()
                        )))
                        .with_trailers(async move { Some(Ok(trailers)) });
                        Ok::<_, std::convert::Infallible>(http::Response::new(body))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    addr
}

/// One h2c (prior knowledge) request for `http://{host}{path}` to `addr`: status, headers,
/// body and trailers.
fn h2c_get(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> (u16, http::HeaderMap, String, Option<http::HeaderMap>) {
    use http_body_util::{BodyExt as _, Empty};
    let uri: http::Uri = format!("http://{host}{path}").parse().unwrap();
    rt.block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri(uri)
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(IO_TIMEOUT, send.send_request(req))
            .await
            .expect("response in time")
            .expect("response");
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.expect("body");
        let trailers = collected.trailers().cloned();
        let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
        (parts.status.as_u16(), parts.headers, body, trailers)
    })
}

#[test]
fn h2c_trailers_pass_through_and_grpc_failures_are_grpc_status() {
    let rt = integration_tests::daemon::backend_runtime();
    let dir = tempfile::tempdir().unwrap();
    let h2 = h2c_backend(&rt);
    setup(
        dir.path(),
        "h2.example",
        "h2-svc",
        &[h2],
        &[("xdp-ingress.io/backend-protocol", "H2C")],
    );
    setup(
        dir.path(),
        "grpc.example",
        "grpc-svc",
        &[dead_port()],
        &[("nginx.ingress.kubernetes.io/backend-protocol", "GRPC")],
    );
    setup(dir.path(), "h1.example", "h1-svc", &[h2], &[]);
    // A plain HTTP/1.1 backend slower than --upstream-timeout (the pool's own deadline).
    let backends = Backends::new();
    let slow_h1 = backends.slow(Duration::from_secs(4), std::sync::Arc::default());
    setup(
        dir.path(),
        "slow-h1.example",
        "slow-h1-svc",
        &[slow_h1],
        &[],
    );
    setup(
        dir.path(),
        "slow-grpc.example",
        "slow-grpc-svc",
        &[h2],
        &[("xdp-ingress.io/backend-protocol", "grpc")],
    );
    let mut config = DaemonConfig::new(dir.path(), BASES[3]);
    config.extra_args = vec!["--upstream-timeout".into(), "1".into()];
    let d = Daemon::start(config);

    let (status, _, body, trailers) = h2c_get(&rt, d.http_addr(), "h2.example", "/svc/Call");
    assert_eq!(status, 200, "{body}; log:\n{}", d.log.text());
    assert_eq!(body, "h2 HTTP/2.0 te=trailers\n");
    let trailers = trailers.expect("trailers through the proxy");
    assert_eq!(trailers["x-trailer"], "from-backend");
    assert_eq!(trailers["grpc-status"], "0");
    // The h2c client counts its connections like the HTTP/1.1 pool: this request opened one.
    assert_eq!(
        d.metric("xdp_ingress_upstream_connections_total"),
        Some(1.0)
    );

    let (status, headers, body, _) = h2c_get(&rt, d.http_addr(), "grpc.example", "/svc/Call");
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(headers["grpc-status"], "14", "{headers:?}");
    assert_eq!(headers["content-type"], "application/grpc");
    // Slower than --upstream-timeout: DEADLINE_EXCEEDED.
    let (status, headers, _, _) = h2c_get(&rt, d.http_addr(), "slow-grpc.example", "/slow");
    assert_eq!(status, 200);
    assert_eq!(headers["grpc-status"], "4", "{headers:?}");
    // The same for plain HTTP/2: a short 504.
    let (status, _, body, _) = h2c_get(&rt, d.http_addr(), "h2.example", "/slow");
    assert_eq!((status, body.as_str()), (504, "504 Gateway Timeout\n"));
    d.log.wait_for(
        &["grpc-svc", "upstream connect failed"],
        Duration::from_secs(5),
    );

    // The same HTTP/2-only backend spoken to with HTTP/1.1 (no annotation) fails: 502.
    let mut conn = HttpConn::connect(d.http_addr()).unwrap();
    let r = conn.request("h1.example", "/", &[]).unwrap();
    assert_eq!(r.status, 502);
    // Plain HTTP/1.1 slower than --upstream-timeout: 504, after about that long.
    let started = std::time::Instant::now();
    let r = conn.request("slow-h1.example", "/", &[]).unwrap();
    assert_eq!(r.status, 504, "{}", d.log.text());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn killing_an_endpoint_under_load_fails_at_most_the_request_in_flight() {
    let b = Backends::new();
    let victim_rt = integration_tests::daemon::backend_runtime();
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let victim = std_listener.local_addr().unwrap();
    {
        let _guard = victim_rt.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
        victim_rt.spawn(demo_backend::serve(listener, "victim".to_owned()));
    }
    let survivor = b.demo("survivor");
    let dir = tempfile::tempdir().unwrap();
    setup(
        dir.path(),
        "kill.example",
        "kill-svc",
        &[victim, survivor],
        &[],
    );
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[5]));

    let mut conn = HttpConn::connect(d.http_addr()).unwrap();
    let mut served = std::collections::HashMap::<String, usize>::new();
    for i in 0..20 {
        let r = conn
            .request("kill.example", &format!("/before/{i}"), &[])
            .unwrap();
        assert_eq!(r.status, 200);
        *served.entry(r.server().to_owned()).or_default() += 1;
    }
    assert_eq!(served.len(), 2, "both endpoints serve: {served:?}");

    // Kill the victim between requests of the stream: listener and connections close.
    victim_rt.shutdown_timeout(Duration::from_secs(1));
    let mut failed = Vec::new();
    for i in 0..60 {
        match conn.request("kill.example", &format!("/after/{i}"), &[]) {
            Ok(r) if r.status == 200 => assert_eq!(r.server(), "survivor"),
            Ok(r) => failed.push((i, r.status)),
            Err(e) => {
                failed.push((i, 0));
                eprintln!("request {i}: {e}");
                conn = HttpConn::connect(d.http_addr()).unwrap();
            }
        }
    }
    assert!(
        failed.len() <= 1 && failed.iter().all(|(i, _)| *i == 0),
        "only the first request after the kill may fail: {failed:?}; log:\n{}",
        d.log.text()
    );
    d.log.wait_for(
        &["endpoint ejected", &victim.to_string(), "kill-svc"],
        Duration::from_secs(5),
    );
}

#[test]
fn streamed_and_head_responses_keep_the_client_connection_in_step() {
    let b = Backends::new();
    let demo = b.demo("stream");
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "stream.example", "stream-svc", &[demo], &[]);
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[4]));
    let mut conn = HttpConn::connect(d.http_addr()).unwrap();
    // A body of unknown length goes to an HTTP/1.1 client chunked.
    let r = conn
        .request("stream.example", "/stream?seconds=1", &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", d.log.text());
    assert_eq!(
        r.header("transfer-encoding"),
        Some("chunked"),
        "{:?}",
        r.headers
    );
    assert!(r.body.lines().count() >= 5, "{:?}", r.body);
    // HEAD: the head only; the next response on the connection must parse.
    let r = conn.send("HEAD", "stream.example", "/", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = conn.request("stream.example", "/", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.body.is_empty());
}
