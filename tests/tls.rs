//! TLS tests: the real `xdp-ingress run` binary (no `--interface`, so no root needed) serving
//! HTTPS on a free 127.0.0.1 port, with certificates made in the test by a test CA (rcgen) and
//! written as `kubernetes.io/tls` Secrets into the manifests folder. The client is tokio-rustls
//! with a verifier that trusts the test CA (`integration_tests::tls`), under hyper's HTTP/1.1 or
//! HTTP/2 client. Each test has its own worker-port base (11000 + 1000·n; the HTTPS listener's
//! worker ports are base + 512..), so the tests run in parallel with the other daemon tests.
//!
//! Covered:
//! - SNI picks the certificate: an RSA leaf, an ECDSA leaf sent with its intermediate, a wildcard
//!   (one label only); unknown names and no SNI get the default certificate; handshakes counted
//!   in `tls_handshakes_total{result}`;
//! - `--default-certificate`/`--default-key` is what unknown names get; a mismatched pair stops
//!   the start with a message naming the flags;
//! - ALPN: `h2` (HTTP/2 round trip) and `http/1.1` (keep-alive round trips), with
//!   `X-Forwarded-Proto: https` and the HTTPS port in `X-Forwarded-Port`;
//! - rotation: a replaced Secret is what new handshakes get, while a keep-alive connection opened
//!   before keeps working (on its old certificate);
//! - a bad Secret is logged naming the Ingress and the Secret; its host gets the default
//!   certificate and every other host is served as before;
//! - plain HTTP for a TLS host: 308 to `https://host:port/path?query`; the opt-out annotation
//!   (ours and the ingress-nginx alias) serves it; `--https-port 0` never redirects;
//! - the HTTPS port taken: the start fails naming `--https-port`.
use std::{net::TcpListener, path::Path, time::Duration};

use integration_tests::{
    daemon::{poll, run_to_exit, stderr_of, write_manifest, yaml, Backends, Daemon, DaemonConfig},
    tls::{client_config, tls_ingress, tls_secret, Ca, Https, Trust},
};

/// A Service `web` with one demo backend `web-1`.
fn write_web(dir: &Path, backends: &Backends) {
    let web = backends.demo("web-1");
    write_manifest(
        dir,
        "web.yaml",
        &yaml::service_with_endpoints("web", &[web]),
    );
}

#[test]
fn sni_selects_the_certificate_with_wildcards_and_a_default() {
    let (ca, backends, dir) = (Ca::new(), Backends::new(), tempfile::tempdir().unwrap());
    write_web(dir.path(), &backends);
    let rsa = ca.rsa(&["rsa.example.com"]);
    let chain = ca.ecdsa_chain(&["chain.example.com"]);
    let wild = ca.ecdsa(&["*.wild.example.com"]);
    write_manifest(dir.path(), "rsa.yaml", &tls_secret("rsa", &rsa));
    write_manifest(dir.path(), "chain.yaml", &tls_secret("chain", &chain));
    write_manifest(dir.path(), "wild.yaml", &tls_secret("wild", &wild));
    let ingress = tls_ingress(
        "sites",
        &[],
        &[
            (&["rsa.example.com"], "rsa"),
            (&["chain.example.com"], "chain"),
            (&["*.wild.example.com"], "wild"),
        ],
        &[("rsa.example.com", "web")],
    );
    write_manifest(dir.path(), "sites.yaml", &ingress);
    let d = Daemon::start(DaemonConfig::new(dir.path(), 11000));
    let https = Https::new();
    let strict = client_config(&ca, Trust::TestCa, &["h2", "http/1.1"]);
    let any = client_config(&ca, Trust::Anything, &["h2", "http/1.1"]);

    // Verified against the test CA for the name asked for (the chain needs the intermediate the
    // server sends), and exactly the leaf of the Secret.
    for (sni, want) in [
        ("rsa.example.com", &rsa),
        ("chain.example.com", &chain),
        ("a.wild.example.com", &wild),
        ("b-2.wild.example.com", &wild),
    ] {
        let s = https
            .handshake(d.https_addr(), sni, &strict)
            .unwrap_or_else(|e| panic!("{sni}: {e}; log:\n{}", d.log.text()));
        assert!(
            s.leaf == want.leaf_der,
            "{sni}: not the certificate of its Secret"
        );
    }

    // Unknown names, a name two labels under the wildcard, and no SNI at all (an IP address):
    // the default certificate, one and the same, which the test CA does not vouch for.
    let ours = [&rsa.leaf_der, &chain.leaf_der, &wild.leaf_der];
    let default = https
        .handshake(d.https_addr(), "unknown.example.com", &any)
        .unwrap()
        .leaf;
    assert!(!default.is_empty() && !ours.contains(&&default));
    for sni in ["a.b.wild.example.com", "wild.example.com", "127.0.0.1"] {
        let s = https.handshake(d.https_addr(), sni, &any).unwrap();
        assert!(s.leaf == default, "{sni}: expected the default certificate");
    }
    let err = https
        .handshake(d.https_addr(), "unknown.example.com", &strict)
        .unwrap_err();
    assert!(err.contains("certificate"), "{err}");

    // Every handshake is counted; the one the client refused shows as an error on our side.
    let ok = poll(Duration::from_secs(5), "tls_handshakes ok", || {
        d.metric("xdp_ingress_tls_handshakes_total{result=\"ok\"}")
            .filter(|v| *v >= 8.0)
    });
    assert_eq!(ok, 8.0);
    poll(Duration::from_secs(5), "tls_handshakes error", || {
        d.metric("xdp_ingress_tls_handshakes_total{result=\"error\"}")
            .filter(|v| *v >= 1.0)
    });
}

