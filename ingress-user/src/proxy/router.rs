//! Request → route: the pure lookup every worker runs once per request against its snapshot.
//!
//! `find` takes the raw Host header (or `:authority`) and the request path (no query), and
//! returns the `PathRoute` to serve, or `None` (answered as 404 by the caller). It never
//! allocates: the host is normalized (port and one trailing dot dropped) as a borrowed slice, and
//! lowercased into a stack buffer only when it has uppercase letters. Precedence: routes of the
//! exact host first; if that host has none matching (or is unknown), the routes without host.
//! Within a host the first matching route in `HostRoutes` order wins, which `translate` sorts
//! longest path first, `Exact` before `Prefix`.
use crate::model::{HostRoutes, PathKind, PathRoute, Snapshot};

/// Longest DNS name; longer Host headers cannot name a route.
const MAX_HOST: usize = 253;

/// The route for a request, if any.
pub fn find<'a>(snapshot: &'a Snapshot, host: &str, path: &str) -> Option<&'a PathRoute> {
    let routes = &snapshot.routes;
    let host = normalize_host(host);
    let mut buf = [0u8; MAX_HOST];
    let by_host = match host {
        "" => None,
        h if h.len() > MAX_HOST => None,
        h if h.bytes().any(|b| b.is_ascii_uppercase()) => {
            let lower = &mut buf[..h.len()];
            lower.copy_from_slice(h.as_bytes());
            lower.make_ascii_lowercase();
            // ASCII lowercasing keeps UTF-8 valid.
            std::str::from_utf8(lower)
                .ok()
                .and_then(|h| routes.hosts.get(h))
        }
        h => routes.hosts.get(h),
    };
    by_host
        .and_then(|r| match_path(r, path))
        .or_else(|| match_path(&routes.any_host, path))
}

/// Drops the port (`host:80`, `[::1]:80`) and one trailing dot.
fn normalize_host(host: &str) -> &str {
    let host = host.trim();
    let host = if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop what follows them.
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            // One colon only: `name:port`. More is a bare IPv6 address: leave it.
            Some((name, _)) if !name.contains(':') => name,
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

fn match_path<'a>(routes: &'a HostRoutes, path: &str) -> Option<&'a PathRoute> {
    routes.paths.iter().find(|r| matches(r, path))
}

fn matches(route: &PathRoute, path: &str) -> bool {
    match route.kind {
        PathKind::Exact => route.path == path,
        PathKind::Prefix => prefix_matches(&route.path, path),
    }
}

/// Element-wise prefix: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`; `/`
/// matches everything. `prefix` is normalized (no trailing slash except for `/`).
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Backend, BackendIdx, HostRoutes, ObjectRef, RouteTable, ServiceBackendRef, ServicePortRef,
    };

    /// A snapshot from `(host, kind, path)` triples ("" = any host), sorted as `translate` does;
    /// each route's backend index is its position in `spec`, so results are easy to name.
    fn snapshot(spec: &[(&str, PathKind, &str)]) -> Snapshot {
        let mut routes = RouteTable::default();
        let mut backends = Vec::new();
        for (i, (host, kind, path)) in spec.iter().enumerate() {
            let service = ServiceBackendRef {
                namespace: "default".into(),
                service: format!("s{i}"),
                port: ServicePortRef::Number(80),
            };
            backends.push(Backend::new(service, Vec::new(), None));
            let route = PathRoute {
                path: (*path).into(),
                kind: *kind,
                backend: BackendIdx(i),
                ingress: ObjectRef::new("Ingress", "default", "i"),
            };
            match *host {
                "" => routes.any_host.paths.push(route),
                h => routes.hosts.entry(h.into()).or_default().paths.push(route),
            }
        }
        let sort = |h: &mut HostRoutes| {
            h.paths
                .sort_by_key(|r| (std::cmp::Reverse(r.path.len()), r.kind, r.path.clone()))
        };
        sort(&mut routes.any_host);
        routes.hosts.values_mut().for_each(sort);
        Snapshot {
            generation: 1,
            routes,
            backends,
            ..Snapshot::default()
        }
    }

    use PathKind::{Exact, Prefix};

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
        let table: &[(&str, &str, Option<usize>)] = &[
            // Exact host, longest path, Exact before Prefix on equal paths.
            ("a.example", "/foo", Some(2)),
            ("a.example", "/foo/", Some(1)),
            ("a.example", "/foo/baz", Some(1)),
            ("a.example", "/foo/bar", Some(3)),
            ("a.example", "/foo/bar/x", Some(3)),
            ("a.example", "/foo/barx", Some(1)),
            ("a.example", "/foobar", Some(0)),
            ("a.example", "/exact", Some(4)),
            ("a.example", "/exact/", Some(0)),
            ("a.example", "/", Some(0)),
            ("a.example", "", Some(0)),
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
        ];
        for (host, path, want) in table {
            let got = find(&snap, host, path).map(|r| r.backend.0);
            assert_eq!(got, *want, "host {host:?} path {path:?}");
        }
    }

    #[test]
    fn no_catch_all_means_no_route() {
        let snap = snapshot(&[("a.example", Prefix, "/foo"), ("", Exact, "/x")]);
        assert_eq!(find(&snap, "a.example", "/bar"), None);
        assert_eq!(find(&snap, "b.example", "/x/"), None);
        assert_eq!(find(&snap, "b.example", "/x").map(|r| r.backend.0), Some(1));
        assert_eq!(find(&Snapshot::default(), "a.example", "/"), None);
    }

    #[test]
    fn very_long_or_odd_hosts_do_not_panic() {
        let snap = snapshot(&[("", Prefix, "/")]);
        let long = "A".repeat(1000);
        assert_eq!(find(&snap, &long, "/").map(|r| r.backend.0), Some(0));
        let exact = format!("{}.", "B".repeat(MAX_HOST));
        assert_eq!(find(&snap, &exact, "/").map(|r| r.backend.0), Some(0));
        assert_eq!(
            find(&snap, "Ünï.Example", "/").map(|r| r.backend.0),
            Some(0)
        );
        assert_eq!(find(&snap, "[", "/").map(|r| r.backend.0), Some(0));
        assert_eq!(find(&snap, ":", "/").map(|r| r.backend.0), Some(0));
    }

    #[test]
    fn prefix_is_element_wise() {
        for (prefix, path, want) in [
            ("/foo", "/foo", true),
            ("/foo", "/foo/", true),
            ("/foo", "/foo/bar", true),
            ("/foo", "/foobar", false),
            ("/foo", "/fo", false),
            ("/foo/bar", "/foo", false),
            ("/", "/anything", true),
            ("/", "", true),
        ] {
            assert_eq!(prefix_matches(prefix, path), want, "{prefix} vs {path}");
        }
    }
}
