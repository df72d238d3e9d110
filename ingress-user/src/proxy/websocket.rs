//! HTTP/1.1 protocol upgrades (WebSocket) through the proxy.
//!
//! Data flow: `forward` asks `requested` whether a request is an upgrade (an `Upgrade` header and
//! the `upgrade` token in `Connection`) and puts `Connection: upgrade` / `Upgrade` back after the
//! hop-by-hop headers are stripped (`restore`). When the backend answers `101 Switching
//! Protocols`, `forward` puts the backend side (the pooled connection's socket, or hyper-util's
//! upgrade for HTTPS backends) into the response as an `Upgrade`; the client's connection
//! (`h1server`) sends the `101` and hands its socket to `splice`, which copies bytes both ways
//! until either side closes.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

/// The `Upgrade` value of an upgrade request or 101 response, if it is one.
pub fn requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| upgrade.clone())
}

/// Puts the upgrade headers back after `headers::strip_hop_by_hop`.
pub fn restore(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// The backend side of an upgraded connection.
#[derive(Debug)]
pub enum Backend {
    /// From hyper-util's clients (HTTPS backends).
    Hyper(OnUpgrade),
    /// From the worker's HTTP/1.1 pool: the socket, and what was read past the 101 head.
    Pooled { io: TcpStream, read_ahead: Bytes },
}

/// The backend side of an accepted upgrade, carried in the extensions of the `101` response to
/// the client connection (`h1server`), which joins it with its own side once the `101` is sent.
/// Shared and taken once: response extensions must be `Clone`, a socket is not.
#[derive(Clone, Debug)]
pub struct Upgrade(Arc<Mutex<Option<(Backend, SocketAddr)>>>);

impl Upgrade {
    pub fn new(backend: Backend, endpoint: SocketAddr) -> Self {
        Self(Arc::new(Mutex::new(Some((backend, endpoint)))))
    }
}

/// Joins the upgraded client connection (and the bytes it sent past its request head) with the
/// backend's, on a task of its own, until either side closes.
pub fn splice<C>(client: C, client_read_ahead: Bytes, upgrade: Upgrade)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let taken = upgrade.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some((backend, endpoint)) = taken else {
        return;
    };
    tokio::spawn(async move {
        let copied = match backend {
            Backend::Hyper(backend) => match backend.await {
                Ok(backend) => {
                    pump(
                        client,
                        client_read_ahead,
                        TokioIo::new(backend),
                        Bytes::new(),
                    )
                    .await
                }
                Err(err) => {
                    tracing::debug!(%endpoint, error = %err, "upgrade failed");
                    return;
                }
            },
            Backend::Pooled { io, read_ahead } => {
                pump(client, client_read_ahead, io, read_ahead).await
            }
        };
        match copied {
            Ok((up, down)) => {
                tracing::debug!(%endpoint, up, down, "upgraded connection closed");
            }
            Err(err) => tracing::debug!(%endpoint, error = %err, "upgraded connection ended"),
        }
    });
}

/// Sends each side what the other sent with its head (`up_ahead` to the backend, `down_ahead`
/// to the client), then copies both ways until either side closes: bytes sent up and down.
async fn pump<C, B>(
    mut client: C,
    up_ahead: Bytes,
    mut backend: B,
    down_ahead: Bytes,
) -> std::io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    backend.write_all(&up_ahead).await?;
    client.write_all(&down_ahead).await?;
    let (up, down) = tokio::io::copy_bidirectional(&mut client, &mut backend).await?;
    Ok((up + up_ahead.len() as u64, down + down_ahead.len() as u64))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn an_upgrade_needs_both_headers() {
        for (pairs, want) in [
            (
                &[
                    ("connection", "keep-alive, Upgrade"),
                    ("upgrade", "websocket"),
                ][..],
                Some("websocket"),
            ),
            (&[("upgrade", "websocket")][..], None),
            (&[("connection", "upgrade")][..], None),
            (&[("connection", "close"), ("upgrade", "h2c")][..], None),
        ] {
            let got = requested(&map(pairs));
            assert_eq!(got.as_ref().map(|v| v.to_str().unwrap()), want, "{pairs:?}");
        }
    }
}