#[test]
fn a_configured_default_certificate_is_served_and_a_bad_one_stops_the_start() {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    let files = tempfile::tempdir().unwrap();
    let pair = ca.ecdsa(&["default.example.com"]);
    let (crt, key) = (
        files.path().join("default.crt"),
        files.path().join("default.key"),
    );
    std::fs::write(&crt, &pair.chain_pem).unwrap();
    std::fs::write(&key, &pair.key_pem).unwrap();
    let mut config = DaemonConfig::new(dir.path(), 12000);
    config.extra_args = vec![
        "--default-certificate".into(),
        crt.display().to_string(),
        "--default-key".into(),
        key.display().to_string(),
    ];
    let d = Daemon::start(config.clone());
    let any = client_config(&ca, Trust::Anything, &[]);
    let s = Https::new()
        .handshake(d.https_addr(), "nobody.example.com", &any)
        .unwrap();
    assert!(
        s.leaf == pair.leaf_der,
        "not the configured default certificate"
    );
    drop(d);

    // The key of another certificate: refused at start, naming both files.
    std::fs::write(&key, ca.ecdsa(&["other.example.com"]).key_pem).unwrap();
    let (status, output) = run_to_exit(&config.args(), Duration::from_secs(10));
    assert!(!status.success(), "{status}: {output}");
    let stderr = stderr_of(&output);
    assert!(stderr.contains("--default-certificate"), "{output}");
    assert!(stderr.contains(&key.display().to_string()), "{output}");
    assert!(stderr.contains("does not match"), "{output}");
}

#[test]
fn alpn_h2_and_http11_round_trips_with_forwarding_headers() {
    let (ca, backends, dir) = (Ca::new(), Backends::new(), tempfile::tempdir().unwrap());
    write_web(dir.path(), &backends);
    let pair = ca.ecdsa(&["app.example.com"]);
    write_manifest(dir.path(), "secret.yaml", &tls_secret("app", &pair));
    let ingress = tls_ingress(
        "app",
        &[],
        &[(&["app.example.com"], "app")],
        &[("app.example.com", "web")],
    );
    write_manifest(dir.path(), "app.yaml", &ingress);
    let d = Daemon::start(DaemonConfig::new(dir.path(), 13000));
    let https = Https::new();
    let port = d.config.https_port.to_string();

    let h2 = client_config(&ca, Trust::TestCa, &["h2", "http/1.1"]);
    let mut conn = https
        .connect(d.https_addr(), "app.example.com", &h2)
        .unwrap();
    assert_eq!(conn.session.alpn.as_deref(), Some("h2"));
    for path in ["/a", "/b?x=1"] {
        let (r, version) = conn.get("app.example.com", path).unwrap();
        assert_eq!(version, http::Version::HTTP_2);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.server(), "web-1");
        assert_eq!(r.field("URI"), Some(path));
        assert_eq!(r.field("X-Forwarded-Proto"), Some("https"), "{}", r.body);
        assert_eq!(
            r.field("X-Forwarded-Port"),
            Some(port.as_str()),
            "{}",
            r.body
        );
    }

    for alpn in [&["http/1.1"][..], &[]] {
        let h1 = client_config(&ca, Trust::TestCa, alpn);
        let mut conn = https
            .connect(d.https_addr(), "app.example.com", &h1)
            .unwrap();
        let want = (!alpn.is_empty()).then_some("http/1.1");
        assert_eq!(conn.session.alpn.as_deref(), want);
        // Two requests on one keep-alive connection.
        for _ in 0..2 {
            let (r, version) = conn.get("app.example.com", "/c").unwrap();
            assert_eq!(version, http::Version::HTTP_11);
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.field("X-Forwarded-Proto"), Some("https"));
            assert_eq!(r.field("X-Forwarded-Port"), Some(port.as_str()));
        }
    }
    let r = conn.get("app.example.com", "/").unwrap().0;
    assert_eq!(r.status, 200);
    assert_eq!(
        d.metric("xdp_ingress_tls_handshakes_total{result=\"ok\"}"),
        Some(3.0)
    );
}

