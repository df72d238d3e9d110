//! Kubernetes mode, end to end through the real daemon binary and the real kube client: each
//! test starts the in-repo fake API server (`integration_tests::fakeapi`, real HTTP on
//! 127.0.0.1), writes a kubeconfig pointing at it, starts `xdp-ingress run --kubeconfig ...`
//! (no `--interface`: no XDP, no root needed; worker-port bases 10000 + 1000·n, below the other
//! tests' ranges) and demo backends on 127.0.0.1 (the fake server, unlike a real one, accepts
//! loopback endpoints). It then changes objects in the fake server and asserts on the traffic
//! the daemon actually serves, and on what it asked the server.
//!
//! Covered:
//! - initial sync (the daemon is ready only after every kind is listed) and traffic; the watch
//!   requests ask for bookmarks; Secrets are only listed and watched with
//!   `type=kubernetes.io/tls`;
//! - add, modify and delete of Ingress, Service and EndpointSlice, each seen in the traffic;
//!   an endpoint going not-ready stops receiving requests;
//! - IngressClass rules: `spec.ingressClassName`, the legacy annotation, our default class, a
//!   foreign class ignored without a word in the log; `--watch-ingress-without-class`;
//! - the API server going away mid-watch: the daemon keeps serving the last snapshot, logs the
//!   loss once per kind, and reconverges when the server comes back on the same port;
//! - a 410 Gone on resume forces a relist, and the daemon converges on what changed;
//! - a TLS Secret from the API is served over HTTPS, and its rotation reaches new handshakes;
//!   a TLS Secret no Ingress of ours referenced is fetched (GET) once one does, and one created
//!   after its Ingress is served when it appears; the metrics count it known but not held until
//!   then (unit tests in `source::secret_cache` show the rest);
//! - an API server that is not there at start: nothing is served (not even /readyz) until every
//!   kind is listed; no source, a bad kubeconfig, or two sources: a clear error.
use std::{net::SocketAddr, time::Duration};

use integration_tests::{
    daemon::{poll, run_to_exit, yaml, Daemon, DaemonConfig, HttpConn},
    fakeapi::{self, Cluster, Kind},
    tls::{client_config, tls_ingress, tls_secret, Ca, Https, Trust},
};

const HOST: &str = "cafe.example.com";
const CONVERGE: Duration = Duration::from_secs(15);

fn ingress_class(name: &str, controller: &str, default: bool) -> String {
    let annotations = if default {
        "  annotations:\n    ingressclass.kubernetes.io/is-default-class: \"true\"\n"
    } else {
        ""
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: {name}\n{annotations}\
         spec:\n  controller: {controller}\n"
    )
}

const OURS: &str = "xdp-ingress.io/controller";

/// One slice of `service` with one endpoint per `(address, ready)`; all share the port of the
/// first address (so give several only when they share it).
fn slice(service: &str, name: &str, endpoints: &[(SocketAddr, bool)]) -> String {
    let mut s = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  \
         namespace: default\n  labels:\n    kubernetes.io/service-name: {service}\n\
         addressType: IPv4\nports:\n- name: http\n  port: {port}\n  protocol: TCP\nendpoints:\n",
        port = endpoints[0].0.port()
    );
    for (addr, ready) in endpoints {
        s.push_str(&format!(
            "- addresses: [\"{}\"]\n  conditions:\n    ready: {ready}\n",
            addr.ip()
        ));
    }
    s
}

/// The objects these tests put into the fake API server.
trait CafeCluster {
    fn cafe(&self, coffee: &[(SocketAddr, bool)], tea: &[(SocketAddr, bool)]);
}

impl CafeCluster for Cluster {
    /// Our IngressClass `xdp-ingress`, the cafe Ingress of that class, coffee-svc and tea-svc
    /// with one slice per endpoint (`coffee-svc-0`, ...: each backend has its own port).
    fn cafe(&self, coffee: &[(SocketAddr, bool)], tea: &[(SocketAddr, bool)]) {
        self.api
            .apply_yaml(&ingress_class("xdp-ingress", OURS, false));
        self.api.apply_yaml(&yaml::ingress(
            "cafe",
            HOST,
            &[("/coffee", "coffee-svc"), ("/tea", "tea-svc")],
        ));
        for (service, endpoints) in [("coffee-svc", coffee), ("tea-svc", tea)] {
            self.api.apply_yaml(&yaml::service(service));
            for (i, e) in endpoints.iter().enumerate() {
                self.api
                    .apply_yaml(&slice(service, &format!("{service}-{i}"), &[*e]));
            }
        }
    }
}

