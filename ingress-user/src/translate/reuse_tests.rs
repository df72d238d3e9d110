//! `Translator` (reuse of the previous build) against `translate_with` (from scratch): after each
//! kind of change, the incremental snapshot and diagnostics equal the fresh ones, the backends
//! whose objects did not change are the previous build's (same `Arc`), and the others are not;
//! likewise each host's route table (`route_reuse`).
use std::sync::Arc;

use k8s_openapi::{api::core::v1::Secret, ByteString};

use super::{tls_tests, translate_with, Options, Translator};
use crate::{model::Snapshot, source::Inputs};

/// Services `a` (two slices, one with a bad address), `b`, `s` (named by a proxy-ssl-secret
/// Ingress); Ingresses on `a`, `b` (EWMA), `s` (HTTPS, CA from Secret `ca`), `gone` (no such
/// Service) and one conflicting with `one`.
const BASE: &str = "
apiVersion: v1
kind: Service
metadata: {name: a, namespace: web}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-1, namespace: web, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1, 10.0.0.2]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-2, namespace: web, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.3, not-an-ip]}]
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: web}
spec: {ports: [{port: 81}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: b-1, namespace: web, labels: {kubernetes.io/service-name: b}}
addressType: IPv4
ports: [{port: 9090}]
endpoints: [{addresses: [10.0.1.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: web}
spec: {ports: [{port: 443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: web, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8443}]
endpoints: [{addresses: [10.0.2.1]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: one, namespace: web, creationTimestamp: '2020-01-01T00:00:00Z'}
spec:
  rules:
  - host: one.example
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: two
  namespace: web
  annotations: {xdp-ingress.io/load-balance: ewma}
spec:
  rules:
  - host: two.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: b, port: {number: 81}}}}
      - {path: /a, pathType: Exact, backend: {service: {name: a, port: {name: http}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: tls
  namespace: web
  annotations: {xdp-ingress.io/backend-protocol: HTTPS, xdp-ingress.io/proxy-ssl-secret: ca}
spec:
  rules:
  - host: tls.example
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 443}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: gone, namespace: web}
spec:
  rules:
  - host: gone.example
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: nothere, port: {number: 80}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: late, namespace: web, creationTimestamp: '2021-01-01T00:00:00Z'}
spec:
  rules:
  - host: one.example
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: b, port: {number: 81}}}}]
";

fn base() -> Inputs {
    let mut inputs = Inputs::from_yaml(BASE).unwrap();
    inputs
        .secrets
        .push(Arc::new(ca_secret(&tls_tests::ca("upstream root").pem())));
    inputs
}

fn ca_secret(ca: &str) -> Secret {
    let mut s = tls_tests::secret("ca", "kubernetes.io/tls", &[("ca.crt", ca)]);
    s.metadata.namespace = Some("web".into());
    s
}

/// Replaces the object `name` of `list` by an edited copy (a new `Arc`, as a source would).
/// Moves the first endpoint of slice `a-1` to `addr`.
fn set_a1_address(i: &mut Inputs, addr: &str) {
    edit(
        &mut i.endpoint_slices,
        |o| o.metadata.name.as_ref(),
        "a-1",
        |o| o.endpoints.as_mut().unwrap()[0].addresses = vec![addr.into()],
    )
}

fn edit<T: Clone>(
    list: &mut [Arc<T>],
    name: impl Fn(&T) -> Option<&String>,
    wanted: &str,
    f: impl FnOnce(&mut T),
) {
    let slot = list
        .iter_mut()
        .find(|o| name(o).map(String::as_str) == Some(wanted))
        .unwrap_or_else(|| panic!("no object {wanted}"));
    let mut copy = T::clone(slot);
    f(&mut copy);
    *slot = Arc::new(copy);
}

/// `service:port Strategy` of a backend.
fn label(b: &crate::model::Backend) -> String {
    format!("{}:{} {:?}", b.service.service, b.service.port, b.strategy)
}

/// The backend labelled `wanted` in `s`.
fn backend<'a>(s: &'a Snapshot, wanted: &str) -> Option<&'a Arc<crate::model::Backend>> {
    s.backends.iter().find(|b| label(b) == wanted)
}

/// Every backend of `base`, sorted.
const ALL: [&str; 5] = [
    "a:80 RoundRobin",
    "a:http Ewma",
    "b:81 Ewma",
    "nothere:80 RoundRobin",
    "s:443 RoundRobin",
];

/// Every host of `base`.
const HOSTS: [&str; 4] = ["gone.example", "one.example", "tls.example", "two.example"];

