//! The client side of the real `xdp-ingress run` binary under protocol abuse and edge cases
//! (one daemon per test, manifests in a tempdir, backends on 127.0.0.1, hand-written clients):
//!
//! - HTTP/2 stream limit: the server advertises `MAX_CONCURRENT_STREAMS` (h2c prior knowledge),
//!   and a client that opens one stream more than that while the others are still busy gets that
//!   one refused (RST_STREAM REFUSED_STREAM) while the others are answered;
//! - HTTP/2 rapid reset: a client opening and resetting thousands of streams in a burst gets the
//!   connection closed with GOAWAY ENHANCE_YOUR_CALM, while another client's requests keep being
//!   served;
//! - `Expect: 100-continue`: the client gets `100 Continue`, sends its body and gets the proxied
//!   response; a body declared over `--max-body-bytes` gets 413 at once, no `100 Continue`, and
//!   the body is never asked for.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    daemon::{write_route, Backends, Daemon, DaemonConfig, HttpConn, IO_TIMEOUT},
    h2raw::{self, RawH2},
};
use xdp_ingress::proxy::http2::{MAX_CONCURRENT_STREAMS, MAX_PENDING_ACCEPT_RESET_STREAMS};

/// Worker-port bases, one per test, in ranges no other test binary running at the same time uses.
const BASES: [u16; 3] = [24000, 24600, 25200];

#[test]
fn a_stream_over_the_http2_limit_is_refused_and_the_others_served() {
    let b = Backends::new();
    let started = Arc::new(AtomicUsize::new(0));
    let slow = b.slow(Duration::from_secs(2), started.clone());
    let dir = tempfile::tempdir().unwrap();
    write_route(dir.path(), "slow.example", "slow-svc", &[slow], &[]);
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[0]));

    let mut c = RawH2::connect(d.http_addr()).expect("h2c prior knowledge");
    assert_eq!(
        c.setting(h2raw::SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(MAX_CONCURRENT_STREAMS),
        "{:?}",
        c.server_settings
    );
    // One stream more than allowed, all at once: the backend holds each for 2 s.
    let block = h2raw::get_block("slow.example", "/");
    let mut out = Vec::new();
    let streams: Vec<u32> = (0..=MAX_CONCURRENT_STREAMS).map(|i| 2 * i + 1).collect();
    for &id in &streams {
        h2raw::frame(
            &mut out,
            h2raw::HEADERS,
            h2raw::END_STREAM | h2raw::END_HEADERS,
            id,
            &block,
        );
    }
    c.stream.write_all(&out).unwrap();
    let last = *streams.last().unwrap();
    let mut answered = std::collections::BTreeSet::new();
    let mut refused = Vec::new();
    while answered.len() + refused.len() < streams.len() {
        let f = c.read_frame().unwrap_or_else(|e| {
            panic!(
                "{e} after {} answers, refused {refused:?}; log:\n{}",
                answered.len(),
                d.log.text()
            )
        });
        match f.kind {
            h2raw::HEADERS => {
                answered.insert(f.stream);
            }
            h2raw::RST_STREAM => refused.push((f.stream, f.error_code())),
            h2raw::GOAWAY => panic!("GOAWAY {:?}", f.error_code()),
            _ => {}
        }
    }
    assert_eq!(refused, vec![(last, Some(h2raw::REFUSED_STREAM))]);
    assert_eq!(answered.len(), MAX_CONCURRENT_STREAMS as usize);
    assert!(!answered.contains(&last));
    assert_eq!(
        started.load(Ordering::SeqCst),
        MAX_CONCURRENT_STREAMS as usize,
        "the refused stream never reached the backend"
    );
}

