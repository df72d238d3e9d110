//! One table of crafted packets through every path of `xdp_steer`, in order on one loaded
//! object with policy and SYN limit on: each row states the verdict, the exact output bytes
//! (steered rows: the same frame rebuilt from scratch with the worker port, so every byte and both
//! checksums are predicted independently of the program), the counters it moves (its verdict and
//! any flow event) and what `FLOWS` holds for it afterwards.
use anyhow::{ensure, Context as _, Result};
use ingress_common::{
    v4_mapped, Counter, Flow, TokenBucket, HASH_FOUR_TUPLE, POLICY_DENY, STATE_HAS_GLOBAL_RULES,
    STATE_SYN_LIMIT,
};
use integration_tests::packet::{
    diff_offsets, tcp_checksum_valid, tcp_flags, Frame, Ipv4, Net, Tcp, Udp, ETH_LEN, ETH_P_8021AD,
    ETH_P_8021Q, IPPROTO_ICMP, IPPROTO_TCP, L4,
};

use crate::harness::{
    check_counters, half1, key_of, predict, skip, Bpf, CLIENT, CLIENT6, NODE, NODE6, PUBLIC,
    WORKER_BASE, XDP_DROP, XDP_PASS,
};

const N: u32 = 8;
const DENIED: [u8; 4] = [198, 18, 66, 6];
const DENIED6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0x06, 0x66, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6,
];
/// A source whose SYN budget is spent (bucket preloaded empty, clock ahead: never refills).
const FLOODER: [u8; 4] = [198, 18, 99, 9];
/// A flow recorded before the test (as if under an older table and daemon): its port is not
/// Maglev's, its epoch is older.
const OLD_SPORT: u16 = 33_333;
const OLD_EPOCH: u32 = 41;
/// `STATE.epoch` during the test.
const EPOCH: u32 = 42;

/// What the program must do with a row's frame.
enum Want {
    /// XDP_PASS with the destination port rewritten to this worker port.
    Steered(u16),
    /// XDP_PASS, byte for byte.
    Unchanged,
    /// XDP_DROP (frame untouched).
    Dropped,
}

/// What `FLOWS` must hold for the row's 4-tuple afterwards.
enum FlowAfter {
    /// An entry with this worker port, packet count and epoch.
    Entry(u16, u64, u32),
    /// No entry.
    Absent,
    /// Not a TCP frame we can key (or not checked).
    Skip,
}

struct Row {
    name: &'static str,
    frame: Frame,
    /// Bytes cut off the end of the built frame (truncation rows).
    cut_to: Option<usize>,
    want: Want,
    verdict: Counter,
    events: &'static [Counter],
    flow: FlowAfter,
}

fn row(name: &'static str, frame: Frame, want: Want, verdict: Counter) -> Row {
    Row {
        name,
        frame,
        cut_to: None,
        want,
        verdict,
        events: &[],
        flow: FlowAfter::Skip,
    }
}

impl Row {
    fn events(mut self, events: &'static [Counter]) -> Self {
        self.events = events;
        self
    }
    fn flow(mut self, flow: FlowAfter) -> Self {
        self.flow = flow;
        self
    }
    fn cut(mut self, len: usize) -> Self {
        self.cut_to = Some(len);
        self
    }
}

fn t4(src: [u8; 4], sport: u16, dport: u16, flags: u8) -> Frame {
    Frame::tcp4(src, NODE, Tcp::new(sport, dport, flags))
}

fn t6(src: [u8; 16], sport: u16, flags: u8) -> Frame {
    Frame::tcp6(src, NODE6, Tcp::new(sport, PUBLIC, flags))
}

/// The Maglev port of a frame in the table's setup.
fn mg(frame: &Frame) -> u16 {
    predict(0, N, &frame.build())
}

