//! Packet builders and checksum verification for `BPF_PROG_TEST_RUN` tests.
//!
//! Owns hand-made frames: a [`Frame`] (Ethernet, optional 802.1Q/802.1ad tag, then IPv4, IPv6 or
//! raw bytes under any EtherType) is described by plain structs and serialised by
//! [`Frame::build`], which fills in lengths and every checksum (IPv4 header, TCP/UDP with the
//! pseudo-header). The read side ([`tcp_view`], [`tcp_checksum_valid`],
//! [`ipv4_header_checksum_valid`]) parses frames that come back from the kernel and recomputes
//! checksums from scratch, independently of the programs under test.
//!
//! Data flow in a test: build frame → run it through a program → parse the output here and
//! compare with what the test predicts.

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// TPID of an 802.1Q (customer) VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad (service) VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 next-header value of the hop-by-hop options extension header.
pub const IPPROTO_HOPOPTS: u8 = 0;

/// Length of an Ethernet II header.
pub const ETH_LEN: usize = 14;
/// Length of a VLAN tag.
pub const VLAN_LEN: usize = 4;
/// Length of an IPv4 header without options.
pub const IPV4_LEN: usize = 20;
/// Length of the IPv6 fixed header.
pub const IPV6_LEN: usize = 40;
/// Length of a TCP header without options.
pub const TCP_LEN: usize = 20;

/// TCP flag bits (the low byte of the flags field).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// A TCP segment. `build` writes a 20-byte header (data offset 5) and computes the checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcp {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags, see [`tcp_flags`].
    pub flags: u8,
    /// Receive window.
    pub window: u16,
    /// Data after the header.
    pub payload: Vec<u8>,
}

impl Tcp {
    /// A segment with the given ports and flags, fixed sequence numbers and no payload.
    pub fn new(sport: u16, dport: u16, flags: u8) -> Self {
        Tcp {
            sport,
            dport,
            seq: 0x1234_5678,
            ack: if flags & tcp_flags::ACK != 0 {
                0x0bad_cafe
            } else {
                0
            },
            flags,
            window: 64_240,
            payload: Vec::new(),
        }
    }
}

/// A UDP datagram. `build` computes length and checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Udp {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Data after the header.
    pub payload: Vec<u8>,
}

/// What an IP header carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP, checksum computed.
    Tcp(Tcp),
    /// UDP, checksum computed.
    Udp(Udp),
    /// Any protocol number with bytes as given (no checksum touched): ICMP, extension headers.
    Raw {
        /// IPv4 protocol / IPv6 next header.
        protocol: u8,
        /// Everything after the IP header.
        bytes: Vec<u8>,
    },
}

impl L4 {
    fn protocol(&self) -> u8 {
        match self {
            L4::Tcp(_) => IPPROTO_TCP,
            L4::Udp(_) => IPPROTO_UDP,
            L4::Raw { protocol, .. } => *protocol,
        }
    }

