//! BPF_PROG_TEST_RUN tests of the kernel programs (`xdp_steer`, `tc_restore`).
//!
//! Each test loads its own copy of the embedded object (`xdp_ingress::EBPF_OBJECT`, no pinning, so
//! maps are private to the test), fills the maps the way the daemon would (public port 80 →
//! listener 0, `N` slots on ports 18000+i, a Maglev half filled by a formula the test knows,
//! worker ports 18000+i → 80), runs hand-made frames (`integration_tests::packet`) through the
//! programs and checks the bytes that come out against its own prediction (`flow_hash`,
//! `maglev_index`, the formula), checksums recomputed from scratch, and the exact per-CPU
//! counters.
use anyhow::{anyhow, ensure, Context as _, Result};
use aya::{
    maps::{Array, HashMap, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use ingress_common::{
    flow_hash, fold_v6, maglev_index, map_name, program_name, Counter, PortConfig, SteerState,
    WorkerSlot, HASH_FOUR_TUPLE, HASH_SOURCE, MAGLEV_SIZE, MAX_SLOTS,
};
use integration_tests::packet::{
    diff_offsets, fold, ipv4_header_checksum_valid, ones_sum, tcp_checksum_valid, tcp_flags,
    tcp_ports, tcp_view, Frame, Ipv6, Net, Tcp, Udp, ETH_LEN, ETH_P_8021AD, ETH_P_8021Q,
    IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_TCP, L4,
};

const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;
/// First worker port; slot `i` listens on `WORKER_BASE + i`.
const WORKER_BASE: u16 = 18_000;
const PUBLIC: u16 = 80;
const CLIENT: [u8; 4] = [198, 18, 0, 10];
const NODE: [u8; 4] = [198, 18, 1, 1];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const NODE6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
];

/// Slot of Maglev entry `i` in half 0 of the test's table.
fn half0(i: u32, n: u32) -> u32 {
    i % n
}

/// Slot of Maglev entry `i` in half 1: always a different slot than half 0 (for n > 1).
fn half1(i: u32, n: u32) -> u32 {
    (i + 1) % n
}

/// One loaded copy of the object, with both programs loaded and private maps.
struct Bpf {
    ebpf: Ebpf,
}

impl Bpf {
    fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(xdp_ingress::EBPF_OBJECT).context("loading the object")?;
        let xdp: &mut Xdp = ebpf
            .program_mut(program_name::XDP_STEER)
            .context("no xdp_steer program")?
            .try_into()?;
        xdp.load().map_err(|e| anyhow!("loading xdp_steer: {e}"))?;
        let tc: &mut SchedClassifier = ebpf
            .program_mut(program_name::TC_RESTORE)
            .context("no tc_restore program")?
            .try_into()?;
        tc.load().map_err(|e| anyhow!("loading tc_restore: {e}"))?;
        Ok(Bpf { ebpf })
    }

    /// Loads and fills the maps: port 80 → listener 0, `n` slots on ports 18000+i, Maglev half 0
    /// filled with `half0`, half 0 live, worker ports → 80.
    fn with_workers(n: u32) -> Result<Self> {
        let mut bpf = Bpf::load()?;
        bpf.public_port(PUBLIC, 0)?;
        for slot in 0..n {
            bpf.slot(0, slot, WORKER_BASE + slot as u16)?;
            bpf.worker_port(WORKER_BASE + slot as u16, PUBLIC)?;
        }
        bpf.fill_half(0, |i| half0(i, n))?;
        bpf.state(0, n, HASH_FOUR_TUPLE)?;
        Ok(bpf)
    }

    fn public_port(&mut self, port: u16, listener: u32) -> Result<()> {
        let mut m: HashMap<_, u16, PortConfig> = self.map(map_name::PUBLIC_PORTS)?.try_into()?;
        let config = PortConfig {
            listener,
            policy: 0,
        };
        Ok(m.insert(port, config, 0)?)
    }

    fn worker_port(&mut self, worker: u16, public: u16) -> Result<()> {
        let mut m: HashMap<_, u16, u16> = self.map(map_name::WORKER_PORTS)?.try_into()?;
        Ok(m.insert(worker, public, 0)?)
    }

    fn slot(&mut self, listener: u32, slot: u32, port: u16) -> Result<()> {
        let mut m: Array<_, WorkerSlot> = self.map(map_name::SLOTS)?.try_into()?;
        let value = WorkerSlot {
            port,
            ..Default::default()
        };
        Ok(m.set(listener * MAX_SLOTS + slot, value, 0)?)
    }

    fn fill_half(&mut self, half: u32, slot_of: impl Fn(u32) -> u32) -> Result<()> {
        let mut m: Array<_, u32> = self.map(map_name::MAGLEV)?.try_into()?;
        for i in 0..MAGLEV_SIZE {
            m.set(half * MAGLEV_SIZE + i, slot_of(i), 0)?;
        }
        Ok(())
    }

    fn state(&mut self, maglev_active: u32, slot_count: u32, hash_mode: u32) -> Result<()> {
        let mut m: Array<_, SteerState> = self.map(map_name::STATE)?.try_into()?;
        let state = SteerState {
            maglev_active,
            slot_count,
            hash_mode,
            ..Default::default()
        };
        Ok(m.set(0, state, 0)?)
    }

    fn map(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("no map {name}"))
    }

    /// Runs `xdp_steer` once; checks the verdict is XDP_PASS and returns the frame it left.
    fn xdp(&self, frame: &[u8]) -> Result<Vec<u8>> {
        let prog: &Xdp = self
            .ebpf
            .program(program_name::XDP_STEER)
            .context("no xdp_steer")?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let run = prog
            .test_run(opts)
            .map_err(|e| anyhow!("xdp test run: {e}"))?;
        ensure!(
            run.return_value == XDP_PASS,
            "xdp verdict {}",
            run.return_value
        );
        out.truncate(run.data_size_out as usize);
        Ok(out)
    }

    /// Runs `tc_restore` once on a full Ethernet frame; checks the verdict is TC_ACT_OK and
    /// returns the frame it left.
    fn tc(&self, frame: &[u8]) -> Result<Vec<u8>> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(program_name::TC_RESTORE)
            .context("no tc_restore")?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let run = prog
            .test_run(opts)
            .map_err(|e| anyhow!("tc test run: {e:?}"))?;
        ensure!(
            run.return_value == TC_ACT_OK,
            "tc verdict {}",
            run.return_value
        );
        out.truncate(run.data_size_out as usize);
        Ok(out)
    }

    /// Every counter summed over CPUs, in index order.
    fn counters(&self) -> Result<Vec<u64>> {
        let map = self.ebpf.map(map_name::COUNTERS).context("no COUNTERS")?;
        let m: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        Counter::ALL
            .iter()
            .map(|c| Ok(m.get(&(*c as u32), 0)?.iter().sum()))
            .collect()
    }

    /// Asserts the counters hold exactly `expected`, and zero everywhere else.
    fn assert_counters(&self, expected: &[(Counter, u64)]) -> Result<()> {
        let got = self.counters()?;
        for c in Counter::ALL {
            let want: u64 = expected
                .iter()
                .filter(|(e, _)| *e == c)
                .map(|(_, n)| n)
                .sum();
            ensure!(
                got[c as usize] == want,
                "counter {c:?}: got {}, want {want} (all: {got:?})",
                got[c as usize]
            );
        }
        Ok(())
    }
}

