//! Table tests for `translate`: YAML manifests in, routes / backends / diagnostics out, each
//! rendered as text so a failure shows the whole difference.
use std::path::Path;

use super::translate;
use crate::{
    model::{PathKind, PathRoute, Snapshot, Strategy},
    source::{file::FileSource, Inputs},
};

/// `host kind path -> ns/service:port (ingress)`, exact hosts sorted, then wildcards (`*.x`),
/// then `*` (no host), then `default` (the default backend). Non-default strategies are
/// appended as `[strategy]`.
pub(super) fn routes(s: &Snapshot) -> Vec<String> {
    let mut hosts: Vec<_> = s.routes.hosts.iter().collect();
    hosts.sort_by(|a, b| a.0.cmp(b.0));
    let mut wildcards: Vec<_> = s.routes.wildcards.iter().collect();
    wildcards.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    let mut dump = |host: &str, paths: &[PathRoute]| {
        for p in paths {
            let backend = &p.backend;
            let b = &backend.service;
            let strategy = match &backend.strategy {
                Strategy::RoundRobin => String::new(),
                other => format!(" [{other:?}]"),
            };
            let kind = match p.kind {
                PathKind::ImplementationSpecific => "Regex".to_owned(),
                k => format!("{k:?}"),
            };
            out.push(format!(
                "{host} {kind} {} -> {}/{}:{} ({}/{}){strategy}",
                p.path, b.namespace, b.service, b.port, p.ingress.namespace, p.ingress.name
            ));
        }
    };
    for (h, r) in hosts {
        dump(h, &r.paths);
    }
    for (h, r) in wildcards {
        dump(&format!("*.{h}"), &r.paths);
    }
    dump("*", &s.routes.any_host.paths);
    if let Some(d) = &s.routes.default_backend {
        dump("default", std::slice::from_ref(d));
    }
    out
}

/// `ns/service:port = endpoints` or `ns/service:port unavailable: reason`, sorted.
pub(super) fn backends(s: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = s
        .backends
        .iter()
        .map(|b| {
            let name = format!(
                "{}/{}:{}",
                b.service.namespace, b.service.service, b.service.port
            );
            match &b.unavailable {
                Some(why) => {
                    assert!(b.endpoints.is_empty());
                    format!("{name} unavailable: {why}")
                }
                None => {
                    let eps: Vec<_> = b.endpoints.iter().map(|e| e.to_string()).collect();
                    format!("{name} = {}", eps.join(","))
                }
            }
        })
        .collect();
    out.sort();
    out
}

struct Case {
    name: &'static str,
    yaml: &'static str,
    routes: &'static [&'static str],
    backends: &'static [&'static str],
    diags: &'static [&'static str],
    /// Append Service `a` and its EndpointSlices (`SVC_A`) to `yaml`.
    with_a: bool,
}

fn check(case: &Case) {
    let yaml = match case.with_a {
        true => format!("{}\n---\n{SVC_A}", case.yaml),
        false => case.yaml.to_owned(),
    };
    let inputs = Inputs::from_yaml(&yaml).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
    let (snap, diags) = translate(&inputs);
    let diags: Vec<_> = diags.iter().map(ToString::to_string).collect();
    assert_eq!(routes(&snap), case.routes, "{}: routes", case.name);
    assert_eq!(backends(&snap), case.backends, "{}: backends", case.name);
    assert_eq!(diags, case.diags, "{}: diagnostics", case.name);
}

