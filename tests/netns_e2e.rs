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

use ingress_common::{map_name, Counter};
use integration_tests::{
    e2e::{field, http_get, node_http, Cafe},
    netns::Topology,
    require_root,
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
    let get = |c: Counter| counters[c as usize];
    assert!(
        get(Counter::XdpSteered) >= 33,
        "steered {} packets: XDP did not carry the traffic\n{counters:?}",
        get(Counter::XdpSteered)
    );
    assert!(
        get(Counter::TcRestored) >= 22,
        "restored {} packets\n{counters:?}",
        get(Counter::TcRestored)
    );
    assert_eq!(get(Counter::XdpPassMalformed), 0, "{counters:?}");
    assert_eq!(get(Counter::TcRewriteFailed), 0, "{counters:?}");

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