/// The worker port the test's own table predicts for an IPv4 flow.
fn predict_v4(active: u32, n: u32, saddr: [u8; 4], daddr: [u8; 4], sport: u16, dport: u16) -> u16 {
    let hash = flow_hash(
        u32::from_be_bytes(saddr),
        u32::from_be_bytes(daddr),
        (u32::from(sport) << 16) | u32::from(dport),
    );
    port_of(active, n, hash)
}

fn fold6(addr: [u8; 16]) -> u32 {
    let w = |i: usize| u32::from_be_bytes(addr[i * 4..i * 4 + 4].try_into().unwrap());
    fold_v6([w(0), w(1), w(2), w(3)])
}

/// The worker port the test's own table predicts for an IPv6 flow.
fn predict_v6(active: u32, n: u32, sport: u16, dport: u16) -> u16 {
    let c = (u32::from(sport) << 16) | u32::from(dport);
    port_of(active, n, flow_hash(fold6(CLIENT6), fold6(NODE6), c))
}

fn port_of(active: u32, n: u32, hash: u32) -> u16 {
    let i = maglev_index(active, hash) % MAGLEV_SIZE;
    let slot = if active == 0 {
        half0(i, n)
    } else {
        half1(i, n)
    };
    WORKER_BASE + slot as u16
}

