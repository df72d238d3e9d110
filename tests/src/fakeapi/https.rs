//! HTTPS for the fake API server: a certificate for 127.0.0.1 from a test CA generated per
//! server (rcgen, `tls::Ca`), rustls on the accepted connections, and a bearer token every
//! request must carry (`401 Unauthorized` otherwise), as a real API server with token auth does.
//! `kubeconfig` (in `mod.rs`) writes the CA as `certificate-authority-data` and the token as the
//! user's `token`.
use std::sync::Arc;

use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::tls::{base64, Ca};

/// The TLS side of one fake API server.
#[derive(Clone)]
pub struct Https {
    pub acceptor: TlsAcceptor,
    /// The CA that signed the server's certificate, PEM.
    pub ca_pem: String,
    pub token: String,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https").finish_non_exhaustive()
    }
}

impl Https {
    /// A fresh CA, a server certificate for 127.0.0.1 and localhost, and a random token.
    pub fn new() -> Self {
        let ca = Ca::new();
        let pair = ca.ecdsa(&["127.0.0.1", "localhost"]);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pair.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("server chain");
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("server key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca_pem: ca.root_pem(),
            token: format!("fake-token-{:x}{nanos:08x}", std::process::id()),
        }
    }

    /// Whether an `Authorization` header value carries our token.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        header.and_then(|h| h.strip_prefix("Bearer ")) == Some(self.token.as_str())
    }

    /// The kubeconfig `cluster` and `user` entries: server URL, CA data and token.
    pub fn kubeconfig_entries(&self, addr: std::net::SocketAddr, ca_pem: &str) -> (String, String) {
        (
            format!(
                "server: https://{addr}\n    certificate-authority-data: {}",
                base64(ca_pem.as_bytes())
            ),
            format!("{{token: {}}}", self.token),
        )
    }
}

impl Default for Https {
    fn default() -> Self {
        Self::new()
    }
}