#[test]
fn a_rapid_reset_burst_gets_goaway_and_other_clients_are_served() {
    let b = Backends::new();
    let demo = b.demo("demo");
    let dir = tempfile::tempdir().unwrap();
    write_route(dir.path(), "reset.example", "reset-svc", &[demo], &[]);
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[1]));

    // Another client keeps asking while the attack runs; every one of its requests must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = d.http_addr();
    let bystander = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut served = 0;
            let mut conn = HttpConn::connect(addr).unwrap();
            while !stop.load(Ordering::Relaxed) || served < 20 {
                let r = conn.request("reset.example", "/fine", &[]).unwrap();
                assert_eq!((r.status, r.server()), (200, "demo"), "{}", r.body);
                served += 1;
            }
            served
        })
    };

    let mut c = RawH2::connect(addr).expect("h2c prior knowledge");
    let block = h2raw::get_block("reset.example", "/attack");
    let mut out = Vec::new();
    let mut sent = 0usize;
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        h2raw::frame(&mut out, h2raw::HEADERS, h2raw::END_HEADERS, id, &block);
        h2raw::frame(
            &mut out,
            h2raw::RST_STREAM,
            0,
            id,
            &h2raw::CANCEL.to_be_bytes(),
        );
        if out.len() > 32 << 10 {
            // The server may close mid-burst: that is the point.
            if c.stream.write_all(&out).is_err() {
                break;
            }
            sent = i as usize + 1;
            out.clear();
        }
    }
    let _ = c.stream.write_all(&out);
    let goaway = c
        .read_until(|f| f.kind == h2raw::GOAWAY)
        .unwrap_or_else(|e| panic!("no GOAWAY ({e}); log:\n{}", d.log.text()));
    assert_eq!(
        goaway.error_code(),
        Some(h2raw::ENHANCE_YOUR_CALM),
        "{goaway:?}"
    );
    assert!(
        sent > MAX_PENDING_ACCEPT_RESET_STREAMS,
        "the burst was cut short after {sent} streams"
    );
    // The connection is closed after the GOAWAY.
    let mut rest = Vec::new();
    let _ = c.stream.set_read_timeout(Some(Duration::from_secs(5)));
    let closed = match c.stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "connection still open after GOAWAY");

    stop.store(true, Ordering::Relaxed);
    let served = bystander.join().expect("bystander requests all succeeded");
    assert!(served >= 20, "{served}");
    // And a new HTTP/2 client is served too.
    let mut after = RawH2::connect(addr).expect("h2c after the attack");
    let mut out = Vec::new();
    h2raw::frame(
        &mut out,
        h2raw::HEADERS,
        h2raw::END_STREAM | h2raw::END_HEADERS,
        1,
        &h2raw::get_block("reset.example", "/after"),
    );
    after.stream.write_all(&out).unwrap();
    let f = after
        .read_until(|f| f.kind == h2raw::HEADERS || f.kind == h2raw::RST_STREAM)
        .unwrap();
    assert_eq!((f.kind, f.stream), (h2raw::HEADERS, 1), "{f:?}");
}

/// Sends a POST head with `Expect: 100-continue` and `content-length: len`; returns the
/// connection (body not sent yet).
fn post_expecting(addr: std::net::SocketAddr, host: &str, len: usize) -> BufReader<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut stream = BufReader::new(stream);
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len}\r\n\
         expect: 100-continue\r\n\r\n"
    );
    stream.get_mut().write_all(head.as_bytes()).unwrap();
    stream
}

/// Reads one response head: (status line, header lines).
fn read_head(r: &mut BufReader<TcpStream>) -> (String, Vec<String>) {
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            return (status.trim_end().to_owned(), headers);
        }
        headers.push(line.to_ascii_lowercase());
    }
}

/// A backend that reads a request with a Content-Length body and answers `got <body>`.
fn body_echo() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                let mut r = BufReader::new(stream);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        line.clear();
                    }
                    if line.is_empty() {
                        return;
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let text = format!("got {}", String::from_utf8_lossy(&body));
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if r.get_mut().write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn expect_100_continue_is_answered_and_oversized_bodies_refused_unread() {
    let echo = body_echo();
    let dir = tempfile::tempdir().unwrap();
    write_route(dir.path(), "expect.example", "expect-svc", &[echo], &[]);
    let mut config = DaemonConfig::new(dir.path(), BASES[2]);
    config.extra_args = vec!["--max-body-bytes".into(), "4k".into()];
    let d = Daemon::start(config);

    let mut conn = post_expecting(d.http_addr(), "expect.example", 5);
    let (status, _) = read_head(&mut conn);
    assert_eq!(status, "HTTP/1.1 100 Continue");
    conn.get_mut().write_all(b"hello").unwrap();
    let (status, headers) = read_head(&mut conn);
    assert_eq!(status, "HTTP/1.1 200 OK", "{headers:?}");
    let len: usize = headers
        .iter()
        .find_map(|h| h.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("content-length");
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    assert_eq!(String::from_utf8_lossy(&body), "got hello");

    // Over the limit: 413 without asking for the body (no 100 Continue first), quickly.
    let asked = Instant::now();
    let mut conn = post_expecting(d.http_addr(), "expect.example", 10 << 20);
    let (status, _) = read_head(&mut conn);
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert!(asked.elapsed() < Duration::from_secs(5));
    d.log
        .wait_for(&["path=/upload", "status=413"], Duration::from_secs(5));
}
