//! The maps of the ABI in `ingress-common`, declared as BTF maps so `bpftool map dump` shows
//! field names. Userspace fills and pins them; the programs only read them, except `COUNTERS`,
//! which [`count`] bumps once per packet.
use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::btf_map,
};
use ingress_common::{
    Counter, PortConfig, SteerState, WorkerSlot, MAGLEV_ENTRIES, PUBLIC_PORTS_ENTRIES,
    SLOTS_ENTRIES, WORKER_PORTS_ENTRIES,
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
