//! TLS termination for the HTTPS listener: the rustls `ServerConfig` every worker shares, the
//! certificate resolver, the default certificate, the handshake, and the HTTP → HTTPS redirect.
//!
//! Flow: `server_config` is built once at start around a `CertResolver` that holds the
//! `SnapshotReader`. On every handshake the resolver loads the current snapshot and picks the
//! certificate for the SNI name from its `TlsTable` (exact name, then a one-label wildcard), else
//! the default certificate (also for a TLS host whose Secret is unusable, and without SNI). A
//! Secret that changes is a new snapshot, so new handshakes see the new certificate while
//! established connections keep the one they negotiated. Workers call `handshake` on every
//! connection accepted on the HTTPS port (counted in `tls_handshakes{result}`) and serve the
//! resulting `Stream` like a plain one; ALPN (`h2`, `http/1.1`) decides whether the worker serves
//! it with hyper's HTTP/2 server or its own HTTP/1.1 server (`Stream::alpn_h2`). Plain-HTTP requests for a TLS host get a 308 to
//! `redirect_location`.
use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use crate::{
    metrics::{ProxyMetrics, TlsHandshakeLabels},
    model::TlsTable,
    publish::SnapshotReader,
    translate::tls::{certificate_from_pem, CertificateError},
};

/// A client that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Common name of the generated default certificate.
pub const DEFAULT_CERTIFICATE_NAME: &str = "xdp-ingress default certificate";

/// Setting up TLS failed (at start only).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("generating the default certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--default-certificate {} with --default-key {}: {source}", cert.display(), key.display())]
    Certificate {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: CertificateError,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed ECDSA P-256 certificate, made fresh at every start (what clients get for
/// unknown names: it verifies for nobody, as it should).
pub fn generate_default_certificate() -> Result<Arc<CertifiedKey>, TlsError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEFAULT_CERTIFICATE_NAME);
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = provider().key_provider.load_private_key(der)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    )))
}

/// The default certificate from PEM files (`--default-certificate`, `--default-key`).
pub fn load_default_certificate(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let certificate =
        certificate_from_pem(&read(cert)?, &read(key)?, &provider()).map_err(|source| {
            TlsError::Certificate {
                cert: cert.to_owned(),
                key: key.to_owned(),
                source,
            }
        })?;
    Ok(certificate.0)
}

/// Picks the certificate for an SNI name (rustls hands it over lowercase): the TLS host's own if
/// it has a usable one, else `None` (the caller serves the default).
pub fn select<'a>(table: &'a TlsTable, sni: Option<&str>) -> Option<&'a Arc<CertifiedKey>> {
    table
        .find(sni?)
        .and_then(|h| h.certificate.as_ref())
        .map(|c| &c.0)
}

/// `ResolvesServerCert` over the current snapshot, with a default certificate.
#[derive(Debug)]
pub struct CertResolver {
    snapshots: SnapshotReader,
    default: Arc<CertifiedKey>,
}

impl CertResolver {
    pub fn new(snapshots: SnapshotReader, default: Arc<CertifiedKey>) -> Self {
        Self { snapshots, default }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.snapshots.load();
        let chosen = select(&snapshot.tls, hello.server_name()).unwrap_or(&self.default);
        Some(chosen.clone())
    }
}

/// The server side of every HTTPS connection: TLS 1.3 and 1.2 only, ring, ALPN `h2` then
/// `http/1.1`, certificates from `resolver`.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An accepted connection, plain or after a TLS handshake, as one I/O type for hyper.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Runs the server handshake (bounded by `HANDSHAKE_TIMEOUT`), counts it, and logs a failure
/// at debug level. `None`: the connection is gone.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    metrics: &ProxyMetrics,
) -> Option<Stream> {
    let (result, stream) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => ("ok", Some(Stream::Tls(Box::new(tls)))),
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                ("error", None)
            }
            Err(_) => {
                tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                ("timeout", None)
            }
        };
    metrics
        .tls_handshakes
        .get_or_create(&TlsHandshakeLabels { result })
        .inc();
    stream
}

impl Stream {
    /// TLS negotiated HTTP/2 by ALPN.
    pub fn alpn_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Where a plain-HTTP request for a TLS host that redirects goes: `https://host[:port]/path?query`
/// (`:port` left out for 443). `None` when the host is not a TLS host, or has opted out. `host`
/// is the Host header (or `:authority`) as sent; its port is dropped.
pub fn redirect_location(
    table: &TlsTable,
    host: &str,
    uri: &Uri,
    https_port: u16,
) -> Option<String> {
    if table.is_empty() {
        return None;
    }
    let name = host_name(host)?;
    if !table.find(&name)?.redirect {
        return None;
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let path = if path.starts_with('/') { path } else { "/" };
    Some(match https_port {
        443 => format!("https://{name}{path}"),
        port => format!("https://{name}:{port}{path}"),
    })
}

/// The DNS name in a Host header: port and one trailing dot dropped, lowercased; `None` for an
/// IP literal or anything that is not a plain DNS name (so nothing odd reaches `Location`).
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let plain = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    plain.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
