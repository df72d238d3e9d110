//! Tests for `proxy::tls`: certificate selection (exact, one-label wildcard, default), real
//! in-memory handshakes through `server_config` + `CertResolver` (SNI, no SNI, ALPN, versions,
//! a snapshot swap between handshakes), and redirect locations.
use std::sync::Arc;

use rustls::{pki_types::ServerName, ClientConfig, ClientConnection, ServerConnection};

use super::*;
use crate::{
    model::{Certificate, ObjectRef, Snapshot, TlsHost},
    publish::Publisher,
};

/// A self-signed ECDSA certificate for `names`, and its DER for comparisons.
fn cert(names: &[&str]) -> (Certificate, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let c = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let parsed = certificate_from_pem(
        c.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        &provider(),
    )
    .unwrap();
    (parsed, c.der().to_vec())
}

fn host(certificate: Option<Certificate>, redirect: bool) -> TlsHost {
    TlsHost {
        certificate,
        secret: Some(ObjectRef::new("Secret", "default", "s")),
        ingress: ObjectRef::new("Ingress", "default", "i"),
        redirect,
    }
}

struct Certs {
    table: TlsTable,
    exact: Vec<u8>,
    wild: Vec<u8>,
}

/// `a.example.com` (exact), `*.example.com` (wildcard), `broken.example.com` (no usable
/// certificate), `plain.example.com` (opted out of the redirect).
fn certs() -> Certs {
    let (exact, exact_der) = cert(&["a.example.com"]);
    let (wild, wild_der) = cert(&["*.example.com"]);
    let mut table = TlsTable::default();
    table
        .exact
        .insert("a.example.com".into(), host(Some(exact), true));
    table
        .exact
        .insert("broken.example.com".into(), host(None, true));
    table
        .exact
        .insert("plain.example.com".into(), host(Some(wild.clone()), false));
    table
        .wildcard
        .insert("example.com".into(), host(Some(wild), true));
    Certs {
        table,
        exact: exact_der,
        wild: wild_der,
    }
}

fn der_of(c: Option<&Arc<CertifiedKey>>) -> Option<Vec<u8>> {
    c.map(|c| c.cert[0].to_vec())
}

#[test]
fn select_exact_then_one_label_wildcard_else_none() {
    let c = certs();
    let t = &c.table;
    assert_eq!(
        der_of(select(t, Some("a.example.com"))),
        Some(c.exact.clone())
    );
    assert_eq!(
        der_of(select(t, Some("b.example.com"))),
        Some(c.wild.clone())
    );
    assert_eq!(
        der_of(select(t, Some("x-y.example.com"))),
        Some(c.wild.clone())
    );
    // More than one label, the bare suffix, unknown names, no SNI: the caller's default.
    for sni in [
        Some("a.b.example.com"),
        Some("example.com"),
        Some("other.test"),
        Some("broken.example.com"),
        None,
    ] {
        assert!(select(t, sni).is_none(), "{sni:?}");
    }
}

/// Accepts any server certificate (the tests look at which one was presented): the same
/// verifier as `proxy-ssl-verify: off` upstream.
use crate::proxy::upstream::AcceptAny;

struct Handshake {
    leaf: Vec<u8>,
    alpn: Option<Vec<u8>>,
    version: rustls::ProtocolVersion,
}