#[test]
fn a_rotated_secret_reaches_new_handshakes_and_the_open_connection_keeps_working() {
    let (ca, backends, dir) = (Ca::new(), Backends::new(), tempfile::tempdir().unwrap());
    write_web(dir.path(), &backends);
    let old = ca.ecdsa(&["rot.example.com"]);
    write_manifest(dir.path(), "secret.yaml", &tls_secret("rot", &old));
    let ingress = tls_ingress(
        "rot",
        &[],
        &[(&["rot.example.com"], "rot")],
        &[("rot.example.com", "web")],
    );
    write_manifest(dir.path(), "rot.yaml", &ingress);
    let d = Daemon::start(DaemonConfig::new(dir.path(), 14000));
    let https = Https::new();
    let strict = client_config(&ca, Trust::TestCa, &["http/1.1"]);

    let mut live = https
        .connect(d.https_addr(), "rot.example.com", &strict)
        .unwrap();
    assert!(live.session.leaf == old.leaf_der);
    assert_eq!(
        live.get("rot.example.com", "/before").unwrap().0.status,
        200
    );

    // An RSA certificate this time: the key type may change too.
    let new = ca.rsa(&["rot.example.com"]);
    write_manifest(dir.path(), "secret.yaml", &tls_secret("rot", &new));
    poll(Duration::from_secs(5), "the new certificate", || {
        let s = https
            .handshake(d.https_addr(), "rot.example.com", &strict)
            .ok()?;
        (s.leaf == new.leaf_der).then_some(())
    });

    // The connection from before: same TLS session, still served, several times.
    for i in 0..3 {
        let (r, _) = live
            .get("rot.example.com", &format!("/after-{i}"))
            .unwrap_or_else(|e| panic!("old connection: {e}; log:\n{}", d.log.text()));
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert!(live.session.leaf == old.leaf_der);
}

#[test]
fn a_bad_secret_is_logged_and_leaves_other_hosts_served() {
    let (ca, backends, dir) = (Ca::new(), Backends::new(), tempfile::tempdir().unwrap());
    write_web(dir.path(), &backends);
    let good = ca.ecdsa(&["good.example.com"]);
    let mut bad = ca.ecdsa(&["bad.example.com"]);
    bad.key_pem = ca.ecdsa(&["x.example.com"]).key_pem; // a key of another certificate
    write_manifest(
        dir.path(),
        "good-secret.yaml",
        &tls_secret("good-secret", &good),
    );
    write_manifest(
        dir.path(),
        "bad-secret.yaml",
        &tls_secret("bad-secret", &bad),
    );
    write_manifest(
        dir.path(),
        "good.yaml",
        &tls_ingress(
            "good",
            &[],
            &[(&["good.example.com"], "good-secret")],
            &[("good.example.com", "web")],
        ),
    );
    write_manifest(
        dir.path(),
        "bad.yaml",
        &tls_ingress(
            "bad",
            &[],
            &[(&["bad.example.com"], "bad-secret")],
            &[("bad.example.com", "web")],
        ),
    );
    let d = Daemon::start(DaemonConfig::new(dir.path(), 15000));
    let line = d.log.wait_for(
        &[
            "Ingress default/bad",
            "spec.tls[0].secretName",
            "Secret default/bad-secret",
        ],
        Duration::from_secs(5),
    );
    assert!(line.contains("does not match"), "{line}");
    assert!(line.contains("WARN"), "{line}");
    assert!(
        d.log.lines_with(&["Ingress default/good"]).is_empty(),
        "the good Ingress must not be reported; log:\n{}",
        d.log.text()
    );

    let https = Https::new();
    let strict = client_config(&ca, Trust::TestCa, &["h2"]);
    let mut conn = https
        .connect(d.https_addr(), "good.example.com", &strict)
        .unwrap();
    assert!(conn.session.leaf == good.leaf_der);
    assert_eq!(conn.get("good.example.com", "/").unwrap().0.status, 200);

    // The bad host: the default certificate (not the broken one), and still routed.
    let any = client_config(&ca, Trust::Anything, &["h2"]);
    let mut conn = https
        .connect(d.https_addr(), "bad.example.com", &any)
        .unwrap();
    assert!(conn.session.leaf != bad.leaf_der && conn.session.leaf != good.leaf_der);
    assert_eq!(conn.get("bad.example.com", "/").unwrap().0.status, 200);
    assert!(https
        .handshake(d.https_addr(), "bad.example.com", &strict)
        .is_err());
}

#[test]
fn plain_http_for_tls_hosts_redirects_unless_opted_out() {
    let (ca, backends, dir) = (Ca::new(), Backends::new(), tempfile::tempdir().unwrap());
    write_web(dir.path(), &backends);
    let pair = ca.ecdsa(&[
        "secure.example.com",
        "open.example.com",
        "alias.example.com",
    ]);
    write_manifest(dir.path(), "secret.yaml", &tls_secret("s", &pair));
    let ingresses = [
        tls_ingress(
            "secure",
            &[],
            &[(&["secure.example.com"], "s")],
            &[("secure.example.com", "web")],
        ),
        tls_ingress(
            "open",
            &[("xdp-ingress.io/ssl-redirect", "false")],
            &[(&["open.example.com"], "s")],
            &[("open.example.com", "web")],
        ),
        tls_ingress(
            "alias",
            &[("nginx.ingress.kubernetes.io/ssl-redirect", "false")],
            &[(&["alias.example.com"], "s")],
            &[("alias.example.com", "web")],
        ),
        yaml::ingress("plain", "plain.example.com", &[("/", "web")]),
    ];
    write_manifest(dir.path(), "ingresses.yaml", &ingresses.join("---\n"));
    let d = Daemon::start(DaemonConfig::new(dir.path(), 16000));

    let r = d.get("Secure.Example.com:80", "/coffee/beans?size=large&milk");
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!(
            "https://secure.example.com:{}/coffee/beans?size=large&milk",
            d.config.https_port
        ))
        .as_deref()
    );
    for host in ["open.example.com", "alias.example.com", "plain.example.com"] {
        let r = d.get(host, "/x");
        assert_eq!(r.status, 200, "{host}: {r:?}");
        assert_eq!(r.field("X-Forwarded-Proto"), Some("http"));
    }
    // The redirect target serves.
    let strict = client_config(&ca, Trust::TestCa, &["http/1.1"]);
    let https = Https::new();
    let mut conn = https
        .connect(d.https_addr(), "secure.example.com", &strict)
        .unwrap();
    assert_eq!(
        conn.get("secure.example.com", "/coffee/beans")
            .unwrap()
            .0
            .status,
        200
    );
    drop(d);

    // Without HTTPS there is nowhere to redirect to: plain HTTP is served.
    let mut config = DaemonConfig::new(dir.path(), 16000);
    config.https_port = 0;
    let d = Daemon::start(config);
    let r = d.get("secure.example.com", "/x");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn start_fails_clearly_when_the_https_port_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let mut config = DaemonConfig::new(dir.path(), 17000);
    config.https_port = port;
    let (status, output) = run_to_exit(&config.args(), Duration::from_secs(10));
    drop(holder);
    assert!(!status.success(), "{status}: {output}");
    let stderr = stderr_of(&output);
    assert!(stderr.contains("already in use"), "{output}");
    assert!(stderr.contains("--https-port"), "{output}");
    assert!(stderr.contains(&format!(":{port}")), "{output}");
}
