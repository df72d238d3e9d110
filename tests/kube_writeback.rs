//! Kubernetes mode, writing back: Ingress status and Events, written by the leader only
//! (a coordination.k8s.io Lease), through the real daemon binary against the in-repo fake API
//! server (`integration_tests::fakeapi`). Worker-port bases 3000-6000, 17000, 19000, 30000,
//! 31000 (ranges no other test of this binary uses).
//!
//! Covered:
//! - the leader writes `status.loadBalancer.ingress` from `--publish-status-address` (an IP and a
//!   host name), once: unrelated changes write nothing; it clears it when the Ingress leaves our
//!   class;
//! - without flags, the addresses of the nodes that run Ready pods with our Pod's labels
//!   (ExternalIP over InternalIP, deduplicated, sorted), re-published when a pod becomes Ready,
//!   nothing written for changes that do not move them; without our Pod, nothing and a log line;
//! - `--publish-service`: a LoadBalancer Service's ingress addresses, re-published on change;
//! - objects only foreign-class Ingresses use (a bad EndpointSlice, a missing TLS Secret) get no
//!   Events, and an Ingress of ours that had a Warning and moves to another class gets no
//!   `Recovered` Event;
//! - a bad Ingress gets a Warning Event (stable reason, the field in the note), a foreign one none,
//!   and a fixed one a Normal `Recovered` Event;
//! - two daemons: only one leads; when it stops it releases the Lease and the other takes over
//!   and keeps status in step.
use std::{net::SocketAddr, time::Duration};

use integration_tests::{
    daemon::{poll, yaml, Daemon},
    fakeapi::{Cluster, Kind},
};
use serde_json::{json, Value};

const HOST: &str = "cafe.example.com";
const CONVERGE: Duration = Duration::from_secs(15);
const LEASE_NAMESPACE: &str = "xdp-ingress";

/// The write-back fixtures these tests add to the fake API server.
trait StatusCluster {
    fn elected_daemon(&self, worker_port_base: u16, extra: &[&str]) -> Daemon;
    fn leading_daemon(&self, worker_port_base: u16, extra: &[&str]) -> Daemon;
    fn status(&self, name: &str) -> Value;
    fn status_writes(&self, name: &str) -> usize;
    fn events(&self) -> Vec<Value>;
    fn cafe(&self, coffee: SocketAddr, extra: &[(&str, &str)]);
}

impl StatusCluster for Cluster {
    /// The daemon with leader election in `LEASE_NAMESPACE` (plus `extra`).
    fn elected_daemon(&self, worker_port_base: u16, extra: &[&str]) -> Daemon {
        let mut args = vec!["--election-namespace", LEASE_NAMESPACE];
        args.extend_from_slice(extra);
        self.daemon(worker_port_base, &args)
    }

    /// The daemon with leader election and status addresses (plus `extra`).
    fn leading_daemon(&self, worker_port_base: u16, extra: &[&str]) -> Daemon {
        let mut args = vec!["--publish-status-address", "192.0.2.10,lb.example.com"];
        args.extend_from_slice(extra);
        self.elected_daemon(worker_port_base, &args)
    }

    /// Our class, the cafe Ingress (/coffee, plus `extra` paths), coffee-svc with one endpoint.
    fn cafe(&self, coffee: SocketAddr, extra: &[(&str, &str)]) {
        self.api.apply_yaml(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: xdp-ingress}\n\
             spec: {controller: xdp-ingress.io/controller}\n",
        );
        let mut paths = vec![("/coffee", "coffee-svc")];
        paths.extend_from_slice(extra);
        self.api.apply_yaml(&yaml::ingress("cafe", HOST, &paths));
        self.api
            .apply_yaml(&yaml::service_with_endpoints("coffee-svc", &[coffee]));
    }

    fn status(&self, name: &str) -> Value {
        let ingress = self
            .api
            .get(Kind::Ingress, "default", name)
            .expect("ingress");
        ingress
            .pointer("/status/loadBalancer/ingress")
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn status_writes(&self, name: &str) -> usize {
        let path = format!("/ingresses/{name}/status");
        self.api
            .requests()
            .iter()
            .filter(|r| r.starts_with("PATCH") && r.contains(&path))
            .count()
    }

    fn events(&self) -> Vec<Value> {
        self.api.objects(Kind::Event)
    }
}

fn ours() -> Value {
    json!([{"ip": "192.0.2.10"}, {"hostname": "lb.example.com"}])
}

fn event_summary(e: &Value) -> String {
    format!(
        "{} {} {}/{}: {}",
        e["type"].as_str().unwrap_or("?"),
        e["reason"].as_str().unwrap_or("?"),
        e.pointer("/regarding/namespace")
            .and_then(Value::as_str)
            .unwrap_or("?"),
        e.pointer("/regarding/name")
            .and_then(Value::as_str)
            .unwrap_or("?"),
        e["note"].as_str().unwrap_or(""),
    )
}