/// Polls until `host path` is answered with `status` by `server` (`-` for no backend).
fn wait_served(d: &Daemon, host: &str, path: &str, status: u16, server: &str) {
    poll(
        CONVERGE,
        &format!("{host}{path} -> {status} {server}"),
        || {
            let r = d.get(host, path);
            (r.status == status && r.server() == server).then_some(())
        },
    );
}

fn servers(d: &Daemon, path: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = d.get(HOST, path);
            assert_eq!(r.status, 200, "{r:?}");
            r.server().to_owned()
        })
        .collect()
}

#[test]
fn initial_sync_serves_and_asks_for_bookmarks_and_tls_secrets_only() {
    let c = Cluster::new();
    let (c1, t1) = (c.backends.demo("coffee-1"), c.backends.demo("tea-1"));
    c.cafe(&[(c1, true)], &[(t1, true)]);
    let tls_secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: cafe-tls}\n\
                      type: kubernetes.io/tls\ndata: {tls.crt: '', tls.key: ''}\n";
    let opaque = "apiVersion: v1\nkind: Secret\nmetadata: {name: password}\ntype: Opaque\n\
                  data: {password: aHVudGVyMg==}\n";
    c.api.apply_yaml(tls_secret);
    c.api.apply_yaml(opaque);
    let d = c.daemon(10000, &[]);

    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");
    assert_eq!(d.get(HOST, "/tea").server(), "tea-1");
    assert_eq!(d.get(HOST, "/other").status, 404);

    let requests: Vec<String> = c
        .api
        .requests()
        .iter()
        .map(|r| fakeapi::percent_decode(r))
        .collect();
    for plural in [
        "ingresses",
        "ingressclasses",
        "services",
        "endpointslices",
        "secrets",
    ] {
        let watches: Vec<_> = requests
            .iter()
            .filter(|r| r.contains(&format!("/{plural}?")) && r.contains("watch=true"))
            .collect();
        assert!(!watches.is_empty(), "no watch of {plural}: {requests:#?}");
        assert!(
            watches
                .iter()
                .all(|r| r.contains("allowWatchBookmarks=true")),
            "{watches:#?}"
        );
    }
    // Lists and watches (single Secrets are only ever fetched by name).
    let secrets: Vec<_> = requests
        .iter()
        .filter(|r| r.contains("/secrets?"))
        .collect();
    assert!(secrets.len() >= 2, "{secrets:#?}");
    assert!(
        secrets
            .iter()
            .all(|r| r.contains("fieldSelector=type=kubernetes.io/tls")),
        "a Secret request without the TLS field selector: {secrets:#?}"
    );
}

#[test]
fn add_modify_delete_of_ingress_service_and_endpoint_slice() {
    let c = Cluster::new();
    let (c1, c2, t1, t2, j1) = (
        c.backends.demo("coffee-1"),
        c.backends.demo("coffee-2"),
        c.backends.demo("tea-1"),
        c.backends.demo("tea-2"),
        c.backends.demo("juice-1"),
    );
    c.cafe(&[(c1, true)], &[(t1, true), (t2, true)]);
    let d = c.daemon(11000, &[]);
    let pid = d.pid();
    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");
    let mut tea = servers(&d, "/tea", 4);
    tea.sort();
    tea.dedup();
    assert_eq!(tea, ["tea-1", "tea-2"]);

    // Add: a Service and its slice, then the Ingress gains a path to it.
    c.api.apply_yaml(&yaml::service("juice-svc"));
    c.api
        .apply_yaml(&slice("juice-svc", "juice-1", &[(j1, true)]));
    c.api.apply_yaml(&yaml::ingress(
        "cafe",
        HOST,
        &[
            ("/coffee", "coffee-svc"),
            ("/tea", "tea-svc"),
            ("/juice", "juice-svc"),
        ],
    ));
    wait_served(&d, HOST, "/juice", 200, "juice-1");

    // Modify an EndpointSlice: coffee moves to another endpoint.
    c.api
        .apply_yaml(&slice("coffee-svc", "coffee-svc-0", &[(c2, true)]));
    wait_served(&d, HOST, "/coffee", 200, "coffee-2");

    // An endpoint going not-ready stops receiving traffic.
    c.api
        .apply_yaml(&slice("tea-svc", "tea-svc-1", &[(t2, false)]));
    poll(CONVERGE, "tea-2 out of rotation", || {
        servers(&d, "/tea", 4)
            .iter()
            .all(|s| s == "tea-1")
            .then_some(())
    });

    // Modify a Service: its port 80 disappears, so the Ingress's backend is gone (503) ...
    c.api.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: juice-svc, namespace: default}\n\
         spec: {ports: [{name: http, port: 8080, protocol: TCP}]}\n",
    );
    wait_served(&d, HOST, "/juice", 503, "-");
    // ... and comes back.
    c.api.apply_yaml(&yaml::service("juice-svc"));
    wait_served(&d, HOST, "/juice", 200, "juice-1");

    // Delete the slice: no endpoints (503); delete the Service: still 503, and logged.
    assert!(c.api.delete(Kind::EndpointSlice, "default", "juice-1"));
    wait_served(&d, HOST, "/juice", 503, "-");
    assert!(c.api.delete(Kind::Service, "default", "juice-svc"));
    d.log
        .wait_for(&["default/juice-svc", "not found"], CONVERGE);
    // Delete the Ingress: nothing is routed any more.
    assert!(c.api.delete(Kind::Ingress, "default", "cafe"));
    wait_served(&d, HOST, "/coffee", 404, "-");
    assert_eq!(d.pid(), pid);
}

