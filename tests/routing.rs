//! Routing and load-balancing behaviour of the real `xdp-ingress run` binary, from the outside.
//!
//! Like `tests/daemon.rs`: each test starts its own daemon (no `--interface`, so no root; traffic
//! reaches the workers through the SO_REUSEPORT group of the public port, or a worker port when a
//! test addresses one worker), with a manifests folder in a tempdir whose EndpointSlices point at
//! demo backends on 127.0.0.1, free public/admin ports and a worker-port base of its own
//! (`BASES`: ranges the daemon and TLS tests leave free; a daemon with 2 workers binds base,
//! base + 1 and, for HTTPS, base + 512 and base + 513). Requests are hand-written HTTP/1.1,
//! always to 127.0.0.1.
//!
//! Covered:
//! - wildcard hosts match exactly one DNS label; an exact host wins over a wildcard;
//! - `ImplementationSpecific` paths are regular expressions anchored at the start, longer paths
//!   win, and an invalid one is a diagnostic naming the Ingress and field;
//! - `--default-backend` serves what nothing matches, and an Ingress `spec.defaultBackend` takes
//!   over when one appears (live reload);
//! - GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS reach the backend with their method, the URI
//!   and the Host header unchanged;
//! - sticky cookies: a new session gets `Set-Cookie` (attributes from annotations, no address in
//!   the value), later requests with it stay on one backend across workers; in persistent mode a
//!   session whose endpoint disappears is re-picked with a new cookie;
//! - consistent hashing by a header (`$http_x_user`): one backend per user, across workers and
//!   connections; `chashsubset` keeps each user within its subset.
use std::{collections::HashSet, net::SocketAddr, path::Path, time::Duration};

use integration_tests::daemon::{
    poll, write_manifest, yaml, Backends, Daemon, DaemonConfig, HttpConn,
};

/// Worker-port bases, one per test, below the ephemeral range (32768).
const BASES: [u16; 6] = [10000, 30000, 30550, 31100, 31650, 32200];

/// One path of an Ingress rule: (path, pathType, service).
type P<'a> = (&'a str, &'a str, &'a str);

