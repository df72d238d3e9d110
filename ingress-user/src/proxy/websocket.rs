//! HTTP/1.1 protocol upgrades (WebSocket) through the proxy.
//!
//! Data flow: `forward` asks `requested` whether a request is an upgrade (an `Upgrade` header and
//! the `upgrade` token in `Connection`), takes the downstream `OnUpgrade` before the request is
//! sent on, and puts `Connection: upgrade` / `Upgrade` back after the hop-by-hop headers are
//! stripped (`restore`). When the backend answers `101 Switching Protocols`, `splice` awaits both
//! upgraded connections (client side from the worker's hyper server, backend side from the
//! pooled client) and copies bytes both ways until either side closes.
use std::net::SocketAddr;

use http::{header, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

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

/// Joins the upgraded client and backend connections on a task of the current runtime.
pub fn splice(client: OnUpgrade, backend: OnUpgrade, endpoint: SocketAddr) {
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(%endpoint, error = %err, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((up, down)) => {
                tracing::debug!(%endpoint, up, down, "upgraded connection closed");
            }
            Err(err) => tracing::debug!(%endpoint, error = %err, "upgraded connection ended"),
        }
    });
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
