//! The test harness: one private copy of the object per test ([`Bpf`]), map writers that do what
//! the daemon does, map readers (counters, `FLOWS`, `SYN_BUDGET`), program runners that check the
//! verdict, and the predictions the tests compare with (`predict`: `flow_hash` over the test's own
//! Maglev formula; `assert_steered`/`assert_restored`: byte diffs and checksums from scratch).
use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, MapData, PerCpuArray,
    },
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use ingress_common::{
    flow_hash, fold_v6, maglev_index, map_name, program_name, v4_mapped, Counter, Flow, FlowKey,
    PolicyKey, PortConfig, SteerState, TokenBucket, WorkerSlot, HASH_FOUR_TUPLE, HASH_SOURCE,
    MAGLEV_SIZE, MAX_SLOTS, POLICY_KEY_PORT_BITS,
};
use integration_tests::packet::{
    diff_offsets, ipv4_header_checksum_valid, tcp_addrs, tcp_checksum_valid, tcp_ports, tcp_view,
    IpPair,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const TC_ACT_OK: u32 = 0;
/// First worker port; slot `i` listens on `WORKER_BASE + i`.
pub const WORKER_BASE: u16 = 18_000;
pub const PUBLIC: u16 = 80;
/// A second public port (listener 0 too, when a test adds it).
pub const PUBLIC_TLS: u16 = 443;
pub const CLIENT: [u8; 4] = [198, 18, 0, 10];
pub const NODE: [u8; 4] = [198, 18, 1, 1];
pub const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
pub const NODE6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
];

/// Slot of Maglev entry `i` in half 0 of the test's table.
pub fn half0(i: u32, n: u32) -> u32 {
    i % n
}

/// Slot of Maglev entry `i` in half 1: always a different slot than half 0 (for n > 1).
pub fn half1(i: u32, n: u32) -> u32 {
    (i + 1) % n
}

/// One loaded copy of the object, with both programs loaded and private maps.
pub struct Bpf {
    ebpf: Ebpf,
}