#[test]
fn leader_writes_status_once_and_clears_it_when_the_ingress_leaves_our_class() {
    let c = Cluster::new();
    let c1 = c.backends.demo("coffee-1");
    c.cafe(c1, &[]);
    let d = c.leading_daemon(17000, &[]);
    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");

    poll(CONVERGE, "status written", || {
        (c.status("cafe") == ours()).then_some(())
    });
    let lease = c
        .api
        .get(Kind::Lease, LEASE_NAMESPACE, "xdp-ingress-leader")
        .expect("the leader's Lease");
    assert!(
        lease
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .is_some(),
        "{lease}"
    );
    d.log.wait_for(&["became the leader"], CONVERGE);
    assert_eq!(c.status_writes("cafe"), 1);

    // Unrelated changes (and our own status write coming back) write nothing.
    let c2 = c.backends.demo("coffee-2");
    c.api
        .apply_yaml(&yaml::service_with_endpoints("coffee-svc", &[c2]));
    poll(CONVERGE, "coffee-2", || {
        (d.get(HOST, "/coffee").server() == "coffee-2").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.status_writes("cafe"), 1, "{:#?}", c.api.requests());

    // The Ingress leaves our class: we stop serving it and clear our addresses.
    c.api.apply_yaml(
        &yaml::ingress("cafe", HOST, &[("/coffee", "coffee-svc")])
            .replace("ingressClassName: xdp-ingress", "ingressClassName: other"),
    );
    poll(CONVERGE, "status cleared", || {
        c.status("cafe").is_null().then_some(())
    });
    assert_eq!(d.get(HOST, "/coffee").status, 404);
    assert_eq!(c.status_writes("cafe"), 2);
}

#[test]
fn a_bad_ingress_gets_a_warning_event_and_a_normal_one_when_fixed() {
    let c = Cluster::new();
    let c1 = c.backends.demo("coffee-1");
    let g1 = c.backends.demo("ghost-1");
    c.cafe(c1, &[("/ghost", "ghost-svc")]);
    // A foreign, broken Ingress: no Event may name it.
    c.api.apply_yaml(
        &yaml::ingress("foreign", "foreign.example", &[("/", "missing-svc")])
            .replace("ingressClassName: xdp-ingress", "ingressClassName: other"),
    );
    let d = c.leading_daemon(19000, &[]);
    assert_eq!(d.get(HOST, "/ghost").status, 503);

    let warning = poll(CONVERGE, "a Warning Event", || {
        c.events()
            .iter()
            .map(event_summary)
            .find(|e| e.starts_with("Warning"))
    });
    assert_eq!(
        warning,
        "Warning BackendUnavailable default/cafe: spec.rules[0].http.paths[1].backend.service.name: \
         service default/ghost-svc not found"
    );
    let event = &c.events()[0];
    assert_eq!(event.pointer("/regarding/kind"), Some(&json!("Ingress")));
    assert!(event.pointer("/regarding/uid").is_some(), "{event}");
    assert_eq!(
        event.pointer("/reportingController"),
        Some(&json!("xdp-ingress.io/controller"))
    );

    // Fixed: the Service appears; one Normal Event, and it is served.
    c.api
        .apply_yaml(&yaml::service_with_endpoints("ghost-svc", &[g1]));
    poll(CONVERGE, "a Recovered Event", || {
        c.events()
            .iter()
            .map(event_summary)
            .find(|e| e.starts_with("Normal Recovered default/cafe"))
    });
    assert_eq!(d.get(HOST, "/ghost").server(), "ghost-1");
    let all: Vec<_> = c.events().iter().map(event_summary).collect();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(!all.iter().any(|e| e.contains("foreign")), "{all:#?}");
}

#[test]
fn only_one_daemon_leads_and_the_other_takes_over_when_it_stops() {
    let c = Cluster::new();
    let c1 = c.backends.demo("coffee-1");
    c.cafe(c1, &[]);
    let fast = ["--lease-seconds", "2"];
    let mut a = c.leading_daemon(30000, &fast);
    a.log.wait_for(&["became the leader"], CONVERGE);
    let b = c.leading_daemon(31000, &fast);
    poll(CONVERGE, "status written", || {
        (c.status("cafe") == ours()).then_some(())
    });
    // b follows: it serves, but does not lead (several lease periods).
    assert_eq!(b.get(HOST, "/coffee").server(), "coffee-1");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        b.log.lines_with(&["became the leader"]).is_empty(),
        "{}",
        b.log.text()
    );
    assert_eq!(c.status_writes("cafe"), 1);

    // a stops and hands the Lease over; b leads, with nothing to write (status is in place).
    a.interrupt();
    assert!(
        a.wait_exit(Duration::from_secs(15)).is_some(),
        "a did not exit"
    );
    a.log
        .wait_for(&["leadership released"], Duration::from_secs(1));
    b.log.wait_for(&["became the leader"], CONVERGE);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.status_writes("cafe"), 1);
    // b keeps status in step.
    c.api.apply_yaml(
        &yaml::ingress("cafe", HOST, &[("/coffee", "coffee-svc")])
            .replace("ingressClassName: xdp-ingress", "ingressClassName: other"),
    );
    poll(CONVERGE, "status cleared by b", || {
        c.status("cafe").is_null().then_some(())
    });
}

