//! Fixed-response HTTP/1.1 backend for `cargo xtask bench http` (not a test).
//!
//! `bench_backend --addr 127.0.0.1:PORT [--threads N]` answers every request with a body chosen
//! by the path, built once at start so a response costs no allocation of its own:
//! `/10k` 10 KiB, `/1m` 1 MiB, anything else 13 bytes (`hello, world\n`). Keep-alive on, no
//! logging. It stops when killed (the bench owns its PID).
use std::{convert::Infallible, net::SocketAddr};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long)]
    addr: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// The three bodies, shared by every connection.
#[derive(Clone)]
struct Bodies {
    small: Bytes,
    ten_k: Bytes,
    one_m: Bytes,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.addr.ip().is_loopback(),
        "--addr must be a loopback address"
    );
    let bodies = Bodies {
        small: Bytes::from_static(b"hello, world\n"),
        ten_k: Bytes::from(vec![b'x'; 10 * 1024]),
        one_m: Bytes::from(vec![b'x'; 1024 * 1024]),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(serve(args.addr, bodies))
}

async fn serve(addr: SocketAddr, bodies: Bodies) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    loop {
        let (stream, _) = listener.accept().await.context("accept")?;
        let _ = stream.set_nodelay(true);
        let bodies = bodies.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let body = match req.uri().path() {
                    "/10k" => bodies.ten_k.clone(),
                    "/1m" => bodies.one_m.clone(),
                    _ => bodies.small.clone(),
                };
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
