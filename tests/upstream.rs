//! The backend side of the real `xdp-ingress run` binary (one daemon per test, manifests in a
//! tempdir, backends on 127.0.0.1):
//!
//! - HTTPS backends: with verification off (the default) any certificate is accepted; with
//!   `proxy-ssl-verify: on` and no `proxy-ssl-name` the endpoint's IP address must be named;
//! - verified HTTPS backends: `proxy-ssl-verify: on` with `proxy-ssl-name` succeeds against a
//!   backend whose certificate is for that name from the CA of `--upstream-ca-file`, or from the CA
//!   in `ca.crt` of the `proxy-ssl-secret` Secret; a wrong name, or a CA nobody gave, is 502 with
//!   a log line naming the endpoint and the reason;
//! - passive health survives reloads: an endpoint ejected after connect failures stays ejected
//!   when an unrelated manifest changes and the snapshot is rebuilt.
use std::{net::TcpListener, time::Duration};

use integration_tests::{
    daemon::{poll, write_manifest, write_route, yaml, Backends, Daemon, DaemonConfig, HttpConn},
    tls::{base64, https_backend, tls_secret, Ca},
};

/// Worker-port bases, one per test, in ranges no other test binary running at the same time uses.
const BASES: [u16; 2] = [27100, 27700];

#[test]
fn verified_https_backends_by_name_with_a_ca_file_or_a_ca_secret() {
    let rt = integration_tests::daemon::backend_runtime();
    let dir = tempfile::tempdir().unwrap();
    let etc = tempfile::tempdir().unwrap();
    // CA 1 is given to the daemon by file; CA 2 only by a Secret.
    let ca1 = Ca::new();
    let ca2 = Ca::new();
    let ca_file = etc.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, ca1.root_pem()).unwrap();
    let api = https_backend(&rt, &ca1.ecdsa(&["api.internal"]));
    let other = https_backend(&rt, &ca2.ecdsa(&["other.internal"]));

    let https = ("xdp-ingress.io/backend-protocol", "HTTPS");
    let verify = ("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on");
    let name = |n| ("nginx.ingress.kubernetes.io/proxy-ssl-name", n);
    write_route(
        dir.path(),
        "named.example",
        "named-svc",
        &[api],
        &[https, verify, name("api.internal")],
    );
    write_route(
        dir.path(),
        "wrong.example",
        "wrong-svc",
        &[api],
        &[https, verify, name("wrong.internal")],
    );
    let secret = format!(
        "{}  ca.crt: {}\n",
        tls_secret("other-ca", &ca2.ecdsa(&["unused.internal"])),
        base64(ca2.root_pem().as_bytes())
    );
    write_manifest(dir.path(), "other-ca.yaml", &secret);
    write_route(
        dir.path(),
        "secret.example",
        "secret-svc",
        &[other],
        &[
            https,
            verify,
            name("other.internal"),
            (
                "nginx.ingress.kubernetes.io/proxy-ssl-secret",
                "default/other-ca",
            ),
        ],
    );
    write_route(
        dir.path(),
        "nosecret.example",
        "nosecret-svc",
        &[other],
        &[https, verify, name("other.internal")],
    );
    write_route(dir.path(), "plain.example", "plain-svc", &[api], &[https]);
    write_route(
        dir.path(),
        "byip.example",
        "byip-svc",
        &[api],
        &[https, verify],
    );
    let mut config = DaemonConfig::new(dir.path(), BASES[0]);
    config.extra_args = vec!["--upstream-ca-file".into(), ca_file.display().to_string()];
    let d = Daemon::start(config);

    let mut conn = HttpConn::connect(d.http_addr()).unwrap();
    for host in ["plain.example", "named.example", "secret.example"] {
        let r = conn.request(host, "/verified", &[]).unwrap();
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "tls /verified\n"),
            "{host}; log:\n{}",
            d.log.text()
        );
    }
    // One HTTPS client per TLS setting, each opened a connection, counted like the pool's.
    assert_eq!(
        d.metric("xdp_ingress_upstream_connections_total"),
        Some(3.0)
    );
    let r = conn.request("byip.example", "/", &[]).unwrap();
    assert_eq!(r.status, 502, "{}", r.body);
    d.log.wait_for(
        &["byip-svc", "status=502", "not valid for name"],
        Duration::from_secs(5),
    );
    let r = conn.request("wrong.example", "/", &[]).unwrap();
    assert_eq!(r.status, 502, "{}", r.body);
    let line = d.log.wait_for(
        &["upstream connect failed", &api.to_string(), "wrong-svc"],
        Duration::from_secs(5),
    );
    assert!(
        line.contains("not valid for name \"wrong.internal\""),
        "{line}"
    );
    let r = conn.request("nosecret.example", "/", &[]).unwrap();
    assert_eq!(r.status, 502, "{}", r.body);
    let line = d.log.wait_for(
        &[
            "upstream connect failed",
            &other.to_string(),
            "nosecret-svc",
        ],
        Duration::from_secs(5),
    );
    assert!(line.contains("invalid peer certificate"), "{line}");
}

#[test]
fn an_ejected_endpoint_stays_ejected_across_a_reload() {
    let b = Backends::new();
    let dir = tempfile::tempdir().unwrap();
    let alive = b.demo("alive");
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    write_route(
        dir.path(),
        "eject.example",
        "eject-svc",
        &[alive, dead],
        &[],
    );
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[1]));
    let dead_s = dead.to_string();

    let get_all = |n: usize| {
        let mut conn = HttpConn::connect(d.http_addr()).unwrap();
        for i in 0..n {
            let r = conn
                .request("eject.example", &format!("/{i}"), &[])
                .unwrap();
            assert_eq!((r.status, r.server()), (200, "alive"), "GET {i}");
        }
    };
    get_all(10);
    d.log
        .wait_for(&["endpoint ejected", &dead_s], Duration::from_secs(5));
    let failures = d.log.lines_with(&["connect failed", &dead_s]).len();
    let generation = d.metric("xdp_ingress_config_generation").unwrap();

    // An unrelated change: the snapshot is rebuilt, the ejected endpoint is still listed.
    write_manifest(
        dir.path(),
        "unrelated.yaml",
        &format!(
            "{}---\n{}",
            yaml::service_with_endpoints("unrelated", &[alive]),
            yaml::ingress("unrelated-ing", "unrelated.example", &[("/", "unrelated")])
        ),
    );
    poll(Duration::from_secs(10), "the reload", || {
        (d.metric("xdp_ingress_config_generation")? > generation).then_some(())
    });
    let r = HttpConn::get(d.http_addr(), "unrelated.example", "/").unwrap();
    assert_eq!(r.status, 200);

    get_all(20);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        d.log.lines_with(&["connect failed", &dead_s]).len(),
        failures,
        "the ejected endpoint was tried again after the reload; log:\n{}",
        d.log.text()
    );
}
