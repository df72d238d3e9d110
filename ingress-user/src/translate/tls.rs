//! `spec.tls` → `TlsTable`: which certificate each TLS host is served with, and whether plain
//! HTTP for it is redirected to HTTPS.
//!
//! The Ingresses with `spec.tls` are visited oldest first (the age `routes::collect` judges
//! route conflicts by); each `spec.tls[i]` entry names
//! hosts (exact, or a `*.` wildcard of one label) and a Secret in the Ingress's namespace. The
//! Secret is looked up among the TLS Secrets of `Inputs`, its `tls.crt` (PEM chain, leaf first)
//! and `tls.key` (PKCS#8, PKCS#1 RSA or SEC1 EC PEM) are parsed with rustls' pki-types and the key
//! is checked against the leaf (once per Secret; hosts sharing it share one `Arc`). A Secret that
//! is missing, of another type, unparsable or mismatched is a diagnostic on the Ingress
//! (`spec.tls[i].secretName`, naming the Secret and why), and its hosts get `certificate: None`:
//! they are served with the default certificate; nothing else changes. The first claim on a host
//! wins; a later claim naming another Secret is a diagnostic on the later Ingress.
//!
//! Redirect: a TLS host answers plain HTTP with 308 unless an Ingress that lists it in `spec.tls`
//! says `xdp-ingress.io/ssl-redirect: "false"` (alias `nginx.ingress.kubernetes.io/ssl-redirect`).
//! Pure: parsing certificates is computation, not I/O.
use std::{
    collections::{hash_map::Entry, HashMap},
    sync::Arc,
};

use k8s_openapi::api::{core::v1::Secret, networking::v1::Ingress};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
};

use super::{Diagnostic, DEFAULT_NAMESPACE};
use crate::model::{Certificate, ObjectRef, TlsHost, TlsTable};

/// Our annotation: `"false"` turns the HTTP → HTTPS redirect off for the Ingress's TLS hosts.
pub const SSL_REDIRECT: &str = "xdp-ingress.io/ssl-redirect";
/// The ingress-nginx key, accepted as an alias (ours wins when both are set).
pub const SSL_REDIRECT_NGINX: &str = "nginx.ingress.kubernetes.io/ssl-redirect";

const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Why a certificate/key pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("not valid PEM: {0}")]
    Pem(rustls::pki_types::pem::Error, Part),
    #[error("no CERTIFICATE block")]
    NoCertificate,
    #[error("no private key block (PKCS#8 PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")]
    NoKey,
    #[error("unusable private key: {0}")]
    Key(rustls::Error),
    #[error("the first certificate cannot be parsed: {0}")]
    Leaf(rustls::Error),
    #[error("the private key does not match the first certificate")]
    Mismatch,
}

/// Which half of the pair an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Certificate,
    Key,
}

impl CertificateError {
    /// The half of the pair at fault; `None` when it is about both (a mismatch).
    pub fn part(&self) -> Option<Part> {
        match self {
            Self::Pem(_, part) => Some(*part),
            Self::NoCertificate | Self::Leaf(_) => Some(Part::Certificate),
            Self::NoKey | Self::Key(_) => Some(Part::Key),
            Self::Mismatch => None,
        }
    }
}

/// Parses a PEM certificate chain (leaf first) and a PEM private key (RSA, ECDSA or Ed25519) for
/// `provider`, and checks that the key belongs to the leaf.
pub fn certificate_from_pem(
    chain: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<Certificate, CertificateError> {
    let chain = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::Pem(e, Part::Certificate))?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate);
    }
    let key = match PrivateKeyDer::from_pem_slice(key) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(CertificateError::NoKey),
        Err(e) => return Err(CertificateError::Pem(e, Part::Key)),
    };
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(CertificateError::Key)?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public half; nothing to compare (not for ring's
        // RSA, ECDSA and Ed25519 keys).
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => return Err(CertificateError::Mismatch),
        Err(e) => return Err(CertificateError::Leaf(e)),
    }
    Ok(Certificate(Arc::new(certified)))
}

