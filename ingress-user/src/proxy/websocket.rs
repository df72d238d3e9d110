//! HTTP/1.1 protocol upgrades (WebSocket) through the proxy.
//!
//! Data flow: `forward` asks `requested` whether a request is an upgrade (an `Upgrade` header and
//! the `upgrade` token in `Connection`), takes the downstream `OnUpgrade` before the request is
//! sent on, and puts `Connection: upgrade` / `Upgrade` back after the hop-by-hop headers are
//! stripped (`restore`). When the backend answers `101 Switching Protocols`, `splice` awaits both
//! upgraded connections (client side from the worker's hyper server, backend side the pooled
//! connection's socket, or hyper-util's for HTTPS backends) and copies bytes both ways until either side closes.
use std::net::SocketAddr;

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

/// Joins the upgraded client and backend connections on a task of the current runtime.
pub fn splice(client: OnUpgrade, backend: Backend, endpoint: SocketAddr) {
    tokio::spawn(async move {
        let client = match client.await {
            Ok(client) => TokioIo::new(client),
            Err(err) => {
                tracing::debug!(%endpoint, error = %err, "upgrade failed");
                return;
            }
        };
        let copied = match backend {
            Backend::Hyper(backend) => match backend.await {
                Ok(backend) => pump(client, TokioIo::new(backend), Bytes::new()).await,
                Err(err) => {
                    tracing::debug!(%endpoint, error = %err, "upgrade failed");
                    return;
                }
            },
            Backend::Pooled { io, read_ahead } => pump(client, io, read_ahead).await,
        };
        match copied {
            Ok((up, down)) => {
                tracing::debug!(%endpoint, up, down, "upgraded connection closed");
            }
            Err(err) => tracing::debug!(%endpoint, error = %err, "upgraded connection ended"),
        }
    });
}

/// Sends `read_ahead` (backend bytes that came with the 101) to the client, then copies both ways
/// until either side closes: bytes sent up and down.
async fn pump<C, B>(mut client: C, mut backend: B, read_ahead: Bytes) -> std::io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    client.write_all(&read_ahead).await?;
    let (up, down) = tokio::io::copy_bidirectional(&mut client, &mut backend).await?;
    Ok((up, down + read_ahead.len() as u64))
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
