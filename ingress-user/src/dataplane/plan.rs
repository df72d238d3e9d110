//! What the BPF maps should hold, computed from the worker layout and the source policy. Pure:
//! no aya, no I/O.
//!
//! `plan(&WorkerLayout, &Policy)` → `DataplanePlan`; `apply` then diffs it against what the maps
//! hold and writes only the difference. The layout says, for each public port (listener), the
//! worker port of every slot in this daemon's generation (and in the other one, whose replies TC
//! must still restore while a predecessor drains), and which slots are live; the Maglev table is
//! built over the live slots only.
use std::collections::BTreeMap;

use ingress_common::{
    PortConfig, WorkerSlot, HASH_FOUR_TUPLE, HASH_SOURCE, MAGLEV_SIZE, MAX_LISTENERS, MAX_SLOTS,
    PORT_DEFAULT_DENY, PORT_HAS_RULES, STATE_HAS_GLOBAL_RULES, STATE_SYN_LIMIT,
};

use super::{
    maglev::{self, MaglevError, MaglevSlot},
    policy::Policy,
};

/// How XDP hashes a flow to choose its worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SteerBy {
    /// The 4-tuple: connections spread evenly over workers.
    #[default]
    FourTuple,
    /// The source address: a client always reaches the same worker.
    Source,
}

/// The worker side of the data plane: listeners and their per-slot worker ports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerLayout {
    pub listeners: Vec<ListenerLayout>,
    /// Liveness per slot index (shared by all listeners: slot s is one worker thread).
    pub live: Vec<bool>,
    pub steer_by: SteerBy,
}

/// One public port and the worker port of each slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerLayout {
    pub public_port: u16,
    /// This daemon's worker ports, by slot.
    pub worker_ports: Vec<u16>,
    /// The other generation's worker ports of the same slots (a predecessor's or successor's).
    pub standby_ports: Vec<u16>,
}

/// The desired content of every map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataplanePlan {
    /// PUBLIC_PORTS: public port → listener index and policy flags.
    pub public_ports: BTreeMap<u16, PortConfig>,
    /// SLOTS: index → slot (only non-empty entries; all others must be zero).
    pub slots: BTreeMap<u32, WorkerSlot>,
    /// WORKER_PORTS: worker port (both generations) → public port.
    pub worker_ports: BTreeMap<u16, u16>,
    /// One Maglev table (`MAGLEV_SIZE` entries), empty when no slot is live.
    pub maglev: Vec<u32>,
    /// STATE.slot_count (0 disables steering).
    pub slot_count: u32,
    /// STATE.hash_mode.
    pub hash_mode: u32,
    /// STATE.flags.
    pub state_flags: u32,
    pub syn_rate: u32,
    pub syn_burst: u32,
    /// POLICY trie: (port or 0, address, trie prefix length) → action.
    pub policy_rules: BTreeMap<(u16, [u8; 16], u32), u32>,
}

/// A layout the data plane cannot hold.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0} listeners, at most {MAX_LISTENERS} are supported")]
    TooManyListeners(usize),
    #[error("{0} worker slots, at most {MAX_SLOTS} are supported")]
    TooManySlots(usize),
    #[error("listener {port} has {got} worker ports for {want} slots")]
    SlotMismatch { port: u16, got: usize, want: usize },
    #[error("public port {0} is listed twice")]
    DuplicatePort(u16),
    #[error("worker port {0} is used twice")]
    DuplicateWorkerPort(u16),
    #[error(transparent)]
    Maglev(#[from] MaglevError),
}