/// Checks `out` is `input` with only the destination port changed to `port`, and that both
/// checksums are valid.
fn assert_steered(input: &[u8], out: &[u8], port: u16) -> Result<()> {
    let v = tcp_view(input).context("input is not TCP")?;
    ensure!(tcp_checksum_valid(input), "input checksum is already wrong");
    ensure!(
        tcp_ports(out) == Some((v.sport, port)),
        "ports {:?}, want ({}, {port})",
        tcp_ports(out),
        v.sport
    );
    ensure!(
        tcp_checksum_valid(out),
        "TCP checksum invalid after steering"
    );
    ensure!(
        v.ipv6 || ipv4_header_checksum_valid(out),
        "IPv4 header checksum invalid"
    );
    let allowed = [v.l4_off + 2, v.l4_off + 3, v.l4_off + 16, v.l4_off + 17];
    let changed = diff_offsets(input, out);
    ensure!(
        changed.iter().all(|o| allowed.contains(o)),
        "bytes other than dport/checksum changed: {changed:?}"
    );
    Ok(())
}

fn skip(test: &str) -> bool {
    integration_tests::require_root(test).is_err()
}

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
        let want = predict_v4(0, n, client, NODE, sport, PUBLIC);
        assert_steered(&input, &out, want).with_context(|| format!("flow {i}"))?;
        used.insert(want);
    }
    ensure!(
        used.len() as u32 == n,
        "only workers {used:?} were picked in {flows} flows"
    );
    bpf.assert_counters(&[(Counter::XdpSteered, u64::from(flows))])
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
        let want = match frame.net {
            Net::V6(..) => predict_v6(0, n, *sport, PUBLIC),
            _ => predict_v4(0, n, CLIENT, NODE, *sport, PUBLIC),
        };
        assert_steered(&input, &out, want).with_context(|| name.to_string())?;
    }
    bpf.assert_counters(&[(Counter::XdpSteered, cases.len() as u64)])
}

#[test]
fn inactive_maglev_half_is_ignored_until_the_flip() -> Result<()> {
    if skip("inactive_maglev_half_is_ignored_until_the_flip") {
        return Ok(());
    }
    let n = 6;
    let mut bpf = Bpf::with_workers(n)?;
    let input = Frame::tcp4(CLIENT, NODE, Tcp::new(50_000, PUBLIC, tcp_flags::SYN)).build();
    let old = predict_v4(0, n, CLIENT, NODE, 50_000, PUBLIC);
    let new = predict_v4(1, n, CLIENT, NODE, 50_000, PUBLIC);
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
    bpf.assert_counters(&[(Counter::XdpSteered, 4)])
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
    bpf.assert_counters(&[(Counter::XdpSteered, runs)])
}