/// Builds `base`, then `changed` incrementally; checks it against a fresh build, and that of
/// the backends in `ALL` still there, those of `kept` are the first build's and no other is;
/// likewise the route tables of the hosts in `HOSTS` and `hosts_kept`.
fn check(name: &str, change: impl FnOnce(&mut Inputs), kept: &[&str], hosts_kept: &[&str]) {
    let options = Options::default();
    let mut translator = Translator::new(options.clone());
    let inputs = base();
    let (first, first_diags) = translator.translate(&inputs);
    assert_eq!(
        (&first, &first_diags),
        (
            &translate_with(&inputs, &options).0,
            &translate_with(&inputs, &options).1
        ),
        "{name}: first build"
    );
    let mut changed = inputs.clone();
    change(&mut changed);
    let (got, got_diags) = translator.translate(&changed);
    let (want, want_diags) = translate_with(&changed, &options);
    assert_eq!(got, want, "{name}: snapshot");
    assert_eq!(got_diags, want_diags, "{name}: diagnostics");
    let mut all: Vec<_> = first.backends.iter().map(|b| label(b)).collect();
    all.sort();
    assert_eq!(all, ALL, "{name}: the first build's backends");
    for s in ALL {
        let (Some(before), Some(after)) = (backend(&first, s), backend(&got, s)) else {
            assert!(!kept.contains(&s), "{name}: backend {s} is gone");
            continue;
        };
        let reused = Arc::ptr_eq(before, after);
        assert_eq!(
            reused,
            kept.contains(&s),
            "{name}: backend {s} reused: {reused}"
        );
    }
    for h in HOSTS {
        let (Some(before), Some(after)) = (first.routes.hosts.get(h), got.routes.hosts.get(h))
        else {
            assert!(!hosts_kept.contains(&h), "{name}: host {h} is gone");
            continue;
        };
        let reused = Arc::ptr_eq(before, after);
        assert_eq!(
            reused,
            hosts_kept.contains(&h),
            "{name}: routes of {h} reused: {reused}"
        );
    }
    // Publishing carries state over from the previous snapshot without touching shared ones.
    got.inherit(&first);
}

#[test]
fn unchanged_inputs_reuse_every_backend() {
    check("nothing", |_| {}, &ALL, &HOSTS);
}

#[test]
fn ingress_edit_reuses_every_backend_still_named() {
    // `one` moves to /moved: `late` now wins one.example / (a new backend, b:81 round robin).
    check(
        "ingress edit",
        |i| {
            edit(
                &mut i.ingresses,
                |o| o.metadata.name.as_ref(),
                "one",
                |o| {
                    let rule = &mut o.spec.as_mut().unwrap().rules.as_mut().unwrap()[0];
                    rule.http.as_mut().unwrap().paths[0].path = Some("/moved".into());
                },
            )
        },
        &ALL,
        &["gone.example", "tls.example", "two.example"],
    );
}

#[test]
fn ingress_annotation_edit_changes_its_backends_keys() {
    // `two` drops EWMA: its backends become round robin (a:http is new, b:81 too).
    check(
        "annotation edit",
        |i| {
            edit(
                &mut i.ingresses,
                |o| o.metadata.name.as_ref(),
                "two",
                |o| {
                    o.metadata.annotations = None;
                },
            )
        },
        &[
            "a:80 RoundRobin",
            "nothere:80 RoundRobin",
            "s:443 RoundRobin",
        ],
        &["gone.example", "one.example", "tls.example"],
    );
}

#[test]
fn endpoint_slice_edit_rebuilds_only_its_service() {
    check(
        "slice edit",
        |i| set_a1_address(i, "10.0.0.9"),
        &["b:81 Ewma", "nothere:80 RoundRobin", "s:443 RoundRobin"],
        &["gone.example", "tls.example"],
    );
}

#[test]
fn endpoint_slice_removed_rebuilds_only_its_service() {
    check(
        "slice removed",
        |i| {
            i.endpoint_slices
                .retain(|s| s.metadata.name.as_deref() != Some("a-2"))
        },
        &["b:81 Ewma", "nothere:80 RoundRobin", "s:443 RoundRobin"],
        &["gone.example", "tls.example"],
    );
}

#[test]
fn service_removed_rebuilds_only_its_backends() {
    check(
        "service removed",
        |i| {
            i.services
                .retain(|s| s.metadata.name.as_deref() != Some("b"))
        },
        &[
            "a:80 RoundRobin",
            "a:http Ewma",
            "nothere:80 RoundRobin",
            "s:443 RoundRobin",
        ],
        &["gone.example", "one.example", "tls.example"],
    );
}

