//! The pooled upstream clients of one worker, one per backend protocol (`model::BackendProtocol`):
//! HTTP/1.1 (the worker's own connection pool, `h1pool`), HTTP/2 with prior knowledge (H2C and
//! GRPC, hyper-util), and HTTP/1.1 over TLS (hyper-util), one client per
//! TLS setting in use (`TlsKey`: verification on or off, the server name, the CA bundle), made on
//! first use and kept. `Upstreams::send` takes a request whose URI names the endpoint (`uri`) and
//! sends it with the backend's client.
//!
//! Verification (`proxy-ssl-verify: on`) checks the backend's certificate for `proxy-ssl-name`,
//! else for the endpoint's IP address (the name a Service endpoint has), against the CA bundle of
//! `proxy-ssl-secret`, else the daemon's `UpstreamTrust` (`--upstream-ca-file`, else the system
//! roots: `/etc/ssl/certs/ca-certificates.crt` or `SSL_CERT_FILE`); when none can be read,
//! verified backends fail to connect with an error saying so. Off (the default, as in
//! ingress-nginx) accepts any certificate: the connection is encrypted, not authenticated.
use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use http::{
    uri::{Authority, PathAndQuery, Scheme},
    Request, Response, Uri, Version,
};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{
        connect::{Connected, Connection, HttpConnector},
        Client, Error as ClientError,
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use prometheus_client::metrics::counter::Counter;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;

use super::{
    forward::UpstreamBody,
    h1conn::ExchangeError,
    h1pool::{self, H1Pool, PoolError, PooledBody},
    headers::Forwarded,
};
use crate::model::{BackendProtocol, UpstreamOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The trust anchors of verified HTTPS backends without a `proxy-ssl-secret`.
#[derive(Clone, Debug)]
pub struct UpstreamTrust(Arc<RootCertStore>);

/// `--upstream-ca-file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("--upstream-ca-file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("--upstream-ca-file {path}: no usable CERTIFICATE block")]
    Empty { path: String },
}

impl UpstreamTrust {
    /// The system's roots; empty (every verification fails) when none can be read.
    pub fn system() -> Self {
        let path = std::env::var_os("SSL_CERT_FILE")
            .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
        let mut roots = RootCertStore::empty();
        match CertificateDer::pem_file_iter(&path) {
            Ok(certs) => {
                let (added, _ignored) = roots.add_parsable_certificates(certs.flatten());
                tracing::debug!(path = %path.to_string_lossy(), added, "system roots for proxy-ssl-verify");
            }
            Err(err) => tracing::warn!(
                path = %path.to_string_lossy(), %err,
                "no system roots: backends with proxy-ssl-verify on will fail to connect"
            ),
        }
        Self(Arc::new(roots))
    }

    /// The certificates of the PEM file at `path` (`--upstream-ca-file`), instead of the system's.
    pub fn from_pem_file(path: &Path) -> Result<Self, TrustError> {
        let shown = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TrustError::Read {
                path: shown.clone(),
                source,
            })?;
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TrustError::Empty { path: shown });
        }
        Ok(Self(Arc::new(roots)))
    }
}

/// What tells one HTTPS client from another.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TlsKey {
    verify: bool,
    name: Option<Arc<str>>,
    ca: Option<Arc<str>>,
}

/// Distinct HTTPS client settings kept per worker before the cache starts over.
const MAX_TLS_CLIENTS: usize = 64;

/// Why an upstream exchange failed before a response head arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("no response head before the deadline")]
    TimedOut,
}

impl UpstreamError {
    /// Nothing reached the endpoint: the request may go to another one.
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Pool(e) => e.is_connect(),
            Self::Client(e) => e.is_connect(),
            Self::TimedOut => false,
        }
    }

    /// The response head did not come by the deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::TimedOut | Self::Pool(PoolError::Exchange(ExchangeError::TimedOut))
        )
    }
}

/// One worker's clients.
#[derive(Debug)]
pub struct Upstreams {
    /// Plain HTTP/1.1: the worker's own pool (the common case, kept lean).
    http: Arc<H1Pool>,
    h2c: Client<Counted, UpstreamBody>,
    https: Mutex<HashMap<TlsKey, Client<TlsConnector, UpstreamBody>>>,
    tcp: HttpConnector,
    trust: UpstreamTrust,
    provider: Arc<CryptoProvider>,
    /// Counts the connections every client opens (`xdp_ingress_upstream_connections_total`).
    opened: Counter,
}

/// A pooled client builder with the worker's settings.
fn client_builder() -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256);
    b
}

