//! Writes a `DataplanePlan` into the BPF maps as a minimal diff against what they hold.
//!
//! Order keeps every intermediate state valid for packets in flight: new ports and slots first,
//! then the new Maglev table into the inactive half, then one write of `STATE` that flips the
//! live half, and only then the removal of what the new plan no longer has.
use std::collections::BTreeMap;

use aya::{
    maps::{Array, HashMap, MapData},
    Ebpf, Pod,
};
use ingress_common::{map_name, SteerState, WorkerSlot, MAGLEV_SIZE};

use super::{plan::DataplanePlan, DataplaneError};

/// What one `apply` changed (logged, and used by tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub entries_written: usize,
    pub entries_removed: usize,
    pub table_flipped: bool,
}

/// Applies `plan` given that the maps hold `current` and the live Maglev half is `active_half`.
/// Returns the new live half.
pub(super) fn apply(
    ebpf: &mut Ebpf,
    current: &DataplanePlan,
    active_half: u32,
    plan: &DataplanePlan,
) -> Result<(u32, ApplyStats), DataplaneError> {
    let mut stats = ApplyStats::default();

    stats.entries_written += upsert_hash(
        ebpf,
        map_name::PUBLIC_PORTS,
        &current.public_ports,
        &plan.public_ports,
    )?;
    stats.entries_written += upsert_hash(
        ebpf,
        map_name::WORKER_PORTS,
        &current.worker_ports,
        &plan.worker_ports,
    )?;
    {
        let mut slots: Array<&mut MapData, WorkerSlot> = array(ebpf, map_name::SLOTS)?;
        for (&index, slot) in &plan.slots {
            if current.slots.get(&index) != Some(slot) {
                slots
                    .set(index, *slot, 0)
                    .map_err(|e| map_err(map_name::SLOTS, e))?;
                stats.entries_written += 1;
            }
        }
    }

    let mut half = active_half;
    let table_changed = plan.maglev != current.maglev || plan.hash_mode != current.hash_mode;
    if table_changed && !plan.maglev.is_empty() {
        half = active_half ^ 1;
        let mut maglev: Array<&mut MapData, u32> = array(ebpf, map_name::MAGLEV)?;
        let base = half * MAGLEV_SIZE;
        for (i, &slot) in plan.maglev.iter().enumerate() {
            maglev
                .set(base + i as u32, slot, 0)
                .map_err(|e| map_err(map_name::MAGLEV, e))?;
        }
        stats.entries_written += plan.maglev.len();
        stats.table_flipped = true;
    }
    let state = SteerState {
        maglev_active: half,
        slot_count: plan.slot_count,
        hash_mode: plan.hash_mode,
        ..SteerState::default()
    };
    let mut state_map: Array<&mut MapData, SteerState> = array(ebpf, map_name::STATE)?;
    state_map
        .set(0, state, 0)
        .map_err(|e| map_err(map_name::STATE, e))?;

    {
        let mut slots: Array<&mut MapData, WorkerSlot> = array(ebpf, map_name::SLOTS)?;
        for index in current.slots.keys().filter(|i| !plan.slots.contains_key(i)) {
            slots
                .set(*index, WorkerSlot::default(), 0)
                .map_err(|e| map_err(map_name::SLOTS, e))?;
            stats.entries_removed += 1;
        }
    }
    stats.entries_removed += remove_stale(
        ebpf,
        map_name::PUBLIC_PORTS,
        &current.public_ports,
        &plan.public_ports,
    )?;
    stats.entries_removed += remove_stale(
        ebpf,
        map_name::WORKER_PORTS,
        &current.worker_ports,
        &plan.worker_ports,
    )?;
    Ok((half, stats))
}

fn array<'a, V: Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<Array<&'a mut MapData, V>, DataplaneError> {
    let map = ebpf.map_mut(name).ok_or(DataplaneError::MissingMap(name))?;
    Array::try_from(map).map_err(|e| map_err(name, e))
}

fn hash<'a, K: Pod + Ord, V: Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>, DataplaneError> {
    let map = ebpf.map_mut(name).ok_or(DataplaneError::MissingMap(name))?;
    HashMap::try_from(map).map_err(|e| map_err(name, e))
}

fn upsert_hash<K: Pod + Ord, V: Pod + PartialEq>(
    ebpf: &mut Ebpf,
    name: &'static str,
    current: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) -> Result<usize, DataplaneError> {
    let mut map: HashMap<_, K, V> = hash(ebpf, name)?;
    let mut n = 0;
    for (k, v) in want {
        if current.get(k) != Some(v) {
            map.insert(k, v, 0).map_err(|e| map_err(name, e))?;
            n += 1;
        }
    }
    Ok(n)
}

fn remove_stale<K: Pod + Ord, V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    current: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) -> Result<usize, DataplaneError> {
    let mut map: HashMap<_, K, V> = hash(ebpf, name)?;
    let mut n = 0;
    for k in current.keys().filter(|k| !want.contains_key(k)) {
        map.remove(k).map_err(|e| map_err(name, e))?;
        n += 1;
    }
    Ok(n)
}

fn map_err(name: &'static str, source: aya::maps::MapError) -> DataplaneError {
    DataplaneError::Map { name, source }
}