/// Our pods (label `app.kubernetes.io/name: xdp-ingress`, each with its own revision hash) and
/// others in `LEASE_NAMESPACE`: `(name, app, node, ready)`.
fn pods(c: &Cluster, pods: &[(&str, &str, &str, bool)]) {
    for (i, (name, app, node, ready)) in pods.iter().enumerate() {
        c.api.apply_yaml(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {LEASE_NAMESPACE}\n  \
             labels: {{app.kubernetes.io/name: {app}, controller-revision-hash: rev{i}}}\n\
             spec: {{nodeName: {node}, containers: [{{name: c, image: x}}]}}\n\
             status:\n  phase: Running\n  conditions: [{{type: Ready, status: '{}'}}]\n",
            if *ready { "True" } else { "False" }
        ));
    }
}

/// A Node with `(type, address)` addresses.
fn node(c: &Cluster, name: &str, addresses: &[(&str, &str)]) {
    let list: Vec<String> = addresses
        .iter()
        .map(|(t, a)| format!("{{type: {t}, address: '{a}'}}"))
        .collect();
    c.api.apply_yaml(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus: {{addresses: [{}]}}\n",
        list.join(", ")
    ));
}

/// Waits until the cafe Ingress's status is `want`, then checks that it took `writes` writes in
/// all.
fn status_settles(c: &Cluster, what: &str, want: Value, writes: usize) {
    poll(CONVERGE, what, || (c.status("cafe") == want).then_some(()));
    assert_eq!(c.status_writes("cafe"), writes, "{:#?}", c.api.requests());
}

fn ips(addresses: &[&str]) -> Value {
    Value::Array(addresses.iter().map(|a| json!({"ip": a})).collect())
}

