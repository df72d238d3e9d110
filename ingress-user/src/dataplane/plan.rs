//! What the BPF maps should hold, computed from the worker layout. Pure: no aya, no I/O.
//!
//! `plan(&WorkerLayout)` → `DataplanePlan`; `apply` then diffs it against what the maps hold and
//! writes only the difference. The layout says, for each public port (listener), the worker port
//! of every slot, and which slots are live; the Maglev table is built over the live slots only.
use std::collections::BTreeMap;

use ingress_common::{
    PortConfig, WorkerSlot, HASH_FOUR_TUPLE, HASH_SOURCE, MAGLEV_SIZE, MAX_LISTENERS, MAX_SLOTS,
};

use super::maglev::{self, MaglevError, MaglevSlot};

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
    pub worker_ports: Vec<u16>,
}

/// The desired content of every map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataplanePlan {
    /// PUBLIC_PORTS: public port → listener index and policy flags.
    pub public_ports: BTreeMap<u16, PortConfig>,
    /// SLOTS: index → slot (only non-empty entries; all others must be zero).
    pub slots: BTreeMap<u32, WorkerSlot>,
    /// WORKER_PORTS: worker port → public port.
    pub worker_ports: BTreeMap<u16, u16>,
    /// One Maglev table (`MAGLEV_SIZE` entries), empty when no slot is live.
    pub maglev: Vec<u32>,
    /// STATE.slot_count (0 disables steering).
    pub slot_count: u32,
    /// STATE.hash_mode.
    pub hash_mode: u32,
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

/// Computes the map contents for a worker layout.
pub fn plan(layout: &WorkerLayout) -> Result<DataplanePlan, PlanError> {
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
        if listener.worker_ports.len() != slots {
            return Err(PlanError::SlotMismatch {
                port: listener.public_port,
                got: listener.worker_ports.len(),
                want: slots,
            });
        }
        let config = PortConfig {
            listener: li as u32,
            policy: 0,
        };
        if out
            .public_ports
            .insert(listener.public_port, config)
            .is_some()
        {
            return Err(PlanError::DuplicatePort(listener.public_port));
        }
        for (slot, &port) in listener.worker_ports.iter().enumerate() {
            if out
                .worker_ports
                .insert(port, listener.public_port)
                .is_some()
            {
                return Err(PlanError::DuplicateWorkerPort(port));
            }
            if layout.live[slot] {
                let index = li as u32 * MAX_SLOTS + slot as u32;
                out.slots.insert(
                    index,
                    WorkerSlot {
                        port,
                        ..WorkerSlot::default()
                    },
                );
            }
        }
    }
    let live: Vec<MaglevSlot> = (0..slots as u32)
        .filter(|&s| layout.live[s as usize])
        .map(|index| MaglevSlot { index, weight: 1 })
        .collect();
    out.maglev = maglev::build(&live, MAGLEV_SIZE)?;
    out.slot_count = if live.is_empty() { 0 } else { slots as u32 };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(live: Vec<bool>) -> WorkerLayout {
        let n = live.len() as u16;
        WorkerLayout {
            listeners: vec![
                ListenerLayout {
                    public_port: 80,
                    worker_ports: (0..n).map(|s| 18000 + s).collect(),
                },
                ListenerLayout {
                    public_port: 443,
                    worker_ports: (0..n).map(|s| 18100 + s).collect(),
                },
            ],
            live,
            steer_by: SteerBy::FourTuple,
        }
    }

    #[test]
    fn maps_every_listener_slot_and_worker_port() {
        let p = plan(&layout(vec![true, true])).unwrap();
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
        assert_eq!(p.slots[&MAX_SLOTS].port, 18100);
        assert_eq!(p.slots[&(MAX_SLOTS + 1)].port, 18101);
        assert_eq!(p.worker_ports[&18101], 443);
        assert_eq!(p.slot_count, 2);
        assert_eq!(p.maglev.len(), MAGLEV_SIZE as usize);
    }

    #[test]
    fn dead_slots_get_no_table_entries() {
        let p = plan(&layout(vec![true, false, true])).unwrap();
        assert!(p.maglev.iter().all(|&s| s != 1));
        assert!(!p.slots.contains_key(&1));
        // Its worker port still maps back, so replies of draining connections are restored.
        assert_eq!(p.worker_ports[&18001], 80);
    }

    #[test]
    fn one_clients_connections_spread_evenly_over_workers() {
        // What XDP computes per flow, through the real table: 65,536 source ports of one client.
        let p = plan(&layout(vec![true; 4])).unwrap();
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
        let p = plan(&layout(vec![false, false])).unwrap();
        assert_eq!(p.slot_count, 0);
        assert!(p.maglev.is_empty());
    }

    #[test]
    fn rejects_what_the_maps_cannot_hold() {
        let mut l = layout(vec![true]);
        l.listeners[1].public_port = 80;
        assert!(matches!(plan(&l), Err(PlanError::DuplicatePort(80))));
        let mut l = layout(vec![true]);
        l.listeners[1].worker_ports = vec![18000];
        assert!(matches!(
            plan(&l),
            Err(PlanError::DuplicateWorkerPort(18000))
        ));
        let mut l = layout(vec![true, true]);
        l.listeners[0].worker_ports.pop();
        assert!(matches!(
            plan(&l),
            Err(PlanError::SlotMismatch {
                port: 80,
                got: 1,
                want: 2
            })
        ));
        assert!(matches!(
            plan(&layout(vec![true; 300])),
            Err(PlanError::TooManySlots(300))
        ));
    }
}