impl Bpf {
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(xdp_ingress::EBPF_OBJECT).context("loading the object")?;
        let xdp: &mut Xdp = ebpf
            .program_mut(program_name::XDP_STEER)
            .context("no xdp_steer program")?
            .try_into()?;
        xdp.load().map_err(|e| anyhow!("loading xdp_steer: {e}"))?;
        let tc: &mut SchedClassifier = ebpf
            .program_mut(program_name::TC_RESTORE)
            .context("no tc_restore program")?
            .try_into()?;
        tc.load().map_err(|e| anyhow!("loading tc_restore: {e}"))?;
        Ok(Bpf { ebpf })
    }

    /// Loads and fills the maps: port 80 → listener 0, `n` slots on ports 18000+i, Maglev half 0
    /// filled with `half0`, half 0 live, worker ports → 80.
    pub fn with_workers(n: u32) -> Result<Self> {
        let mut bpf = Bpf::load()?;
        bpf.public_port(PUBLIC, 0)?;
        for slot in 0..n {
            bpf.slot(0, slot, WORKER_BASE + slot as u16)?;
            bpf.worker_port(WORKER_BASE + slot as u16, PUBLIC)?;
        }
        bpf.fill_half(0, |i| half0(i, n))?;
        bpf.state(0, n, HASH_FOUR_TUPLE)?;
        Ok(bpf)
    }

    pub fn public_port(&mut self, port: u16, listener: u32) -> Result<()> {
        self.port_policy(port, listener, 0)
    }

    /// `PUBLIC_PORTS[port] = {listener, policy}` (`PORT_*` flags).
    pub fn port_policy(&mut self, port: u16, listener: u32, policy: u32) -> Result<()> {
        let mut m: HashMap<_, u16, PortConfig> = self.map(map_name::PUBLIC_PORTS)?.try_into()?;
        Ok(m.insert(port, PortConfig { listener, policy }, 0)?)
    }

    pub fn worker_port(&mut self, worker: u16, public: u16) -> Result<()> {
        let mut m: HashMap<_, u16, u16> = self.map(map_name::WORKER_PORTS)?.try_into()?;
        Ok(m.insert(worker, public, 0)?)
    }

    pub fn slot(&mut self, listener: u32, slot: u32, port: u16) -> Result<()> {
        let mut m: Array<_, WorkerSlot> = self.map(map_name::SLOTS)?.try_into()?;
        let value = WorkerSlot {
            port,
            ..Default::default()
        };
        Ok(m.set(listener * MAX_SLOTS + slot, value, 0)?)
    }

    pub fn fill_half(&mut self, half: u32, slot_of: impl Fn(u32) -> u32) -> Result<()> {
        let mut m: Array<_, u32> = self.map(map_name::MAGLEV)?.try_into()?;
        for i in 0..MAGLEV_SIZE {
            m.set(half * MAGLEV_SIZE + i, slot_of(i), 0)?;
        }
        Ok(())
    }

    /// Sets the live half, slot count and hash mode; keeps the other `STATE` fields.
    pub fn state(&mut self, maglev_active: u32, slot_count: u32, hash_mode: u32) -> Result<()> {
        self.update_state(|s| {
            s.maglev_active = maglev_active;
            s.slot_count = slot_count;
            s.hash_mode = hash_mode;
        })
    }

    /// Read-modify-write of `STATE[0]`.
    pub fn update_state(&mut self, change: impl FnOnce(&mut SteerState)) -> Result<()> {
        let mut m: Array<_, SteerState> = self.map(map_name::STATE)?.try_into()?;
        let mut state = m.get(&0, 0)?;
        change(&mut state);
        Ok(m.set(0, state, 0)?)
    }

    pub fn get_state(&self) -> Result<SteerState> {
        let m: Array<_, SteerState> = self.map_ref(map_name::STATE)?.try_into()?;
        Ok(m.get(&0, 0)?)
    }

    /// A `POLICY` rule: `value` (`POLICY_ALLOW`/`POLICY_DENY`) for sources in `addr/addr_bits`
    /// (IPv4-mapped address with 96 + v4 bits for IPv4) on `port` (0: every public port).
    pub fn rule(&mut self, port: u16, addr: [u8; 16], addr_bits: u32, value: u32) -> Result<()> {
        let mut m: LpmTrie<_, PolicyKey, u32> = self.map(map_name::POLICY)?.try_into()?;
        let key = Key::new(
            POLICY_KEY_PORT_BITS + addr_bits,
            PolicyKey {
                port,
                _pad: 0,
                addr,
            },
        );
        Ok(m.insert(&key, value, 0)?)
    }

    /// An IPv4 rule for `addr/prefix`.
    pub fn rule4(&mut self, port: u16, addr: [u8; 4], prefix: u32, value: u32) -> Result<()> {
        self.rule(port, v4_mapped(addr), 96 + prefix, value)
    }

    /// The `FLOWS` entry of `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<Flow>> {
        let m: HashMap<_, FlowKey, Flow> = self.map_ref(map_name::FLOWS)?.try_into()?;
        match m.get(key, 0) {
            Ok(flow) => Ok(Some(flow)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every `FLOWS` entry.
    pub fn flows(&self) -> Result<Vec<(FlowKey, Flow)>> {
        let m: HashMap<_, FlowKey, Flow> = self.map_ref(map_name::FLOWS)?.try_into()?;
        Ok(m.iter().collect::<Result<_, _>>()?)
    }

    /// Writes a `FLOWS` entry, as an earlier daemon (or table) would have left it.
    pub fn set_flow(&mut self, key: &FlowKey, flow: Flow) -> Result<()> {
        let mut m: HashMap<_, FlowKey, Flow> = self.map(map_name::FLOWS)?.try_into()?;
        Ok(m.insert(key, flow, 0)?)
    }

    /// The `SYN_BUDGET` bucket of a source (IPv4-mapped for IPv4).
    pub fn bucket(&self, source: [u8; 16]) -> Result<Option<TokenBucket>> {
        let m: HashMap<_, [u8; 16], TokenBucket> =
            self.map_ref(map_name::SYN_BUDGET)?.try_into()?;
        match m.get(&source, 0) {
            Ok(b) => Ok(Some(b)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn set_bucket(&mut self, source: [u8; 16], bucket: TokenBucket) -> Result<()> {
        let mut m: HashMap<_, [u8; 16], TokenBucket> =
            self.map(map_name::SYN_BUDGET)?.try_into()?;
        Ok(m.insert(source, bucket, 0)?)
    }

    fn map(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("no map {name}"))
    }

    fn map_ref(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("no map {name}"))
    }

    /// The kernel's view of a loaded program (sizes, verifier statistics).
    pub fn program_info(&self, name: &str) -> Result<aya::programs::ProgramInfo> {
        let prog = self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?;
        Ok(prog.info()?)
    }

    /// Runs `xdp_steer` once; returns the verdict and the frame it left.
    pub fn run_xdp(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let prog: &Xdp = self
            .ebpf
            .program(program_name::XDP_STEER)
            .context("no xdp_steer")?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let run = prog
            .test_run(opts)
            .map_err(|e| anyhow!("xdp test run: {e}"))?;
        out.truncate(run.data_size_out as usize);
        Ok((run.return_value, out))
    }

    /// Runs `xdp_steer` once; checks the verdict is XDP_PASS and returns the frame it left.
    pub fn xdp(&self, frame: &[u8]) -> Result<Vec<u8>> {
        let (verdict, out) = self.run_xdp(frame)?;
        ensure!(verdict == XDP_PASS, "xdp verdict {verdict}, want XDP_PASS");
        Ok(out)
    }

    /// Runs `xdp_steer` once; checks the verdict is XDP_DROP and the frame is untouched.
    pub fn xdp_dropped(&self, frame: &[u8]) -> Result<()> {
        let (verdict, out) = self.run_xdp(frame)?;
        ensure!(verdict == XDP_DROP, "xdp verdict {verdict}, want XDP_DROP");
        ensure!(
            out == frame,
            "dropped frame changed at {:?}",
            diff_offsets(frame, &out)
        );
        Ok(())
    }

    /// Runs `xdp_steer`; checks it passed `frame` byte for byte.
    pub fn xdp_unchanged(&self, frame: &[u8]) -> Result<()> {
        let out = self.xdp(frame)?;
        ensure!(out == frame, "changed at {:?}", diff_offsets(frame, &out));
        Ok(())
    }

    /// Runs `xdp_steer`; checks it steered `frame` to `port` (see [`assert_steered`]).
    pub fn xdp_steered(&self, frame: &[u8], port: u16) -> Result<()> {
        assert_steered(frame, &self.xdp(frame)?, port)
    }

    /// Runs `tc_restore` once on a full Ethernet frame; checks the verdict is TC_ACT_OK and
    /// returns the frame it left.
    pub fn tc(&self, frame: &[u8]) -> Result<Vec<u8>> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(program_name::TC_RESTORE)
            .context("no tc_restore")?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let run = prog
            .test_run(opts)
            .map_err(|e| anyhow!("tc test run: {e:?}"))?;
        ensure!(
            run.return_value == TC_ACT_OK,
            "tc verdict {}",
            run.return_value
        );
        out.truncate(run.data_size_out as usize);
        Ok(out)
    }

    /// Every counter summed over CPUs, in index order.
    pub fn counters(&self) -> Result<Vec<u64>> {
        let map = self.map_ref(map_name::COUNTERS)?;
        let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Counter::ALL
            .iter()
            .map(|c| Ok(m.get(&(*c as u32), 0)?.iter().sum()))
            .collect()
    }

    /// Asserts the counters hold exactly `expected`, and zero everywhere else.
    pub fn assert_counters(&self, expected: &[(Counter, u64)]) -> Result<()> {
        check_counters(
            &self.counters()?,
            &vec![0; Counter::COUNT as usize],
            expected,
        )
    }
}

/// Asserts `now - before` is exactly `expected` (summed per counter), zero elsewhere.
pub fn check_counters(now: &[u64], before: &[u64], expected: &[(Counter, u64)]) -> Result<()> {
    for c in Counter::ALL {
        let want: u64 = expected
            .iter()
            .filter(|(e, _)| *e == c)
            .map(|(_, n)| n)
            .sum();
        let got = now[c as usize] - before[c as usize];
        if got != want {
            bail!("counter {c:?}: got {got}, want {want} (all now: {now:?})");
        }
    }
    Ok(())
}

/// The `FLOWS` key of a TCP frame as the program builds it (IPv4-mapped, host-order ports).
pub fn key_of(frame: &[u8]) -> FlowKey {
    let v = tcp_view(frame).expect("a TCP frame");
    let (saddr, daddr) = match tcp_addrs(frame).expect("a TCP frame") {
        IpPair::V4(s, d) => (v4_mapped(s), v4_mapped(d)),
        IpPair::V6(s, d) => (s, d),
    };
    FlowKey {
        saddr,
        daddr,
        sport: v.sport,
        dport: v.dport,
        _pad: 0,
    }
}

fn fold6(addr: [u8; 16]) -> u32 {
    let w = |i: usize| u32::from_be_bytes(addr[i * 4..i * 4 + 4].try_into().unwrap());
    fold_v6([w(0), w(1), w(2), w(3)])
}

/// The worker port the test's own tables predict for a TCP frame: live half `active`, `n` slots,
/// four-tuple hash.
pub fn predict(active: u32, n: u32, frame: &[u8]) -> u16 {
    predict_mode(active, n, frame, HASH_FOUR_TUPLE)
}

/// As [`predict`], for either hash mode.
pub fn predict_mode(active: u32, n: u32, frame: &[u8], hash_mode: u32) -> u16 {
    let v = tcp_view(frame).expect("a TCP frame");
    let (s, d) = match tcp_addrs(frame).expect("a TCP frame") {
        IpPair::V4(s, d) => (u32::from_be_bytes(s), u32::from_be_bytes(d)),
        IpPair::V6(s, d) => (fold6(s), fold6(d)),
    };
    let hash = if hash_mode == HASH_SOURCE {
        flow_hash(s, 0, 0)
    } else {
        flow_hash(s, d, (u32::from(v.sport) << 16) | u32::from(v.dport))
    };
    port_of(active, n, hash)
}

pub fn port_of(active: u32, n: u32, hash: u32) -> u16 {
    let i = maglev_index(active, hash) % MAGLEV_SIZE;
    let slot = if active == 0 {
        half0(i, n)
    } else {
        half1(i, n)
    };
    WORKER_BASE + slot as u16
}

/// Checks `out` is `input` with only the destination port changed to `port`, and that both
/// checksums are valid (recomputed from scratch, pseudo-header included).
pub fn assert_steered(input: &[u8], out: &[u8], port: u16) -> Result<()> {
    let v = tcp_view(input).context("input is not TCP")?;
    ensure!(tcp_checksum_valid(input), "input checksum is already wrong");
    ensure!(
        out.len() == input.len(),
        "length {} -> {}",
        input.len(),
        out.len()
    );
    ensure!(
        tcp_ports(out) == Some((v.sport, port)),
        "ports {:?}, want ({}, {port})",
        tcp_ports(out),
        v.sport
    );
    ensure!(
        tcp_checksum_valid(out),
        "TCP checksum invalid after steering"
    );
    ensure!(
        v.ipv6 || ipv4_header_checksum_valid(out),
        "IPv4 header checksum invalid"
    );
    let allowed = [v.l4_off + 2, v.l4_off + 3, v.l4_off + 16, v.l4_off + 17];
    let changed = diff_offsets(input, out);
    ensure!(
        changed.iter().all(|o| allowed.contains(o)),
        "bytes other than dport/checksum changed: {changed:?}"
    );
    Ok(())
}

/// Checks `out` is `input` with only the source port changed to `port`, checksum valid.
pub fn assert_restored(input: &[u8], out: &[u8], port: u16) -> Result<()> {
    let v = tcp_view(input).context("input is not TCP")?;
    ensure!(
        out.len() == input.len(),
        "length {} -> {}",
        input.len(),
        out.len()
    );
    ensure!(
        tcp_ports(out) == Some((port, v.dport)),
        "ports {:?}",
        tcp_ports(out)
    );
    ensure!(
        tcp_checksum_valid(out),
        "TCP checksum invalid after restore"
    );
    let allowed = [v.l4_off, v.l4_off + 1, v.l4_off + 16, v.l4_off + 17];
    let changed = diff_offsets(input, out);
    ensure!(
        changed.iter().all(|o| allowed.contains(o)),
        "bytes other than sport/checksum changed: {changed:?}"
    );
    Ok(())
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// True (and a printed reason) when this process cannot run BPF programs.
pub fn skip(test: &str) -> bool {
    integration_tests::require_root(test).is_err()
}