/// Frames that must pass `xdp_steer` byte for byte, each with the counter it must land in.
fn frames_xdp_leaves_alone() -> Vec<(&'static str, Vec<u8>, Counter)> {
    let syn = |dport| Tcp::new(43_210, dport, tcp_flags::SYN);
    let v4_syn_80 = Frame::tcp4(CLIENT, NODE, syn(PUBLIC));

    let mut options = v4_syn_80.clone();
    options.ipv4_mut().unwrap().options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    let mut first_fragment = v4_syn_80.clone().with_payload(&[0x55; 64]);
    first_fragment.ipv4_mut().unwrap().frag_off = 0x2000; // MF
    let mut later_fragment = Frame::new(Net::V4(
        integration_tests::packet::Ipv4::new(CLIENT, NODE),
        L4::Raw {
            protocol: IPPROTO_TCP,
            bytes: vec![0x55; 48],
        },
    ));
    later_fragment.ipv4_mut().unwrap().frag_off = 185; // offset 1480, last fragment

    // Hop-by-hop header (next header TCP, 8 bytes, PadN) in front of a TCP SYN to port 80.
    let tcp_bytes = Frame::tcp6(CLIENT6, NODE6, syn(PUBLIC)).build()[ETH_LEN + 40..].to_vec();
    let mut hbh = vec![IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend_from_slice(&tcp_bytes);
    let v6_hbh = Frame::new(Net::V6(
        Ipv6::new(CLIENT6, NODE6),
        L4::Raw {
            protocol: IPPROTO_HOPOPTS,
            bytes: hbh,
        },
    ));

    // 802.1ad outer tag, 802.1Q inner tag, IPv4 SYN to 80.
    let inner = v4_syn_80.clone().with_vlan(ETH_P_8021Q, 20).build();
    let qinq = Frame::new(Net::Other {
        ethertype: ETH_P_8021Q,
        bytes: inner[14..].to_vec(),
    })
    .with_vlan(ETH_P_8021AD, 10);

    let icmp = Frame::new(Net::V4(
        integration_tests::packet::Ipv4::new(CLIENT, NODE),
        L4::Raw {
            protocol: IPPROTO_ICMP,
            bytes: vec![8, 0, 0xf7, 0xff, 0, 0, 0, 0],
        },
    ));
    let udp6 = Frame::new(Net::V6(
        Ipv6::new(CLIENT6, NODE6),
        L4::Udp(Udp {
            sport: 5353,
            dport: PUBLIC,
            payload: b"x".to_vec(),
        }),
    ));
    let lldp = Frame::new(Net::Other {
        ethertype: 0x88cc,
        bytes: vec![0x02, 0x07, 0x04, 1, 2, 3, 4, 5, 6, 0, 0],
    });

    vec![
        (
            "TCP to port 22",
            Frame::tcp4(CLIENT, NODE, syn(22)).build(),
            Counter::XdpPassNotOurs,
        ),
        (
            "TCP to 18000 (a worker port)",
            Frame::tcp4(CLIENT, NODE, syn(WORKER_BASE)).build(),
            Counter::XdpPassNotOurs,
        ),
        (
            "IPv6 TCP to port 22",
            Frame::tcp6(CLIENT6, NODE6, syn(22)).build(),
            Counter::XdpPassNotOurs,
        ),
        (
            "VLAN TCP to port 443 (not public here)",
            Frame::tcp4(CLIENT, NODE, syn(443))
                .with_vlan(ETH_P_8021Q, 3)
                .build(),
            Counter::XdpPassNotOurs,
        ),
        (
            "UDP to port 80",
            Frame::udp4(CLIENT, NODE, 5353, PUBLIC, b"hello").build(),
            Counter::XdpPassNotTcp,
        ),
        ("ICMP echo", icmp.build(), Counter::XdpPassNotTcp),
        ("IPv6 UDP to port 80", udp6.build(), Counter::XdpPassNotTcp),
        (
            "ARP request",
            Frame::arp_request(CLIENT, NODE).build(),
            Counter::XdpPassNotIp,
        ),
        (
            "VLAN ARP request",
            Frame::arp_request(CLIENT, NODE)
                .with_vlan(ETH_P_8021Q, 9)
                .build(),
            Counter::XdpPassNotIp,
        ),
        ("LLDP", lldp.build(), Counter::XdpPassNotIp),
        (
            "IPv4 with options to port 80",
            options.build(),
            Counter::XdpPassUnsupported,
        ),
        (
            "IPv4 first fragment to port 80",
            first_fragment.build(),
            Counter::XdpPassUnsupported,
        ),
        (
            "IPv4 later fragment",
            later_fragment.build(),
            Counter::XdpPassUnsupported,
        ),
        (
            "IPv6 hop-by-hop + TCP to port 80",
            v6_hbh.build(),
            Counter::XdpPassUnsupported,
        ),
        (
            "QinQ (two VLAN tags)",
            qinq.build(),
            Counter::XdpPassUnsupported,
        ),
    ]
}

#[test]
fn foreign_and_unsupported_frames_pass_unchanged() -> Result<()> {
    if skip("foreign_and_unsupported_frames_pass_unchanged") {
        return Ok(());
    }
    let bpf = Bpf::with_workers(4)?;
    let cases = frames_xdp_leaves_alone();
    let mut expected: Vec<(Counter, u64)> = Vec::new();
    for (name, input, counter) in &cases {
        let out = bpf.xdp(input).with_context(|| name.to_string())?;
        ensure!(
            &out == input,
            "{name}: changed at {:?}",
            diff_offsets(input, &out)
        );
        expected.push((*counter, 1));
    }
    bpf.assert_counters(&expected)
}

#[test]
fn truncated_and_malformed_headers_pass_unchanged() -> Result<()> {
    if skip("truncated_and_malformed_headers_pass_unchanged") {
        return Ok(());
    }
    let bpf = Bpf::with_workers(4)?;
    let syn = || Tcp::new(44_444, PUBLIC, tcp_flags::SYN);
    let full = [
        Frame::tcp4(CLIENT, NODE, syn()).build(),
        Frame::tcp4(CLIENT, NODE, syn())
            .with_vlan(ETH_P_8021Q, 1)
            .build(),
        Frame::tcp6(CLIENT6, NODE6, syn()).build(),
        Frame::tcp6(CLIENT6, NODE6, syn())
            .with_vlan(ETH_P_8021AD, 2)
            .build(),
    ];
    let mut malformed = 0u64;
    // Every cut between the end of the Ethernet header and the end of the TCP header: inside or
    // right after the VLAN tag, the IP header and the TCP header. (The kernel refuses test frames
    // shorter than an Ethernet header.)
    for frame in &full {
        for len in ETH_LEN..frame.len() {
            let input = &frame[..len];
            let out = bpf.xdp(input).with_context(|| format!("cut at {len}"))?;
            ensure!(out == input, "frame cut at {len} was changed");
            malformed += 1;
        }
        // The whole frame is steered: proves the cuts, not the frame, made it malformed.
        ensure!(
            bpf.xdp(frame)? != *frame,
            "the complete frame must be steered"
        );
    }
    // Impossible values in complete headers.
    let v4 = &full[0];
    let v6 = &full[2];
    let mut bad_values = Vec::new();
    let mut f = v4.clone();
    f[ETH_LEN] = 0x65; // IPv4 EtherType, version 6
    bad_values.push(("IPv4 version 6", f));
    let mut f = v4.clone();
    f[ETH_LEN] = 0x44; // IHL 4
    bad_values.push(("IHL 4", f));
    let mut f = v4.clone();
    f[ETH_LEN + 20 + 12] = 0x40; // TCP data offset 4
    bad_values.push(("TCP data offset 4", f));
    let mut f = v6.clone();
    f[ETH_LEN] = 0x45; // IPv6 EtherType, version 4
    bad_values.push(("IPv6 version 4", f));
    for (name, input) in &bad_values {
        let out = bpf.xdp(input)?;
        ensure!(
            &out == input,
            "{name}: changed at {:?}",
            diff_offsets(input, &out)
        );
        malformed += 1;
    }
    bpf.assert_counters(&[
        (Counter::XdpPassMalformed, malformed),
        (Counter::XdpSteered, full.len() as u64),
    ])
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
    let slot = u32::from(predict_v4(0, n, CLIENT, NODE, 45_000, PUBLIC) - WORKER_BASE);
    bpf.slot(0, slot, 0)?;
    unchanged(&bpf, "worker port 0")?;

    // A public port whose listener index is out of range.
    bpf.public_port(PUBLIC, 99)?;
    unchanged(&bpf, "listener out of range")?;

    // Restore everything: the same frame is steered again (the checks above can fail).
    bpf.public_port(PUBLIC, 0)?;
    bpf.slot(0, slot, WORKER_BASE + slot as u16)?;
    assert_steered(&input, &bpf.xdp(&input)?, WORKER_BASE + slot as u16)?;
    bpf.assert_counters(&[(Counter::XdpPassNoWorker, 4), (Counter::XdpSteered, 1)])
}

/// A reply from `sport` (a worker port, or not) to the client.
fn reply4(sport: u16, flags: u8) -> Frame {
    Frame::tcp4(NODE, CLIENT, Tcp::new(sport, 43_210, flags))
}

/// Checks `out` is `input` with only the source port changed to `port`, checksum valid.
fn assert_restored(input: &[u8], out: &[u8], port: u16) -> Result<()> {
    let v = tcp_view(input).context("input is not TCP")?;
    ensure!(
        out.len() == input.len(),
        "length {} -> {}",
        input.len(),
        out.len()
    );
    ensure!(
        tcp_ports(out) == Some((port, v.dport)),
        "ports {:?}",
        tcp_ports(out)
    );
    ensure!(
        tcp_checksum_valid(out),
        "TCP checksum invalid after restore"
    );
    let allowed = [v.l4_off, v.l4_off + 1, v.l4_off + 16, v.l4_off + 17];
    let changed = diff_offsets(input, out);
    ensure!(
        changed.iter().all(|o| allowed.contains(o)),
        "bytes other than sport/checksum changed: {changed:?}"
    );
    Ok(())
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
        ensure!(worker == predict_v4(0, n, CLIENT, NODE, sport, PUBLIC));
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
    bpf.assert_counters(&[(Counter::XdpSteered, 3), (Counter::TcRestored, 3)])
}