/// A full handshake in memory; `server_name` an IP address sends no SNI.
fn handshake(
    server: &Arc<ServerConfig>,
    server_name: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Handshake {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut client = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut srv = ServerConnection::new(server.clone()).unwrap();
    for _ in 0..10 {
        if !client.is_handshaking() && !srv.is_handshaking() {
            break;
        }
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        srv.read_tls(&mut &buf[..]).unwrap();
        srv.process_new_packets().unwrap();
        let mut buf = Vec::new();
        while srv.wants_write() {
            srv.write_tls(&mut buf).unwrap();
        }
        client.read_tls(&mut &buf[..]).unwrap();
        client.process_new_packets().unwrap();
    }
    assert!(!client.is_handshaking(), "handshake did not finish");
    Handshake {
        leaf: client.peer_certificates().unwrap()[0].to_vec(),
        alpn: client.alpn_protocol().map(<[u8]>::to_vec),
        version: client.protocol_version().unwrap(),
    }
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[test]
fn handshakes_pick_by_sni_and_fall_back_to_the_default() {
    let c = certs();
    let (mut publisher, reader) = Publisher::new();
    publisher.publish(Snapshot {
        tls: c.table.clone(),
        ..Snapshot::default()
    });
    let default = generate_default_certificate().unwrap();
    let default_der = default.cert[0].to_vec();
    let config = server_config(Arc::new(CertResolver::new(reader, default))).unwrap();

    let h2 = &[b"h2".as_slice(), b"http/1.1"];
    let hs = handshake(&config, "a.example.com", BOTH, h2);
    assert_eq!(hs.leaf, c.exact);
    assert_eq!(hs.alpn.as_deref(), Some(b"h2".as_slice()));
    assert_eq!(hs.version, rustls::ProtocolVersion::TLSv1_3);

    let hs = handshake(
        &config,
        "b.example.com",
        &[&rustls::version::TLS12],
        &[b"http/1.1"],
    );
    assert_eq!(hs.leaf, c.wild);
    assert_eq!(hs.alpn.as_deref(), Some(b"http/1.1".as_slice()));
    assert_eq!(hs.version, rustls::ProtocolVersion::TLSv1_2);

    for name in [
        "a.b.example.com",
        "unknown.test",
        "broken.example.com",
        "127.0.0.1",
    ] {
        let hs = handshake(&config, name, BOTH, &[]);
        assert_eq!(
            hs.leaf, default_der,
            "{name}: expected the default certificate"
        );
        assert_eq!(hs.alpn, None);
    }

    // A new snapshot (a rotated Secret) is seen by the next handshake.
    let (rotated, rotated_der) = cert(&["a.example.com"]);
    let mut table = c.table.clone();
    table
        .exact
        .insert("a.example.com".into(), host(Some(rotated), true));
    publisher.publish(Snapshot {
        tls: table,
        ..Snapshot::default()
    });
    assert_eq!(
        handshake(&config, "a.example.com", BOTH, h2).leaf,
        rotated_der
    );
}

#[test]
fn default_certificate_is_self_signed_with_our_name_and_files_load() {
    let default = generate_default_certificate().unwrap();
    assert_eq!(default.cert.len(), 1);
    default.keys_match().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let c = rcgen::CertificateParams::new(vec!["default.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (crt_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt_path, c.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let loaded = load_default_certificate(&crt_path, &key_path).unwrap();
    assert_eq!(loaded.cert[0].as_ref(), c.der().as_ref());

    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&key_path, other.serialize_pem()).unwrap();
    let err = load_default_certificate(&crt_path, &key_path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("tls.crt") && msg.contains("does not match"),
        "{msg}"
    );
    let err = load_default_certificate(&dir.path().join("nope"), &key_path).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
}

#[test]
fn redirect_locations() {
    let t = certs().table;
    let uri = |s: &str| s.parse::<Uri>().unwrap();
    let cases = [
        (
            "a.example.com",
            "/coffee?x=1&y",
            443,
            Some("https://a.example.com/coffee?x=1&y"),
        ),
        ("A.Example.COM:80", "/", 443, Some("https://a.example.com/")),
        (
            "a.example.com.",
            "/p",
            8443,
            Some("https://a.example.com:8443/p"),
        ),
        (
            "b.example.com",
            "http://b.example.com/abs?q",
            443,
            Some("https://b.example.com/abs?q"),
        ),
        // Broken Secret: still a TLS host (served with the default certificate), still redirected.
        (
            "broken.example.com",
            "/",
            443,
            Some("https://broken.example.com/"),
        ),
        ("plain.example.com", "/", 443, None),
        ("a.b.example.com", "/", 443, None),
        ("other.test", "/", 443, None),
        ("127.0.0.1", "/", 443, None),
        ("[::1]:80", "/", 443, None),
        ("", "/", 443, None),
        ("a.example.com:x", "/", 443, None),
    ];
    for (host, target, port, want) in cases {
        let got = redirect_location(&t, host, &uri(target), port);
        assert_eq!(got.as_deref(), want, "{host} {target}");
    }
    assert_eq!(
        redirect_location(&TlsTable::default(), "a.example.com", &uri("/"), 443),
        None
    );
}
