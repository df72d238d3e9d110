//! Header parsing shared by the XDP and TC programs.
//!
//! Owns the on-wire header layouts (byte arrays, alignment 1, so any offset is fine), the
//! bounds-checked packet access (`ptr_at` for XDP, `bpf_skb_load_bytes` for TC, both behind
//! [`Packet`]) and the classification of a frame: Ethernet (+ at most one 802.1Q/802.1ad tag) →
//! IPv4 or IPv6 → TCP. The result is a [`Segment`] (host-order ports, TCP flags, offsets of the
//! IP and TCP headers; the addresses stay in the packet, XDP copies them in `flows::fill_key`)
//! or the reason the frame is not ours to touch ([`Skip`]), which the programs turn into a
//! counter. Nothing here writes to the packet.
use core::mem::size_of;

use aya_ebpf::programs::{TcContext, XdpContext};
use ingress_common::Counter;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;

/// Ethernet II header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: [u8; 2],
}

/// The 4 bytes of an 802.1Q/802.1ad tag that follow the TPID (which sits in `EthHdr::proto`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    pub proto: [u8; 2],
}

/// IPv4 header without options.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

/// IPv6 fixed header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6Hdr {
    pub version_class_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// TCP header without options.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TcpHdr {
    pub source: [u8; 2],
    pub dest: [u8; 2],
    pub seq: [u8; 4],
    pub ack_seq: [u8; 4],
    pub doff_flags: [u8; 2],
    pub window: [u8; 2],
    pub check: [u8; 2],
    pub urg_ptr: [u8; 2],
}

/// Byte offset of the checksum field inside the TCP header.
pub const TCP_CHECK_OFFSET: usize = 16;

/// TCP flag bits (the low byte of the flags field).
pub mod tcp_flags {
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// A TCP segment we may steer (XDP) or restore (TC).
#[derive(Clone, Copy)]
pub struct Segment {
    /// Offset of the IP header from the start of the frame.
    pub l3_off: usize,
    /// Offset of the TCP header from the start of the frame.
    pub l4_off: usize,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// TCP source port, host order.
    pub sport: u16,
    /// TCP destination port, host order.
    pub dport: u16,
    /// TCP flags (`tcp_flags`), the low byte of the flags field.
    pub flags: u8,
}

/// Why a frame is left alone.
#[derive(Clone, Copy)]
pub enum Skip {
    /// Neither IPv4 nor IPv6 (ARP, LLDP, ...).
    NotIp,
    /// IP, but the payload is not TCP.
    NotTcp,
    /// A header is truncated or carries impossible values.
    Malformed,
    /// A layout we do not parse: IPv4 options or fragments (XDP), IPv6 extension headers, a
    /// second VLAN tag.
    Unsupported,
}

impl Skip {
    /// The XDP counter for this reason.
    #[inline(always)]
    pub fn xdp_counter(self) -> Counter {
        match self {
            Skip::NotIp => Counter::XdpPassNotIp,
            Skip::NotTcp => Counter::XdpPassNotTcp,
            Skip::Malformed => Counter::XdpPassMalformed,
            Skip::Unsupported => Counter::XdpPassUnsupported,
        }
    }

    /// The TC counter for this reason: only malformed headers are told apart.
    #[inline(always)]
    pub fn tc_counter(self) -> Counter {
        match self {
            Skip::Malformed => Counter::TcPassMalformed,
            _ => Counter::TcPassNotOurs,
        }
    }
}

/// Bounds-checked read access to a frame.
pub trait Packet {
    /// Copies the `T` at byte `off` of the frame, or `None` when the frame is too short.
    fn read<T: Copy>(&self, off: usize) -> Option<T>;
}

/// Direct packet access for XDP.
pub struct XdpPacket<'a>(pub &'a XdpContext);

/// A pointer to the `T` at byte `off` of the XDP frame, after checking it lies inside the frame.
/// The only way the XDP program touches packet memory (the verifier rejects slices).
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

impl Packet for XdpPacket<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        let p = ptr_at::<T>(self.0, off)?;
        // SAFETY: `ptr_at` checked that `size_of::<T>()` bytes at `p` lie inside the frame; the
        // header types have alignment 1.
        Some(unsafe { core::ptr::read_unaligned(p) })
    }
}

