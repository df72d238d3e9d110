//! Writes a `DataplanePlan` into the BPF maps as a minimal diff against what they hold.
//!
//! Order keeps every intermediate state valid for packets in flight: new ports and slots first,
//! then the new Maglev table into the inactive half, then one write of `STATE` that flips the
//! live half, and only then the removal of what the new plan no longer has.
use std::collections::BTreeMap;

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, MapData,
    },
    Ebpf, Pod,
};
use ingress_common::{map_name, PolicyKey, SteerState, WorkerSlot, MAGLEV_SIZE};

use super::{plan::DataplanePlan, DataplaneError, Takeover};

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
    takeover: Takeover,
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

    stats.entries_written += apply_policy_upserts(ebpf, current, plan)?;

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
        flags: plan.state_flags,
        syn_rate: plan.syn_rate,
        syn_burst: plan.syn_burst,
        epoch: takeover.epoch,
        generation: takeover.generation,
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
    stats.entries_removed += apply_policy_removals(ebpf, current, plan)?;
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

type PolicyRules = BTreeMap<(u16, [u8; 16], u32), u32>;

fn policy_trie(ebpf: &mut Ebpf) -> Result<LpmTrie<&mut MapData, PolicyKey, u32>, DataplaneError> {
    let map = ebpf
        .map_mut(map_name::POLICY)
        .ok_or(DataplaneError::MissingMap(map_name::POLICY))?;
    LpmTrie::try_from(map).map_err(|e| map_err(map_name::POLICY, e))
}

fn policy_key(&(port, addr, prefix): &(u16, [u8; 16], u32)) -> Key<PolicyKey> {
    Key::new(
        prefix,
        PolicyKey {
            port,
            _pad: 0,
            addr,
        },
    )
}

/// New and changed policy rules (before the flags that make XDP look them up).
fn apply_policy_upserts(
    ebpf: &mut Ebpf,
    current: &DataplanePlan,
    plan: &DataplanePlan,
) -> Result<usize, DataplaneError> {
    let changed: PolicyRules = plan
        .policy_rules
        .iter()
        .filter(|(k, v)| current.policy_rules.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect();
    if changed.is_empty() {
        return Ok(0);
    }
    let mut trie = policy_trie(ebpf)?;
    for (rule, action) in &changed {
        trie.insert(&policy_key(rule), action, 0)
            .map_err(|e| map_err(map_name::POLICY, e))?;
    }
    Ok(changed.len())
}

/// Rules the plan no longer has (after the flags stopped pointing at them).
fn apply_policy_removals(
    ebpf: &mut Ebpf,
    current: &DataplanePlan,
    plan: &DataplanePlan,
) -> Result<usize, DataplaneError> {
    let stale: Vec<_> = current
        .policy_rules
        .keys()
        .filter(|k| !plan.policy_rules.contains_key(k))
        .collect();
    if stale.is_empty() {
        return Ok(0);
    }
    let mut trie = policy_trie(ebpf)?;
    for rule in &stale {
        trie.remove(&policy_key(rule))
            .map_err(|e| map_err(map_name::POLICY, e))?;
    }
    Ok(stale.len())
}
