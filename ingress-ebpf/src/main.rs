//! xdp-ingress kernel programs. Entry points only; the logic lives in the modules:
//! `parse` (headers, bounds checks) → `steer` (XDP ingress: Maglev pick, destination port rewrite,
//! `csum`) and `restore` (TC egress: public source port back); `maps` holds the ABI maps and the
//! per-packet counter. Every packet is counted exactly once and always passed on.
#![no_std]
#![no_main]

mod csum;
mod maps;
mod parse;
mod restore;
mod steer;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// XDP, ingress: steers TCP to public ports onto worker ports. Always `XDP_PASS`.
#[xdp]
pub fn xdp_steer(ctx: XdpContext) -> u32 {
    maps::count(steer::steer(&ctx));
    xdp_action::XDP_PASS
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
