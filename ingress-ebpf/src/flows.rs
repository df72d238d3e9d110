//! The connection table (`FLOWS`): which worker port each TCP connection was given.
//!
//! Data flow: the frame's addresses (IPv4-mapped for IPv4) and ports → [`fill_key`] →
//! [`worker_port`]: an opening SYN always takes a fresh Maglev pick and (over)writes the entry
//! (`XdpFlowNew`); any other segment uses the recorded port (a hit), or on a miss takes a Maglev
//! pick and records it (`XdpFlowMiss`); an RST is steered with the recorded port and deletes the
//! entry (`XdpFlowClosed`; an RST without entry is steered by Maglev and records nothing). The
//! Maglev pick is a closure, so a hit never reads `MAGLEV`/`SLOTS`: a flow keeps its worker
//! whatever the tables do later (a flip, a hitless upgrade). A pick that finds no live worker
//! records nothing.
//! Events are counted here, in addition to the packet's one verdict counter.
use core::{
    mem::offset_of,
    ptr::{copy_nonoverlapping, read_unaligned},
};

use aya_ebpf::programs::XdpContext;
use ingress_common::{v4_mapped, Counter, Flow, FlowKey};

use crate::{
    maps::{count, FLOWS},
    parse::{ptr_at, tcp_flags, Ipv4Hdr, Ipv6Hdr, Segment},
};

/// True for the first segment of a connection: SYN without ACK (and without RST).
#[inline(always)]
pub fn is_opening_syn(flags: u8) -> bool {
    flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN
}

/// Fills `key` (zeroed by the caller) for a parsed segment: raw network-order addresses
/// (IPv4-mapped for IPv4), host-order ports. `None` if the addresses are not in the frame.
///
/// Writes in place with fixed-size copies from the packet: building the key by value makes
/// LLVM carry the 32 address bytes as separate values through the IPv4/IPv6 branches and spill
/// each to its own stack slot (about 150 bytes of stack).
#[inline(always)]
pub fn fill_key(ctx: &XdpContext, seg: &Segment, key: &mut FlowKey) -> Option<()> {
    if seg.ipv6 {
        let addrs = ptr_at::<[u8; 32]>(ctx, seg.l3_off + offset_of!(Ipv6Hdr, saddr))?;
        // SAFETY: `ptr_at` checked that both addresses (32 bytes) lie inside the frame.
        unsafe {
            let src = addrs as *const u8;
            copy_nonoverlapping(src, key.saddr.as_mut_ptr(), 16);
            copy_nonoverlapping(src.add(16), key.daddr.as_mut_ptr(), 16);
        }
    } else {
        let addrs = ptr_at::<[u8; 8]>(ctx, seg.l3_off + offset_of!(Ipv4Hdr, saddr))?;
        // SAFETY: as above, 8 bytes.
        let [s0, s1, s2, s3, d0, d1, d2, d3] = unsafe { read_unaligned(addrs) };
        key.saddr = v4_mapped([s0, s1, s2, s3]);
        key.daddr = v4_mapped([d0, d1, d2, d3]);
    }
    key.sport = seg.sport;
    key.dport = seg.dport;
    Some(())
}

/// The worker port (host order) for this segment, from the table or from `pick` (Maglev), with
/// the table updated as the module doc says. `None`: no entry and no live worker; nothing is
/// recorded then.
#[inline(always)]
pub fn worker_port(
    key: &FlowKey,
    flags: u8,
    epoch: u32,
    pick: impl FnOnce() -> Option<u16>,
) -> Option<u16> {
    if flags & tcp_flags::RST != 0 {
        // SAFETY: the value is copied out at once.
        if let Some(port) = unsafe { FLOWS.get(key) }.map(|f| f.worker_port) {
            if port != 0 {
                if FLOWS.remove(key).is_ok() {
                    count(Counter::XdpFlowClosed);
                }
                return Some(port);
            }
        }
        // Nothing to close: steer the RST where Maglev would put it, record nothing.
        return pick();
    }
    if is_opening_syn(flags) {
        let port = pick()?;
        record(key, port, epoch, Counter::XdpFlowNew);
        return Some(port);
    }
    if let Some(flow) = FLOWS.get_ptr_mut(key) {
        // SAFETY: the pointer is a live entry of the map; `packets` is approximate by contract.
        unsafe {
            let port = (*flow).worker_port;
            if port != 0 {
                (*flow).packets = (*flow).packets.wrapping_add(1);
                return Some(port);
            }
        }
    }
    let port = pick()?;
    record(key, port, epoch, Counter::XdpFlowMiss);
    Some(port)
}

/// Writes (or overwrites) the entry for `key`, counting `event` when it is stored.
#[inline(always)]
fn record(key: &FlowKey, worker_port: u16, epoch: u32, event: Counter) {
    let flow = Flow {
        worker_port,
        flags: 0,
        epoch,
        packets: 1,
    };
    if FLOWS.insert(key, flow, 0).is_ok() {
        count(event);
    }
}