fn rows() -> Vec<Row> {
    use tcp_flags::{ACK, FIN, PSH, RST, SYN};
    use Counter::*;
    use FlowAfter::{Absent, Entry};
    use Want::{Dropped, Steered, Unchanged};

    let syn4 = t4(CLIENT, 40_000, PUBLIC, SYN);
    let syn6 = t6(CLIENT6, 40_001, SYN);
    let ack4 = t4(CLIENT, 40_000, PUBLIC, ACK | PSH).with_payload(b"GET / HTTP/1.1\r\n\r\n");
    let ack6 = t6(CLIENT6, 40_001, ACK).with_payload(&[7; 1001]);
    let old = t4(CLIENT, OLD_SPORT, PUBLIC, ACK);
    let old_port = old_flow_port();
    let miss = t4(CLIENT, 40_002, PUBLIC, ACK);
    let rst_nothing = t4(CLIENT, 40_003, PUBLIC, RST);
    let vlan_syn = t4(CLIENT, 40_004, PUBLIC, SYN).with_vlan(ETH_P_8021Q, 100);
    let qinq_ack6 = t6(CLIENT6, 40_001, ACK).with_vlan(ETH_P_8021AD, 7);
    let flood_ack = t4(FLOODER, 40_006, PUBLIC, ACK);

    let mut options = t4(CLIENT, 40_007, PUBLIC, SYN);
    options.ipv4_mut().unwrap().options = vec![1, 1, 1, 0];
    let mut first_frag = t4(CLIENT, 40_008, PUBLIC, SYN).with_payload(&[0x55; 64]);
    first_frag.ipv4_mut().unwrap().frag_off = 0x2000;
    let mut later_frag = Frame::new(Net::V4(
        Ipv4::new(CLIENT, NODE),
        L4::Raw {
            protocol: IPPROTO_TCP,
            bytes: vec![0x55; 48],
        },
    ));
    later_frag.ipv4_mut().unwrap().frag_off = 185;
    let inner = t4(CLIENT, 40_009, PUBLIC, SYN)
        .with_vlan(ETH_P_8021Q, 20)
        .build();
    let qinq = Frame::new(Net::Other {
        ethertype: ETH_P_8021Q,
        bytes: inner[ETH_LEN..].to_vec(),
    })
    .with_vlan(ETH_P_8021AD, 10);
    let icmp = Frame::new(Net::V4(
        Ipv4::new(CLIENT, NODE),
        L4::Raw {
            protocol: IPPROTO_ICMP,
            bytes: vec![8, 0, 0xf7, 0xff, 0, 0, 0, 0],
        },
    ));
    let udp6 = Frame::new(Net::V6(
        integration_tests::packet::Ipv6::new(CLIENT6, NODE6),
        L4::Udp(Udp {
            sport: 5353,
            dport: PUBLIC,
            payload: b"x".to_vec(),
        }),
    ));
    let vlan_full = t4(CLIENT, 40_010, PUBLIC, SYN).with_vlan(ETH_P_8021Q, 3);
    let v6_full = t6(CLIENT6, 40_011, SYN);

    vec![
        row("SYN v4", syn4.clone(), Steered(mg(&syn4)), XdpSteered)
            .events(&[XdpFlowNew])
            .flow(Entry(mg(&syn4), 1, EPOCH)),
        row("SYN v6", syn6.clone(), Steered(mg(&syn6)), XdpSteered)
            .events(&[XdpFlowNew])
            .flow(Entry(mg(&syn6), 1, EPOCH)),
        row(
            "established ACK+data v4 (hit)",
            ack4.clone(),
            Steered(mg(&syn4)),
            XdpSteered,
        )
        .flow(Entry(mg(&syn4), 2, EPOCH)),
        row(
            "established ACK v6, odd payload (hit)",
            ack6,
            Steered(mg(&syn6)),
            XdpSteered,
        )
        .flow(Entry(mg(&syn6), 2, EPOCH)),
        row(
            "established 802.1ad ACK v6 (hit)",
            qinq_ack6,
            Steered(mg(&syn6)),
            XdpSteered,
        )
        .flow(Entry(mg(&syn6), 3, EPOCH)),
        row(
            "pre-recorded flow, not Maglev's port (hit)",
            old.clone(),
            Steered(old_port),
            XdpSteered,
        )
        .flow(Entry(old_port, 8, OLD_EPOCH)),
        row(
            "FIN of the pre-recorded flow (hit)",
            t4(CLIENT, OLD_SPORT, PUBLIC, FIN | ACK),
            Steered(old_port),
            XdpSteered,
        )
        .flow(Entry(old_port, 9, OLD_EPOCH)),
        row(
            "RST of the pre-recorded flow (close)",
            t4(CLIENT, OLD_SPORT, PUBLIC, RST),
            Steered(old_port),
            XdpSteered,
        )
        .events(&[XdpFlowClosed])
        .flow(Absent),
        row(
            "ACK after the RST (miss, Maglev)",
            old.clone(),
            Steered(mg(&old)),
            XdpSteered,
        )
        .events(&[XdpFlowMiss])
        .flow(Entry(mg(&old), 1, EPOCH)),
        row(
            "ACK of an unknown flow (miss)",
            miss.clone(),
            Steered(mg(&miss)),
            XdpSteered,
        )
        .events(&[XdpFlowMiss])
        .flow(Entry(mg(&miss), 1, EPOCH)),
        row(
            "RST of an unknown flow",
            rst_nothing.clone(),
            Steered(mg(&rst_nothing)),
            XdpSteered,
        )
        .flow(Absent),
        row(
            "802.1Q SYN v4",
            vlan_syn.clone(),
            Steered(mg(&vlan_syn)),
            XdpSteered,
        )
        .events(&[XdpFlowNew])
        .flow(Entry(mg(&vlan_syn), 1, EPOCH)),
        row(
            "TCP to port 22",
            t4(CLIENT, 40_005, 22, SYN),
            Unchanged,
            XdpPassNotOurs,
        )
        .flow(Absent),
        row(
            "TCP to a worker port",
            t4(CLIENT, 40_005, WORKER_BASE, SYN),
            Unchanged,
            XdpPassNotOurs,
        )
        .flow(Absent),
        row(
            "IPv6 TCP to port 8080",
            Frame::tcp6(CLIENT6, NODE6, Tcp::new(1, 8080, SYN)),
            Unchanged,
            XdpPassNotOurs,
        ),
        row(
            "UDP v4 to port 80",
            Frame::udp4(CLIENT, NODE, 5353, PUBLIC, b"q"),
            Unchanged,
            XdpPassNotTcp,
        ),
        row("UDP v6 to port 80", udp6, Unchanged, XdpPassNotTcp),
        row("ICMP echo", icmp, Unchanged, XdpPassNotTcp),
        row(
            "ARP",
            Frame::arp_request(CLIENT, NODE),
            Unchanged,
            XdpPassNotIp,
        ),
        row(
            "802.1Q ARP",
            Frame::arp_request(CLIENT, NODE).with_vlan(ETH_P_8021Q, 9),
            Unchanged,
            XdpPassNotIp,
        ),
        row("IPv4 options", options, Unchanged, XdpPassUnsupported),
        row(
            "IPv4 first fragment",
            first_frag,
            Unchanged,
            XdpPassUnsupported,
        ),
        row(
            "IPv4 later fragment",
            later_frag,
            Unchanged,
            XdpPassUnsupported,
        ),
        row("QinQ", qinq, Unchanged, XdpPassUnsupported),
        row(
            "cut inside the VLAN tag",
            vlan_full.clone(),
            Unchanged,
            XdpPassMalformed,
        )
        .cut(ETH_LEN + 2),
        row(
            "cut inside the IPv4 header",
            vlan_full.clone(),
            Unchanged,
            XdpPassMalformed,
        )
        .cut(ETH_LEN + 4 + 19),
        row(
            "cut inside the IPv6 header",
            v6_full.clone(),
            Unchanged,
            XdpPassMalformed,
        )
        .cut(ETH_LEN + 39),
        row(
            "cut inside the TCP header v4",
            vlan_full.clone(),
            Unchanged,
            XdpPassMalformed,
        )
        .cut(ETH_LEN + 4 + 20 + 19),
        row(
            "cut inside the TCP header v6",
            v6_full.clone(),
            Unchanged,
            XdpPassMalformed,
        )
        .cut(ETH_LEN + 40 + 12),
        row(
            "denied source v4 SYN",
            t4(DENIED, 40_012, PUBLIC, SYN),
            Dropped,
            XdpDropDenied,
        )
        .flow(Absent),
        row(
            "denied source v4 ACK",
            t4(DENIED, 40_013, PUBLIC, ACK),
            Dropped,
            XdpDropDenied,
        )
        .flow(Absent),
        row(
            "denied source v6 SYN",
            t6(DENIED6, 40_014, SYN),
            Dropped,
            XdpDropDenied,
        )
        .flow(Absent),
        row(
            "denied source to port 22 (not ours)",
            t4(DENIED, 40_015, 22, SYN),
            Unchanged,
            XdpPassNotOurs,
        ),
        row(
            "rate-limited SYN",
            t4(FLOODER, 40_016, PUBLIC, SYN),
            Dropped,
            XdpDropRateLimited,
        )
        .flow(Absent),
        row(
            "rate-limited source, ACK (never limited)",
            flood_ack.clone(),
            Steered(mg(&flood_ack)),
            XdpSteered,
        )
        .events(&[XdpFlowMiss])
        .flow(Entry(mg(&flood_ack), 1, EPOCH)),
        row(
            "SYN v4 retransmitted (re-pick, overwrite)",
            syn4.clone(),
            Steered(mg(&syn4)),
            XdpSteered,
        )
        .events(&[XdpFlowNew])
        .flow(Entry(mg(&syn4), 1, EPOCH)),
    ]
}

