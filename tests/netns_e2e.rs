//! End to end through the real data path, in network namespaces (see `integration_tests::netns`):
//! a client namespace sends HTTP to the node address on port 80 over a veth where the daemon has
//! attached XDP natively; XDP steers each connection to a worker port, TC restores the port on the
//! replies, the worker routes by the cafe manifests to demo backends in a backend namespace.
//!
//! Asserts the response bodies (which replica answered), the XDP/TC counters read from the pinned
//! map (so the traffic was steered, not served by the SO_REUSEPORT fallback), zero TCP checksum
//! errors in every namespace, and a clean exit that removes the pins. Run once with the veth
//! offloads as they come, once with transmit checksums computed in software (so every receiver
//! verifies the checksums XDP and TC rewrote).
//!
//! HTTPS the same way: the client namespace connects to port 443 with SNI, XDP steers, the worker
//! terminates TLS with the certificate of the Ingress's `spec.tls` Secret (HTTP/2 by ALPN and
//! HTTP/1.1) and proxies to the coffee replicas.

use ingress_common::{map_name, Counter};
use integration_tests::{
    e2e::{field, http_get, node_http, Cafe},
    netns::{in_netns, Topology},
    require_root,
    tls::{client_config, tls_ingress, tls_secret, Ca, Https, Trust},
};

#[test]
fn cafe_through_xdp_with_offloads() {
    if require_root("cafe_through_xdp_with_offloads").is_err() {
        return;
    }
    cafe_end_to_end(false);
}

#[test]
fn cafe_through_xdp_with_software_checksums() {
    if require_root("cafe_through_xdp_with_software_checksums").is_err() {
        return;
    }
    cafe_end_to_end(true);
}

fn cafe_end_to_end(software_checksums: bool) {
    let cafe = Cafe::new(software_checksums);
    let topo = &cafe.topo;
    let mut daemon = cafe.daemon(&[]);
    let csum_before = [&topo.client, &topo.node, &topo.backend].map(Topology::tcp_checksum_errors);

    let node = node_http();
    let mut coffee_servers = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let (status, body) = http_get(
            &topo.client.name,
            node,
            "cafe.example.com",
            "/coffee?size=large",
        );
        assert_eq!(status, 200, "{body}\n{}", daemon.log());
        assert!(body.contains("URI: /coffee?size=large"), "{body}");
        let name = field(&body, "Server name").to_owned();
        assert!(name.starts_with("coffee-"), "/coffee answered by {name}");
        coffee_servers.insert(name);
    }
    assert_eq!(
        coffee_servers.len(),
        2,
        "round robin must reach both coffee replicas: {coffee_servers:?}"
    );
    let (status, body) = http_get(&topo.client.name, node, "cafe.example.com", "/tea");
    assert_eq!(
        (status, field(&body, "Server name")),
        (200, "tea-1"),
        "{body}"
    );
    let (status, _) = http_get(&topo.client.name, node, "cafe.example.com", "/other");
    assert_eq!(status, 404);
    let (status, _) = http_get(&topo.client.name, node, "unknown.example.com", "/coffee");
    assert_eq!(status, 404);

    // 11 connections: each has at least SYN, ACK and the request steered, and replies restored.
    let counters = daemon.counters();
    assert_carried_by_xdp(&vec![0; counters.len()], &counters, 33, 22);

    let csum_after = [&topo.client, &topo.node, &topo.backend].map(Topology::tcp_checksum_errors);
    assert_eq!(
        csum_before, csum_after,
        "TCP checksum errors (client, node, backend)"
    );

    let pins = daemon.pin_dir();
    assert!(pins.join(map_name::COUNTERS).exists());
    let status = daemon.stop();
    assert!(status.success(), "exit {status}:\n{}", daemon.log());
    assert!(!pins.exists(), "pins left behind at {}", pins.display());
}

#[test]
fn cafe_https_through_xdp_with_sni() {
    if require_root("cafe_https_through_xdp_with_sni").is_err() {
        return;
    }
    let cafe = Cafe::new(false);
    let ca = Ca::new();
    let pair = ca.ecdsa(&["secure.example.com"]);
    let manifests = format!(
        "{}---\n{}",
        tls_secret("secure-cert", &pair),
        tls_ingress(
            "secure",
            &[],
            &[(&["secure.example.com"], "secure-cert")],
            &[("secure.example.com", "coffee-svc")],
        )
    );
    std::fs::write(cafe.manifests.join("secure.yaml"), manifests).unwrap();
    let mut daemon = cafe.daemon(&["--https-port", "443"]);
    let before = daemon.counters();

    let node: std::net::SocketAddr = format!("{}:443", Topology::NODE_ADDR).parse().unwrap();
    let config = client_config(&ca, Trust::TestCa, &["h2", "http/1.1"]);
    let h1_only = client_config(&ca, Trust::TestCa, &["http/1.1"]);
    let results = in_netns(&cafe.topo.client.name, move || {
        let https = Https::new();
        let mut out = Vec::new();
        for config in [&config, &h1_only, &config] {
            let mut conn = https
                .connect(node, "secure.example.com", config)
                .unwrap_or_else(|e| panic!("{e}"));
            let got = conn.get("secure.example.com", "/coffee/hot");
            out.push((conn.session.clone(), got));
        }
        out
    });
    let mut versions = Vec::new();
    for (session, got) in results {
        assert_eq!(
            session.leaf, pair.leaf_der,
            "the certificate of the Secret for this SNI was served"
        );
        let (resp, version) = got.unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
        assert_eq!(resp.status, 200, "{}\n{}", resp.body, daemon.log());
        assert!(resp.body.contains("URI: /coffee/hot"), "{}", resp.body);
        assert!(
            field(&resp.body, "Server name").starts_with("coffee-"),
            "{}",
            resp.body
        );
        assert_eq!(
            field(&resp.body, "X-Forwarded-Proto"),
            "https",
            "{}",
            resp.body
        );
        versions.push(version);
    }
    assert_eq!(
        versions,
        [
            http::Version::HTTP_2,
            http::Version::HTTP_11,
            http::Version::HTTP_2
        ]
    );

    // Three connections: each has at least SYN, ACK, ClientHello, Finished and the request
    // steered by XDP (not served by the SO_REUSEPORT fallback), and replies restored by TC.
    assert_carried_by_xdp(&before, &daemon.counters(), 15, 9);
    let status = daemon.stop();
    assert!(status.success(), "exit {status}:\n{}", daemon.log());
}

/// Between the counter readings `before` and `after`: at least `steered` packets steered by XDP
/// (not served by the SO_REUSEPORT fallback) and `restored` replies restored by TC; nothing
/// malformed, no failed rewrite.
fn assert_carried_by_xdp(before: &[u64], after: &[u64], steered: u64, restored: u64) {
    let delta = |c: Counter| after[c as usize] - before[c as usize];
    assert!(
        delta(Counter::XdpSteered) >= steered,
        "steered {} packets: XDP did not carry the traffic\n{after:?}",
        delta(Counter::XdpSteered)
    );
    assert!(
        delta(Counter::TcRestored) >= restored,
        "restored {} packets\n{after:?}",
        delta(Counter::TcRestored)
    );
    assert_eq!(delta(Counter::XdpPassMalformed), 0, "{after:?}");
    assert_eq!(delta(Counter::TcRewriteFailed), 0, "{after:?}");
}