pub(super) const SVC_A: &str = "
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {ports: [{name: http, port: 80, targetPort: 8080}, {port: 81}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-1, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
ports: [{name: http, port: 8080}, {port: 8081}]
endpoints:
- addresses: [10.0.0.2]
- addresses: [10.0.0.1]
  conditions: {ready: true}
- addresses: [10.0.0.9]
  conditions: {ready: false}
- addresses: [10.0.0.8]
  conditions: {ready: true, terminating: true}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-2, labels: {kubernetes.io/service-name: a}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
- addresses: ['fd00::1', 10.0.0.1]
";

#[test]
fn table() {
    let cases = [
        Case {
            name: "hosts lowercased, prefixes normalized, longest first, Exact before Prefix",
            with_a: true,
            yaml: "
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: i}
spec:
  rules:
  - host: Cafe.Example.COM
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
      - {path: /coffee/, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
      - {path: /coffee, pathType: Exact, backend: {service: {name: a, port: {number: 81}}}}
      - {path: /coffee/beans, pathType: Prefix, backend: {service: {name: a, port: {name: http}}}}
",
            routes: &[
                "cafe.example.com Prefix /coffee/beans -> default/a:http (default/i)",
                "cafe.example.com Exact /coffee -> default/a:81 (default/i)",
                "cafe.example.com Prefix /coffee -> default/a:80 (default/i)",
                "cafe.example.com Prefix / -> default/a:80 (default/i)",
            ],
            backends: &[
                // Ready (or unknown) endpoints only, from every slice, sorted, deduplicated;
                // the unnamed service port pairs with the unnamed slice port.
                "default/a:80 = 10.0.0.1:8080,10.0.0.2:8080,[fd00::1]:8080",
                "default/a:81 = 10.0.0.1:8081,10.0.0.2:8081",
                "default/a:http = 10.0.0.1:8080,10.0.0.2:8080,[fd00::1]:8080",
            ],
            diags: &[],
        },
        Case {
            with_a: false,
            name: "rules without host, ImplementationSpecific, bad paths",
            yaml: "
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: i, namespace: web}
spec:
  rules:
  - http:
      paths:
      - {pathType: ImplementationSpecific, backend: {service: {name: s, port: {number: 1}}}}
      - {path: /impl/, pathType: ImplementationSpecific, backend: {service: {name: s, port: {number: 1}}}}
      - {path: relative, pathType: Prefix, backend: {service: {name: s, port: {number: 1}}}}
      - {pathType: Exact, backend: {service: {name: s, port: {number: 1}}}}
      - {path: /x, pathType: Regex, backend: {service: {name: s, port: {number: 1}}}}
      - {path: /y, backend: {service: {name: s, port: {number: 1}}}}
      - {path: '/(unclosed', pathType: ImplementationSpecific, backend: {service: {name: s, port: {number: 1}}}}
      - {path: 'no-slash.*', pathType: ImplementationSpecific, backend: {service: {name: s, port: {number: 1}}}}
  - host: '*.Example.com'
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 1}}}}]
  - host: 'bad_host.example.com'
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 1}}}}]
  - host: tls-only.example.com
  - host: '*'
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 1}}}}]
  - host: 'a.*.example.com'
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 1}}}}]
  - host: '*.*.example.com'
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 1}}}}]
",
            routes: &[
                "*.example.com Prefix / -> web/s:1 (web/i)",
                "* Regex /impl/ -> web/s:1 (web/i)",
                "* Regex / -> web/s:1 (web/i)",
            ],
            backends: &["web/s:1 unavailable: service web/s not found"],
            diags: &[
                "Ingress web/i: spec.rules[0].http.paths[0].backend.service.name: service web/s not found",
                "Ingress web/i: spec.rules[0].http.paths[1].backend.service.name: service web/s not found",
                "Ingress web/i: spec.rules[0].http.paths[2].path: path \"relative\" must start with '/'; path skipped",
                "Ingress web/i: spec.rules[0].http.paths[3].path: path is required for pathType Exact; path skipped",
                "Ingress web/i: spec.rules[0].http.paths[4].pathType: unknown pathType \"Regex\"; path skipped",
                "Ingress web/i: spec.rules[0].http.paths[5].pathType: pathType is required; path skipped",
                "Ingress web/i: spec.rules[0].http.paths[6].path: invalid regular expression \"/(unclosed\": unclosed group; path skipped",
                "Ingress web/i: spec.rules[0].http.paths[7].path: path \"no-slash.*\" must start with '/'; path skipped",
                "Ingress web/i: spec.rules[1].http.paths[0].backend.service.name: service web/s not found",
                "Ingress web/i: spec.rules[2].host: invalid host \"bad_host.example.com\"; rule skipped",
                "Ingress web/i: spec.rules[4].host: invalid host \"*\"; rule skipped",
                "Ingress web/i: spec.rules[5].host: invalid host \"a.*.example.com\"; rule skipped",
                "Ingress web/i: spec.rules[6].host: invalid host \"*.*.example.com\"; rule skipped",
            ],
        },
        Case {
            with_a: false,
            name: "conflicts: the older Ingress wins, then namespace/name; same Ingress: first path",
            yaml: "
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a-new, creationTimestamp: '2024-02-01T00:00:00Z'}
spec:
  rules:
  - host: h.example
    http:
      paths:
      - {path: /p, pathType: Prefix, backend: {service: {name: new, port: {number: 1}}}}
      - {path: /p, pathType: Exact, backend: {service: {name: new, port: {number: 1}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: z-old, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  rules:
  - host: H.example
    http:
      paths:
      - {path: /p/, pathType: Prefix, backend: {service: {name: old, port: {number: 1}}}}
      - {path: /q, pathType: Prefix, backend: {service: {name: old, port: {number: 1}}}}
      - {path: /q, pathType: Prefix, backend: {service: {name: old, port: {number: 2}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: b, namespace: ns2}
spec:
  rules:
  - http:
      paths: [{path: /r, pathType: Prefix, backend: {service: {name: b, port: {number: 1}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a, namespace: ns2}
spec:
  rules:
  - http:
      paths: [{path: /r, pathType: Prefix, backend: {service: {name: a, port: {number: 1}}}}]
",
            routes: &[
                "h.example Exact /p -> default/new:1 (default/a-new)",
                "h.example Prefix /p -> default/old:1 (default/z-old)",
                "h.example Prefix /q -> default/old:1 (default/z-old)",
                "* Prefix /r -> ns2/a:1 (ns2/a)",
            ],
            backends: &[
                "default/new:1 unavailable: service default/new not found",
                "default/old:1 unavailable: service default/old not found",
                "ns2/a:1 unavailable: service ns2/a not found",
            ],
            diags: &[
                "Ingress default/a-new: spec.rules[0].http.paths[0]: host h.example, path /p (Prefix) is already routed by Ingress default/z-old (older, or same age and first by name); ignored",
                "Ingress default/a-new: spec.rules[0].http.paths[1].backend.service.name: service default/new not found",
                "Ingress default/z-old: spec.rules[0].http.paths[0].backend.service.name: service default/old not found",
                "Ingress default/z-old: spec.rules[0].http.paths[1].backend.service.name: service default/old not found",
                "Ingress default/z-old: spec.rules[0].http.paths[2]: host h.example, path /q (Prefix) is already routed by spec.rules[0].http.paths[1] of this Ingress; ignored",
                "Ingress ns2/a: spec.rules[0].http.paths[0].backend.service.name: service ns2/a not found",
                "Ingress ns2/b: spec.rules[0].http.paths[0]: any host, path /r (Prefix) is already routed by Ingress ns2/a (older, or same age and first by name); ignored",
            ],
        },
        Case {
            with_a: true,
            name: "default backends and resource backends",
            yaml: "
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: d1}
spec:
  defaultBackend: {service: {name: a, port: {name: http}}}
  rules:
  - host: x.example
    http:
      paths:
      - {path: /res, pathType: Prefix, backend: {resource: {kind: Bucket, name: b}}}
      - {path: /none, pathType: Prefix, backend: {}}
      - {path: /noport, pathType: Prefix, backend: {service: {name: a}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: d2}
spec:
  defaultBackend: {service: {name: a, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: d0}
spec:
  defaultBackend: {resource: {kind: Bucket, name: b}}
",
            routes: &["default Prefix / -> default/a:http (default/d1)"],
            backends: &["default/a:http = 10.0.0.1:8080,10.0.0.2:8080,[fd00::1]:8080"],
            diags: &[
                "Ingress default/d0: spec.defaultBackend.resource: resource backends are not supported; skipped",
                "Ingress default/d1: spec.rules[0].http.paths[0].backend.resource: resource backends are not supported; skipped",
                "Ingress default/d1: spec.rules[0].http.paths[1].backend: backend names no service; skipped",
                "Ingress default/d1: spec.rules[0].http.paths[2].backend.service.port: service port (number or name) is required; skipped",
                "Ingress default/d2: spec.defaultBackend: the default backend is already set by Ingress default/d1 (older, or same age and first by name); ignored",
            ],
        },
        Case {
            with_a: false,
            name: "backend resolution problems",
            yaml: "
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: cafe}
spec:
  rules:
  - http:
      paths:
      - {path: /a, pathType: Prefix, backend: {service: {name: coffee-svc, port: {number: 80}}}}
      - {path: /b, pathType: Prefix, backend: {service: {name: coffee-svc, port: {number: 8080}}}}
      - {path: /c, pathType: Prefix, backend: {service: {name: coffee-svc, port: {name: grpc}}}}
      - {path: /d, pathType: Prefix, backend: {service: {name: ext, port: {number: 80}}}}
      - {path: /e, pathType: Prefix, backend: {service: {name: udp, port: {number: 53}}}}
      - {path: /f, pathType: Prefix, backend: {service: {name: coffee-svc, port: {number: 80}}}}
---
apiVersion: v1
kind: Service
metadata: {name: coffee-svc}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.com, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: udp}
spec: {ports: [{port: 53, protocol: UDP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: c1, labels: {kubernetes.io/service-name: coffee-svc}}
addressType: IPv4
ports: [{name: '', port: 9000}]
endpoints:
- addresses: [10.1.0.1, not-an-ip, 10.1.0.300]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other-ns, namespace: web, labels: {kubernetes.io/service-name: coffee-svc}}
addressType: IPv4
ports: [{port: 9000}]
endpoints: [{addresses: [10.9.9.9]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: fqdn, labels: {kubernetes.io/service-name: coffee-svc}}
addressType: FQDN
ports: [{port: 9000}]
endpoints: [{addresses: [a.example.com]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: unlabeled}
addressType: IPv4
ports: [{port: 9000}]
endpoints: [{addresses: [10.8.8.8]}]
",
            routes: &[
                "* Prefix /a -> default/coffee-svc:80 (default/cafe)",
                "* Prefix /b -> default/coffee-svc:8080 (default/cafe)",
                "* Prefix /c -> default/coffee-svc:grpc (default/cafe)",
                "* Prefix /d -> default/ext:80 (default/cafe)",
                "* Prefix /e -> default/udp:53 (default/cafe)",
                "* Prefix /f -> default/coffee-svc:80 (default/cafe)",
            ],
            backends: &[
                "default/coffee-svc:80 = 10.1.0.1:9000",
                "default/coffee-svc:8080 unavailable: service port 8080 not found in Service default/coffee-svc",
                "default/coffee-svc:grpc unavailable: service port grpc not found in Service default/coffee-svc",
                "default/ext:80 unavailable: service default/ext is of type ExternalName, not supported",
                "default/udp:53 unavailable: service port 53 not found in Service default/udp",
            ],
            diags: &[
                "EndpointSlice default/c1: endpoints[0].addresses[1]: invalid IP address \"not-an-ip\"; skipped",
                "EndpointSlice default/c1: endpoints[0].addresses[2]: invalid IP address \"10.1.0.300\"; skipped",
                "EndpointSlice default/fqdn: addressType: addressType FQDN is not supported; slice skipped",
                "Ingress default/cafe: spec.rules[0].http.paths[1].backend.service.port: service port 8080 not found in Service default/coffee-svc",
                "Ingress default/cafe: spec.rules[0].http.paths[2].backend.service.port: service port grpc not found in Service default/coffee-svc",
                "Ingress default/cafe: spec.rules[0].http.paths[3].backend.service.name: service default/ext is of type ExternalName, not supported",
                "Ingress default/cafe: spec.rules[0].http.paths[4].backend.service.port: service port 53 not found in Service default/udp",
            ],
        },
        Case {
            with_a: false,
            name: "no ready endpoints: unavailable, no diagnostic",
            yaml: "
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: i}
spec: {defaultBackend: {service: {name: s, port: {number: 80}}}}
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 80}]
endpoints: [{addresses: [10.0.0.1], conditions: {ready: false}}]
",
            routes: &["default Prefix / -> default/s:80 (default/i)"],
            backends: &["default/s:80 unavailable: no ready endpoints for service default/s port 80"],
            diags: &[],
        },
    ];
    for case in &cases {
        check(case);
    }
}

#[test]
fn routes_naming_the_same_service_port_share_one_backend() {
    let yaml = format!(
        "{SVC_A}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: one}}
spec:
  rules:
  - host: x.example
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: two}}
spec:
  rules:
  - host: y.example
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}]
"
    );
    let (snap, diags) = translate(&Inputs::from_yaml(&yaml).unwrap());
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(snap.backends.len(), 1);
    let x = &snap.routes.hosts["x.example"].paths[0];
    let y = &snap.routes.hosts["y.example"].paths[0];
    assert_eq!(x.backend, y.backend);
    // One cursor: round robin continues across both routes.
    let headers = http::HeaderMap::new();
    let req = crate::proxy::balance::RequestInfo {
        client: std::net::Ipv4Addr::LOCALHOST.into(),
        uri: "/",
        headers: &headers,
    };
    let first = x.backend.pick(&req).map(|p| p.endpoint);
    let second = y.backend.pick(&req).map(|p| p.endpoint);
    assert_ne!(first, second);
}

