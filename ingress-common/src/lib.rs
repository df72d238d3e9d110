//! The kernel ABI of xdp-ingress: everything the eBPF programs and the daemon must agree on.
//!
//! Owns map names, map sizes, the `#[repr(C)]` values stored in maps, the counter indices and the
//! flow hash. The eBPF programs (`ingress-ebpf`) read these maps on every packet; the daemon
//! (`ingress-user`, feature `user`) writes them through aya and reads the counters back.
//!
//! Data flow, per packet, for a TCP segment to a public port (XDP, ingress):
//! `PUBLIC_PORTS[dport] -> listener` → `flow_hash(4-tuple) % MAGLEV_SIZE` → `MAGLEV[active half]
//! -> slot` → `SLOTS[listener * MAX_SLOTS + slot].port` → destination port rewritten.
//! On the way out (TC, egress): `WORKER_PORTS[sport] -> public port` → source port restored.
//!
//! All ports stored in maps are in host byte order, so `bpftool map dump` shows them as numbers.
#![no_std]

/// Folder (under a bpffs mount) where the daemon pins its maps. Bump the `v` when any layout here
/// changes, so a new daemon never reuses maps of an older layout.
pub const PIN_SUBDIR: &str = "v1";

/// Map names, as declared by the eBPF programs and pinned by the daemon.
pub mod map_name {
    /// `HashMap<u16 public port, PortConfig>`: the ports XDP steers, and their policy flags.
    pub const PUBLIC_PORTS: &str = "PUBLIC_PORTS";
    /// `Array<WorkerSlot>` of `MAX_LISTENERS * MAX_SLOTS`: the worker port of each slot.
    pub const SLOTS: &str = "SLOTS";
    /// `Array<u32 slot>` of `2 * MAGLEV_SIZE`: two Maglev lookup tables (double buffer).
    pub const MAGLEV: &str = "MAGLEV";
    /// `Array<SteerState>` of 1: which Maglev half is live, how many slots there are.
    pub const STATE: &str = "STATE";
    /// `HashMap<u16 worker port, u16 public port>`: what TC egress restores.
    pub const WORKER_PORTS: &str = "WORKER_PORTS";
    /// `PerCpuArray<u64>` of `Counter::COUNT`: one counter per verdict and reason.
    pub const COUNTERS: &str = "COUNTERS";
    /// `LruHashMap<FlowKey, Flow>` of `FLOWS_ENTRIES`: the connection table. A flow keeps the
    /// worker port it was given, whatever later happens to the Maglev table or the slots.
    pub const FLOWS: &str = "FLOWS";
    /// `LpmTrie<PolicyKey, u32 POLICY_*>` of `POLICY_ENTRIES`: source allow/deny CIDRs, global
    /// (port 0) and per public port.
    pub const POLICY: &str = "POLICY";
    /// `LruHashMap<[u8; 16] source (IPv4-mapped for IPv4), TokenBucket>`: per-source SYN budget.
    pub const SYN_BUDGET: &str = "SYN_BUDGET";
}

/// Program names (the function names of the eBPF entry points).
pub mod program_name {
    /// XDP, ingress: steers new and established connections to worker ports.
    pub const XDP_STEER: &str = "xdp_steer";
    /// TC classifier, egress: restores the public source port on replies.
    pub const TC_RESTORE: &str = "tc_restore";
}

