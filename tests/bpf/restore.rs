//! TC egress: replies from worker ports get the public source port back (IPv4 with options,
//! IPv6, VLAN, odd payloads), everything else and every truncation passes unchanged; and a
//! connection's round trip through both programs.
use anyhow::{ensure, Context as _, Result};
use ingress_common::Counter;
use integration_tests::packet::{
    diff_offsets, tcp_flags, tcp_ports, Frame, Tcp, ETH_LEN, ETH_P_8021AD, ETH_P_8021Q,
};

use crate::harness::{assert_restored, predict, skip, Bpf, CLIENT, CLIENT6, NODE, NODE6, PUBLIC};

/// A reply from `sport` (a worker port, or not) to the client.
fn reply4(sport: u16, flags: u8) -> Frame {
    Frame::tcp4(NODE, CLIENT, Tcp::new(sport, 43_210, flags))
}

#[test]
fn tc_restores_the_public_source_port() -> Result<()> {
    if skip("tc_restores_the_public_source_port") {
        return Ok(());
    }
    let bpf = Bpf::with_workers(8)?;
    let synack = tcp_flags::SYN | tcp_flags::ACK;
    let body: Vec<u8> = (0..999u32).map(|i| (i * 13) as u8).collect();
    let mut with_options = reply4(18_001, tcp_flags::ACK);
    with_options.ipv4_mut().unwrap().options = vec![1, 1, 1, 1, 1, 1, 1, 0];
    let restored = [
        ("SYN-ACK from 18003", reply4(18_003, synack)),
        (
            "ACK with odd payload from 18007",
            reply4(18_007, tcp_flags::ACK).with_payload(&body),
        ),
        (
            "802.1Q reply from 18000",
            reply4(18_000, synack).with_vlan(ETH_P_8021Q, 12),
        ),
        ("IPv4 options from 18001", with_options),
        (
            "IPv6 reply from 18005",
            Frame::tcp6(NODE6, CLIENT6, Tcp::new(18_005, 43_210, synack)).with_payload(b"hi!"),
        ),
    ];
    for (name, frame) in &restored {
        let input = frame.build();
        let out = bpf.tc(&input).with_context(|| name.to_string())?;
        assert_restored(&input, &out, PUBLIC).with_context(|| name.to_string())?;
    }

    let untouched = [
        (
            "reply from 5555",
            reply4(5555, synack).build(),
            Counter::TcPassNotOurs,
        ),
        (
            "reply from 18008 (no such worker)",
            reply4(18_008, synack).build(),
            Counter::TcPassNotOurs,
        ),
        (
            "UDP from 18003",
            Frame::udp4(NODE, CLIENT, 18_003, 5353, b"x").build(),
            Counter::TcPassNotOurs,
        ),
        (
            "ARP",
            Frame::arp_request(NODE, CLIENT).build(),
            Counter::TcPassNotOurs,
        ),
    ];
    let mut expected = vec![(Counter::TcRestored, restored.len() as u64)];
    for (name, input, counter) in &untouched {
        let out = bpf.tc(input).with_context(|| name.to_string())?;
        ensure!(
            &out == input,
            "{name}: changed at {:?}",
            diff_offsets(input, &out)
        );
        expected.push((*counter, 1));
    }

    // Truncated replies from a worker. For an untagged IPv4/IPv6 frame the kernel refuses a test
    // skb without a complete IP header (EINVAL), so those cuts start in the TCP header; behind a
    // VLAN tag (skb protocol 0x8100) every cut after the Ethernet header is accepted.
    let reply6 = Frame::tcp6(NODE6, CLIENT6, Tcp::new(18_005, 43_210, synack));
    let cuts = [
        (reply4(18_003, synack).build(), ETH_LEN + 20),
        (
            reply4(18_003, synack).with_vlan(ETH_P_8021Q, 1).build(),
            ETH_LEN,
        ),
        (reply6.build(), ETH_LEN + 40),
        (reply6.with_vlan(ETH_P_8021AD, 1).build(), ETH_LEN),
    ];
    let mut malformed = 0;
    for (frame, first) in &cuts {
        for len in *first..frame.len() {
            let input = &frame[..len];
            let out = bpf.tc(input).with_context(|| format!("cut at {len}"))?;
            ensure!(out == input, "reply cut at {len} was changed");
            malformed += 1;
        }
    }
    expected.push((Counter::TcPassMalformed, malformed));
    bpf.assert_counters(&expected)
}

#[test]
fn steered_connection_round_trips_through_both_programs() -> Result<()> {
    if skip("steered_connection_round_trips_through_both_programs") {
        return Ok(());
    }
    let n = 8;
    let bpf = Bpf::with_workers(n)?;
    for sport in [40_001u16, 51_515, 60_999] {
        let syn = Frame::tcp4(CLIENT, NODE, Tcp::new(sport, PUBLIC, tcp_flags::SYN)).build();
        let steered = bpf.xdp(&syn)?;
        let (_, worker) = tcp_ports(&steered).context("steered frame is not TCP")?;
        ensure!(worker == predict(0, n, &syn));
        // The worker answers from its own port; TC must make it look like port 80 again.
        let reply = Frame::tcp4(
            NODE,
            CLIENT,
            Tcp::new(worker, sport, tcp_flags::SYN | tcp_flags::ACK),
        )
        .with_vlan(ETH_P_8021Q, 42)
        .build();
        let out = bpf.tc(&reply)?;
        assert_restored(&reply, &out, PUBLIC)?;
    }
    bpf.assert_counters(&[
        (Counter::XdpSteered, 3),
        (Counter::XdpFlowNew, 3),
        (Counter::TcRestored, 3),
    ])
}