#[test]
fn ingress_class_rules_field_annotation_default_and_foreign() {
    let c = Cluster::new();
    let b = c.backends.demo("web-1");
    c.api.apply_yaml(&ingress_class("xdp", OURS, false));
    c.api
        .apply_yaml(&ingress_class("nginx", "k8s.io/ingress-nginx", true));
    c.api.apply_yaml(&yaml::service("web"));
    c.api.apply_yaml(&slice("web", "web-1", &[(b, true)]));
    let ingress = |name: &str, class_line: &str, annotation: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  \
             namespace: default\n{annotation}spec:\n{class_line}  rules:\n  - host: {name}.example\n    \
             http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          \
             service:\n            name: web\n            port:\n              number: 80\n"
        )
    };
    c.api
        .apply_yaml(&ingress("field", "  ingressClassName: xdp\n", ""));
    c.api.apply_yaml(&ingress(
        "legacy",
        "",
        "  annotations:\n    kubernetes.io/ingress.class: xdp\n",
    ));
    c.api.apply_yaml(&ingress("classless", "", ""));
    // Foreign, and broken (its Service does not exist): not a word about it.
    c.api.apply_yaml(
        &ingress("foreign", "  ingressClassName: nginx\n", "").replace("name: web", "name: ghost"),
    );
    let d = c.daemon(12000, &[]);
    let plain = c.daemon(13000, &["--watch-ingress-without-class"]);

    assert_eq!(d.get("field.example", "/").server(), "web-1");
    assert_eq!(d.get("legacy.example", "/").server(), "web-1");
    assert_eq!(d.get("classless.example", "/").status, 404);
    assert_eq!(d.get("foreign.example", "/").status, 404);
    // --watch-ingress-without-class takes the classless one too, never the foreign one.
    assert_eq!(plain.get("classless.example", "/").server(), "web-1");
    assert_eq!(plain.get("foreign.example", "/").status, 404);

    // Our class becomes the default: classless Ingresses are ours now.
    c.api.apply_yaml(&ingress_class("xdp", OURS, true));
    wait_served(&d, "classless.example", "/", 200, "web-1");
    assert_eq!(d.get("foreign.example", "/").status, 404);
    // An Ingress moves to the foreign class: dropped.
    c.api
        .apply_yaml(&ingress("field", "  ingressClassName: nginx\n", ""));
    wait_served(&d, "field.example", "/", 404, "-");
    for log in [d.log.text(), plain.log.text()] {
        assert!(
            !log.contains("ghost"),
            "the foreign Ingress was reported:\n{log}"
        );
        assert!(!log.contains("default/foreign"), "{log}");
    }
}