/// The worker port of the pre-recorded flow: the slot after Maglev's (so the two differ).
fn old_flow_port() -> u16 {
    let old = t4(CLIENT, OLD_SPORT, PUBLIC, tcp_flags::ACK);
    let slot = u32::from(mg(&old) - WORKER_BASE);
    WORKER_BASE + half1(slot, N) as u16
}

#[test]
fn crafted_packets_table() -> Result<()> {
    if skip("crafted_packets_table") {
        return Ok(());
    }
    let mut bpf = Bpf::with_workers(N)?;
    bpf.rule4(0, [198, 18, 66, 0], 24, POLICY_DENY)?;
    bpf.rule(0, DENIED6, 64, POLICY_DENY)?;
    bpf.update_state(|s| {
        s.flags = STATE_HAS_GLOBAL_RULES | STATE_SYN_LIMIT;
        s.syn_rate = 1;
        s.syn_burst = 100;
        s.epoch = EPOCH;
    })?;
    bpf.state(0, N, HASH_FOUR_TUPLE)?;
    bpf.set_bucket(
        v4_mapped(FLOODER),
        TokenBucket {
            milli_tokens: 0,
            last_ns: u64::MAX,
        },
    )?;
    let old = t4(CLIENT, OLD_SPORT, PUBLIC, tcp_flags::ACK).build();
    ensure!(old_flow_port() != predict(0, N, &old));
    bpf.set_flow(
        &key_of(&old),
        Flow {
            worker_port: old_flow_port(),
            flags: 0,
            epoch: OLD_EPOCH,
            packets: 7,
        },
    )?;

    let rows = rows();
    ensure!(rows.len() >= 25, "only {} rows", rows.len());
    let events = [
        Counter::XdpFlowNew,
        Counter::XdpFlowMiss,
        Counter::XdpFlowClosed,
    ];
    let mut total: Vec<(Counter, u64)> = Vec::new();
    for r in &rows {
        let name = r.name;
        let mut input = r.frame.build();
        if let Some(len) = r.cut_to {
            ensure!(len < input.len(), "{name}: cut past the end");
            input.truncate(len);
        }
        let before = bpf.counters()?;
        let (verdict, out) = bpf.run_xdp(&input).context(name)?;
        match r.want {
            Want::Steered(port) => {
                let mut expected = r.frame.clone();
                expected.tcp_mut().context(name)?.dport = port;
                let expected = expected.build();
                ensure!(verdict == XDP_PASS, "{name}: verdict {verdict}");
                ensure!(
                    out == expected,
                    "{name}: output differs from the prediction at {:?}",
                    diff_offsets(&expected, &out)
                );
                ensure!(tcp_checksum_valid(&out), "{name}: bad checksum");
            }
            Want::Unchanged | Want::Dropped => {
                let want = if matches!(r.want, Want::Dropped) {
                    XDP_DROP
                } else {
                    XDP_PASS
                };
                ensure!(verdict == want, "{name}: verdict {verdict}, want {want}");
                ensure!(
                    out == input,
                    "{name}: changed at {:?}",
                    diff_offsets(&input, &out)
                );
            }
        }
        ensure!(
            !events.contains(&r.verdict),
            "{name}: an event is not a verdict"
        );
        let mut expected = vec![(r.verdict, 1)];
        expected.extend(r.events.iter().map(|e| (*e, 1)));
        check_counters(&bpf.counters()?, &before, &expected).context(name)?;
        total.extend(expected);
        match r.flow {
            FlowAfter::Entry(port, packets, epoch) => {
                let flow = bpf
                    .flow(&key_of(&input))?
                    .with_context(|| format!("{name}: no flow"))?;
                let want = Flow {
                    worker_port: port,
                    flags: 0,
                    epoch,
                    packets,
                };
                ensure!(flow == want, "{name}: flow {flow:?}, want {want:?}");
            }
            FlowAfter::Absent => {
                let flow = bpf.flow(&key_of(&input))?;
                ensure!(flow.is_none(), "{name}: unexpected flow {flow:?}");
            }
            FlowAfter::Skip => {}
        }
    }
    // Every packet in exactly one verdict counter, events on top, nothing else counted.
    bpf.assert_counters(&total)
}