#[test]
fn service_added_resolves_the_backend_that_named_it() {
    let added = Inputs::from_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: nothere, namespace: web}\n\
         spec: {ports: [{port: 80}]}\n",
    )
    .unwrap();
    check(
        "service added",
        |i| i.services.extend(added.services),
        &[
            "a:80 RoundRobin",
            "a:http Ewma",
            "b:81 Ewma",
            "s:443 RoundRobin",
        ],
        &["one.example", "tls.example", "two.example"],
    );
}

#[test]
fn secret_change_rebuilds_the_backend_reading_it() {
    let others = [
        "a:80 RoundRobin",
        "a:http Ewma",
        "b:81 Ewma",
        "nothere:80 RoundRobin",
    ];
    check(
        "secret changed",
        |i| {
            edit(
                &mut i.secrets,
                |o| o.metadata.name.as_ref(),
                "ca",
                |o| {
                    let data = o.data.as_mut().unwrap();
                    data.insert("ca.crt".into(), ByteString(b"not a certificate".to_vec()));
                },
            )
        },
        &others,
        &["gone.example", "one.example", "two.example"],
    );
    let hosts = ["gone.example", "one.example", "two.example"];
    check("secret removed", |i| i.secrets.clear(), &others, &hosts);
}

#[test]
fn ingress_removed_and_added_touch_only_their_hosts() {
    check(
        "ingress removed",
        |i| {
            i.ingresses
                .retain(|o| o.metadata.name.as_deref() != Some("gone"))
        },
        &[
            "a:80 RoundRobin",
            "a:http Ewma",
            "b:81 Ewma",
            "s:443 RoundRobin",
        ],
        &["one.example", "tls.example", "two.example"],
    );
    let added = Inputs::from_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: new, namespace: web}\n\
         spec:\n  rules:\n  - host: new.example\n    http:\n      paths: [{path: /, pathType: Prefix, \
         backend: {service: {name: a, port: {number: 80}}}}]\n",
    )
    .unwrap();
    check(
        "ingress added",
        |i| i.ingresses.extend(added.ingresses),
        &ALL,
        &HOSTS,
    );
}

#[test]
fn a_lost_conflict_moves_the_route_to_the_next_oldest_ingress() {
    // `one` (older) leaves one.example: `late`'s claim on it wins now, with its own backend.
    check(
        "winner removed",
        |i| {
            i.ingresses
                .retain(|o| o.metadata.name.as_deref() != Some("one"))
        },
        &[
            "a:http Ewma",
            "b:81 Ewma",
            "nothere:80 RoundRobin",
            "s:443 RoundRobin",
        ],
        &["gone.example", "tls.example", "two.example"],
    );
}

#[test]
fn endpoint_slice_moved_to_another_service_rebuilds_both() {
    check(
        "slice moved",
        |i| {
            edit(
                &mut i.endpoint_slices,
                |o| o.metadata.name.as_ref(),
                "a-2",
                |o| {
                    let labels = o.metadata.labels.as_mut().unwrap();
                    labels.insert(super::SERVICE_NAME_LABEL.into(), "b".into());
                },
            )
        },
        &["nothere:80 RoundRobin", "s:443 RoundRobin"],
        &["gone.example", "tls.example"],
    );
}

#[test]
fn many_changes_in_a_row_match_fresh_builds() {
    // Edit, remove and restore objects one build after the other: the index and the reused
    // backends must follow every step.
    let options = Options::default();
    let mut translator = Translator::new(options.clone());
    let mut inputs = base();
    type Step = Box<dyn Fn(&mut Inputs)>;
    let steps: Vec<Step> = vec![
        Box::new(|i| {
            i.endpoint_slices
                .retain(|s| s.metadata.name.as_deref() != Some("b-1"))
        }),
        Box::new(|i| {
            i.services
                .retain(|s| s.metadata.name.as_deref() != Some("a"))
        }),
        Box::new(|i| {
            let back = base();
            i.services = back.services;
            i.endpoint_slices = back.endpoint_slices;
        }),
        Box::new(|i| set_a1_address(i, "10.0.0.7")),
        Box::new(|_| {}),
    ];
    for (n, step) in steps.iter().enumerate() {
        step(&mut inputs);
        let (got, got_diags) = translator.translate(&inputs);
        let (want, want_diags) = translate_with(&inputs, &options);
        assert_eq!(got, want, "step {n}: snapshot");
        assert_eq!(got_diags, want_diags, "step {n}: diagnostics");
    }
}
