//! Support for the TLS tests (`tests/tls.rs`): a test CA that issues ECDSA and RSA leaf
//! certificates (rcgen, with an intermediate when asked), TLS Secret and Ingress manifests, and an
//! HTTPS client — tokio-rustls under hyper's HTTP/1.1 or HTTP/2 client, chosen by the ALPN the
//! server picked — that records the certificate the server presented. The client's verifier
//! trusts the test CA only (chain and name checked by rustls' WebPKI verifier), or, to look at
//! the daemon's default certificate, accepts anything.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_rustls::TlsConnector;

use crate::daemon::Response;

/// An RSA 2048 key (rcgen with ring signs with RSA keys but cannot make them). Test data only.
pub const RSA_PKCS8: &str = include_str!("../../ingress-user/testdata/rsa-2048.pkcs8.pem");

/// Timeout of every client operation.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate chain (leaf first) and its key, as PEM, and the leaf as DER.
#[derive(Clone, Debug)]
pub struct Pair {
    pub chain_pem: String,
    pub key_pem: String,
    pub leaf_der: Vec<u8>,
}

/// A root CA and an intermediate under it, both ECDSA P-256.
#[derive(Debug)]
pub struct Ca {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Default for Ca {
    fn default() -> Self {
        Self::new()
    }
}

impl Ca {
    pub fn new() -> Self {
        let root = CertifiedIssuer::self_signed(
            ca_params("xdp-ingress test root"),
            KeyPair::generate().expect("key"),
        )
        .expect("root CA");
        let intermediate = CertifiedIssuer::signed_by(
            ca_params("xdp-ingress test intermediate"),
            KeyPair::generate().expect("key"),
            &root,
        )
        .expect("intermediate CA");
        Self { root, intermediate }
    }

    /// The root certificate as PEM (what a client trusts).
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// The root certificate (what the client trusts).
    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root.der().clone()
    }

    fn leaf(&self, names: &[&str], key: KeyPair, via_intermediate: bool) -> Pair {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let (cert, chain_pem) = if via_intermediate {
            let cert = params.signed_by(&key, &self.intermediate).expect("leaf");
            let pem = format!("{}{}", cert.pem(), self.intermediate.pem());
            (cert, pem)
        } else {
            let cert = params.signed_by(&key, &self.root).expect("leaf");
            let pem = cert.pem();
            (cert, pem)
        };
        Pair {
            chain_pem,
            key_pem: key.serialize_pem(),
            leaf_der: cert.der().to_vec(),
        }
    }

    /// An ECDSA P-256 leaf signed by the root.
    pub fn ecdsa(&self, names: &[&str]) -> Pair {
        self.leaf(names, KeyPair::generate().expect("key"), false)
    }

    /// An ECDSA leaf signed by the intermediate; the chain holds leaf and intermediate.
    pub fn ecdsa_chain(&self, names: &[&str]) -> Pair {
        self.leaf(names, KeyPair::generate().expect("key"), true)
    }

    /// An RSA 2048 leaf signed by the root.
    pub fn rsa(&self, names: &[&str]) -> Pair {
        self.leaf(names, KeyPair::from_pem(RSA_PKCS8).expect("RSA key"), false)
    }
}

/// An HTTP/1.1-over-TLS backend on 127.0.0.1 serving `pair`, answering `tls <path>`, run by `rt`.
pub fn https_backend(rt: &tokio::runtime::Runtime, pair: &Pair) -> std::net::SocketAddr {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pair.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = http_body_util::Full::new(bytes::Bytes::from(format!(
                            "tls {}\n",
                            req.uri().path()
                        )));
                        Ok::<_, std::convert::Infallible>(http::Response::new(body))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Standard base64 with padding (what Secret `data` holds).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `kubernetes.io/tls` Secret in `default` with `tls.crt`/`tls.key` base64 in `data`.
pub fn tls_secret(name: &str, pair: &Pair) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\n\
         type: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        base64(pair.chain_pem.as_bytes()),
        base64(pair.key_pem.as_bytes())
    )
}

/// An Ingress in `default` with `annotations`, `spec.tls` entries `(hosts, secretName)`, and one
/// rule per `(host, service)` sending `/` (Prefix) to port 80 of the service.
pub fn tls_ingress(
    name: &str,
    annotations: &[(&str, &str)],
    tls: &[(&[&str], &str)],
    rules: &[(&str, &str)],
) -> String {
    let mut s = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  \
         namespace: default\n  annotations:\n"
    );
    for (k, v) in annotations {
        s.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    if annotations.is_empty() {
        s.push_str("    {}\n");
    }
    s.push_str("spec:\n  tls:\n");
    for (hosts, secret) in tls {
        let hosts: Vec<String> = hosts.iter().map(|h| format!("'{h}'")).collect();
        s.push_str(&format!(
            "  - hosts: [{}]\n    secretName: {secret}\n",
            hosts.join(", ")
        ));
    }
    s.push_str("  rules:\n");
    for (host, service) in rules {
        s.push_str(&format!(
            "  - host: '{host}'\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n\
             \x20       backend:\n          service:\n            name: {service}\n            \
             port:\n              number: 80\n"
        ));
    }
    s
}