/// How many public ports (listeners: 80, 443, ...) the data plane can steer.
pub const MAX_LISTENERS: u32 = 8;
/// How many worker slots each listener can have.
pub const MAX_SLOTS: u32 = 256;
/// Size of one Maglev lookup table: prime, and larger than 100 × `MAX_SLOTS` so the share of each
/// slot differs from the mean by well under 1%.
pub const MAGLEV_SIZE: u32 = 65_537;
/// Entries of the `MAGLEV` map: two tables, the live one selected by `SteerState::maglev_active`.
pub const MAGLEV_ENTRIES: u32 = 2 * MAGLEV_SIZE;
/// Entries of the `PUBLIC_PORTS` hash map.
pub const PUBLIC_PORTS_ENTRIES: u32 = MAX_LISTENERS;
/// Entries of the `SLOTS` array.
pub const SLOTS_ENTRIES: u32 = MAX_LISTENERS * MAX_SLOTS;
/// Entries of the `WORKER_PORTS` hash map: every slot of every listener, two generations.
pub const WORKER_PORTS_ENTRIES: u32 = 2 * MAX_LISTENERS * MAX_SLOTS;
/// Default entries of the `FLOWS` connection table (the daemon may size it at load time).
pub const FLOWS_ENTRIES: u32 = 262_144;
/// Entries of the `POLICY` trie.
pub const POLICY_ENTRIES: u32 = 16_384;
/// Entries of the `SYN_BUDGET` table (least recently seen sources are evicted first).
pub const SYN_BUDGET_ENTRIES: u32 = 65_536;

/// Value of `PUBLIC_PORTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortConfig {
    /// Index of this public port in `SLOTS` (`listener * MAX_SLOTS + slot`).
    pub listener: u32,
    /// `PORT_*` flags.
    pub policy: u32,
}

/// `PortConfig::policy`: `POLICY` holds rules for this port (else only global rules are looked up).
pub const PORT_HAS_RULES: u32 = 1;
/// `PortConfig::policy`: sources matching no rule (port or global) are dropped (allow-list mode).
pub const PORT_DEFAULT_DENY: u32 = 2;

/// Key of the `FLOWS` connection table. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`),
/// so one layout serves both families. Addresses in network byte order, ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// Reserved, zero (keeps the key free of padding bytes).
    pub _pad: u32,
}

/// Value of the `FLOWS` connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// The worker port this connection was steered to (host order).
    pub worker_port: u16,
    /// Reserved, zero.
    pub flags: u16,
    /// `SteerState::epoch` when the flow was recorded (which daemon generation owns it).
    pub epoch: u32,
    /// Packets seen (approximate under concurrent updates: for `inspect`'s top flows).
    pub packets: u64,
}

/// Key data of the `POLICY` LPM trie (the trie's own key adds the prefix length in front). A rule
/// always matches the whole port (port 0 = every public port), so its prefix length is
/// `32 + 96 + v4 prefix` for IPv4 (IPv4-mapped) or `32 + v6 prefix` for IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyKey {
    /// Public port in host order, 0 for rules of every public port.
    pub port: u16,
    /// Reserved, zero.
    pub _pad: u16,
    /// Source address, IPv4-mapped for IPv4.
    pub addr: [u8; 16],
}

/// Bits of `PolicyKey` before the address.
pub const POLICY_KEY_PORT_BITS: u32 = 32;
/// `POLICY` value: sources in this CIDR are allowed.
pub const POLICY_ALLOW: u32 = 1;
/// `POLICY` value: sources in this CIDR are dropped.
pub const POLICY_DENY: u32 = 2;

/// Value of `SYN_BUDGET`: a token bucket in milli-tokens.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens left × 1000.
    pub milli_tokens: u64,
    /// `bpf_ktime_get_ns` of the last refill.
    pub last_ns: u64,
}

/// Milli-tokens one SYN takes from its source's `TokenBucket`.
pub const SYN_COST_MILLI: u64 = 1000;

impl TokenBucket {
    /// A bucket seen for the first time at `now_ns`: full (`burst` tokens).
    #[inline(always)]
    pub const fn full(now_ns: u64, burst: u32) -> TokenBucket {
        TokenBucket {
            milli_tokens: burst as u64 * 1000,
            last_ns: now_ns,
        }
    }

