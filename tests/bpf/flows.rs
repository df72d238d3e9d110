//! The connection table (`FLOWS`): SYNs record flows (v4 and v6, read back from userspace),
//! established segments keep their worker across a Maglev flip and a worker-port change, misses are
//! steered by Maglev and recorded, RSTs close flows, and nothing is recorded without a worker.
use anyhow::{ensure, Context as _, Result};
use ingress_common::{v4_mapped, Counter, Flow, HASH_FOUR_TUPLE};
use integration_tests::packet::{tcp_flags, Frame, Tcp, ETH_P_8021Q};

use crate::harness::{
    half1, key_of, predict, skip, Bpf, CLIENT, CLIENT6, NODE, NODE6, PUBLIC, WORKER_BASE,
};

fn v4(sport: u16, flags: u8) -> Frame {
    Frame::tcp4(CLIENT, NODE, Tcp::new(sport, PUBLIC, flags))
}

fn v6(sport: u16, flags: u8) -> Frame {
    Frame::tcp6(CLIENT6, NODE6, Tcp::new(sport, PUBLIC, flags))
}

const ACK: u8 = tcp_flags::ACK;
const ACK_PSH: u8 = tcp_flags::ACK | tcp_flags::PSH;

#[test]
fn syn_v4_and_v6_create_flow_entries() -> Result<()> {
    if skip("syn_v4_and_v6_create_flow_entries") {
        return Ok(());
    }
    let n = 7;
    let mut bpf = Bpf::with_workers(n)?;
    bpf.update_state(|s| s.epoch = 0x5eed)?;
    let epoch = bpf.get_state()?.epoch;
    let syn4 = v4(40_404, tcp_flags::SYN).build();
    let syn6 = v6(40_606, tcp_flags::SYN).with_vlan(ETH_P_8021Q, 6).build();
    for (name, syn) in [("v4", &syn4), ("v6", &syn6)] {
        let port = predict(0, n, syn);
        bpf.xdp_steered(syn, port).context(name)?;
        let key = key_of(syn);
        let want = Flow {
            worker_port: port,
            flags: 0,
            epoch,
            packets: 1,
        };
        ensure!(
            bpf.flow(&key)? == Some(want),
            "{name}: {:?}",
            bpf.flow(&key)?
        );
    }
    // The key layout, spelled out: IPv4-mapped addresses, host-order ports, the public port.
    let k4 = key_of(&syn4);
    ensure!(k4.saddr == v4_mapped(CLIENT) && k4.daddr == v4_mapped(NODE));
    ensure!((k4.sport, k4.dport, k4._pad) == (40_404, PUBLIC, 0));
    ensure!(key_of(&syn6).saddr == CLIENT6 && key_of(&syn6).daddr == NODE6);

    // Later segments count packets on the entry.
    let ack4 = v4(40_404, ACK_PSH)
        .with_payload(b"GET / HTTP/1.1\r\n\r\n")
        .build();
    bpf.xdp_steered(&ack4, predict(0, n, &syn4))?;
    bpf.xdp_steered(&ack4, predict(0, n, &syn4))?;
    let flow = bpf.flow(&k4)?.context("v4 flow gone")?;
    ensure!(flow.packets == 3, "packets {}", flow.packets);
    ensure!(bpf.flows()?.len() == 2, "flows: {:?}", bpf.flows()?);
    bpf.assert_counters(&[(Counter::XdpSteered, 4), (Counter::XdpFlowNew, 2)])
}

#[test]
fn established_flow_keeps_its_worker_when_the_table_changes() -> Result<()> {
    if skip("established_flow_keeps_its_worker_when_the_table_changes") {
        return Ok(());
    }
    let n = 6;
    let mut bpf = Bpf::with_workers(n)?;
    let syn = v4(50_000, tcp_flags::SYN).build();
    let syn6 = v6(50_001, tcp_flags::SYN).build();
    let (old4, old6) = (predict(0, n, &syn), predict(0, n, &syn6));
    bpf.xdp_steered(&syn, old4)?;
    bpf.xdp_steered(&syn6, old6)?;

    // Userspace writes the other half with a different mapping and flips.
    bpf.fill_half(1, |i| half1(i, n))?;
    bpf.state(1, n, HASH_FOUR_TUPLE)?;
    ensure!(predict(1, n, &syn) != old4 && predict(1, n, &syn6) != old6);
    let ack = v4(50_000, ACK).build();
    let data = v4(50_000, ACK_PSH).with_payload(&[0x61; 999]).build();
    let data6 = v6(50_001, ACK_PSH).with_payload(b"xyz").build();
    bpf.xdp_steered(&ack, old4).context("ACK after the flip")?;
    bpf.xdp_steered(&data, old4)
        .context("data after the flip")?;
    bpf.xdp_steered(&data6, old6)
        .context("v6 data after the flip")?;

    // A new connection follows the new table.
    let other = v4(50_002, tcp_flags::SYN).build();
    let new = predict(1, n, &other);
    ensure!(new != predict(0, n, &other));
    bpf.xdp_steered(&other, new)
        .context("new SYN after the flip")?;

    // Hitless upgrade: the slots move to other worker ports; the old flow keeps its port.
    for slot in 0..n {
        bpf.slot(0, slot, WORKER_BASE + 100 + slot as u16)?;
    }
    bpf.xdp_steered(&ack, old4)
        .context("ACK after the slot change")?;
    bpf.xdp_steered(&other, new + 100)
        .context("SYN after the slot change")?;

    // A new SYN on the same 4-tuple (a new connection) re-picks and overwrites.
    bpf.xdp_steered(&syn, predict(1, n, &syn) + 100)?;
    bpf.xdp_steered(&ack, predict(1, n, &syn) + 100)?;
    let flow = bpf.flow(&key_of(&syn))?.context("flow gone")?;
    ensure!(flow.worker_port == predict(1, n, &syn) + 100 && flow.packets == 2);
    bpf.assert_counters(&[(Counter::XdpSteered, 10), (Counter::XdpFlowNew, 5)])
}