/// Every case above at once, with each input list reversed and rotated: same snapshot.
#[test]
fn input_order_does_not_matter() {
    let yaml = [
        include_str!("../../../examples/cafe/cafe-ingress.yaml"),
        include_str!("../../../examples/cafe/cafe-secret.yaml"),
        include_str!("../../../examples/cafe/coffee.yaml"),
        include_str!("../../../examples/cafe/tea.yaml"),
        SVC_A,
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other, namespace: default}
spec:
  defaultBackend: {service: {name: a, port: {number: 81}}}
  rules:
  - host: cafe.example.com
    http:
      paths:
      - {path: /coffee, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
      - {path: /milk, pathType: Prefix, backend: {service: {name: tea-svc, port: {number: 80}}}}
      - {path: /bad, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
",
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a-early, creationTimestamp: '2020-01-01T00:00:00Z'}
spec:
  defaultBackend: {service: {name: coffee-svc, port: {name: http}}}
",
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: coffee-svc-2, labels: {kubernetes.io/service-name: coffee-svc}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [127.0.0.13, bad]}, {addresses: [127.0.0.11]}]
",
    ]
    .join("\n---\n");
    let inputs = Inputs::from_yaml(&yaml).unwrap();
    let (want, want_diags) = translate(&inputs);
    assert_eq!(want.backends.len(), 4);
    assert_eq!(want_diags.len(), 4, "{want_diags:?}");
    assert!(want.tls.exact["cafe.example.com"].certificate.is_some());
    let coffee = (want.backends.iter())
        .find(|b| b.service.service == "coffee-svc")
        .expect("coffee-svc backend");
    assert_eq!(coffee.endpoints.len(), 3, "{coffee:?}");
    for shuffle in 0..4 {
        let mut i = inputs.clone();
        shuffle_vec(&mut i.ingresses, shuffle);
        shuffle_vec(&mut i.services, shuffle + 1);
        shuffle_vec(&mut i.endpoint_slices, shuffle + 2);
        shuffle_vec(&mut i.secrets, shuffle + 3);
        let (got, got_diags) = translate(&i);
        assert_eq!(got, want, "shuffle {shuffle}");
        assert_eq!(got_diags, want_diags, "shuffle {shuffle}");
    }
}

