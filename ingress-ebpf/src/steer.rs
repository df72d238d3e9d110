//! XDP ingress steering: picks a worker for a TCP segment to a public port and rewrites its
//! destination port.
//!
//! Data flow: [`parse`](crate::parse) → `PUBLIC_PORTS[dport] → listener` → `STATE[0]` (live
//! Maglev half, slot count, hash mode) → `flow_hash` → `MAGLEV[maglev_index] → slot` →
//! `SLOTS[listener * MAX_SLOTS + slot].port` → destination port and TCP checksum rewritten in
//! place (RFC 1624). Returns the counter that describes what happened; the verdict is always
//! `XDP_PASS`.
use aya_ebpf::programs::XdpContext;
use ingress_common::{flow_hash, maglev_index, Counter, HASH_SOURCE, MAX_LISTENERS, MAX_SLOTS};

use crate::{
    csum,
    maps::{MAGLEV, PUBLIC_PORTS, SLOTS, STATE},
    parse::{self, ptr_at, Flow, TcpHdr, XdpPacket},
};

/// Classifies and, when a worker is live, steers one frame.
#[inline(always)]
pub fn steer(ctx: &XdpContext) -> Counter {
    let flow = match parse::parse::<_, false>(&XdpPacket(ctx)) {
        Ok(flow) => flow,
        Err(skip) => return skip.xdp_counter(),
    };
    // SAFETY: the value is copied out at once; userspace replaces values whole.
    let Some(&port_config) = (unsafe { PUBLIC_PORTS.get(flow.dport) }) else {
        return Counter::XdpPassNotOurs;
    };
    let listener = port_config.listener;
    match worker_port(&flow, listener) {
        Some(port) => rewrite_dport(ctx, flow.l4_off, port),
        None => Counter::XdpPassNoWorker,
    }
}

/// The worker port (host order) for this flow of `listener`, if a live slot has one.
#[inline(always)]
fn worker_port(flow: &Flow, listener: u32) -> Option<u16> {
    let state = STATE.get(0)?;
    let (active, slot_count, hash_mode) = (state.maglev_active, state.slot_count, state.hash_mode);
    if slot_count == 0 || listener >= MAX_LISTENERS {
        return None;
    }
    let hash = if hash_mode == HASH_SOURCE {
        flow_hash(flow.saddr, 0, 0)
    } else {
        flow_hash(
            flow.saddr,
            flow.daddr,
            (u32::from(flow.sport) << 16) | u32::from(flow.dport),
        )
    };
    let slot = *MAGLEV.get(maglev_index(active, hash))?;
    if slot >= slot_count || slot >= MAX_SLOTS {
        return None;
    }
    let port = SLOTS.get(listener * MAX_SLOTS + slot)?.port;
    (port != 0).then_some(port)
}

/// Writes `port` into the TCP destination port and updates the checksum incrementally.
#[inline(always)]
fn rewrite_dport(ctx: &XdpContext, l4_off: usize, port: u16) -> Counter {
    let Some(tcp) = ptr_at::<TcpHdr>(ctx, l4_off) else {
        return Counter::XdpPassMalformed;
    };
    let new = port.to_be_bytes();
    // SAFETY: `ptr_at` checked that the whole TCP header lies inside the frame; alignment is 1.
    unsafe {
        let old = (*tcp).dest;
        let check = u16::from_ne_bytes((*tcp).check);
        let check = csum::replace16(check, u16::from_ne_bytes(old), u16::from_ne_bytes(new));
        (*tcp).dest = new;
        (*tcp).check = check.to_ne_bytes();
    }
    Counter::XdpSteered
}