/// An Ingress with `annotations`, rules `(host, paths)` (host "" = no host) and an optional
/// default backend Service (port 80 everywhere).
fn ingress(
    name: &str,
    annotations: &[(&str, &str)],
    rules: &[(&str, &[P<'_>])],
    default_backend: Option<&str>,
) -> String {
    let mut s = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n"
    );
    if !annotations.is_empty() {
        s.push_str("  annotations:\n");
        for (k, v) in annotations {
            s.push_str(&format!("    {k}: {v:?}\n"));
        }
    }
    s.push_str("spec:\n");
    if let Some(service) = default_backend {
        s.push_str(&format!(
            "  defaultBackend:\n    service: {{name: {service}, port: {{number: 80}}}}\n"
        ));
    }
    if !rules.is_empty() {
        s.push_str("  rules:\n");
    }
    for (host, paths) in rules {
        match *host {
            "" => s.push_str("  - http:\n"),
            h => s.push_str(&format!("  - host: {h:?}\n    http:\n")),
        }
        s.push_str("      paths:\n");
        for (path, kind, service) in *paths {
            s.push_str(&format!(
                "      - path: {path:?}\n        pathType: {kind}\n        backend:\n          \
                 service: {{name: {service}, port: {{number: 80}}}}\n"
            ));
        }
    }
    s
}

/// Writes `<service>.yaml`: the Service and one slice per endpoint.
fn write_service(dir: &Path, service: &str, endpoints: &[SocketAddr]) {
    write_manifest(
        dir,
        &format!("{service}.yaml"),
        &yaml::service_with_endpoints(service, endpoints),
    );
}

fn get(d: &Daemon, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut conn = HttpConn::connect(d.http_addr()).expect("connect");
    let r = conn
        .send("GET", host, path, headers, b"")
        .unwrap_or_else(|e| panic!("GET http://{host}{path}: {e}; log:\n{}", d.log.text()));
    (r.status, r.server().to_owned())
}

#[test]
fn wildcard_hosts_match_one_label_and_exact_hosts_win() {
    let b = Backends::new();
    let dir = tempfile::tempdir().unwrap();
    write_service(dir.path(), "wild-svc", &[b.demo("wild")]);
    write_service(dir.path(), "exact-svc", &[b.demo("exact")]);
    write_service(dir.path(), "any-svc", &[b.demo("any")]);
    let rules: &[(&str, &[P<'_>])] = &[
        ("*.example.com", &[("/", "Prefix", "wild-svc")]),
        ("api.example.com", &[("/", "Prefix", "exact-svc")]),
        ("", &[("/shared", "Prefix", "any-svc")]),
    ];
    write_manifest(dir.path(), "ing.yaml", &ingress("hosts", &[], rules, None));
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[0]));

    for (host, path, want) in [
        ("a.example.com", "/", (200, "wild")),
        ("Shop.Example.COM:80", "/x/y", (200, "wild")),
        ("api.example.com", "/v1", (200, "exact")),
        ("API.example.com.", "/", (200, "exact")),
        // Exactly one label: two labels or none do not match the wildcard.
        ("a.b.example.com", "/", (404, "-")),
        ("example.com", "/", (404, "-")),
        // Rules without host serve every host, after the host's own rules.
        ("a.b.example.com", "/shared", (200, "any")),
        ("a.example.com", "/shared", (200, "wild")),
        ("other.org", "/shared/x", (200, "any")),
    ] {
        let (status, server) = get(&d, host, path, &[]);
        assert_eq!((status, server.as_str()), want, "http://{host}{path}");
    }
}

#[test]
fn regex_paths_route_anchored_at_the_start_and_bad_ones_are_reported() {
    let b = Backends::new();
    let dir = tempfile::tempdir().unwrap();
    write_service(dir.path(), "profile-svc", &[b.demo("profile")]);
    write_service(dir.path(), "users-svc", &[b.demo("users")]);
    let rules: &[(&str, &[P<'_>])] = &[(
        "regex.example",
        &[
            (
                "/users/[0-9]+/profile",
                "ImplementationSpecific",
                "profile-svc",
            ),
            ("/users", "Prefix", "users-svc"),
            ("/(broken", "ImplementationSpecific", "users-svc"),
        ],
    )];
    write_manifest(dir.path(), "ing.yaml", &ingress("regex", &[], rules, None));
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[1]));
    let line = d.log.wait_for(
        &[
            "Ingress default/regex",
            "spec.rules[0].http.paths[2].path",
            "invalid regular expression",
        ],
        Duration::from_secs(5),
    );
    assert!(line.contains("/(broken"), "{line}");

    for (path, want) in [
        ("/users/42/profile", (200, "profile")),
        ("/users/42/profile/photos?size=2", (200, "profile")),
        ("/users/abc/profile", (200, "users")),
        ("/users", (200, "users")),
        ("/x/users/42/profile", (404, "-")),
        ("/(broken", (404, "-")),
    ] {
        let (status, server) = get(&d, "regex.example", path, &[]);
        assert_eq!((status, server.as_str()), want, "{path}");
    }
}

#[test]
fn default_backend_flag_serves_the_unmatched_until_an_ingress_sets_one() {
    let b = Backends::new();
    let dir = tempfile::tempdir().unwrap();
    write_service(dir.path(), "fallback-svc", &[b.demo("fallback")]);
    write_service(dir.path(), "app-svc", &[b.demo("app")]);
    write_service(
        dir.path(),
        "ingress-default-svc",
        &[b.demo("ingress-default")],
    );
    let rules: &[(&str, &[P<'_>])] = &[("app.example", &[("/app", "Prefix", "app-svc")])];
    write_manifest(dir.path(), "ing.yaml", &ingress("app", &[], rules, None));
    let mut config = DaemonConfig::new(dir.path(), BASES[2]);
    config.extra_args = vec![
        "--default-backend".into(),
        "default/fallback-svc:http".into(),
    ];
    let d = Daemon::start(config);

    assert_eq!(get(&d, "app.example", "/app/x", &[]), (200, "app".into()));
    assert_eq!(
        get(&d, "app.example", "/other", &[]),
        (200, "fallback".into())
    );
    assert_eq!(
        get(&d, "unknown.example", "/", &[]),
        (200, "fallback".into())
    );

    // An Ingress default backend appears: it wins over the flag, without a restart.
    write_manifest(
        dir.path(),
        "default.yaml",
        &ingress("catch-all", &[], &[], Some("ingress-default-svc")),
    );
    poll(
        Duration::from_secs(5),
        "the Ingress default backend",
        || (get(&d, "unknown.example", "/", &[]).1 == "ingress-default").then_some(()),
    );
    assert_eq!(get(&d, "app.example", "/app", &[]), (200, "app".into()));
}

#[test]
fn methods_uri_and_host_reach_the_backend_unchanged() {
    let b = Backends::new();
    let dir = tempfile::tempdir().unwrap();
    write_service(dir.path(), "echo-svc", &[b.demo("echo")]);
    let rules: &[(&str, &[P<'_>])] = &[("echo.example", &[("/", "Prefix", "echo-svc")])];
    write_manifest(dir.path(), "ing.yaml", &ingress("echo", &[], rules, None));
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[3]));

    let host = format!("Echo.Example:{}", d.config.http_port);
    let uri = "/a%20b/./c//d?x=1&y=%2F&z";
    let mut conn = HttpConn::connect(d.http_addr()).unwrap();
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let body: &[u8] = match method {
            "POST" | "PUT" | "PATCH" => b"{\"hello\":\"world\"}",
            _ => b"",
        };
        // One keep-alive connection for all of them: each response must end where it should.
        let r = conn
            .send(
                method,
                &host,
                uri,
                &[("content-type", "application/json")],
                body,
            )
            .unwrap_or_else(|e| panic!("{method}: {e}; log:\n{}", d.log.text()));
        assert_eq!(r.status, 200, "{method}: {r:?}");
        assert_eq!(r.header("x-served-by"), Some("echo"), "{method}");
        if method == "HEAD" {
            assert_eq!(r.body, "", "HEAD has no body");
            continue;
        }
        assert_eq!(r.field("Method"), Some(method), "{}", r.body);
        assert_eq!(r.field("URI"), Some(uri), "{}", r.body);
        assert_eq!(r.field("Host"), Some(host.as_str()), "{}", r.body);
    }
}

#[test]
fn sticky_cookie_round_trip_and_persistent_repick() {
    let b = Backends::new();
    let dir = tempfile::tempdir().unwrap();
    let eps: Vec<SocketAddr> = (1..=3).map(|i| b.demo(&format!("s{i}"))).collect();
    write_service(dir.path(), "shop-svc", &eps);
    let balanced: &[(&str, &str)] = &[
        ("nginx.ingress.kubernetes.io/affinity", "cookie"),
        ("nginx.ingress.kubernetes.io/session-cookie-name", "shop"),
        ("nginx.ingress.kubernetes.io/session-cookie-max-age", "600"),
        ("xdp-ingress.io/session-cookie-samesite", "Lax"),
    ];
    let persistent: &[(&str, &str)] = &[
        ("xdp-ingress.io/affinity", "cookie"),
        ("xdp-ingress.io/affinity-mode", "persistent"),
    ];
    let shop: &[(&str, &[P<'_>])] = &[("shop.example", &[("/", "Prefix", "shop-svc")])];
    let keep: &[(&str, &[P<'_>])] = &[("keep.example", &[("/", "Prefix", "shop-svc")])];
    write_manifest(
        dir.path(),
        "shop.yaml",
        &ingress("shop", balanced, shop, None),
    );
    write_manifest(
        dir.path(),
        "keep.yaml",
        &ingress("keep", persistent, keep, None),
    );
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[4]));

    // A new session: Set-Cookie with the annotated attributes, no address in it.
    let first = HttpConn::get(d.http_addr(), "shop.example", "/").unwrap();
    assert_eq!(first.status, 200, "{first:?}");
    let set = first.header("set-cookie").expect("Set-Cookie").to_owned();
    assert!(set.starts_with("shop="), "{set}");
    assert!(
        set.ends_with("; Path=/; Max-Age=600; SameSite=Lax; HttpOnly"),
        "{set}"
    );
    for e in &eps {
        assert!(!set.contains(&e.port().to_string()), "{set} shows {e}");
    }
    assert!(!set.contains("127.0.0.1"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    // Honoured on every worker and connection, with no new cookie.
    for i in 0..10u16 {
        let mut conn = HttpConn::connect(d.worker_addr(i % 2)).unwrap();
        let r = conn
            .request(
                "shop.example",
                "/",
                &[("cookie", &format!("a=b; {cookie}"))],
            )
            .unwrap();
        assert_eq!(r.server(), first.server(), "request {i}");
        assert_eq!(r.header("set-cookie"), None);
    }
    // New sessions spread over the backends.
    let spread: HashSet<String> = (0..12)
        .map(|_| get(&d, "shop.example", "/", &[]).1)
        .collect();
    assert!(spread.len() >= 2, "{spread:?}");

    // Persistent: stays until its endpoint goes, then a new endpoint and a new cookie.
    let first = HttpConn::get(d.http_addr(), "keep.example", "/").unwrap();
    let cookie = first.header("set-cookie").expect("Set-Cookie");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = [("cookie", cookie.as_str())];
    for _ in 0..5 {
        assert_eq!(get(&d, "keep.example", "/", &with_cookie).1, first.server());
    }
    let gone = first.field("Server address").unwrap().to_owned();
    let rest: Vec<SocketAddr> = eps
        .iter()
        .copied()
        .filter(|e| e.to_string() != gone)
        .collect();
    write_service(dir.path(), "shop-svc", &rest);
    let moved = poll(Duration::from_secs(5), "the session to move", || {
        let mut conn = HttpConn::connect(d.http_addr()).unwrap();
        let r = conn.request("keep.example", "/", &with_cookie).unwrap();
        (r.server() != first.server()).then_some(r)
    });
    assert_eq!(moved.status, 200);
    let new_cookie = moved
        .header("set-cookie")
        .expect("a new cookie for the re-picked session");
    let new_cookie = new_cookie.split(';').next().unwrap().to_owned();
    assert_ne!(new_cookie, cookie);
    for _ in 0..5 {
        assert_eq!(
            get(&d, "keep.example", "/", &[("cookie", &new_cookie)]).1,
            moved.server()
        );
    }
}

#[test]
fn consistent_hash_by_header_keeps_each_user_on_one_backend() {
    let b = Backends::new();
    let dir = tempfile::tempdir().unwrap();
    let eps: Vec<SocketAddr> = (1..=4).map(|i| b.demo(&format!("h{i}"))).collect();
    write_service(dir.path(), "hash-svc", &eps);
    let chash: &[(&str, &str)] = &[(
        "nginx.ingress.kubernetes.io/upstream-hash-by",
        "$http_x_user",
    )];
    let subset: &[(&str, &str)] = &[
        ("xdp-ingress.io/upstream-hash-by", "$http_x_user"),
        ("xdp-ingress.io/upstream-hash-by-subset", "true"),
        ("xdp-ingress.io/upstream-hash-by-subset-size", "2"),
    ];
    let one: &[(&str, &[P<'_>])] = &[("hash.example", &[("/", "Prefix", "hash-svc")])];
    let two: &[(&str, &[P<'_>])] = &[("subset.example", &[("/", "Prefix", "hash-svc")])];
    write_manifest(dir.path(), "hash.yaml", &ingress("hash", chash, one, None));
    write_manifest(
        dir.path(),
        "subset.yaml",
        &ingress("subset", subset, two, None),
    );
    let d = Daemon::start(DaemonConfig::new(dir.path(), BASES[5]));

    let mut owners = HashSet::new();
    for user in 0..16 {
        let user = format!("user-{user}");
        let seen: HashSet<String> = (0..6u16)
            .map(|i| {
                let mut conn = HttpConn::connect(d.worker_addr(i % 2)).unwrap();
                let r = conn
                    .request("hash.example", "/", &[("x-user", &user)])
                    .unwrap();
                assert_eq!(r.status, 200, "{r:?}");
                r.server().to_owned()
            })
            .collect();
        assert_eq!(seen.len(), 1, "{user} saw {seen:?}");
        owners.extend(seen);
    }
    assert!(owners.len() >= 2, "16 users all on {owners:?}");

    // chashsubset: each user rotates within a subset of 2.
    for user in 0..6 {
        let user = format!("user-{user}");
        let seen: HashSet<String> = (0..8)
            .map(|_| get(&d, "subset.example", "/", &[("x-user", &user)]).1)
            .collect();
        assert_eq!(seen.len(), 2, "{user} saw {seen:?}");
    }
}