#[test]
fn table_miss_on_a_non_syn_is_steered_by_maglev_and_recorded() -> Result<()> {
    if skip("table_miss_on_a_non_syn_is_steered_by_maglev_and_recorded") {
        return Ok(());
    }
    let n = 5;
    let mut bpf = Bpf::with_workers(n)?;
    bpf.update_state(|s| s.epoch = 3)?;
    let ack = v4(51_000, ACK_PSH).with_payload(b"late").build();
    let ack6 = v6(51_001, ACK).build();
    let (p4, p6) = (predict(0, n, &ack), predict(0, n, &ack6));
    bpf.xdp_steered(&ack, p4)?;
    bpf.xdp_steered(&ack6, p6)?;
    for (frame, port) in [(&ack, p4), (&ack6, p6)] {
        let want = Flow {
            worker_port: port,
            flags: 0,
            epoch: 3,
            packets: 1,
        };
        ensure!(bpf.flow(&key_of(frame))? == Some(want));
    }
    // Recorded: after a flip the flow still reaches the same worker, and it is a hit now.
    bpf.fill_half(1, |i| half1(i, n))?;
    bpf.state(1, n, HASH_FOUR_TUPLE)?;
    bpf.xdp_steered(&ack, p4)?;
    bpf.xdp_steered(&ack6, p6)?;
    bpf.assert_counters(&[(Counter::XdpSteered, 4), (Counter::XdpFlowMiss, 2)])
}

#[test]
fn rst_is_steered_to_the_flow_and_closes_it() -> Result<()> {
    if skip("rst_is_steered_to_the_flow_and_closes_it") {
        return Ok(());
    }
    let n = 4;
    let mut bpf = Bpf::with_workers(n)?;
    let syn = v4(52_000, tcp_flags::SYN).build();
    let syn6 = v6(52_001, tcp_flags::SYN).build();
    let (old4, old6) = (predict(0, n, &syn), predict(0, n, &syn6));
    bpf.xdp_steered(&syn, old4)?;
    bpf.xdp_steered(&syn6, old6)?;
    bpf.fill_half(1, |i| half1(i, n))?;
    bpf.state(1, n, HASH_FOUR_TUPLE)?;

    let rst = v4(52_000, tcp_flags::RST).build();
    let rst6 = v6(52_001, tcp_flags::RST | tcp_flags::ACK).build();
    bpf.xdp_steered(&rst, old4)
        .context("RST to the flow's worker")?;
    bpf.xdp_steered(&rst6, old6)
        .context("RST|ACK to the flow's worker")?;
    ensure!(bpf.flow(&key_of(&syn))?.is_none(), "v4 flow still there");
    ensure!(bpf.flow(&key_of(&syn6))?.is_none(), "v6 flow still there");
    bpf.assert_counters(&[
        (Counter::XdpSteered, 4),
        (Counter::XdpFlowNew, 2),
        (Counter::XdpFlowClosed, 2),
    ])?;

    // Gone for good: a second RST has no flow and goes where Maglev says now; nothing recorded.
    bpf.xdp_steered(&rst, predict(1, n, &rst))?;
    ensure!(bpf.flows()?.is_empty(), "flows: {:?}", bpf.flows()?);
    bpf.assert_counters(&[
        (Counter::XdpSteered, 5),
        (Counter::XdpFlowNew, 2),
        (Counter::XdpFlowClosed, 2),
    ])
}

#[test]
fn no_worker_records_nothing_but_flows_keep_their_worker() -> Result<()> {
    if skip("no_worker_records_nothing_but_flows_keep_their_worker") {
        return Ok(());
    }
    let n = 4;
    let mut bpf = Bpf::with_workers(n)?;
    let syn = v4(53_000, tcp_flags::SYN).build();
    let port = predict(0, n, &syn);
    bpf.xdp_steered(&syn, port)?;
    bpf.state(0, 0, HASH_FOUR_TUPLE)?;
    // Established: still steered from the table.
    bpf.xdp_steered(&v4(53_000, ACK).build(), port)?;
    // New SYN, a miss, an RST without flow: no worker, passed unchanged, nothing recorded.
    bpf.xdp_unchanged(&v4(53_001, tcp_flags::SYN).build())?;
    bpf.xdp_unchanged(&v6(53_002, ACK).build())?;
    bpf.xdp_unchanged(&v4(53_003, tcp_flags::RST).build())?;
    ensure!(bpf.flows()?.len() == 1, "flows: {:?}", bpf.flows()?);
    bpf.assert_counters(&[
        (Counter::XdpSteered, 2),
        (Counter::XdpFlowNew, 1),
        (Counter::XdpPassNoWorker, 3),
    ])
}
