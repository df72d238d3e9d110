//! Router tables: every precedence rule of `find`, one row per request. Routes are named by
//! their position in the spec list (their backend is Service `s<position>`), so a failing row
//! says which won.
use super::*;
use crate::model::{Backend, ObjectRef, PathRegex, RouteTable, ServiceBackendRef, ServicePortRef};

use PathKind::{Exact, ImplementationSpecific as Regex, Prefix};

/// A snapshot from `(host, kind, path)` triples: host "" = no host, `*.x` = wildcard, `default` =
/// the default backend. Each route's backend is Service `s<i>`, `i` its position in `spec`.
/// The position in `spec` of the route's entry (its backend is Service `s<position>`).
fn position(r: &PathRoute) -> usize {
    r.backend.service.service[1..]
        .parse()
        .expect("test service name")
}

fn snapshot(spec: &[(&str, PathKind, &str)]) -> Snapshot {
    let mut routes = RouteTable::default();
    let mut backends = Vec::new();
    let mut hosts: HashMap<String, Vec<PathRoute>> = HashMap::new();
    let mut wildcards: HashMap<String, Vec<PathRoute>> = HashMap::new();
    let mut any = Vec::new();
    for (i, (host, kind, path)) in spec.iter().enumerate() {
        let service = ServiceBackendRef {
            namespace: "default".into(),
            service: format!("s{i}"),
            port: ServicePortRef::Number(80),
        };
        let backend = std::sync::Arc::new(Backend::new(service, Vec::new(), None));
        backends.push(backend.clone());
        let route = PathRoute {
            host: None,
            path: (*path).into(),
            kind: *kind,
            backend,
            ingress: ObjectRef::new("Ingress", "default", "i"),
            regex: (*kind == Regex).then(|| PathRegex::new(path).expect("test regex")),
            metric: crate::model::RouteMetric::new(
                &ObjectRef::new("Ingress", "default", "i"),
                None,
                path,
            ),
        };
        match *host {
            "" => any.push(route),
            "default" => routes.default_backend = Some(route),
            h => match h.strip_prefix("*.") {
                Some(rest) => wildcards.entry(rest.into()).or_default().push(route),
                None => hosts.entry(h.into()).or_default().push(route),
            },
        }
    }
    routes.any_host = HostRoutes::new(any).into();
    routes.hosts = hosts
        .into_iter()
        .map(|(h, p)| (h.into(), HostRoutes::new(p).into()))
        .collect();
    routes.wildcards = wildcards
        .into_iter()
        .map(|(h, p)| (h.into(), HostRoutes::new(p).into()))
        .collect();
    Snapshot {
        generation: 1,
        routes,
        backends,
        ..Snapshot::default()
    }
}

fn check(snap: &Snapshot, table: &[(&str, &str, Option<usize>)]) {
    for (host, path, want) in table {
        let got = find(snap, host, path).map(position);
        assert_eq!(got, *want, "host {host:?} path {path:?}");
    }
}

#[test]
fn precedence_table() {
    let snap = snapshot(&[
        ("a.example", Prefix, "/"),        // 0
        ("a.example", Prefix, "/foo"),     // 1
        ("a.example", Exact, "/foo"),      // 2
        ("a.example", Prefix, "/foo/bar"), // 3
        ("a.example", Exact, "/exact"),    // 4
        ("b.example", Prefix, "/only"),    // 5
        ("", Prefix, "/"),                 // 6
        ("", Prefix, "/api"),              // 7
        ("", Exact, "/exact/"),            // 8
    ]);
    check(
        &snap,
        &[
            // Exact host, longest path, Exact before Prefix on equal paths.
            ("a.example", "/foo", Some(2)),
            ("a.example", "/foo/", Some(1)),
            ("a.example", "/foo/baz", Some(1)),
            ("a.example", "/foo/bar", Some(3)),
            ("a.example", "/foo/bar/x", Some(3)),
            ("a.example", "/foo/bar/", Some(3)),
            ("a.example", "/foo//bar", Some(1)),
            ("a.example", "/foo/barx", Some(1)),
            ("a.example", "/foobar", Some(0)),
            ("a.example", "/exact", Some(4)),
            ("a.example", "/exact/", Some(0)),
            ("a.example", "/", Some(0)),
            ("a.example", "", Some(0)),
            ("a.example", "*", Some(0)),
            // Case-sensitive paths.
            ("a.example", "/FOO", Some(0)),
            ("a.example", "/Foo/bar", Some(0)),
            // Host normalization: case, port, trailing dot.
            ("A.Example", "/foo/bar", Some(3)),
            ("a.example:8080", "/foo", Some(2)),
            ("A.EXAMPLE.:443", "/foo/x", Some(1)),
            ("a.example..", "/foo", Some(6)),
            // A host rule without a matching path falls back to the rules without host.
            ("b.example", "/only/x", Some(5)),
            ("b.example", "/api/v1", Some(7)),
            ("b.example", "/other", Some(6)),
            ("b.example", "/exact/", Some(8)),
            // Unknown hosts, IP literals and no host at all use the rules without host.
            ("c.example", "/api", Some(7)),
            ("c.example", "/apis", Some(6)),
            ("[::1]:80", "/api/x", Some(7)),
            ("[a.example]:80", "/foo", Some(6)),
            ("::1", "/api", Some(7)),
            ("10.0.0.1:80", "/api", Some(7)),
            ("", "/api", Some(7)),
        ],
    );
}

