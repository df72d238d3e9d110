//! `xdp-ingress inspect`: reads the pinned data plane (`<bpffs-dir>/v1/`) without touching it and
//! prints what an operator asks first: where is it attached and how, which daemon owns it (epoch,
//! generation), the slots with their worker ports and their share of the Maglev table, the
//! counters, the source policy, and the busiest flows. `--json` prints the same as one object.
use std::{
    collections::BTreeMap,
    net::Ipv6Addr,
    path::{Path, PathBuf},
};

use aya::maps::{lpm_trie::LpmTrie, Array, HashMap, Map, MapData, PerCpuArray};
use ingress_common::{
    map_name, Counter, Flow, FlowKey, PolicyKey, PortConfig, SteerState, WorkerSlot, MAGLEV_SIZE,
    MAX_SLOTS, PIN_SUBDIR, POLICY_ALLOW,
};
use serde_json::{json, Value};

use crate::dataplane::{pins, policy::show_cidr};

/// `inspect` options.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The folder the daemon pins under (its --bpffs-dir).
    #[arg(long, default_value = "/sys/fs/bpf/xdp-ingress")]
    pub bpffs_dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many flows to list (busiest first).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

/// Reading the pins failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("no pinned data plane at {0}: is xdp-ingress running with this --bpffs-dir?")]
    NotFound(PathBuf),
    #[error("reading pinned map {name} at {path}")]
    Map {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
}

