//! XDP ingress: the per-packet decision for a TCP segment to a public port, and the rewrite.
//!
//! Data flow: [`parse`](crate::parse) → `PUBLIC_PORTS[dport] → PortConfig` → `STATE[0]` →
//! [`policy`](crate::policy) (drop denied sources) → [`ratelimit`](crate::ratelimit) (opening
//! SYNs only, when `STATE_SYN_LIMIT` is on) → [`flows`](crate::flows) (connection table; on a new
//! flow or a miss, [`maglev_pick`]: `flow_hash` → `MAGLEV[maglev_index] → slot` →
//! `SLOTS[listener * MAX_SLOTS + slot].port`) → destination port and TCP checksum rewritten in
//! place (RFC 1624). Returns the verdict counter; `main` turns the drop counters into `XDP_DROP`
//! and everything else into `XDP_PASS`.
use aya_ebpf::programs::XdpContext;
use ingress_common::{
    flow_hash, fold_v6, maglev_index, Counter, FlowKey, SteerState, HASH_SOURCE, MAX_LISTENERS,
    MAX_SLOTS, STATE_SYN_LIMIT,
};

use crate::{
    csum, flows,
    maps::{MAGLEV, PUBLIC_PORTS, SLOTS, STATE},
    parse::{self, ptr_at, Segment, TcpHdr, XdpPacket},
    policy, ratelimit,
};

/// Classifies one frame and, unless dropped or left alone, steers it.
#[inline(always)]
pub fn steer(ctx: &XdpContext) -> Counter {
    let seg = match parse::parse::<_, false>(&XdpPacket(ctx)) {
        Ok(seg) => seg,
        Err(skip) => return skip.xdp_counter(),
    };
    // SAFETY: the value is copied out at once; userspace replaces values whole.
    let Some(&config) = (unsafe { PUBLIC_PORTS.get(seg.dport) }) else {
        return Counter::XdpPassNotOurs;
    };
    let Some(&state) = STATE.get(0) else {
        return Counter::XdpPassNoWorker;
    };
    let mut key = FlowKey::default();
    if flows::fill_key(ctx, &seg, &mut key).is_none() {
        return Counter::XdpPassMalformed;
    }
    if !policy::allows(&config, state.flags, seg.dport, &key.saddr) {
        return Counter::XdpDropDenied;
    }
    if state.flags & STATE_SYN_LIMIT != 0
        && flows::is_opening_syn(seg.flags)
        && !ratelimit::take_syn(&key.saddr, state.syn_rate, state.syn_burst)
    {
        return Counter::XdpDropRateLimited;
    }
    let pick = || maglev_pick(&key, &seg, config.listener, &state);
    match flows::worker_port(&key, seg.flags, state.epoch, pick) {
        Some(port) => rewrite_dport(ctx, seg.l4_off, port),
        None => Counter::XdpPassNoWorker,
    }
}

/// The worker port (host order) Maglev gives this segment of `listener`, if a live slot has one.
#[inline(always)]
fn maglev_pick(key: &FlowKey, seg: &Segment, listener: u32, state: &SteerState) -> Option<u16> {
    let (active, slot_count) = (state.maglev_active, state.slot_count);
    if slot_count == 0 || listener >= MAX_LISTENERS {
        return None;
    }
    let saddr = hash_addr(&key.saddr, seg.ipv6);
    let hash = if state.hash_mode == HASH_SOURCE {
        flow_hash(saddr, 0, 0)
    } else {
        flow_hash(
            saddr,
            hash_addr(&key.daddr, seg.ipv6),
            (u32::from(seg.sport) << 16) | u32::from(seg.dport),
        )
    };
    let slot = *MAGLEV.get(maglev_index(active, hash))?;
    if slot >= slot_count || slot >= MAX_SLOTS {
        return None;
    }
    let port = SLOTS.get(listener * MAX_SLOTS + slot)?.port;
    (port != 0).then_some(port)
}

/// An address as `flow_hash` takes it: the host-order IPv4 address, or the IPv6 address folded
/// with `fold_v6`.
#[inline(always)]
fn hash_addr(addr: &[u8; 16], ipv6: bool) -> u32 {
    let word = |i: usize| u32::from_be_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    if ipv6 {
        fold_v6([word(0), word(4), word(8), word(12)])
    } else {
        word(12)
    }
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
