//! Incremental Internet checksum update (RFC 1624), fixed size, for the XDP side.
//!
//! XDP sees a frame whose TCP checksum is complete, so changing one 16-bit field only needs
//! `HC' = ~(~HC + ~m + m')` (RFC 1624, eqn. 3). The update also keeps a driver's
//! CHECKSUM_COMPLETE sum valid, since the sum over the whole segment does not change. TC never uses
//! this: the skb may be CHECKSUM_PARTIAL there, so it goes through `bpf_l4_csum_replace`.

/// The new checksum after a 16-bit field of the summed data changes from `old` to `new`.
///
/// All three values must be in the same byte order; pass them exactly as they sit in the packet
/// (`u16::from_ne_bytes` of the wire bytes) and store the result the same way. One's complement
/// addition commutes with swapping bytes, so no conversion is needed.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