/// The Secret `r` (`proxy-ssl-secret`) among `secrets`, for `upstream_ca`.
pub(super) fn find_secret<'a>(
    secrets: &'a [Arc<Secret>],
    r: &ObjectRef,
) -> Option<&'a Arc<Secret>> {
    secrets.iter().find(|s| {
        s.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE) == r.namespace
            && s.metadata.name.as_deref() == Some(r.name.as_str())
    })
}

/// The PEM CA bundle in `ca.crt` of the Secret `find_secret` found (`None`: none), checked to hold
/// at least one certificate; the error says what is wrong, for a diagnostic on the Secret's
/// `data[ca.crt]`.
pub(super) fn upstream_ca(secret: Option<&Secret>) -> Result<Arc<str>, String> {
    let secret = secret.ok_or_else(|| {
        format!("not found (named by proxy-ssl-secret; only {TLS_SECRET_TYPE} Secrets are read)")
    })?;
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .ok_or("no ca.crt (named by proxy-ssl-secret)")?;
    let text = std::str::from_utf8(&pem.0).map_err(|_| "ca.crt is not PEM text")?;
    let certs = CertificateDer::pem_slice_iter(pem.0.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca.crt is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("ca.crt has no CERTIFICATE block".into());
    }
    Ok(Arc::from(text))
}

