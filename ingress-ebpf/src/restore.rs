//! TC egress restore: a reply leaving from a worker port gets the public source port back.
//!
//! Data flow: [`parse`](crate::parse) (through `bpf_skb_load_bytes`) → `WORKER_PORTS[sport] →
//! public port` → `bpf_l4_csum_replace` on the TCP checksum, then `bpf_skb_store_bytes` on the
//! source port. Both go through helpers because the skb may be CHECKSUM_PARTIAL (GSO, offload),
//! where the checksum field holds only the pseudo-header sum and must not be patched by hand.
//! Returns the counter that describes what happened; the verdict is always `TC_ACT_OK`.
use aya_ebpf::programs::TcContext;
use ingress_common::Counter;

use crate::{
    maps::WORKER_PORTS,
    parse::{self, SkbPacket, TCP_CHECK_OFFSET},
};

/// Classifies and, for a reply from a worker, restores one skb.
#[inline(always)]
pub fn restore(ctx: &TcContext) -> Counter {
    let flow = match parse::parse::<_, true>(&SkbPacket(ctx)) {
        Ok(flow) => flow,
        Err(skip) => return skip.tc_counter(),
    };
    // SAFETY: the value is copied out at once; userspace replaces values whole.
    let public = match unsafe { WORKER_PORTS.get(flow.sport) } {
        Some(&port) if port != 0 => port,
        _ => return Counter::TcPassNotOurs,
    };
    // The values as they sit on the wire: what the helpers expect for a 2-byte replace.
    let old = u16::from_ne_bytes(flow.sport.to_be_bytes());
    let new = u16::from_ne_bytes(public.to_be_bytes());
    let check_off = flow.l4_off + TCP_CHECK_OFFSET;
    // Checksum first: if it fails nothing has changed yet.
    if ctx
        .l4_csum_replace(check_off, u64::from(old), u64::from(new), 2)
        .is_err()
    {
        return Counter::TcRewriteFailed;
    }
    if ctx.store(flow.l4_off, &new, 0).is_err() {
        // Best effort: undo the checksum change so the packet stays consistent.
        let _ = ctx.l4_csum_replace(check_off, u64::from(new), u64::from(old), 2);
        return Counter::TcRewriteFailed;
    }
    Counter::TcRestored
}