    /// The bucket at `now_ns`, refilled at `rate` tokens per second and capped at `burst` tokens.
    ///
    /// Credits `elapsed_ns * rate / 1e6` milli-tokens without overflow for any inputs: once the
    /// elapsed time would fill the bucket it is simply full, and below that bound the product is
    /// under `burst * 1e9 < 2^64`. Only whole milli-tokens are credited and `last_ns` moves on by
    /// the time they account for, so frequent calls (a SYN flood) do not lose the fractional rest
    /// and the long-run rate holds. `rate` 0 never refills; a clock behind `last_ns` credits
    /// nothing.
    #[inline(always)]
    pub const fn refilled(self, now_ns: u64, rate: u32, burst: u32) -> TokenBucket {
        let cap = burst as u64 * 1000;
        if self.milli_tokens >= cap {
            return TokenBucket {
                milli_tokens: cap,
                last_ns: now_ns,
            };
        }
        if rate == 0 {
            return self;
        }
        let rate = rate as u64;
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let missing = cap - self.milli_tokens;
        // At most (2^32 - 1) * 1000 * 1e6 < 2^62.
        let fill_ns = missing * 1_000_000 / rate;
        if elapsed >= fill_ns {
            return TokenBucket {
                milli_tokens: cap,
                last_ns: now_ns,
            };
        }
        // elapsed * rate < fill_ns * rate <= missing * 1e6: no overflow.
        let add = elapsed * rate / 1_000_000;
        TokenBucket {
            milli_tokens: self.milli_tokens + add,
            last_ns: self.last_ns + add * 1_000_000 / rate,
        }
    }
}

/// The IPv4-mapped IPv6 form of an IPv4 address (network order bytes).
#[inline(always)]
pub const fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// One worker slot of one listener: the port its worker listens on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerSlot {
    /// Worker port (host byte order); 0 means the slot is empty and nothing is steered to it.
    pub port: u16,
    /// Reserved, zero.
    pub flags: u16,
    /// Reserved, zero.
    pub _reserved: u32,
}

/// Global steering state, the single entry of the `STATE` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerState {
    /// Which half of `MAGLEV` is live: 0 or 1. Userspace writes the other half, then flips this.
    pub maglev_active: u32,
    /// Number of slots the live table refers to; 0 disables steering (everything passes).
    pub slot_count: u32,
    /// How the flow hash is computed: `HASH_FOUR_TUPLE` or `HASH_SOURCE`.
    pub hash_mode: u32,
    /// `STATE_*` flags.
    pub flags: u32,
    /// SYN rate limit per source address, SYNs per second (used with `STATE_SYN_LIMIT`).
    pub syn_rate: u32,
    /// SYN burst per source address (bucket size).
    pub syn_burst: u32,
    /// Bumped by every daemon that takes over the data plane; new flows record it. A daemon
    /// that sees a different epoch than its own has been superseded and drains.
    pub epoch: u32,
    /// Which generation of worker ports (0 or 1) the live slots use.
    pub generation: u32,
}

/// `SteerState::flags`: `POLICY` holds global rules (port 0).
pub const STATE_HAS_GLOBAL_RULES: u32 = 1;
/// `SteerState::flags`: per-source SYN rate limit is on.
pub const STATE_SYN_LIMIT: u32 = 2;

/// Hash the whole 4-tuple: connections spread evenly over workers.
pub const HASH_FOUR_TUPLE: u32 = 0;
/// Hash the source address only: a client always reaches the same worker.
pub const HASH_SOURCE: u32 = 1;

/// Index of each counter in the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// XDP rewrote the destination port to a worker port.
    XdpSteered = 0,
    /// XDP: not IPv4/IPv6 (ARP, LLDP, ...), passed untouched.
    XdpPassNotIp = 1,
    /// XDP: IP but not TCP, passed untouched.
    XdpPassNotTcp = 2,
    /// XDP: TCP to a port we do not steer, passed untouched.
    XdpPassNotOurs = 3,
    /// XDP: a header was truncated or malformed, passed untouched for the kernel to judge.
    XdpPassMalformed = 4,
    /// XDP: a public port but no worker slot is live, passed to the public-port socket.
    XdpPassNoWorker = 5,
    /// XDP: a TCP packet we do not parse (IPv4 fragment or options, IPv6 extension headers, a
    /// second VLAN tag), passed untouched.
    XdpPassUnsupported = 6,
    /// TC: restored the public source port on a reply from a worker.
    TcRestored = 7,
    /// TC: not a reply from a worker port, passed untouched.
    TcPassNotOurs = 8,
    /// TC: a header was truncated or malformed, passed untouched.
    TcPassMalformed = 9,
    /// TC: rewriting the packet failed (helper error), passed unchanged.
    TcRewriteFailed = 10,
    /// XDP: source denied by policy, dropped.
    XdpDropDenied = 11,
    /// XDP: SYN over the source's rate limit, dropped.
    XdpDropRateLimited = 12,
    /// XDP event (also counted as steered): a SYN opened a flow in the connection table.
    XdpFlowNew = 13,
    /// XDP event (also counted as steered): a non-SYN segment had no flow (evicted, or opened
    /// before the table existed); steered by Maglev and recorded.
    XdpFlowMiss = 14,
    /// XDP event (also counted as steered): an RST closed a flow.
    XdpFlowClosed = 15,
}