    /// Serialises with the checksum over `pseudo` (the pseudo-header's one's complement sum).
    fn build(&self, pseudo_sum: impl Fn(u8, usize) -> u32) -> Vec<u8> {
        match self {
            L4::Tcp(t) => {
                let mut b = Vec::with_capacity(TCP_LEN + t.payload.len());
                b.extend_from_slice(&t.sport.to_be_bytes());
                b.extend_from_slice(&t.dport.to_be_bytes());
                b.extend_from_slice(&t.seq.to_be_bytes());
                b.extend_from_slice(&t.ack.to_be_bytes());
                b.push(5 << 4);
                b.push(t.flags);
                b.extend_from_slice(&t.window.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                b.extend_from_slice(&t.payload);
                let sum = fold(ones_sum(&b, pseudo_sum(IPPROTO_TCP, b.len())));
                b[16..18].copy_from_slice(&(!sum).to_be_bytes());
                b
            }
            L4::Udp(u) => {
                let len = 8 + u.payload.len();
                let mut b = Vec::with_capacity(len);
                b.extend_from_slice(&u.sport.to_be_bytes());
                b.extend_from_slice(&u.dport.to_be_bytes());
                b.extend_from_slice(&(len as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&u.payload);
                let sum = !fold(ones_sum(&b, pseudo_sum(IPPROTO_UDP, len)));
                // 0 means "no checksum" in UDP: send 0xffff instead.
                let sum = if sum == 0 { 0xffff } else { sum };
                b[6..8].copy_from_slice(&sum.to_be_bytes());
                b
            }
            L4::Raw { bytes, .. } => bytes.clone(),
        }
    }
}

/// An IPv4 header. `build` fills in total length and header checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub id: u16,
    /// Flags (DF 0x4000, MF 0x2000) and fragment offset (in 8-byte units), host order.
    pub frag_off: u16,
    /// Options, padded by the caller to a multiple of 4 bytes (at most 40).
    pub options: Vec<u8>,
}

impl Ipv4 {
    /// A header with DF set, no options.
    pub fn new(src: [u8; 4], dst: [u8; 4]) -> Self {
        Ipv4 {
            src,
            dst,
            ttl: 64,
            id: 0x4242,
            frag_off: 0x4000,
            options: Vec::new(),
        }
    }
}

/// An IPv6 fixed header. `build` fills in payload length and next header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Hop limit.
    pub hop_limit: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6 {
    /// A header with hop limit 64 and a fixed flow label.
    pub fn new(src: [u8; 16], dst: [u8; 16]) -> Self {
        Ipv6 {
            src,
            dst,
            hop_limit: 64,
            flow_label: 0x1_2345,
        }
    }
}

/// What an Ethernet frame carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Net {
    /// IPv4 (EtherType 0x0800).
    V4(Ipv4, L4),
    /// IPv6 (EtherType 0x86dd).
    V6(Ipv6, L4),
    /// Any EtherType, bytes as given.
    Other {
        /// The EtherType.
        ethertype: u16,
        /// Everything after the Ethernet header (and tag).
        bytes: Vec<u8>,
    },
}

/// One VLAN tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan {
    /// [`ETH_P_8021Q`] or [`ETH_P_8021AD`].
    pub tpid: u16,
    /// Priority, DEI and VLAN id.
    pub tci: u16,
}

/// An Ethernet frame, built by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Optional VLAN tag, between the MACs and the EtherType.
    pub vlan: Option<Vlan>,
    /// The payload.
    pub net: Net,
}

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

impl Frame {
    /// A frame from `MAC_A` to `MAC_B` with `net` as payload.
    pub fn new(net: Net) -> Self {
        Frame {
            dst_mac: MAC_B,
            src_mac: MAC_A,
            vlan: None,
            net,
        }
    }

    /// IPv4 + TCP.
    pub fn tcp4(src: [u8; 4], dst: [u8; 4], tcp: Tcp) -> Self {
        Frame::new(Net::V4(Ipv4::new(src, dst), L4::Tcp(tcp)))
    }

    /// IPv6 + TCP.
    pub fn tcp6(src: [u8; 16], dst: [u8; 16], tcp: Tcp) -> Self {
        Frame::new(Net::V6(Ipv6::new(src, dst), L4::Tcp(tcp)))
    }

    /// IPv4 + UDP.
    pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Self {
        let udp = Udp {
            sport,
            dport,
            payload: payload.to_vec(),
        };
        Frame::new(Net::V4(Ipv4::new(src, dst), L4::Udp(udp)))
    }

