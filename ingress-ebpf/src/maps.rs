//! The maps of the ABI in `ingress-common`, declared as BTF maps so `bpftool map dump` shows
//! field names. Userspace fills and pins them. The programs only read them, except `COUNTERS`
//! ([`count`]: one verdict per packet, plus flow events), `FLOWS` (the XDP connection table) and
//! `SYN_BUDGET` (per-source token buckets), which XDP writes.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use ingress_common::{
    Counter, Flow, FlowKey, PolicyKey, PortConfig, SteerState, TokenBucket, WorkerSlot,
    FLOWS_ENTRIES, MAGLEV_ENTRIES, POLICY_ENTRIES, PUBLIC_PORTS_ENTRIES, SLOTS_ENTRIES,
    SYN_BUDGET_ENTRIES, WORKER_PORTS_ENTRIES,
};

#[btf_map]
pub static PUBLIC_PORTS: HashMap<u16, PortConfig, { PUBLIC_PORTS_ENTRIES as usize }> =
    HashMap::new();

#[btf_map]
pub static SLOTS: Array<WorkerSlot, { SLOTS_ENTRIES as usize }> = Array::new();

#[btf_map]
pub static MAGLEV: Array<u32, { MAGLEV_ENTRIES as usize }> = Array::new();

#[btf_map]
pub static STATE: Array<SteerState, 1> = Array::new();

#[btf_map]
pub static WORKER_PORTS: HashMap<u16, u16, { WORKER_PORTS_ENTRIES as usize }> = HashMap::new();

/// The connection table: XDP records the worker port of every flow it steers.
#[btf_map]
pub static FLOWS: LruHashMap<FlowKey, Flow, { FLOWS_ENTRIES as usize }> = LruHashMap::new();

/// Source allow/deny CIDRs per public port (port 0: every port). `LpmTrie`'s default flags carry
/// the `BPF_F_NO_PREALLOC` the kernel requires.
#[btf_map]
pub static POLICY: LpmTrie<PolicyKey, u32, { POLICY_ENTRIES as usize }> = LpmTrie::new();

/// Per-source SYN token buckets (source IPv4-mapped for IPv4).
#[btf_map]
pub static SYN_BUDGET: LruHashMap<[u8; 16], TokenBucket, { SYN_BUDGET_ENTRIES as usize }> =
    LruHashMap::new();

#[btf_map]
pub static COUNTERS: PerCpuArray<u64, { Counter::COUNT as usize }> = PerCpuArray::new();

/// Adds one to `counter` on this CPU (per-CPU slot: no atomics needed).
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer is this CPU's slot of a live array entry; programs do not nest on
        // one CPU for the same slot.
        unsafe { *slot += 1 };
    }
}