#[test]
fn node_addresses_of_our_ready_pods_are_published_and_follow_them() {
    let c = Cluster::new();
    let c1 = c.backends.demo("coffee-1");
    c.cafe(c1, &[]);
    pods(
        &c,
        &[
            ("xdp-a", "xdp-ingress", "node-a", true),
            // Two of ours on node-b (an update's surge pod): one address.
            ("xdp-b", "xdp-ingress", "node-b", true),
            ("xdp-b2", "xdp-ingress", "node-b", true),
            ("xdp-c", "xdp-ingress", "node-c", false),
            ("web", "web", "node-d", true),
        ],
    );
    node(
        &c,
        "node-a",
        &[
            ("InternalIP", "10.0.0.1"),
            ("ExternalIP", "198.51.100.1"),
            ("Hostname", "a"),
        ],
    );
    node(&c, "node-b", &[("InternalIP", "10.0.0.20")]);
    node(&c, "node-c", &[("InternalIP", "10.0.0.3")]);
    node(&c, "node-d", &[("InternalIP", "10.0.0.4")]);
    let args = ["--pod-name", "xdp-a", "--pod-namespace", LEASE_NAMESPACE];
    let d = c.elected_daemon(3000, &args);
    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");
    status_settles(
        &c,
        "node addresses written",
        ips(&["10.0.0.20", "198.51.100.1"]),
        1,
    );

    // node-c's pod becomes Ready: its address joins, in order.
    pods(&c, &[("xdp-c", "xdp-ingress", "node-c", true)]);
    status_settles(
        &c,
        "node-c added",
        ips(&["10.0.0.3", "10.0.0.20", "198.51.100.1"]),
        2,
    );

    // Changes that move nothing write nothing: another app's node, a second pod on node-b going.
    node(&c, "node-d", &[("InternalIP", "10.0.0.44")]);
    assert!(c.api.delete(Kind::Pod, LEASE_NAMESPACE, "xdp-b2"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.status_writes("cafe"), 2, "{:#?}", c.api.requests());
    // A node of ours changes its address: re-published.
    node(&c, "node-b", &[("InternalIP", "10.0.0.2")]);
    status_settles(
        &c,
        "node-b moved",
        ips(&["10.0.0.2", "10.0.0.3", "198.51.100.1"]),
        3,
    );
}

#[test]
fn without_our_own_pod_no_status_is_written_and_the_log_says_why() {
    let c = Cluster::new();
    let c1 = c.backends.demo("coffee-1");
    c.cafe(c1, &[]);
    pods(&c, &[("xdp-a", "xdp-ingress", "node-a", true)]);
    node(&c, "node-a", &[("InternalIP", "10.0.0.1")]);
    let mut d = c.elected_daemon(4000, &[]);
    d.log.wait_for(
        &[
            "cannot identify our own Pod",
            "POD_NAME",
            "Ingress status is not written",
        ],
        CONVERGE,
    );
    d.interrupt();
    assert!(d.wait_exit(Duration::from_secs(15)).is_some());
    let d = c.elected_daemon(5000, &["--pod-name", "ghost"]);
    d.log.wait_for(
        &[
            "cannot identify our own Pod",
            "does not exist",
            "default/ghost",
        ],
        CONVERGE,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.status("cafe"), Value::Null);
    assert_eq!(c.status_writes("cafe"), 0);
}

#[test]
fn publish_service_load_balancer_addresses_are_published_and_follow_the_service() {
    let c = Cluster::new();
    let c1 = c.backends.demo("coffee-1");
    c.cafe(c1, &[]);
    let lb = |ingress: &str, annotation: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: lb, namespace: {LEASE_NAMESPACE}, \
             annotations: {{note: '{annotation}'}}}}\nspec: {{type: LoadBalancer, clusterIP: 10.96.0.9, \
             ports: [{{port: 80}}]}}\nstatus: {{loadBalancer: {{ingress: [{ingress}]}}}}\n"
        )
    };
    c.api
        .apply_yaml(&lb("{hostname: lb.example.net}, {ip: 203.0.113.7}", "a"));
    let d = c.elected_daemon(6000, &["--publish-service", "xdp-ingress/lb"]);
    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");
    let want = json!([{"ip": "203.0.113.7"}, {"hostname": "lb.example.net"}]);
    status_settles(&c, "the Service's addresses", want, 1);
    // The same addresses in another order, and another annotation: nothing to write.
    c.api
        .apply_yaml(&lb("{ip: 203.0.113.7}, {hostname: lb.example.net}", "b"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.status_writes("cafe"), 1, "{:#?}", c.api.requests());
    // The load balancer moves: re-published.
    c.api.apply_yaml(&lb("{ip: 203.0.113.8}", "b"));
    status_settles(&c, "the new address", ips(&["203.0.113.8"]), 2);
}

#[test]
fn objects_that_only_foreign_ingresses_use_get_no_events_and_leavers_no_recovered() {
    let c = Cluster::new();
    let c1 = c.backends.demo("coffee-1");
    c.cafe(c1, &[("/ghost", "ghost-svc")]);
    // Foreign: a TLS Secret that does not exist, and a Service whose only slice is unusable.
    c.api.apply_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: foreign, namespace: default}\n\
         spec:\n  ingressClassName: other\n  tls: [{hosts: [foreign.example], secretName: missing-tls}]\n  \
         rules:\n  - host: foreign.example\n    http:\n      paths:\n      - {path: /, pathType: Prefix, \
         backend: {service: {name: bad-svc, port: {number: 80}}}}\n",
    );
    c.api.apply_yaml(&yaml::service("bad-svc"));
    c.api.apply_yaml(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: bad-svc-1\n  \
         namespace: default\n  labels: {kubernetes.io/service-name: bad-svc}\naddressType: FQDN\n\
         ports: [{name: http, port: 80, protocol: TCP}]\nendpoints: [{addresses: [bad.example]}]\n",
    );
    let d = c.leading_daemon(8000, &[]);
    poll(CONVERGE, "the Warning on cafe", || {
        c.events()
            .iter()
            .map(event_summary)
            .find(|e| e.starts_with("Warning BackendUnavailable default/cafe"))
    });
    // cafe leaves our class: its status is cleared (a round ran), and it is told nothing more.
    c.api.apply_yaml(
        &yaml::ingress(
            "cafe",
            HOST,
            &[("/coffee", "coffee-svc"), ("/ghost", "ghost-svc")],
        )
        .replace("ingressClassName: xdp-ingress", "ingressClassName: other"),
    );
    poll(CONVERGE, "status cleared", || {
        c.status("cafe").is_null().then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let all: Vec<_> = c.events().iter().map(event_summary).collect();
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(
        all[0].starts_with("Warning BackendUnavailable default/cafe"),
        "{all:#?}"
    );
    for word in ["foreign", "bad-svc", "missing-tls"] {
        assert!(
            !d.log.text().contains(word),
            "{word} in the log:\n{}",
            d.log.text()
        );
    }
}