/// `bpf_skb_load_bytes` access for TC: works on non-linear skbs too.
pub struct SkbPacket<'a>(pub &'a TcContext);

impl Packet for SkbPacket<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        self.0.load::<T>(off).ok()
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parses a frame down to its TCP header.
///
/// `EGRESS` relaxes IPv4 for the TC side, where the program reads through helpers: options are
/// skipped (any IHL ≥ 5) and first fragments are accepted (their TCP header is complete and a port
/// rewrite with an incremental checksum update stays valid after reassembly). Later fragments carry
/// no TCP header and are always skipped.
#[inline(always)]
pub fn parse<P: Packet, const EGRESS: bool>(pkt: &P) -> Result<Segment, Skip> {
    let eth: EthHdr = pkt.read(0).ok_or(Skip::Malformed)?;
    let mut proto = be16(eth.proto);
    let mut l3 = size_of::<EthHdr>();
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let vlan: VlanHdr = pkt.read(l3).ok_or(Skip::Malformed)?;
        proto = be16(vlan.proto);
        l3 += size_of::<VlanHdr>();
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            return Err(Skip::Unsupported);
        }
    }
    match proto {
        ETH_P_IP => parse_v4::<P, EGRESS>(pkt, l3),
        ETH_P_IPV6 => parse_v6(pkt, l3),
        _ => Err(Skip::NotIp),
    }
}

#[inline(always)]
fn parse_v4<P: Packet, const EGRESS: bool>(pkt: &P, l3: usize) -> Result<Segment, Skip> {
    let ip: Ipv4Hdr = pkt.read(l3).ok_or(Skip::Malformed)?;
    let ihl = (ip.version_ihl & 0x0f) as usize;
    if ip.version_ihl >> 4 != 4 || ihl < 5 {
        return Err(Skip::Malformed);
    }
    if ip.protocol != IPPROTO_TCP {
        return Err(Skip::NotTcp);
    }
    let frag = be16(ip.frag_off);
    let offset = frag & 0x1fff;
    let more_fragments = frag & 0x2000 != 0;
    let l4 = if EGRESS {
        if offset != 0 {
            return Err(Skip::Unsupported);
        }
        l3 + ihl * 4
    } else {
        if ihl != 5 || offset != 0 || more_fragments {
            return Err(Skip::Unsupported);
        }
        l3 + size_of::<Ipv4Hdr>()
    };
    let (sport, dport, flags) = parse_tcp(pkt, l4)?;
    Ok(Segment {
        l3_off: l3,
        l4_off: l4,
        ipv6: false,
        sport,
        dport,
        flags,
    })
}

#[inline(always)]
fn parse_v6<P: Packet>(pkt: &P, l3: usize) -> Result<Segment, Skip> {
    let ip: Ipv6Hdr = pkt.read(l3).ok_or(Skip::Malformed)?;
    if ip.version_class_flow[0] >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    match ip.next_header {
        IPPROTO_TCP => {}
        // Hop-by-hop, routing, fragment, AH, destination options, mobility, HIP, shim6:
        // TCP may follow, but we do not walk extension headers.
        0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 => return Err(Skip::Unsupported),
        _ => return Err(Skip::NotTcp),
    }
    let l4 = l3 + size_of::<Ipv6Hdr>();
    let (sport, dport, flags) = parse_tcp(pkt, l4)?;
    Ok(Segment {
        l3_off: l3,
        l4_off: l4,
        ipv6: true,
        sport,
        dport,
        flags,
    })
}

/// Host-order `(source, dest)` ports and the flags of the TCP header at `l4`.
#[inline(always)]
fn parse_tcp<P: Packet>(pkt: &P, l4: usize) -> Result<(u16, u16, u8), Skip> {
    let tcp: TcpHdr = pkt.read(l4).ok_or(Skip::Malformed)?;
    if tcp.doff_flags[0] >> 4 < 5 {
        return Err(Skip::Malformed);
    }
    Ok((be16(tcp.source), be16(tcp.dest), tcp.doff_flags[1]))
}