    /// A broadcast ARP request "who has `target`? tell `sender`".
    pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Self {
        let mut b = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
        b.extend_from_slice(&MAC_A);
        b.extend_from_slice(&sender);
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&target);
        let mut f = Frame::new(Net::Other {
            ethertype: ETH_P_ARP,
            bytes: b,
        });
        f.dst_mac = [0xff; 6];
        f
    }

    /// The same frame with a VLAN tag.
    pub fn with_vlan(mut self, tpid: u16, vid: u16) -> Self {
        self.vlan = Some(Vlan {
            tpid,
            tci: vid & 0x0fff,
        });
        self
    }

    /// The same frame with this TCP payload (no-op for non-TCP frames).
    pub fn with_payload(mut self, payload: &[u8]) -> Self {
        if let Some(tcp) = self.tcp_mut() {
            tcp.payload = payload.to_vec();
        }
        self
    }

    /// The TCP segment of an IPv4/IPv6 frame, for tweaking before `build`.
    pub fn tcp_mut(&mut self) -> Option<&mut Tcp> {
        match &mut self.net {
            Net::V4(_, L4::Tcp(t)) | Net::V6(_, L4::Tcp(t)) => Some(t),
            _ => None,
        }
    }

    /// The IPv4 header, for tweaking before `build`.
    pub fn ipv4_mut(&mut self) -> Option<&mut Ipv4> {
        match &mut self.net {
            Net::V4(ip, _) => Some(ip),
            _ => None,
        }
    }

    /// Serialises the frame with every length and checksum filled in.
    pub fn build(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(&self.dst_mac);
        b.extend_from_slice(&self.src_mac);
        if let Some(vlan) = self.vlan {
            b.extend_from_slice(&vlan.tpid.to_be_bytes());
            b.extend_from_slice(&vlan.tci.to_be_bytes());
        }
        match &self.net {
            Net::V4(ip, l4) => {
                b.extend_from_slice(&ETH_P_IP.to_be_bytes());
                assert!(
                    ip.options.len() % 4 == 0 && ip.options.len() <= 40,
                    "bad IPv4 options"
                );
                let pseudo = |proto: u8, len: usize| {
                    let mut p = Vec::with_capacity(12);
                    p.extend_from_slice(&ip.src);
                    p.extend_from_slice(&ip.dst);
                    p.extend_from_slice(&[0, proto]);
                    p.extend_from_slice(&(len as u16).to_be_bytes());
                    ones_sum(&p, 0)
                };
                let body = l4.build(pseudo);
                let hlen = IPV4_LEN + ip.options.len();
                let mut h = Vec::with_capacity(hlen);
                h.push(0x40 | (hlen / 4) as u8);
                h.push(0);
                h.extend_from_slice(&((hlen + body.len()) as u16).to_be_bytes());
                h.extend_from_slice(&ip.id.to_be_bytes());
                h.extend_from_slice(&ip.frag_off.to_be_bytes());
                h.push(ip.ttl);
                h.push(l4.protocol());
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(&ip.src);
                h.extend_from_slice(&ip.dst);
                h.extend_from_slice(&ip.options);
                let check = !fold(ones_sum(&h, 0));
                h[10..12].copy_from_slice(&check.to_be_bytes());
                b.extend_from_slice(&h);
                b.extend_from_slice(&body);
            }
            Net::V6(ip, l4) => {
                b.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                let pseudo = |proto: u8, len: usize| {
                    let mut p = Vec::with_capacity(40);
                    p.extend_from_slice(&ip.src);
                    p.extend_from_slice(&ip.dst);
                    p.extend_from_slice(&(len as u32).to_be_bytes());
                    p.extend_from_slice(&[0, 0, 0, proto]);
                    ones_sum(&p, 0)
                };
                let body = l4.build(pseudo);
                let vcf = (6u32 << 28) | (ip.flow_label & 0xf_ffff);
                b.extend_from_slice(&vcf.to_be_bytes());
                b.extend_from_slice(&(body.len() as u16).to_be_bytes());
                b.push(l4.protocol());
                b.push(ip.hop_limit);
                b.extend_from_slice(&ip.src);
                b.extend_from_slice(&ip.dst);
                b.extend_from_slice(&body);
            }
            Net::Other { ethertype, bytes } => {
                b.extend_from_slice(&ethertype.to_be_bytes());
                b.extend_from_slice(bytes);
            }
        }
        b
    }
}

/// One's complement sum of `data` (big-endian 16-bit words, odd byte padded with zero) added to
/// `init`, not yet folded.
pub fn ones_sum(data: &[u8], init: u32) -> u32 {
    let mut sum = u64::from(init);
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u64::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u32
}

/// Folds a one's complement sum to 16 bits.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Where the layers of a TCP frame are and what its header says (host-order values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpView {
    /// Offset of the IP header.
    pub l3_off: usize,
    /// Offset of the TCP header.
    pub l4_off: usize,
    /// Length of the TCP segment (header + data) according to the IP header.
    pub segment_len: usize,
    /// True for IPv6.
    pub ipv6: bool,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The checksum field as stored.
    pub check: u16,
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