/// Which server certificates the client accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Chains to the test CA and valid for the name asked for (rustls' WebPKI verifier).
    TestCa,
    /// Anything (to look at the default certificate); signatures are still checked.
    Anything,
}

/// Verifies against the test CA, or not at all (`Trust::Anything`).
#[derive(Debug)]
struct TestVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
    trust: Trust,
}

impl ServerCertVerifier for TestVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.trust {
            Trust::TestCa => {
                self.webpki
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            }
            Trust::Anything => Ok(ServerCertVerified::assertion()),
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration (TLS 1.3 and 1.2, ring) offering `alpn` and trusting as `trust` says.
pub fn client_config(ca: &Ca, trust: Trust, alpn: &[&str]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.root_der()).expect("adding the test root");
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let verifier = TestVerifier {
        webpki,
        provider: provider.clone(),
        trust,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// What a handshake negotiated.
#[derive(Clone, Debug)]
pub struct Session {
    /// The leaf certificate the server presented (DER).
    pub leaf: Vec<u8>,
    pub alpn: Option<String>,
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// One HTTPS connection (HTTP/1.1 keep-alive or HTTP/2, as ALPN decided).
pub struct HttpsConn {
    handle: tokio::runtime::Handle,
    sender: Sender,
    pub session: Session,
}

impl std::fmt::Debug for HttpsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsConn")
            .field("session", &self.session)
            .finish()
    }
}

/// The client's runtime (one background thread drives the connections between requests).
#[derive(Debug)]
pub struct Https {
    runtime: tokio::runtime::Runtime,
}

impl Default for Https {
    fn default() -> Self {
        Self::new()
    }
}

impl Https {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("client runtime");
        Self { runtime }
    }

    async fn tls(
        addr: SocketAddr,
        sni: &str,
        config: Arc<ClientConfig>,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let name = ServerName::try_from(sni.to_owned()).map_err(|e| format!("{sni}: {e}"))?;
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr} for {sni}: {e}"))
    }

    fn session(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Session {
        let conn = tls.get_ref().1;
        Session {
            leaf: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec())
                .unwrap_or_default(),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        }
    }

    /// A handshake with `sni` (an IP address sends no SNI); the connection is closed after.
    pub fn handshake(
        &self,
        addr: SocketAddr,
        sni: &str,
        config: &Arc<ClientConfig>,
    ) -> Result<Session, String> {
        self.runtime.block_on(async {
            let tls = tokio::time::timeout(TIMEOUT, Self::tls(addr, sni, config.clone()))
                .await
                .map_err(|_| "handshake timed out".to_owned())??;
            Ok(Self::session(&tls))
        })
    }

    /// A connection ready for requests, HTTP/2 when the server chose `h2`.
    pub fn connect(
        &self,
        addr: SocketAddr,
        sni: &str,
        config: &Arc<ClientConfig>,
    ) -> Result<HttpsConn, String> {
        let handle = self.runtime.handle().clone();
        self.runtime.block_on(async {
            let tls = tokio::time::timeout(TIMEOUT, Self::tls(addr, sni, config.clone()))
                .await
                .map_err(|_| "handshake timed out".to_owned())??;
            let session = Self::session(&tls);
            let io = TokioIo::new(tls);
            let sender = if session.alpn.as_deref() == Some("h2") {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
                tokio::spawn(conn);
                Sender::H2(sender)
            } else {
                let (sender, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
                tokio::spawn(conn);
                Sender::H1(sender)
            };
            Ok(HttpsConn {
                handle,
                sender,
                session,
            })
        })
    }
}

impl HttpsConn {
    /// `GET https://host/path` on this connection; the response and its HTTP version.
    pub fn get(&mut self, host: &str, path: &str) -> Result<(Response, http::Version), String> {
        let handle = self.handle.clone();
        handle
            .block_on(async { tokio::time::timeout(TIMEOUT, self.send(host, path)).await })
            .map_err(|_| format!("GET https://{host}{path} timed out"))?
    }

    async fn send(&mut self, host: &str, path: &str) -> Result<(Response, http::Version), String> {
        let fail = |e: hyper::Error| format!("GET https://{host}{path}: {e}");
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.map_err(fail)?;
                let req = http::Request::get(path)
                    .header(http::header::HOST, host)
                    .body(Empty::new())
                    .map_err(|e| e.to_string())?;
                s.send_request(req).await.map_err(fail)?
            }
            Sender::H2(s) => {
                s.ready().await.map_err(fail)?;
                let req = http::Request::get(format!("https://{host}{path}"))
                    .body(Empty::new())
                    .map_err(|e| e.to_string())?;
                s.send_request(req).await.map_err(fail)?
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(fail)?.to_bytes();
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok((
            Response {
                status: parts.status.as_u16(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            },
            parts.version,
        ))
    }
}