#[test]
fn api_server_restart_mid_watch_keeps_serving_then_reconverges() {
    let mut c = Cluster::new();
    let (c1, c2, t1) = (
        c.backends.demo("coffee-1"),
        c.backends.demo("coffee-2"),
        c.backends.demo("tea-1"),
    );
    c.cafe(&[(c1, true)], &[(t1, true)]);
    let d = c.daemon(14000, &[]);
    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");
    // Let the watchers get a bookmark or two.
    std::thread::sleep(fakeapi::BOOKMARK_EVERY * 2);

    c.api.stop();
    d.log.wait_for(&["API watch failed"], CONVERGE);
    // The last snapshot keeps serving while the server is away, for a few retries.
    for _ in 0..10 {
        assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");
        assert_eq!(d.get(HOST, "/tea").server(), "tea-1");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Changed while it was away (the watchers resume from their resourceVersion).
    c.api
        .apply_yaml(&slice("coffee-svc", "coffee-svc-0", &[(c2, true)]));
    c.api.restart();
    wait_served(&d, HOST, "/coffee", 200, "coffee-2");
    d.log.wait_for(&["recovered"], CONVERGE);
    // Logged once per kind, not once per retry.
    let failures = d.log.lines_with(&["API watch failed"]);
    assert!(failures.len() <= 5, "{failures:#?}");
    // kube-client's own per-request lines stay off.
    for noise in ["failed with error", "eof in poll"] {
        let lines = d.log.lines_with(&[noise]);
        assert!(lines.is_empty(), "a log line per retry: {lines:#?}");
    }
    // And it keeps following changes.
    c.api
        .apply_yaml(&slice("coffee-svc", "coffee-svc-0", &[(c1, true)]));
    wait_served(&d, HOST, "/coffee", 200, "coffee-1");
}

#[test]
fn gone_on_resume_forces_a_relist_and_the_daemon_converges() {
    let c = Cluster::new();
    let (c1, c2, t1) = (
        c.backends.demo("coffee-1"),
        c.backends.demo("coffee-2"),
        c.backends.demo("tea-1"),
    );
    c.cafe(&[(c1, true)], &[(t1, true)]);
    let d = c.daemon(15000, &[]);
    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");
    let lists = |plural: &str| {
        c.api
            .requests()
            .iter()
            .filter(|r| r.contains(&format!("/{plural}?")) && !r.contains("watch=true"))
            .count()
    };
    let before = lists("endpointslices");

    // Behind the watchers' backs: coffee moves, tea's slice goes, and the log is compacted.
    c.api.expire(|s| {
        s.apply_yaml(&slice("coffee-svc", "coffee-svc-0", &[(c2, true)]));
        assert!(s.delete(Kind::EndpointSlice, "default", "tea-svc-0"));
    });
    d.log.wait_for(&["410 Gone", "relisting"], CONVERGE);
    wait_served(&d, HOST, "/coffee", 200, "coffee-2");
    wait_served(&d, HOST, "/tea", 503, "-");
    assert!(lists("endpointslices") > before, "no relist");
    // Watching again from the new list.
    c.api
        .apply_yaml(&slice("tea-svc", "tea-svc-0", &[(t1, true)]));
    wait_served(&d, HOST, "/tea", 200, "tea-1");
}

#[test]
fn nothing_is_served_until_the_api_server_has_been_listed() {
    let mut c = Cluster::new();
    let c1 = c.backends.demo("coffee-1");
    let t1 = c.backends.demo("tea-1");
    c.cafe(&[(c1, true)], &[(t1, true)]);
    c.api.stop();
    let kubeconfig = c.api.kubeconfig(c.dir.path());
    let config = DaemonConfig::kube(&kubeconfig, 16000);
    let (admin, http) = (config.admin_port, config.http_port);
    let starting = std::thread::spawn(move || Daemon::start(config));
    std::thread::sleep(Duration::from_secs(2));
    for port in [admin, http] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            HttpConn::get(addr, HOST, "/readyz").is_err(),
            "port {port} answers before the first list"
        );
    }
    c.api.restart();
    let d = starting.join().expect("daemon start");
    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");
    d.log
        .wait_for(&["waiting for the first complete list"], CONVERGE);
}

#[test]
fn start_fails_clearly_without_one_source() {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        let (status, out) = run_to_exit(&["run".into()], Duration::from_secs(10));
        assert!(!status.success(), "{out}");
        assert!(
            out.contains("--manifests") && out.contains("--kubeconfig"),
            "{out}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-kubeconfig");
    let args = [
        "run".to_owned(),
        "--kubeconfig".to_owned(),
        missing.display().to_string(),
    ];
    let (status, out) = run_to_exit(&args, Duration::from_secs(10));
    assert!(!status.success(), "{out}");
    assert!(out.contains(&missing.display().to_string()), "{out}");
    let both = ["run", "--kubeconfig", "k", "--manifests", "m"].map(String::from);
    let (status, out) = run_to_exit(&both, Duration::from_secs(10));
    assert!(!status.success(), "{out}");
    assert!(out.contains("cannot be used with"), "{out}");
}