/// Reverses (on odd `n`) and rotates by `n`: a cheap, repeatable reordering.
fn shuffle_vec<T>(v: &mut [T], n: usize) {
    if n % 2 == 1 {
        v.reverse();
    }
    let len = v.len().max(1);
    v.rotate_left(n % len);
}

#[test]
fn cafe_example_loads_and_translates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cafe");
    let report = FileSource::open(&dir).unwrap().load();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.files, 4);
    let (snap, diags) = translate(&report.inputs);
    assert!(diags.is_empty(), "{diags:?}");
    let tls = snap
        .tls
        .find("cafe.example.com")
        .expect("cafe.example.com is a TLS host");
    assert!(tls.certificate.is_some() && tls.redirect, "{tls:?}");
    assert_eq!(tls.secret.as_ref().unwrap().name, "cafe-secret");
    assert_eq!(
        routes(&snap),
        [
            "cafe.example.com Prefix /coffee -> default/coffee-svc:80 (default/cafe-ingress)",
            "cafe.example.com Prefix /tea -> default/tea-svc:80 (default/cafe-ingress)",
        ]
    );
    assert_eq!(
        backends(&snap),
        [
            "default/coffee-svc:80 = 127.0.0.11:8080,127.0.0.12:8080",
            "default/tea-svc:80 = 127.0.0.21:8080,127.0.0.22:8080",
        ]
    );
    let route = crate::proxy::router::find(&snap, "Cafe.Example.com:80", "/tea/green").unwrap();
    assert_eq!(route.backend.service.service, "tea-svc");
}