/// Computes the map contents for a worker layout and a policy.
pub fn plan(layout: &WorkerLayout, policy: &Policy) -> Result<DataplanePlan, PlanError> {
    let slots = layout.live.len();
    if layout.listeners.len() > MAX_LISTENERS as usize {
        return Err(PlanError::TooManyListeners(layout.listeners.len()));
    }
    if slots > MAX_SLOTS as usize {
        return Err(PlanError::TooManySlots(slots));
    }
    let mut out = DataplanePlan {
        hash_mode: match layout.steer_by {
            SteerBy::FourTuple => HASH_FOUR_TUPLE,
            SteerBy::Source => HASH_SOURCE,
        },
        ..DataplanePlan::default()
    };
    for (li, listener) in layout.listeners.iter().enumerate() {
        for ports in [&listener.worker_ports, &listener.standby_ports] {
            if ports.len() != slots {
                return Err(PlanError::SlotMismatch {
                    port: listener.public_port,
                    got: ports.len(),
                    want: slots,
                });
            }
        }
        let port = listener.public_port;
        let mut flags = 0;
        if policy.ports_with_rules.contains(&port) {
            flags |= PORT_HAS_RULES;
        }
        if policy.default_deny_ports.contains(&port) || policy.global_default_deny {
            flags |= PORT_DEFAULT_DENY;
        }
        if out
            .public_ports
            .insert(
                port,
                PortConfig {
                    listener: li as u32,
                    policy: flags,
                },
            )
            .is_some()
        {
            return Err(PlanError::DuplicatePort(port));
        }
        for (slot, &worker) in listener.worker_ports.iter().enumerate() {
            if layout.live[slot] {
                let index = li as u32 * MAX_SLOTS + slot as u32;
                out.slots.insert(
                    index,
                    WorkerSlot {
                        port: worker,
                        ..WorkerSlot::default()
                    },
                );
            }
        }
        for &worker in listener.worker_ports.iter().chain(&listener.standby_ports) {
            if out.worker_ports.insert(worker, port).is_some() {
                return Err(PlanError::DuplicateWorkerPort(worker));
            }
        }
    }
    let live: Vec<MaglevSlot> = (0..slots as u32)
        .filter(|&s| layout.live[s as usize])
        .map(|index| MaglevSlot { index, weight: 1 })
        .collect();
    out.maglev = maglev::build(&live, MAGLEV_SIZE)?;
    out.slot_count = if live.is_empty() { 0 } else { slots as u32 };
    out.policy_rules = policy.rules.clone();
    if policy.global_rules {
        out.state_flags |= STATE_HAS_GLOBAL_RULES;
    }
    if let Some(limit) = policy.syn_rate_limit {
        out.state_flags |= STATE_SYN_LIMIT;
        out.syn_rate = limit.per_second;
        out.syn_burst = limit.burst;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(live: Vec<bool>) -> WorkerLayout {
        let n = live.len() as u16;
        let ports = |base: u16| (0..n).map(|s| base + s).collect::<Vec<_>>();
        WorkerLayout {
            listeners: vec![
                ListenerLayout {
                    public_port: 80,
                    worker_ports: ports(18000),
                    standby_ports: ports(18256),
                },
                ListenerLayout {
                    public_port: 443,
                    worker_ports: ports(18512),
                    standby_ports: ports(18768),
                },
            ],
            live,
            steer_by: SteerBy::FourTuple,
        }
    }

    fn no_policy() -> Policy {
        Policy::default()
    }

    #[test]
    fn maps_every_listener_slot_and_worker_port() {
        let p = plan(&layout(vec![true, true]), &no_policy()).unwrap();
        let listener = |l| PortConfig {
            listener: l,
            policy: 0,
        };
        assert_eq!(
            p.public_ports,
            BTreeMap::from([(80, listener(0)), (443, listener(1))])
        );
        assert_eq!(p.slots[&0].port, 18000);
        assert_eq!(p.slots[&1].port, 18001);
        assert_eq!(p.slots[&MAX_SLOTS].port, 18512);
        assert_eq!(p.slots[&(MAX_SLOTS + 1)].port, 18513);
        assert_eq!(p.worker_ports[&18513], 443);
        // The other generation's ports map back too, for replies of a draining predecessor.
        assert_eq!(p.worker_ports[&18256], 80);
        assert_eq!(p.worker_ports.len(), 8);
        assert_eq!(p.slot_count, 2);
        assert_eq!(p.maglev.len(), MAGLEV_SIZE as usize);
        assert_eq!((p.state_flags, p.policy_rules.len()), (0, 0));
    }

    #[test]
    fn dead_slots_get_no_table_entries() {
        let p = plan(&layout(vec![true, false, true]), &no_policy()).unwrap();
        assert!(p.maglev.iter().all(|&s| s != 1));
        assert!(!p.slots.contains_key(&1));
        // Its worker port still maps back, so replies of draining connections are restored.
        assert_eq!(p.worker_ports[&18001], 80);
    }

    #[test]
    fn one_clients_connections_spread_evenly_over_workers() {
        // What XDP computes per flow, through the real table: 65,536 source ports of one client.
        let p = plan(&layout(vec![true; 4]), &no_policy()).unwrap();
        let mut per_slot = [0u32; 4];
        for sport in 0..=u16::MAX as u32 {
            let hash = ingress_common::flow_hash(0xc612_0001, 0xc612_0002, (sport << 16) | 80);
            per_slot[p.maglev[ingress_common::maglev_index(0, hash) as usize] as usize] += 1;
        }
        for (slot, n) in per_slot.iter().enumerate() {
            assert!(
                n.abs_diff(16_384) < 16_384 / 20,
                "slot {slot} got {n} of 65536 flows: {per_slot:?}"
            );
        }
    }

    #[test]
    fn no_live_slot_disables_steering() {
        let p = plan(&layout(vec![false, false]), &no_policy()).unwrap();
        assert_eq!(p.slot_count, 0);
        assert!(p.maglev.is_empty());
    }

    #[test]
    fn policy_sets_port_and_state_flags() {
        let policy = Policy::parse(
            "deny: [203.0.113.0/24]\nports:\n  \"443\": {allow: [198.18.0.0/15], defaultDeny: true}\nsynRateLimit: {perSecond: 5, burst: 9}",
            "test",
        )
        .unwrap();
        let p = plan(&layout(vec![true]), &policy).unwrap();
        assert_eq!(p.public_ports[&80].policy, 0);
        assert_eq!(
            p.public_ports[&443].policy,
            PORT_HAS_RULES | PORT_DEFAULT_DENY
        );
        assert_eq!(p.state_flags, STATE_HAS_GLOBAL_RULES | STATE_SYN_LIMIT);
        assert_eq!((p.syn_rate, p.syn_burst), (5, 9));
        assert_eq!(p.policy_rules.len(), 2);
        let everyone_denied = Policy::parse("defaultDeny: true", "test").unwrap();
        let p = plan(&layout(vec![true]), &everyone_denied).unwrap();
        assert!(p
            .public_ports
            .values()
            .all(|c| c.policy == PORT_DEFAULT_DENY));
    }

    #[test]
    fn rejects_what_the_maps_cannot_hold() {
        let mut l = layout(vec![true]);
        l.listeners[1].public_port = 80;
        assert!(matches!(
            plan(&l, &no_policy()),
            Err(PlanError::DuplicatePort(80))
        ));
        let mut l = layout(vec![true]);
        l.listeners[1].worker_ports = vec![18000];
        assert!(matches!(
            plan(&l, &no_policy()),
            Err(PlanError::DuplicateWorkerPort(18000))
        ));
        let mut l = layout(vec![true, true]);
        l.listeners[0].worker_ports.pop();
        assert!(matches!(
            plan(&l, &no_policy()),
            Err(PlanError::SlotMismatch {
                port: 80,
                got: 1,
                want: 2
            })
        ));
        assert!(matches!(
            plan(&layout(vec![true; 300]), &no_policy()),
            Err(PlanError::TooManySlots(300))
        ));
    }
}