/// Our class and the `web` Service with one demo backend; a test CA for certificates.
fn tls_cluster() -> (Cluster, Ca) {
    let c = Cluster::new();
    let web = c.backends.demo("web-1");
    c.api.apply_yaml(&ingress_class("xdp-ingress", OURS, false));
    c.api
        .apply_yaml(&yaml::service_with_endpoints("web", &[web]));
    (c, Ca::new())
}

/// Polls until a handshake for `host` gets `pair`'s certificate.
fn wait_leaf(
    d: &Daemon,
    https: &Https,
    strict: &std::sync::Arc<rustls::ClientConfig>,
    host: &str,
    pair: &integration_tests::tls::Pair,
    what: &str,
) {
    poll(CONVERGE, what, || {
        let s = https.handshake(d.https_addr(), host, strict).ok()?;
        (s.leaf == pair.leaf_der).then_some(())
    });
}

#[test]
fn a_tls_secret_from_the_api_is_served_and_its_rotation_reaches_new_handshakes() {
    let (c, ca) = tls_cluster();
    let old = ca.ecdsa(&["secure.example.com"]);
    c.api.apply_yaml(&tls_secret("secure", &old));
    c.api.apply_yaml(&tls_ingress(
        "secure",
        &[("kubernetes.io/ingress.class", "xdp-ingress")],
        &[(&["secure.example.com"], "secure")],
        &[("secure.example.com", "web")],
    ));
    let d = c.daemon(17000, &[]);
    let https = Https::new();
    let strict = client_config(&ca, Trust::TestCa, &["http/1.1"]);
    let mut conn = https
        .connect(d.https_addr(), "secure.example.com", &strict)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", d.log.text()));
    assert!(conn.session.leaf == old.leaf_der);
    let (r, _) = conn.get("secure.example.com", "/").unwrap();
    assert_eq!(r.server(), "web-1", "{r:?}");

    // Rotated in the API: new handshakes get the new certificate.
    let new = ca.rsa(&["secure.example.com"]);
    c.api.apply_yaml(&tls_secret("secure", &new));
    wait_leaf(
        &d,
        &https,
        &strict,
        "secure.example.com",
        &new,
        "the rotated certificate",
    );
}

#[test]
fn a_tls_secret_is_fetched_when_an_ingress_starts_referencing_it_and_one_created_later_is_served() {
    let (c, ca) = tls_cluster();
    let later = ca.ecdsa(&["later.example.com"]);
    c.api.apply_yaml(&tls_secret("later", &later));
    let d = c.daemon(9000, &[]);
    let https = Https::new();
    let strict = client_config(&ca, Trust::TestCa, &["http/1.1"]);
    // Nobody references it: the default certificate answers (not trusted by the test CA).
    assert!(https
        .handshake(d.https_addr(), "later.example.com", &strict)
        .is_err());
    let gets = || {
        c.api
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/namespaces/default/secrets/later"))
            .count()
    };
    assert_eq!(gets(), 0);
    // Known (by name and version), not held.
    assert_eq!(d.metric("xdp_ingress_tls_secrets_known"), Some(1.0));
    assert_eq!(d.metric("xdp_ingress_tls_secrets_held"), Some(0.0));

    // An Ingress of ours starts referencing it: fetched once, and served.
    let class = [("kubernetes.io/ingress.class", "xdp-ingress")];
    c.api.apply_yaml(&tls_ingress(
        "later",
        &class,
        &[(&["later.example.com"], "later")],
        &[("later.example.com", "web")],
    ));
    wait_leaf(
        &d,
        &https,
        &strict,
        "later.example.com",
        &later,
        "the newly referenced certificate",
    );
    assert_eq!(gets(), 1);
    poll(CONVERGE, "one Secret held", || {
        (d.metric("xdp_ingress_tls_secrets_held") == Some(1.0)).then_some(())
    });
    // Its rotation comes through the watch.
    let rotated = ca.rsa(&["later.example.com"]);
    c.api.apply_yaml(&tls_secret("later", &rotated));
    wait_leaf(
        &d,
        &https,
        &strict,
        "later.example.com",
        &rotated,
        "the rotated certificate",
    );

    // A referenced Secret that does not exist yet is served once it is created.
    c.api.apply_yaml(&tls_ingress(
        "future",
        &class,
        &[(&["future.example.com"], "future")],
        &[("future.example.com", "web")],
    ));
    d.log.wait_for(&["default/future", "not found"], CONVERGE);
    let future = ca.ecdsa(&["future.example.com"]);
    c.api.apply_yaml(&tls_secret("future", &future));
    wait_leaf(
        &d,
        &https,
        &strict,
        "future.example.com",
        &future,
        "the certificate created later",
    );
}