impl Counter {
    /// Number of counters: the size of the `COUNTERS` map.
    pub const COUNT: u32 = 16;

    /// Every counter, in index order.
    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::XdpSteered,
        Counter::XdpPassNotIp,
        Counter::XdpPassNotTcp,
        Counter::XdpPassNotOurs,
        Counter::XdpPassMalformed,
        Counter::XdpPassNoWorker,
        Counter::XdpPassUnsupported,
        Counter::TcRestored,
        Counter::TcPassNotOurs,
        Counter::TcPassMalformed,
        Counter::TcRewriteFailed,
        Counter::XdpDropDenied,
        Counter::XdpDropRateLimited,
        Counter::XdpFlowNew,
        Counter::XdpFlowMiss,
        Counter::XdpFlowClosed,
    ];

    /// `(program, verdict, reason)` labels used for metrics and `inspect`.
    pub const fn labels(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Counter::XdpSteered => ("xdp", "steered", "worker"),
            Counter::XdpPassNotIp => ("xdp", "pass", "not_ip"),
            Counter::XdpPassNotTcp => ("xdp", "pass", "not_tcp"),
            Counter::XdpPassNotOurs => ("xdp", "pass", "not_ours"),
            Counter::XdpPassMalformed => ("xdp", "pass", "malformed"),
            Counter::XdpPassNoWorker => ("xdp", "pass", "no_worker"),
            Counter::XdpPassUnsupported => ("xdp", "pass", "unsupported"),
            Counter::TcRestored => ("tc", "restored", "worker_reply"),
            Counter::TcPassNotOurs => ("tc", "pass", "not_ours"),
            Counter::TcPassMalformed => ("tc", "pass", "malformed"),
            Counter::TcRewriteFailed => ("tc", "pass", "rewrite_failed"),
            Counter::XdpDropDenied => ("xdp", "drop", "denied"),
            Counter::XdpDropRateLimited => ("xdp", "drop", "rate_limited"),
            Counter::XdpFlowNew => ("xdp", "event", "flow_new"),
            Counter::XdpFlowMiss => ("xdp", "event", "flow_miss"),
            Counter::XdpFlowClosed => ("xdp", "event", "flow_closed"),
        }
    }
}

