//! Frames XDP must leave alone (foreign protocols, ports we do not steer, layouts we do not
//! parse) and truncated or malformed headers: all passed byte for byte, each in its counter.
use anyhow::{ensure, Context as _, Result};
use ingress_common::Counter;
use integration_tests::packet::{
    diff_offsets, tcp_flags, Frame, Ipv6, Net, Tcp, Udp, ETH_LEN, ETH_P_8021AD, ETH_P_8021Q,
    IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_TCP, L4,
};

use crate::harness::{skip, Bpf, CLIENT, CLIENT6, NODE, NODE6, PUBLIC, WORKER_BASE};

/// Frames that must pass `xdp_steer` byte for byte, each with the counter it must land in.
pub fn frames_xdp_leaves_alone() -> Vec<(&'static str, Vec<u8>, Counter)> {
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
        (Counter::XdpFlowNew, full.len() as u64),
    ])
}
