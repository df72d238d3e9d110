//! xdp-ingress kernel programs. Entry points only; the logic lives in the modules:
//! `parse` (headers, bounds checks) → `steer` (XDP ingress: `policy` allow/deny, `ratelimit` SYN
//! budget, `flows` connection table with a Maglev pick on new flows, destination port rewrite
//! with `csum`) and `restore` (TC egress: public source port back); `maps` holds the ABI maps and
//! the counters. Every packet lands in exactly one verdict counter (flow events are counted on
//! top); XDP drops denied and rate-limited packets and passes everything else, TC passes all.
#![no_std]
#![no_main]

mod csum;
mod flows;
mod maps;
mod parse;
mod policy;
mod ratelimit;
mod restore;
mod steer;

use ingress_common::Counter;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// XDP, ingress: steers TCP to public ports onto worker ports. `XDP_DROP` for denied sources and
/// rate-limited SYNs, else `XDP_PASS`.
#[xdp]
pub fn xdp_steer(ctx: XdpContext) -> u32 {
    let verdict = steer::steer(&ctx);
    maps::count(verdict);
    match verdict {
        Counter::XdpDropDenied | Counter::XdpDropRateLimited => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

/// TC classifier, egress: restores the public source port on worker replies. Always `TC_ACT_OK`.
#[classifier]
pub fn tc_restore(ctx: TcContext) -> i32 {
    maps::count(restore::restore(&ctx));
    TC_ACT_OK
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