/// The flow hash both sides agree on (Jenkins `jhash_3words`, the kernel's own), over host-order
/// values: `a` = source address, `b` = destination address, `c` = source port << 16 | dest port.
/// For IPv6 the addresses are first folded to 32 bits with `fold_v6`.
#[inline(always)]
pub const fn flow_hash(a: u32, b: u32, c: u32) -> u32 {
    const JHASH_INITVAL: u32 = 0xdead_beef;
    let init = JHASH_INITVAL.wrapping_add(3 << 2);
    let mut a = a.wrapping_add(init);
    let mut b = b.wrapping_add(init);
    let mut c = c.wrapping_add(init);
    // __jhash_final
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

/// Folds an IPv6 address (four host-order words) into 32 bits for `flow_hash`.
#[inline(always)]
pub const fn fold_v6(words: [u32; 4]) -> u32 {
    words[0] ^ words[1] ^ words[2] ^ words[3]
}

/// The Maglev entry index for a flow in the live half.
#[inline(always)]
pub const fn maglev_index(active_half: u32, hash: u32) -> u32 {
    (active_half & 1) * MAGLEV_SIZE + hash % MAGLEV_SIZE
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, no padding bytes (field sizes add up to the size).
    unsafe impl aya::Pod for super::WorkerSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SteerState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Flow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TokenBucket {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn counter_table_is_in_index_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32, "{c:?} is out of order");
        }
    }

    #[test]
    fn abi_sizes_have_no_padding() {
        assert_eq!(core::mem::size_of::<WorkerSlot>(), 8);
        assert_eq!(core::mem::size_of::<SteerState>(), 32);
        assert_eq!(core::mem::size_of::<PortConfig>(), 8);
        assert_eq!(core::mem::size_of::<FlowKey>(), 40);
        assert_eq!(core::mem::size_of::<Flow>(), 16);
        assert_eq!(core::mem::size_of::<PolicyKey>(), 20);
        assert_eq!(core::mem::size_of::<TokenBucket>(), 16);
    }

    #[test]
    fn token_bucket_refills_at_rate_without_overflow() {
        const S: u64 = 1_000_000_000;
        // 1 SYN/s, burst 3: empty bucket, half a second gives 500 milli-tokens.
        let empty = TokenBucket {
            milli_tokens: 0,
            last_ns: 10 * S,
        };
        let b = empty.refilled(10 * S + S / 2, 1, 3);
        assert_eq!(b.milli_tokens, 500);
        assert_eq!(b.last_ns, 10 * S + S / 2);
        // Long idle: full, never more.
        assert_eq!(
            empty.refilled(u64::MAX, 1, 3),
            TokenBucket::full(u64::MAX, 3)
        );
        // Many tiny steps (1 ms each, 0.001 token) add up: nothing is lost to rounding.
        let mut b = empty;
        for i in 1..=2000u64 {
            b = b.refilled(10 * S + i * (S / 1000) + 7, 1, 3);
        }
        assert_eq!(b.milli_tokens, 2000);
        // Sub-milli-token steps (rate 1: one milli-token per ms) keep their time.
        let mut b = empty;
        for i in 1..=1000u64 {
            b = b.refilled(10 * S + i * 1_000, 1, 3); // 1 us each
        }
        assert_eq!(b.milli_tokens, 1);
        // Extreme values do not overflow (debug build panics on overflow).
        let b = TokenBucket {
            milli_tokens: 0,
            last_ns: 0,
        };
        assert_eq!(
            b.refilled(u64::MAX, u32::MAX, u32::MAX).milli_tokens,
            u64::from(u32::MAX) * 1000
        );
        let r = b.refilled(S - 1, u32::MAX, u32::MAX);
        assert!(r.milli_tokens < u64::from(u32::MAX) * 1000 && r.milli_tokens > 0);
        // Rate 0 never refills; a lower burst clamps; a clock going back credits nothing.
        assert_eq!(empty.refilled(100 * S, 0, 3), empty);
        let over = TokenBucket {
            milli_tokens: 9000,
            last_ns: 0,
        };
        assert_eq!(over.refilled(5, 1, 3).milli_tokens, 3000);
        assert_eq!(empty.refilled(S, 1, 3), empty);
    }

    #[test]
    fn maglev_size_is_prime_and_large_enough() {
        let m = MAGLEV_SIZE;
        assert!((2..m)
            .take_while(|d| d * d <= m)
            .all(|d| !m.is_multiple_of(d)));
        assert!(m > 100 * MAX_SLOTS);
    }

    #[test]
    fn flow_hash_spreads_sequential_source_ports_evenly() {
        // Clients on one address with consecutive ephemeral ports must not pile onto few slots.
        let mut buckets = [0u32; 64];
        for port in 0..65_536u32 {
            let h = flow_hash(0xc612_0001, 0xc612_0002, (port << 16) | 80);
            buckets[(h % 64) as usize] += 1;
        }
        let mean = 65_536 / 64;
        for (i, n) in buckets.iter().enumerate() {
            assert!(
                n.abs_diff(mean) < mean / 5,
                "bucket {i} holds {n}, mean {mean}"
            );
        }
        assert_eq!(maglev_index(1, 5), MAGLEV_SIZE + 5);
        assert_eq!(maglev_index(0, MAGLEV_SIZE + 1), 1);
    }
}