impl Upstreams {
    /// Must be called inside the worker's runtime.
    pub fn new(connect_timeout: Duration, trust: UpstreamTrust, opened: Counter) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.enforce_http(false);
        let http = H1Pool::new(connect_timeout, opened.clone());
        tokio::spawn(h1pool::sweep_while_alive(Arc::downgrade(&http)));
        Self {
            http,
            h2c: client_builder().http2_only(true).build(Counted {
                tcp: connector.clone(),
                opened: opened.clone(),
            }),
            https: Mutex::new(HashMap::new()),
            tcp: connector,
            trust,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            opened,
        }
    }

    /// Sends `req` (its URI from `uri`) with the `forwarded` fields to `endpoint` the way
    /// `options` say (protocol, TLS settings); its response head must be there by `deadline`.
    pub async fn send(
        &self,
        options: &UpstreamOptions,
        endpoint: SocketAddr,
        mut req: Request<UpstreamBody>,
        forwarded: &Forwarded<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let unpooled = |resp: Response<Incoming>| resp.map(PooledBody::unpooled);
        if options.protocol != BackendProtocol::Http {
            forwarded.apply(req.headers_mut());
        }
        match options.protocol {
            BackendProtocol::Http => {
                *req.version_mut() = Version::HTTP_11;
                Ok(self.http.send(endpoint, req, forwarded, deadline).await?)
            }
            BackendProtocol::H2c | BackendProtocol::Grpc => {
                *req.version_mut() = Version::HTTP_2;
                let sending = self.h2c.request(req);
                let resp = tokio::time::timeout_at(deadline, sending).await;
                Ok(unpooled(resp.map_err(|_| UpstreamError::TimedOut)??))
            }
            BackendProtocol::Https => {
                *req.version_mut() = Version::HTTP_11;
                let client = self.https_client(options);
                let resp = tokio::time::timeout_at(deadline, client.request(req)).await;
                Ok(unpooled(resp.map_err(|_| UpstreamError::TimedOut)??))
            }
        }
    }

    /// Idle pooled HTTP/1.1 connections to `endpoint` (tests).
    pub fn idle_http(&self, endpoint: SocketAddr) -> usize {
        self.http.idle_count(endpoint)
    }

    /// The HTTPS client for the TLS settings of `options`, made on first use.
    fn https_client(&self, options: &UpstreamOptions) -> Client<TlsConnector, UpstreamBody> {
        let key = TlsKey {
            verify: options.ssl_verify,
            name: options.ssl_name.clone(),
            ca: options.ssl_ca.clone().filter(|_| options.ssl_verify),
        };
        let mut clients = self.https.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return client.clone();
        }
        // Settings that no snapshot uses any more (a rotated CA bundle) would pile up: past
        // `MAX_TLS_CLIENTS` start over (in-flight requests keep their clients).
        if clients.len() >= MAX_TLS_CLIENTS {
            clients.clear();
        }
        let client = client_builder().build(self.tls_connector(&key));
        clients.insert(key, client.clone());
        client
    }

    fn tls_connector(&self, key: &TlsKey) -> TlsConnector {
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions");
        let config = match (key.verify, &key.ca) {
            (true, None) => config.with_root_certificates(self.trust.0.clone()),
            (true, Some(pem)) => {
                let mut roots = RootCertStore::empty();
                // Checked to parse when the snapshot was built.
                roots.add_parsable_certificates(
                    CertificateDer::pem_slice_iter(pem.as_bytes()).flatten(),
                );
                config.with_root_certificates(roots)
            }
            (false, _) => config
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(self.provider.clone()))),
        }
        .with_no_client_auth();
        TlsConnector {
            opened: self.opened.clone(),
            tcp: self.tcp.clone(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: key
                .name
                .as_deref()
                .and_then(|n| ServerName::try_from(n.to_owned()).ok()),
        }
    }
}

/// The request target for `protocol`: `/path?query` for plain HTTP/1.1 (the worker's pool sends
/// it as is, to the endpoint it is given), else `http://endpoint/path?query` (`https://` for HTTPS
/// backends) for hyper-util's clients, which find the connection by the URI. Clones only: the
/// endpoint's authority is formatted once per snapshot (`balance::Pick::authority`).
pub fn uri(protocol: BackendProtocol, endpoint: &Authority, pq: &PathAndQuery) -> Option<Uri> {
    if protocol == BackendProtocol::Http {
        return Some(Uri::from(pq.clone()));
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(match protocol {
        BackendProtocol::Https => Scheme::HTTPS,
        _ => Scheme::HTTP,
    });
    parts.authority = Some(endpoint.clone());
    parts.path_and_query = Some(pq.clone());
    Uri::from_parts(parts).ok()
}

/// Plain TCP (h2c), counting each connection opened.
#[derive(Clone, Debug)]
struct Counted {
    tcp: HttpConnector,
    opened: Counter,
}

impl tower_service::Service<Uri> for Counted {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.tcp.call(uri);
        let opened = self.opened.clone();
        Box::pin(async move {
            let stream = tcp.await?;
            opened.inc();
            Ok(stream)
        })
    }
}

/// TCP, then a TLS handshake for `name`, else the endpoint's IP address.
#[derive(Clone)]
struct TlsConnector {
    opened: Counter,
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
    name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TlsConn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.tcp.call(uri.clone());
        let tls = self.tls.clone();
        let name = self.name.clone();
        let opened = self.opened.clone();
        Box::pin(async move {
            let name = match name {
                Some(name) => name,
                None => {
                    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
                    ServerName::try_from(host.to_owned())?
                }
            };
            let stream = tcp.await?.into_inner();
            let stream = tls.connect(name, stream).await?;
            opened.inc();
            Ok(TlsConn(TokioIo::new(stream)))
        })
    }
}

/// A TLS connection to an endpoint, as the pooled client wants it.
#[derive(Debug)]
struct TlsConn(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// `proxy-ssl-verify: off`: any certificate is accepted; signatures are still checked so the
/// handshake is sound.
#[derive(Debug)]
pub(crate) struct AcceptAny(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_ca_file_is_an_error_naming_the_flag_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = UpstreamTrust::from_pem_file(&missing).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("--upstream-ca-file ") && text.contains("missing.pem"),
            "{text}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let err = UpstreamTrust::from_pem_file(&empty).unwrap_err();
        assert!(matches!(err, TrustError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("no usable CERTIFICATE"), "{err}");

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, cert.pem()).unwrap();
        let trust = UpstreamTrust::from_pem_file(&good).unwrap();
        assert_eq!(trust.0.len(), 1);
    }
}
