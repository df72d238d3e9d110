//! Steering without policy: which worker a segment reaches (Maglev prediction, both halves, both
//! hash modes, VLAN and IPv6), the no-worker fallbacks, and the checksum checker itself.
use anyhow::{ensure, Context as _, Result};
use ingress_common::{flow_hash, Counter, HASH_FOUR_TUPLE, HASH_SOURCE};
use integration_tests::packet::{
    diff_offsets, fold, ipv4_header_checksum_valid, ones_sum, tcp_checksum_valid, tcp_flags,
    tcp_ports, tcp_view, Frame, Tcp, ETH_LEN, ETH_P_8021AD, ETH_P_8021Q,
};

use crate::harness::{
    assert_steered, half1, port_of, predict, skip, Bpf, CLIENT, CLIENT6, NODE, NODE6, PUBLIC,
    WORKER_BASE,
};

#[test]
fn packet_helpers_compute_and_check_checksums() {
    // No BPF here: the checker every other test relies on must itself be able to say no.
    // Textbook IPv4 header (Wikipedia, "IPv4 header checksum"): checksum 0xb861.
    let hdr = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    assert_eq!(!fold(ones_sum(&hdr, 0)), 0xb861);

    let frames = [
        Frame::tcp4(CLIENT, NODE, Tcp::new(40_000, PUBLIC, tcp_flags::SYN)).build(),
        Frame::tcp4(CLIENT, NODE, Tcp::new(40_000, PUBLIC, tcp_flags::ACK))
            .with_payload(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n!")
            .with_vlan(ETH_P_8021Q, 7)
            .build(),
        Frame::tcp6(CLIENT6, NODE6, Tcp::new(40_000, PUBLIC, tcp_flags::SYN))
            .with_payload(b"odd")
            .build(),
    ];
    for f in &frames {
        assert!(
            tcp_checksum_valid(f),
            "builder made a bad checksum: {f:02x?}"
        );
        let v = tcp_view(f).unwrap();
        assert_eq!((v.sport, v.dport), (40_000, PUBLIC));
        // Change any byte covered by the checksum (address, port, payload) and it must fail.
        for off in [
            v.l3_off + if v.ipv6 { 8 } else { 12 },
            v.l4_off + 2,
            f.len() - 1,
        ] {
            let mut bad = f.clone();
            bad[off] ^= 0x40;
            assert!(
                !tcp_checksum_valid(&bad),
                "corruption at {off} not detected"
            );
        }
    }
    assert!(ipv4_header_checksum_valid(&frames[0]));
    let mut bad = frames[0].clone();
    bad[ETH_LEN + 8] ^= 1; // TTL
    assert!(!ipv4_header_checksum_valid(&bad));
    assert!(!tcp_checksum_valid(
        &Frame::arp_request(CLIENT, NODE).build()
    ));
}

#[test]
fn syn_is_steered_to_the_predicted_worker() -> Result<()> {
    if skip("syn_is_steered_to_the_predicted_worker") {
        return Ok(());
    }
    let n = 8;
    let bpf = Bpf::with_workers(n)?;
    let mut used = std::collections::BTreeSet::new();
    let flows = 200u16;
    for i in 0..flows {
        let client = [198, 18, (i % 7) as u8, 10 + (i % 50) as u8];
        let sport = 32_768 + i * 131;
        let input = Frame::tcp4(client, NODE, Tcp::new(sport, PUBLIC, tcp_flags::SYN)).build();
        let out = bpf.xdp(&input)?;
        let want = predict(0, n, &input);
        assert_steered(&input, &out, want).with_context(|| format!("flow {i}"))?;
        used.insert(want);
    }
    ensure!(
        used.len() as u32 == n,
        "only workers {used:?} were picked in {flows} flows"
    );
    let flows = u64::from(flows);
    bpf.assert_counters(&[(Counter::XdpSteered, flows), (Counter::XdpFlowNew, flows)])
}

#[test]
fn established_vlan_and_ipv6_segments_are_steered() -> Result<()> {
    if skip("established_vlan_and_ipv6_segments_are_steered") {
        return Ok(());
    }
    let n = 5;
    let bpf = Bpf::with_workers(n)?;
    let body: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
    let ack = tcp_flags::ACK | tcp_flags::PSH;
    let v4 = |sport| Frame::tcp4(CLIENT, NODE, Tcp::new(sport, PUBLIC, ack));
    let v6 = |sport, flags| Frame::tcp6(CLIENT6, NODE6, Tcp::new(sport, PUBLIC, flags));
    let cases: Vec<(&str, Frame, u16)> = vec![
        (
            "ACK with payload",
            v4(41_000).with_payload(b"GET / HTTP/1.1\r\n\r\n"),
            41_000,
        ),
        (
            "ACK with odd 1001-byte payload",
            v4(41_001).with_payload(&body),
            41_001,
        ),
        (
            "FIN",
            Frame::tcp4(CLIENT, NODE, Tcp::new(41_002, PUBLIC, tcp_flags::FIN)),
            41_002,
        ),
        (
            "802.1Q SYN",
            Frame::tcp4(CLIENT, NODE, Tcp::new(41_003, PUBLIC, tcp_flags::SYN))
                .with_vlan(ETH_P_8021Q, 100),
            41_003,
        ),
        (
            "802.1ad ACK with payload",
            v4(41_004)
                .with_payload(&body[..77])
                .with_vlan(ETH_P_8021AD, 4094),
            41_004,
        ),
        ("IPv6 SYN", v6(41_005, tcp_flags::SYN), 41_005),
        (
            "IPv6 802.1Q ACK with payload",
            v6(41_006, ack)
                .with_payload(&body[..333])
                .with_vlan(ETH_P_8021Q, 5),
            41_006,
        ),
    ];
    for (name, frame, sport) in &cases {
        let input = frame.build();
        let out = bpf.xdp(&input)?;
        ensure!(tcp_ports(&input) == Some((*sport, PUBLIC)));
        let want = predict(0, n, &input);
        assert_steered(&input, &out, want).with_context(|| name.to_string())?;
    }
    // Two SYNs open flows; the other segments have none yet (misses, recorded).
    bpf.assert_counters(&[
        (Counter::XdpSteered, cases.len() as u64),
        (Counter::XdpFlowNew, 2),
        (Counter::XdpFlowMiss, cases.len() as u64 - 2),
    ])
}

#[test]
fn inactive_maglev_half_is_ignored_until_the_flip() -> Result<()> {
    if skip("inactive_maglev_half_is_ignored_until_the_flip") {
        return Ok(());
    }
    let n = 6;
    let mut bpf = Bpf::with_workers(n)?;
    let input = Frame::tcp4(CLIENT, NODE, Tcp::new(50_000, PUBLIC, tcp_flags::SYN)).build();
    let old = predict(0, n, &input);
    let new = predict(1, n, &input);
    ensure!(
        old != new,
        "test table must map the flow differently in each half"
    );

    assert_steered(&input, &bpf.xdp(&input)?, old).context("half 0 live")?;
    bpf.fill_half(1, |i| half1(i, n))?;
    assert_steered(&input, &bpf.xdp(&input)?, old).context("half 1 written, not live")?;
    bpf.state(1, n, HASH_FOUR_TUPLE)?;
    assert_steered(&input, &bpf.xdp(&input)?, new).context("after flip to half 1")?;
    bpf.state(0, n, HASH_FOUR_TUPLE)?;
    assert_steered(&input, &bpf.xdp(&input)?, old).context("after flip back")?;
    // Every SYN takes a fresh pick (and overwrites the flow).
    bpf.assert_counters(&[(Counter::XdpSteered, 4), (Counter::XdpFlowNew, 4)])
}

#[test]
fn source_hash_mode_keeps_a_client_on_one_worker() -> Result<()> {
    if skip("source_hash_mode_keeps_a_client_on_one_worker") {
        return Ok(());
    }
    let n = 16;
    let mut bpf = Bpf::with_workers(n)?;
    bpf.state(0, n, HASH_SOURCE)?;
    let mut runs = 0;
    for client in [CLIENT, [198, 19, 7, 200], [198, 18, 200, 3]] {
        let want = port_of(0, n, flow_hash(u32::from_be_bytes(client), 0, 0));
        for sport in (1024..65_000u16).step_by(4_001) {
            let input = Frame::tcp4(client, NODE, Tcp::new(sport, PUBLIC, tcp_flags::SYN)).build();
            assert_steered(&input, &bpf.xdp(&input)?, want)
                .with_context(|| format!("client {client:?} port {sport}"))?;
            runs += 1;
        }
    }
    bpf.assert_counters(&[(Counter::XdpSteered, runs), (Counter::XdpFlowNew, runs)])
}

#[test]
fn no_live_worker_passes_unchanged() -> Result<()> {
    if skip("no_live_worker_passes_unchanged") {
        return Ok(());
    }
    let n = 4;
    let mut bpf = Bpf::with_workers(n)?;
    let input = Frame::tcp4(CLIENT, NODE, Tcp::new(45_000, PUBLIC, tcp_flags::SYN)).build();
    let unchanged = |bpf: &Bpf, what: &str| -> Result<()> {
        let out = bpf.xdp(&input)?;
        ensure!(
            out == input,
            "{what}: changed at {:?}",
            diff_offsets(&input, &out)
        );
        Ok(())
    };

    bpf.state(0, 0, HASH_FOUR_TUPLE)?;
    unchanged(&bpf, "slot_count 0")?;

    // Maglev points at slots the state says do not exist.
    bpf.fill_half(1, |_| n)?;
    bpf.state(1, n, HASH_FOUR_TUPLE)?;
    unchanged(&bpf, "Maglev slot >= slot_count")?;

    // Live slot but an empty worker port.
    bpf.state(0, n, HASH_FOUR_TUPLE)?;
    let slot = u32::from(predict(0, n, &input) - WORKER_BASE);
    bpf.slot(0, slot, 0)?;
    unchanged(&bpf, "worker port 0")?;

    // A public port whose listener index is out of range.
    bpf.public_port(PUBLIC, 99)?;
    unchanged(&bpf, "listener out of range")?;

    // Restore everything: the same frame is steered again (the checks above can fail).
    bpf.public_port(PUBLIC, 0)?;
    bpf.slot(0, slot, WORKER_BASE + slot as u16)?;
    assert_steered(&input, &bpf.xdp(&input)?, WORKER_BASE + slot as u16)?;
    // Nothing was recorded while no worker was live.
    ensure!(bpf.flows()?.len() == 1, "flows: {:?}", bpf.flows()?);
    bpf.assert_counters(&[
        (Counter::XdpPassNoWorker, 4),
        (Counter::XdpSteered, 1),
        (Counter::XdpFlowNew, 1),
    ])
}

#[test]
fn programs_stay_small_for_the_verifier() -> Result<()> {
    if skip("programs_stay_small_for_the_verifier") {
        return Ok(());
    }
    let bpf = Bpf::load()?;
    for (name, max_verified) in [
        (ingress_common::program_name::XDP_STEER, 20_000),
        (ingress_common::program_name::TC_RESTORE, 5_000),
    ] {
        let info = bpf.program_info(name)?;
        let verified = info.verified_instruction_count().unwrap_or(0);
        let xlated = info.size_translated().unwrap_or(0) / 8;
        println!("{name}: {xlated} instructions, {verified} verified");
        // The kernel's limit is 1M verified instructions; a path explosion shows up here first.
        ensure!(
            verified > 0 && verified <= max_verified,
            "{name}: {verified} verified instructions (limit for this test {max_verified})"
        );
    }
    Ok(())
}
