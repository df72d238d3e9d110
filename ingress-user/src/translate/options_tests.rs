//! Table tests for what `Options` and annotations add to `translate`: per-Ingress strategies
//! (one backend per Service port and strategy), the `--default-backend` flag, and which
//! endpoint conditions take new requests.
use super::{
    tests::{backends, routes, SVC_A},
    translate_with, Options,
};
use crate::{model::Strategy, source::Inputs};

fn translate_text(yaml: &str, options: &Options) -> (Vec<String>, Vec<String>, Vec<String>) {
    let inputs = Inputs::from_yaml(yaml).unwrap();
    let (snap, diags) = translate_with(&inputs, options);
    (
        routes(&snap),
        backends(&snap),
        diags.iter().map(ToString::to_string).collect(),
    )
}

#[test]
fn annotations_give_each_ingress_its_own_backend_strategy() {
    let yaml = format!(
        "{SVC_A}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: sticky
  creationTimestamp: '2020-01-01T00:00:00Z'
  annotations: {{nginx.ingress.kubernetes.io/affinity: cookie, nginx.ingress.kubernetes.io/load-balance: bogus}}
spec:
  rules:
  - host: '*.shop.example'
    http:
      paths: [{{path: '/cart/[0-9]+', pathType: ImplementationSpecific, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: hashed
  annotations: {{xdp-ingress.io/upstream-hash-by: $http_x_user}}
spec:
  rules:
  - host: www.shop.example
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: plain}}
spec:
  rules:
  - host: '*.shop.example'
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}
      - {{path: '/cart/[0-9]+', pathType: ImplementationSpecific, backend: {{service: {{name: a, port: {{number: 81}}}}}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: plain-too}}
spec:
  rules:
  - http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}]
"
    );
    let (routes, backends, diags) = translate_text(&yaml, &Options::default());
    assert_eq!(
        routes,
        [
            "www.shop.example Prefix / -> default/a:80 (default/hashed) [ConsistentHash(Header(\"x-user\"))]",
            "*.shop.example Regex /cart/[0-9]+ -> default/a:80 (default/sticky) [Sticky(StickyCookie { name: \"INGRESSCOOKIE\", max_age: None, path: \"/\", same_site: None, secure: false, mode: Balanced })]",
            "*.shop.example Prefix / -> default/a:80 (default/plain)",
            "* Prefix / -> default/a:80 (default/plain-too)",
        ]
    );
    // One backend per (Service port, strategy): plain and plain-too share one.
    assert_eq!(backends.len(), 3, "{backends:?}");
    assert_eq!(
        diags,
        [
            "Ingress default/plain: spec.rules[0].http.paths[1]: host *.shop.example, path /cart/[0-9]+ (ImplementationSpecific) is already routed by Ingress default/sticky (older, or same age and first by name); ignored",
            "Ingress default/sticky: metadata.annotations[nginx.ingress.kubernetes.io/load-balance]: invalid value \"bogus\": expected round_robin or ewma (for chash set upstream-hash-by, for sticky set affinity); using the global default round_robin",
        ]
    );
    // The global default applies to Ingresses without annotations.
    let ewma = Options {
        load_balance: Strategy::Ewma,
        ..Options::default()
    };
    let (routes, _, _) = translate_text(&yaml, &ewma);
    assert!(
        routes[3].ends_with("(default/plain-too) [Ewma]"),
        "{routes:?}"
    );
}

#[test]
fn the_default_backend_flag_stands_in_when_no_ingress_sets_one() {
    let service = |name: &str| crate::model::ServiceBackendRef {
        namespace: "default".into(),
        service: name.into(),
        port: crate::model::ServicePortRef::Name("http".into()),
    };
    let flag = Options {
        default_backend: Some(service("a")),
        ..Options::default()
    };
    let (routes, backends, diags) = translate_text(SVC_A, &flag);
    assert_eq!(routes, ["default Prefix / -> default/a:http (default/a)"]);
    assert_eq!(
        backends,
        ["default/a:http = 10.0.0.1:8080,10.0.0.2:8080,[fd00::1]:8080"]
    );
    assert!(diags.is_empty(), "{diags:?}");

    // An Ingress default backend wins over the flag.
    let with_ingress = format!(
        "{SVC_A}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: d}}
spec: {{defaultBackend: {{service: {{name: a, port: {{number: 81}}}}}}}}
"
    );
    let (routes, _, _) = translate_text(&with_ingress, &flag);
    assert_eq!(routes, ["default Prefix / -> default/a:81 (default/d)"]);

    // A flag naming a missing Service: a diagnostic on that Service, and a 503 backend.
    let missing = Options {
        default_backend: Some(service("nope")),
        ..Options::default()
    };
    let (routes, backends, diags) = translate_text(SVC_A, &missing);
    assert_eq!(
        routes,
        ["default Prefix / -> default/nope:http (default/nope)"]
    );
    assert_eq!(
        backends,
        ["default/nope:http unavailable: service default/nope not found"]
    );
    assert_eq!(
        diags,
        ["Service default/nope: --default-backend (name): service default/nope not found"]
    );
}

#[test]
fn only_ready_and_not_terminating_endpoints_take_new_requests() {
    let yaml = "
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
endpoints:
- {addresses: [10.0.0.1]}
- {addresses: [10.0.0.2], conditions: {ready: true}}
- {addresses: [10.0.0.3], conditions: {ready: true, serving: true, terminating: false}}
- {addresses: [10.0.0.4], conditions: {serving: true}}
- {addresses: [10.0.0.5], conditions: {ready: false}}
- {addresses: [10.0.0.6], conditions: {ready: false, serving: true, terminating: true}}
- {addresses: [10.0.0.7], conditions: {serving: true, terminating: true}}
- {addresses: [10.0.0.8], conditions: {serving: false}}
- {addresses: [10.0.0.9], conditions: {ready: false, serving: false, terminating: true}}
- {addresses: [10.0.0.10], conditions: {ready: true, terminating: true}}
";
    let (_, backends, diags) = translate_text(yaml, &Options::default());
    assert_eq!(
        backends,
        ["default/s:80 = 10.0.0.1:80,10.0.0.2:80,10.0.0.3:80,10.0.0.4:80"]
    );
    assert!(diags.is_empty(), "{diags:?}");
}
