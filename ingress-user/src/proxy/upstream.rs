//! The pooled upstream clients of one worker, one per backend protocol (`model::BackendProtocol`):
//! HTTP/1.1, HTTP/2 with prior knowledge (H2C and GRPC), and HTTP/1.1 over TLS with or without
//! certificate verification (`proxy-ssl-verify`). `Upstreams::send` takes a request whose URI
//! names the endpoint (`uri`) and sends it with the backend's client.
//!
//! Verification (`proxy-ssl-verify: on`) checks the backend's certificate against the system
//! roots (`/etc/ssl/certs/ca-certificates.crt`, or `SSL_CERT_FILE`) for the endpoint's IP address
//! (the name a Service endpoint has); when no roots can be read, verified backends fail to
//! connect with an error saying so. Off (the default, as in ingress-nginx) accepts any
//! certificate: the connection is encrypted, not authenticated.
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{uri::PathAndQuery, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{
        connect::{Connected, Connection, HttpConnector},
        Client, Error as ClientError,
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};
use tokio::net::TcpStream;

use super::forward::UpstreamBody;
use crate::model::BackendProtocol;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One worker's clients.
#[derive(Debug)]
pub struct Upstreams {
    http: Client<HttpConnector, UpstreamBody>,
    h2c: Client<HttpConnector, UpstreamBody>,
    https: Client<TlsConnector, UpstreamBody>,
    https_verified: Client<TlsConnector, UpstreamBody>,
}

impl Upstreams {
    /// Must be called inside the worker's runtime.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.enforce_http(false);
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(256);
            b
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = |verify: bool| {
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions");
            let config = if verify {
                config.with_root_certificates(system_roots())
            } else {
                config
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAny(provider.clone())))
            }
            .with_no_client_auth();
            TlsConnector {
                tcp: connector.clone(),
                tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            }
        };
        Self {
            http: builder().build(connector.clone()),
            h2c: builder().http2_only(true).build(connector.clone()),
            https: builder().build(tls(false)),
            https_verified: builder().build(tls(true)),
        }
    }

    /// Sends `req` (its URI from `uri`) with the client of `protocol`.
    pub async fn send(
        &self,
        protocol: BackendProtocol,
        verify: bool,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        match protocol {
            BackendProtocol::Http => {
                *req.version_mut() = Version::HTTP_11;
                self.http.request(req).await
            }
            BackendProtocol::H2c | BackendProtocol::Grpc => {
                *req.version_mut() = Version::HTTP_2;
                self.h2c.request(req).await
            }
            BackendProtocol::Https => {
                *req.version_mut() = Version::HTTP_11;
                match verify {
                    true => self.https_verified.request(req).await,
                    false => self.https.request(req).await,
                }
            }
        }
    }
}

/// `http://endpoint/path?query` (`https://` for HTTPS backends).
pub fn uri(protocol: BackendProtocol, endpoint: SocketAddr, pq: &PathAndQuery) -> Option<Uri> {
    let scheme = match protocol {
        BackendProtocol::Https => "https",
        _ => "http",
    };
    Uri::builder()
        .scheme(scheme)
        .authority(endpoint.to_string())
        .path_and_query(pq.clone())
        .build()
        .ok()
}

/// The system's trusted roots; empty (every verification fails) when none can be read.
fn system_roots() -> rustls::RootCertStore {
    let path = std::env::var_os("SSL_CERT_FILE")
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let mut roots = rustls::RootCertStore::empty();
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
    roots
}

/// TCP, then a TLS handshake with the endpoint's IP address as the server name.
#[derive(Clone)]
struct TlsConnector {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
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
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            let name = ServerName::try_from(host.to_owned())?;
            let stream = tcp.await?.into_inner();
            let stream = tls.connect(name, stream).await?;
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