/// The TLS hosts of every Ingress, with their certificates; problems go to `diags`.
pub(super) fn collect(
    ingresses: &[Arc<Ingress>],
    secrets: &[Arc<Secret>],
    diags: &mut Vec<Diagnostic>,
) -> TlsTable {
    let provider = rustls::crypto::ring::default_provider();
    let by_name: HashMap<(&str, &str), &Secret> = secrets
        .iter()
        .map(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
            ((ns, s.metadata.name.as_deref().unwrap_or("")), &**s)
        })
        .collect();
    let mut loaded: HashMap<ObjectRef, Result<Certificate, String>> = HashMap::new();
    let mut table = TlsTable::default();

    // Only the Ingresses with `spec.tls` matter here: sort those.
    let mut ordered: Vec<&Ingress> = (ingresses.iter())
        .map(|i| &**i)
        .filter(|i| i.spec.as_ref().is_some_and(|s| s.tls.is_some()))
        .collect();
    ordered.sort_by_key(|i| {
        let ts = i.metadata.creation_timestamp.as_ref();
        (ts.is_none(), ts, namespace(i), i.metadata.name.as_deref())
    });
    for ingress in ordered {
        let Some(entries) = ingress.spec.as_ref().and_then(|s| s.tls.as_ref()) else {
            continue;
        };
        let me = ObjectRef::new(
            "Ingress",
            namespace(ingress),
            ingress.metadata.name.as_deref().unwrap_or(""),
        );
        let redirect = redirect(ingress, &me, diags);
        for (i, entry) in entries.iter().enumerate() {
            let mut hosts = Vec::new();
            for (j, host) in entry.hosts.iter().flatten().enumerate() {
                match check_host(host) {
                    Ok(h) => hosts.push((j, h)),
                    Err(reason) => diags.push(Diagnostic::new(
                        &me,
                        format!("spec.tls[{i}].hosts[{j}]"),
                        reason,
                    )),
                }
            }
            if entry.hosts.as_ref().is_none_or(Vec::is_empty) {
                diags.push(Diagnostic::new(
                    &me,
                    format!("spec.tls[{i}].hosts"),
                    "no hosts: this entry applies to none; list the hosts its certificate serves",
                ));
            }
            if hosts.is_empty() {
                continue;
            }
            let secret = entry
                .secret_name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(|n| ObjectRef::new("Secret", me.namespace.clone(), n));
            let certificate = match &secret {
                // No Secret: TLS by SNI only, with the default certificate (as the API allows).
                None => None,
                Some(s) => {
                    let found = by_name.get(&(s.namespace.as_str(), s.name.as_str()));
                    match loaded
                        .entry(s.clone())
                        .or_insert_with(|| load(found.copied(), &provider))
                    {
                        Ok(c) => Some(c.clone()),
                        Err(reason) => {
                            let names: Vec<&str> = hosts.iter().map(|(_, h)| h.name()).collect();
                            let verb = if names.len() == 1 { "is" } else { "are" };
                            diags.push(Diagnostic::new(
                                &me,
                                format!("spec.tls[{i}].secretName"),
                                format!(
                                    "{s}: {reason}; {} {verb} served with the default certificate",
                                    names.join(", ")
                                ),
                            ));
                            None
                        }
                    }
                }
            };
            for (j, host) in hosts {
                let (map, key) = match &host {
                    Host::Exact(h) => (&mut table.exact, h.clone()),
                    Host::Wildcard(_, suffix) => (&mut table.wildcard, suffix.clone()),
                };
                match map.entry(key) {
                    Entry::Vacant(v) => {
                        v.insert(TlsHost {
                            certificate: certificate.clone(),
                            secret: secret.clone(),
                            ingress: me.clone(),
                            redirect,
                        });
                    }
                    Entry::Occupied(mut o) => {
                        let winner = o.get_mut();
                        winner.redirect &= redirect;
                        if winner.secret != secret {
                            let by = if winner.ingress == me {
                                "an earlier spec.tls entry of this Ingress".to_owned()
                            } else {
                                format!("{} (older, or same age and first by name)", winner.ingress)
                            };
                            let source = match &winner.secret {
                                Some(s) => s.to_string(),
                                None => "no Secret".to_owned(),
                            };
                            diags.push(Diagnostic::new(
                                &me,
                                format!("spec.tls[{i}].hosts[{j}]"),
                                format!(
                                    "host {} already takes its certificate from {source}, set by \
                                     {by}; ignored",
                                    host.name()
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    table
}

fn namespace(i: &Ingress) -> &str {
    i.metadata
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// The certificate of a Secret, or why there is none (for the diagnostic).
fn load(secret: Option<&Secret>, provider: &CryptoProvider) -> Result<Certificate, String> {
    let Some(secret) = secret else {
        return Err("not found".into());
    };
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if kind != TLS_SECRET_TYPE {
        return Err(format!("has type {kind:?}, not {TLS_SECRET_TYPE}"));
    }
    let field = |key: &str| {
        let data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| &b.0[..]);
        let strings = secret.string_data.as_ref().and_then(|d| d.get(key));
        strings
            .map(|s| s.as_bytes())
            .or(data)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| format!("has no {key}"))
    };
    let (crt, key) = (field("tls.crt")?, field("tls.key")?);
    certificate_from_pem(crt, key, provider).map_err(|e| match e.part() {
        Some(Part::Certificate) => format!("tls.crt: {e}"),
        Some(Part::Key) => format!("tls.key: {e}"),
        None => format!("tls.key: {e} in tls.crt"),
    })
}

/// A valid `spec.tls[].hosts` entry, lowercase.
#[derive(Clone, Debug)]
enum Host {
    Exact(String),
    /// `*.example.com` and its suffix `example.com`.
    Wildcard(String, String),
}

impl Host {
    fn name(&self) -> &str {
        match self {
            Host::Exact(h) | Host::Wildcard(h, _) => h,
        }
    }
}

fn check_host(host: &str) -> Result<Host, String> {
    let lower = host.to_ascii_lowercase();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, lower.as_str()),
    };
    let valid = name.len() <= 253
        && (!wildcard || name.contains('.'))
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(format!("invalid TLS host {host:?}; ignored"));
    }
    Ok(match wildcard {
        true => Host::Wildcard(lower.clone(), name.to_owned()),
        false => Host::Exact(lower),
    })
}

/// The Ingress's redirect setting (default on); a value other than true/false is a diagnostic.
fn redirect(ingress: &Ingress, me: &ObjectRef, diags: &mut Vec<Diagnostic>) -> bool {
    let annotations = ingress.metadata.annotations.as_ref();
    let Some((key, value)) = [SSL_REDIRECT, SSL_REDIRECT_NGINX]
        .into_iter()
        .find_map(|k| annotations.and_then(|a| a.get(k)).map(|v| (k, v)))
    else {
        return true;
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => true,
        "false" => false,
        _ => {
            diags.push(Diagnostic::new(
                me,
                format!("metadata.annotations[{key}]"),
                format!("expected \"true\" or \"false\", got {value:?}; redirecting (the default)"),
            ));
            true
        }
    }
}