/// Parses Ethernet, at most one VLAN tag, IPv4 (any IHL, not a fragment) or IPv6 (TCP as next
/// header) and the TCP header. `None` when the frame is not a complete, unfragmented TCP segment.
pub fn tcp_view(frame: &[u8]) -> Option<TcpView> {
    let mut ethertype = be16(frame, 12)?;
    let mut l3 = ETH_LEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = be16(frame, 16)?;
        l3 += VLAN_LEN;
    }
    let (l4, segment_len, ipv6) = match ethertype {
        ETH_P_IP => {
            let vihl = *frame.get(l3)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            let tot = usize::from(be16(frame, l3 + 2)?);
            let frag = be16(frame, l3 + 6)?;
            if vihl >> 4 != 4 || ihl < IPV4_LEN || frag & 0x3fff != 0 {
                return None;
            }
            if *frame.get(l3 + 9)? != IPPROTO_TCP || tot < ihl {
                return None;
            }
            (l3 + ihl, tot - ihl, false)
        }
        ETH_P_IPV6 => {
            if *frame.get(l3 + 6)? != IPPROTO_TCP {
                return None;
            }
            (l3 + IPV6_LEN, usize::from(be16(frame, l3 + 4)?), true)
        }
        _ => return None,
    };
    if segment_len < TCP_LEN || frame.len() < l4 + segment_len {
        return None;
    }
    Some(TcpView {
        l3_off: l3,
        l4_off: l4,
        segment_len,
        ipv6,
        sport: be16(frame, l4)?,
        dport: be16(frame, l4 + 2)?,
        check: be16(frame, l4 + 16)?,
    })
}

/// Host-order `(source, destination)` ports of a TCP frame.
pub fn tcp_ports(frame: &[u8]) -> Option<(u16, u16)> {
    tcp_view(frame).map(|v| (v.sport, v.dport))
}

/// Recomputes the TCP checksum of `frame` from scratch (pseudo-header included) and says whether
/// the stored one is right. False for anything that is not a complete TCP segment.
pub fn tcp_checksum_valid(frame: &[u8]) -> bool {
    let Some(v) = tcp_view(frame) else {
        return false;
    };
    let ip = &frame[v.l3_off..];
    let mut pseudo = Vec::with_capacity(40);
    if v.ipv6 {
        pseudo.extend_from_slice(&ip[8..40]);
        pseudo.extend_from_slice(&(v.segment_len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_TCP]);
    } else {
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&(v.segment_len as u16).to_be_bytes());
    }
    let segment = &frame[v.l4_off..v.l4_off + v.segment_len];
    // Summing data that includes a correct checksum gives 0xffff (negative zero).
    fold(ones_sum(segment, ones_sum(&pseudo, 0))) == 0xffff
}

/// Recomputes the IPv4 header checksum of a TCP/IPv4 frame; false for anything else.
pub fn ipv4_header_checksum_valid(frame: &[u8]) -> bool {
    match tcp_view(frame) {
        Some(v) if !v.ipv6 => {
            let ihl = usize::from(frame[v.l3_off] & 0x0f) * 4;
            fold(ones_sum(&frame[v.l3_off..v.l3_off + ihl], 0)) == 0xffff
        }
        _ => false,
    }
}

/// Indices where `a` and `b` differ (and every index past the shorter one).
pub fn diff_offsets(a: &[u8], b: &[u8]) -> Vec<usize> {
    let common = a.len().min(b.len());
    let mut out: Vec<usize> = (0..common).filter(|&i| a[i] != b[i]).collect();
    out.extend(common..a.len().max(b.len()));
    out
}

/// The addresses of a TCP frame (as [`tcp_view`] accepts it), in network byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpPair {
    /// IPv4 source and destination.
    V4([u8; 4], [u8; 4]),
    /// IPv6 source and destination.
    V6([u8; 16], [u8; 16]),
}

/// Source and destination address of a TCP frame; `None` for anything [`tcp_view`] rejects.
pub fn tcp_addrs(frame: &[u8]) -> Option<IpPair> {
    let v = tcp_view(frame)?;
    let ip = &frame[v.l3_off..];
    Some(if v.ipv6 {
        IpPair::V6(ip[8..24].try_into().ok()?, ip[24..40].try_into().ok()?)
    } else {
        IpPair::V4(ip[12..16].try_into().ok()?, ip[16..20].try_into().ok()?)
    })
}
