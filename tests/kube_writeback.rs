//! Kubernetes mode, writing back: Ingress status and Events, written by the leader only
//! (a coordination.k8s.io Lease), through the real daemon binary against the in-repo fake API
//! server (`integration_tests::fakeapi`). Worker-port bases 17000, 19000, 30000, 31000 (ranges no
//! other test uses).
//!
//! Covered:
//! - the leader writes `status.loadBalancer.ingress` from `--publish-status-address` (an IP and a
//!   host name), once: unrelated changes write nothing; it clears it when the Ingress leaves our
//!   class;
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
    fn leading_daemon(&self, worker_port_base: u16, extra: &[&str]) -> Daemon;
    fn status(&self, name: &str) -> Value;
    fn status_writes(&self, name: &str) -> usize;
    fn events(&self) -> Vec<Value>;
    fn cafe(&self, coffee: SocketAddr, extra: &[(&str, &str)]);
}

impl StatusCluster for Cluster {
    /// The daemon with leader election and status addresses (plus `extra`).
    fn leading_daemon(&self, worker_port_base: u16, extra: &[&str]) -> Daemon {
        let mut args = vec![
            "--election-namespace",
            LEASE_NAMESPACE,
            "--publish-status-address",
            "192.0.2.10,lb.example.com",
        ];
        args.extend_from_slice(extra);
        self.daemon(worker_port_base, &args)
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
