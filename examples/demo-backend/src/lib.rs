//! A tiny HTTP server for the examples and tests, like the `nginxdemos/hello` image of the classic
//! cafe demo: every response names the server, its address, the URI it received and the request
//! id, so a person (or a test) can see which replica served a request and what the proxy sent.
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
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
        "Server name: {name}\nServer address: {local}\nURI: {}\nMethod: {}\nHost: {}\nRequest ID: {}\nX-Forwarded-For: {}\n",
        req.uri(),
        req.method(),
        header("host"),
        header("x-request-id"),
        header("x-forwarded-for"),
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
                let name = name.clone();
                async move {
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
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