#[test]
fn wildcard_hosts_match_exactly_one_label_and_lose_to_exact_hosts() {
    let snap = snapshot(&[
        ("*.example.com", Prefix, "/"),       // 0
        ("api.example.com", Prefix, "/v1"),   // 1
        ("*.b.example.com", Prefix, "/deep"), // 2
        ("", Prefix, "/fallback"),            // 3
        ("*.example.com", Exact, "/w"),       // 4
    ]);
    check(
        &snap,
        &[
            ("a.example.com", "/", Some(0)),
            ("a.example.com", "/anything", Some(0)),
            ("A.Example.Com:80", "/x", Some(0)),
            ("a.example.com", "/w", Some(4)),
            ("a.example.com", "/w/", Some(0)),
            // Exactly one label: not two, not zero.
            ("a.b.example.com", "/x", None),
            ("a.b.example.com", "/deep/1", Some(2)),
            ("example.com", "/x", None),
            (".example.com", "/x", None),
            ("b.example.com", "/deep", Some(0)),
            // The exact host wins over the wildcard, and does not fall back to it.
            ("api.example.com", "/v1/users", Some(1)),
            ("api.example.com", "/other", None),
            // Unmatched paths of a wildcard or exact host fall back to the rules without host.
            ("api.example.com", "/fallback", Some(3)),
            ("a.b.example.com", "/fallback/x", Some(3)),
            ("z.example.com", "/fallback", Some(0)),
            ("other.org", "/fallback", Some(3)),
            ("other.org", "/", None),
        ],
    );
}

#[test]
fn regex_paths_are_anchored_at_the_start_and_ordered_by_length() {
    let snap = snapshot(&[
        ("h", Regex, "/users/[0-9]+"),          // 0 (13 characters)
        ("h", Prefix, "/users"),                // 1 (6)
        ("h", Exact, "/users/42/profile"),      // 2 (17)
        ("h", Regex, "/users/[0-9]+/profile$"), // 3 (22)
        ("h", Prefix, "/users/1234567890123"),  // 4 (20)
        ("h", Regex, "/a.c"),                   // 5 (4)
        ("h", Prefix, "/abc"),                  // 6 (4): a Prefix beats a regex of equal length
        ("h", Regex, "/(?i)case"),              // 7
    ]);
    check(
        &snap,
        &[
            ("h", "/users/7", Some(0)),
            ("h", "/users/7/anything", Some(0)),
            ("h", "/users/abc", Some(1)),
            ("h", "/users", Some(1)),
            // The longer regex beats the shorter Exact it also matches.
            ("h", "/users/42/profile", Some(3)),
            ("h", "/users/42/profile/x", Some(0)),
            // A Prefix longer than the regex wins; shorter ones do not.
            ("h", "/users/1234567890123/x", Some(4)),
            ("h", "/users/12345678901234", Some(0)),
            // Anchored at the start, not at the end; `.` is a regex dot.
            ("h", "/x/users/7", None),
            ("h", "/axc", Some(5)),
            ("h", "/axcd", Some(5)),
            ("h", "/abc", Some(6)),
            ("h", "/abc/d", Some(6)),
            ("h", "/CaSe", Some(7)),
        ],
    );
}

#[test]
fn default_backend_only_when_nothing_else_matches() {
    let snap = snapshot(&[
        ("a.example", Prefix, "/a"), // 0
        ("", Exact, "/x"),           // 1
        ("default", Prefix, "/"),    // 2
    ]);
    check(
        &snap,
        &[
            ("a.example", "/a/b", Some(0)),
            ("a.example", "/x", Some(1)),
            ("a.example", "/b", Some(2)),
            ("unknown", "/x", Some(1)),
            ("unknown", "/", Some(2)),
            ("", "", Some(2)),
        ],
    );
}

#[test]
fn no_catch_all_means_no_route() {
    let snap = snapshot(&[("a.example", Prefix, "/foo"), ("", Exact, "/x")]);
    assert_eq!(find(&snap, "a.example", "/bar"), None);
    assert_eq!(find(&snap, "b.example", "/x/"), None);
    assert_eq!(find(&snap, "b.example", "/x").map(position), Some(1));
    assert_eq!(find(&Snapshot::default(), "a.example", "/"), None);
}

#[test]
fn very_long_or_odd_hosts_do_not_panic() {
    let snap = snapshot(&[("", Prefix, "/"), ("*.x", Prefix, "/w")]);
    let long = "A".repeat(1000);
    assert_eq!(find(&snap, &long, "/").map(position), Some(0));
    let exact = format!("{}.", "B".repeat(MAX_HOST));
    assert_eq!(find(&snap, &exact, "/").map(position), Some(0));
    assert_eq!(find(&snap, "Ünï.Example", "/").map(position), Some(0));
    for odd in ["[", ":", ".", "..", "*.x", ".x", "x"] {
        assert_eq!(find(&snap, odd, "/").map(position), Some(0), "{odd}");
    }
    assert_eq!(find(&snap, "Ünï.x", "/w").map(position), Some(1));
}

#[test]
fn prefix_is_element_wise() {
    for (prefix, path, want) in [
        ("/foo", "/foo", true),
        ("/foo", "/foo/", true),
        ("/foo", "/foo/bar", true),
        ("/foo", "/foo//", true),
        ("/foo", "/foobar", false),
        ("/foo", "/fo", false),
        ("/foo", "/Foo", false),
        ("/foo/bar", "/foo", false),
        ("/foo/bar", "/foo/bar/baz", true),
        ("/", "/anything", true),
        ("/", "", true),
        ("/", "*", true),
    ] {
        let mut map = HashMap::new();
        map.insert(Box::<str>::from(prefix), 0u32);
        assert_eq!(
            longest_prefix(&map, path).is_some(),
            want,
            "{prefix} vs {path}"
        );
    }
}