pub fn inspect(args: &InspectArgs) -> Result<(), InspectError> {
    let report = collect(&args.bpffs_dir.join(PIN_SUBDIR), args.top)?;
    let text = if args.json {
        serde_json::to_string_pretty(&report).expect("JSON values serialize") + "\n"
    } else {
        render(&report)
    };
    // A closed pipe (`inspect | head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

fn open(dir: &Path, name: &'static str) -> Result<Map, InspectError> {
    let path = dir.join(name);
    let err = |source| InspectError::Map {
        name,
        path: path.clone(),
        source,
    };
    Map::from_map_data(MapData::from_pin(&path).map_err(err)?).map_err(err)
}

fn ip(addr: [u8; 16]) -> String {
    let v6 = Ipv6Addr::from(addr);
    v6.to_ipv4_mapped()
        .map_or_else(|| v6.to_string(), |v4| v4.to_string())
}

/// Everything `inspect` shows, as JSON (the text form is rendered from it).
pub fn collect(dir: &Path, top: usize) -> Result<Value, InspectError> {
    if !dir.join(map_name::STATE).exists() {
        return Err(InspectError::NotFound(dir.to_owned()));
    }
    let mapping = |name| {
        move |source| InspectError::Map {
            name,
            path: dir.join(name),
            source,
        }
    };
    let state: Array<MapData, SteerState> =
        Array::try_from(open(dir, map_name::STATE)?).map_err(mapping(map_name::STATE))?;
    let state = state.get(&0, 0).map_err(mapping(map_name::STATE))?;

    let links: Vec<Value> = pins::list_links(dir)
        .into_iter()
        .map(|(kind, iface)| json!({"interface": iface, "program": kind}))
        .collect();

    let ports: HashMap<MapData, u16, PortConfig> =
        HashMap::try_from(open(dir, map_name::PUBLIC_PORTS)?)
            .map_err(mapping(map_name::PUBLIC_PORTS))?;
    let ports: BTreeMap<u16, PortConfig> = ports.iter().filter_map(Result::ok).collect();

    // Share of the live Maglev half per slot.
    let maglev: Array<MapData, u32> =
        Array::try_from(open(dir, map_name::MAGLEV)?).map_err(mapping(map_name::MAGLEV))?;
    let mut share: BTreeMap<u32, u32> = BTreeMap::new();
    if state.slot_count > 0 {
        let base = (state.maglev_active & 1) * MAGLEV_SIZE;
        for i in 0..MAGLEV_SIZE {
            if let Ok(slot) = maglev.get(&(base + i), 0) {
                *share.entry(slot).or_default() += 1;
            }
        }
    }
    let slots_map: Array<MapData, WorkerSlot> =
        Array::try_from(open(dir, map_name::SLOTS)?).map_err(mapping(map_name::SLOTS))?;
    let mut listeners = Vec::new();
    for (public_port, config) in &ports {
        let mut slots = Vec::new();
        for slot in 0..state.slot_count {
            let entry = slots_map
                .get(&(config.listener * MAX_SLOTS + slot), 0)
                .unwrap_or_default();
            let entries = share.get(&slot).copied().unwrap_or(0);
            slots.push(json!({
                "slot": slot,
                "worker_port": entry.port,
                "live": entry.port != 0 && entries > 0,
                "table_entries": entries,
                "table_share": f64::from(entries) / f64::from(MAGLEV_SIZE),
            }));
        }
        listeners.push(json!({
            "public_port": public_port,
            "listener": config.listener,
            "allow_list_mode": config.policy & ingress_common::PORT_DEFAULT_DENY != 0,
            "has_port_rules": config.policy & ingress_common::PORT_HAS_RULES != 0,
            "slots": slots,
        }));
    }

    let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(open(dir, map_name::COUNTERS)?)
        .map_err(mapping(map_name::COUNTERS))?;
    let counters: Vec<Value> = Counter::ALL
        .iter()
        .map(|&c| {
            let (program, verdict, reason) = c.labels();
            let value: u64 = counters
                .get(&(c as u32), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0);
            json!({"program": program, "verdict": verdict, "reason": reason, "packets": value})
        })
        .collect();

    let policy = match open(dir, map_name::POLICY) {
        Ok(map) => {
            let trie: LpmTrie<MapData, PolicyKey, u32> =
                LpmTrie::try_from(map).map_err(mapping(map_name::POLICY))?;
            trie.iter()
                .filter_map(Result::ok)
                .map(|(key, action)| {
                    let data = key.data();
                    json!({
                        "port": if data.port == 0 { Value::from("all") } else { Value::from(data.port) },
                        "cidr": show_cidr(data.addr, key.prefix_len()),
                        "action": if action == POLICY_ALLOW { "allow" } else { "deny" },
                    })
                })
                .collect()
        }
        Err(_) => Vec::new(),
    };

    let (flow_count, flows) = match open(dir, map_name::FLOWS) {
        Ok(map) => {
            let flows: HashMap<MapData, FlowKey, Flow> =
                HashMap::try_from(map).map_err(mapping(map_name::FLOWS))?;
            let mut all: Vec<(FlowKey, Flow)> = flows.iter().filter_map(Result::ok).collect();
            all.sort_by_key(|(_, flow)| std::cmp::Reverse(flow.packets));
            let listed = all
                .iter()
                .take(top)
                .map(|(k, f)| {
                    json!({
                        "client": format!("{}:{}", ip(k.saddr), k.sport),
                        "server": format!("{}:{}", ip(k.daddr), k.dport),
                        "worker_port": f.worker_port,
                        "epoch": f.epoch,
                        "packets": f.packets,
                    })
                })
                .collect::<Vec<_>>();
            (all.len(), listed)
        }
        Err(_) => (0, Vec::new()),
    };

    Ok(json!({
        "pin_dir": dir.display().to_string(),
        "attached": links,
        "owner": {"epoch": state.epoch, "generation": state.generation},
        "steering": {
            "slot_count": state.slot_count,
            "maglev_active_half": state.maglev_active,
            "hash": if state.hash_mode == ingress_common::HASH_SOURCE { "source" } else { "four-tuple" },
            "syn_rate_limit": (state.flags & ingress_common::STATE_SYN_LIMIT != 0)
                .then(|| json!({"per_second": state.syn_rate, "burst": state.syn_burst})),
        },
        "listeners": listeners,
        "counters": counters,
        "policy": policy,
        "flows": {"tracked": flow_count, "top": flows},
    }))
}

/// The text form of a `collect` report.
pub fn render(r: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let _ = writeln!(out, "pinned state   {}", s(&r["pin_dir"]));
    let attached = r["attached"].as_array().cloned().unwrap_or_default();
    if attached.is_empty() {
        let _ = writeln!(out, "attached       nothing (no pinned links)");
    }
    for a in &attached {
        let _ = writeln!(
            out,
            "attached       {:<12} {}",
            s(&a["interface"]),
            s(&a["program"])
        );
    }
    let _ = writeln!(
        out,
        "owner          epoch {}, worker-port generation {}",
        r["owner"]["epoch"], r["owner"]["generation"]
    );
    let st = &r["steering"];
    let _ = writeln!(
        out,
        "steering       {} slots, hash {}, live Maglev half {}, SYN limit {}",
        st["slot_count"],
        s(&st["hash"]),
        st["maglev_active_half"],
        if st["syn_rate_limit"].is_null() {
            "off".to_owned()
        } else {
            format!(
                "{}/s burst {}",
                st["syn_rate_limit"]["per_second"], st["syn_rate_limit"]["burst"]
            )
        }
    );
    for l in r["listeners"].as_array().into_iter().flatten() {
        let mode = if l["allow_list_mode"].as_bool() == Some(true) {
            ", allow-list mode"
        } else {
            ""
        };
        let _ = writeln!(out, "\nport {}{mode}", l["public_port"]);
        let _ = writeln!(
            out,
            "  {:>4}  {:>11}  {:>8}  {:>7}",
            "slot", "worker port", "entries", "share"
        );
        for slot in l["slots"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {:>4}  {:>11}  {:>8}  {:>6.2}%{}",
                s(&slot["slot"]),
                s(&slot["worker_port"]),
                s(&slot["table_entries"]),
                slot["table_share"].as_f64().unwrap_or(0.0) * 100.0,
                if slot["live"].as_bool() == Some(true) {
                    ""
                } else {
                    "  (not live)"
                }
            );
        }
    }
    let _ = writeln!(out, "\ncounters");
    for c in r["counters"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<4} {:<9} {:<15} {:>12}",
            s(&c["program"]),
            s(&c["verdict"]),
            s(&c["reason"]),
            s(&c["packets"])
        );
    }
    let policy = r["policy"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "\nsource policy  {} rules", policy.len());
    for p in &policy {
        let _ = writeln!(
            out,
            "  port {:<5} {:<6} {}",
            s(&p["port"]),
            s(&p["action"]),
            s(&p["cidr"])
        );
    }
    let _ = writeln!(out, "\nflows          {} tracked", r["flows"]["tracked"]);
    for f in r["flows"]["top"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<45} -> {:<22} worker port {:<6} packets {:<8} epoch {}",
            s(&f["client"]),
            s(&f["server"]),
            s(&f["worker_port"]),
            s(&f["packets"]),
            s(&f["epoch"])
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_section() {
        let report = json!({
            "pin_dir": "/sys/fs/bpf/xdp-ingress/v1",
            "attached": [{"interface": "eth0", "program": "xdp-native"}],
            "owner": {"epoch": 3, "generation": 1},
            "steering": {"slot_count": 2, "maglev_active_half": 1, "hash": "four-tuple", "syn_rate_limit": null},
            "listeners": [{"public_port": 80, "listener": 0, "allow_list_mode": false, "has_port_rules": false,
                "slots": [{"slot": 0, "worker_port": 18256, "live": true, "table_entries": 32769, "table_share": 0.5}]}],
            "counters": [{"program": "xdp", "verdict": "steered", "reason": "worker", "packets": 42}],
            "policy": [{"port": "all", "cidr": "203.0.113.0/24", "action": "deny"}],
            "flows": {"tracked": 1, "top": [{"client": "198.18.0.1:40000", "server": "198.18.0.2:80", "worker_port": 18256, "packets": 9, "epoch": 3}]},
        });
        let text = render(&report);
        for want in [
            "eth0",
            "xdp-native",
            "epoch 3",
            "generation 1",
            "18256",
            "50.00%",
            "steered",
            "42",
            "203.0.113.0/24",
            "198.18.0.1:40000",
            "1 tracked",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn a_missing_pin_folder_says_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let err = collect(dir.path(), 5).unwrap_err().to_string();
        assert!(err.contains("--bpffs-dir"), "{err}");
    }
}