#[test]
fn three_claims_on_one_key_name_the_oldest_in_every_input_order() {
    let ingress = |name: &str, ts: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\n\
             metadata: {{name: {name}, creationTimestamp: '{ts}'}}\n\
             spec:\n  defaultBackend: {{service: {{name: a, port: {{number: 80}}}}}}\n  rules:\n  \
             - host: k.example\n    http:\n      paths:\n      \
             - {{path: /k, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}\n      \
             - {{path: /k, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 81}}}}}}}}\n"
        )
    };
    let yaml = [
        ingress("mid", "2021-01-01T00:00:00Z"),
        ingress("old", "2020-01-01T00:00:00Z"),
        ingress("new", "2022-01-01T00:00:00Z"),
    ]
    .join("---\n");
    let inputs = Inputs::from_yaml(&yaml).unwrap();
    let (want, want_diags) = translate(&inputs);
    assert_eq!(
        routes(&want),
        [
            "k.example Prefix /k -> default/a:80 (default/old)",
            "default Prefix / -> default/a:80 (default/old)"
        ]
    );
    let texts: Vec<String> = want_diags.iter().map(|d| d.to_string()).collect();
    let by_old = "Ingress default/old (older, or same age and first by name)";
    // The first claim of `mid` and `new`, lost to `old`'s first one.
    let lost = |who: &str| {
        format!(
            "Ingress default/{who}: spec.rules[0].http.paths[0]: host k.example, path /k (Prefix) is already routed by {by_old}; ignored"
        )
    };
    let default = |who: &str| {
        format!("Ingress default/{who}: spec.defaultBackend: the default backend is already set by Ingress default/old (older, or same age and first by name); ignored")
    };
    let mut expected = vec![
        default("mid"),
        default("new"),
        lost("mid"),
        lost("new"),
        // No Service `a` in these inputs: reported where the winners name it.
        "Ingress default/old: spec.defaultBackend.service.name: service default/a not found".into(),
        "Ingress default/old: spec.rules[0].http.paths[0].backend.service.name: service default/a not found".into(),
    ];
    for who in ["mid", "new", "old"] {
        // Each Ingress's second claim loses to its own first one; for `mid` and `new` the
        // first one lost already, and the second loses to the winner of the key all the same.
        let to = if who == "old" {
            "spec.rules[0].http.paths[0] of this Ingress".to_owned()
        } else {
            by_old.to_owned()
        };
        expected.push(format!(
            "Ingress default/{who}: spec.rules[0].http.paths[1]: host k.example, path /k (Prefix) is already routed by {to}; ignored"
        ));
    }
    expected.sort();
    assert_eq!(texts, expected);
    for shuffle in 0..6 {
        let mut i = inputs.clone();
        shuffle_vec(&mut i.ingresses, shuffle);
        let (got, got_diags) = translate(&i);
        assert_eq!(got, want, "shuffle {shuffle}");
        assert_eq!(got_diags, want_diags, "shuffle {shuffle}");
    }
}
