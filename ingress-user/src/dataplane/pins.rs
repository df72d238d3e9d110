//! The pinned state under `<bpffs-dir>/v1/`: which maps a daemon adopts, which it replaces, and
//! where the XDP/TC links are pinned so the programs outlive one daemon and the next one can swap
//! its programs in atomically.
//!
//! aya reuses a pinned map by name without comparing its layout; `check_map_pins` does that here:
//! a pinned map whose type, key size, value size or size differs from this build's ABI is removed
//! (and so created afresh) instead of being reused with the wrong layout.
use std::{
    io,
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};
use ingress_common::{
    map_name, Counter, Flow, FlowKey, PolicyKey, PortConfig, SteerState, TokenBucket, WorkerSlot,
    FLOWS_ENTRIES, MAGLEV_ENTRIES, POLICY_ENTRIES, PUBLIC_PORTS_ENTRIES, SLOTS_ENTRIES,
    SYN_BUDGET_ENTRIES, WORKER_PORTS_ENTRIES,
};

/// Sub-folder of the pin folder for links.
const LINKS: &str = "links";

/// The layout a map must have to be adopted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapLayout {
    pub name: &'static str,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const fn size<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// Every map of this build, as the kernel reports it (LPM keys carry their 4-byte prefix length).
pub fn expected_layouts() -> [MapLayout; 9] {
    let l = |name, map_type, key_size, value_size, max_entries| MapLayout {
        name,
        map_type,
        key_size,
        value_size,
        max_entries,
    };
    [
        l(
            map_name::PUBLIC_PORTS,
            MapType::Hash,
            size::<u16>(),
            size::<PortConfig>(),
            PUBLIC_PORTS_ENTRIES,
        ),
        l(
            map_name::SLOTS,
            MapType::Array,
            size::<u32>(),
            size::<WorkerSlot>(),
            SLOTS_ENTRIES,
        ),
        l(
            map_name::MAGLEV,
            MapType::Array,
            size::<u32>(),
            size::<u32>(),
            MAGLEV_ENTRIES,
        ),
        l(
            map_name::STATE,
            MapType::Array,
            size::<u32>(),
            size::<SteerState>(),
            1,
        ),
        l(
            map_name::WORKER_PORTS,
            MapType::Hash,
            size::<u16>(),
            size::<u16>(),
            WORKER_PORTS_ENTRIES,
        ),
        l(
            map_name::COUNTERS,
            MapType::PerCpuArray,
            size::<u32>(),
            size::<u64>(),
            Counter::COUNT,
        ),
        l(
            map_name::FLOWS,
            MapType::LruHash,
            size::<FlowKey>(),
            size::<Flow>(),
            FLOWS_ENTRIES,
        ),
        l(
            map_name::POLICY,
            MapType::LpmTrie,
            4 + size::<PolicyKey>(),
            size::<u32>(),
            POLICY_ENTRIES,
        ),
        l(
            map_name::SYN_BUDGET,
            MapType::LruHash,
            16,
            size::<TokenBucket>(),
            SYN_BUDGET_ENTRIES,
        ),
    ]
}

/// What `check_map_pins` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PinCheck {
    pub adopted: Vec<&'static str>,
    pub replaced: Vec<(&'static str, String)>,
}

/// Removes pinned maps whose layout differs from `layouts`; reports which pins will be adopted.
pub fn check_map_pins(dir: &Path, layouts: &[MapLayout]) -> io::Result<PinCheck> {
    let mut check = PinCheck::default();
    for layout in layouts {
        let path = dir.join(layout.name);
        if !path.exists() {
            continue;
        }
        match MapInfo::from_pin(&path) {
            Ok(info) => match differs(layout, &info) {
                None => check.adopted.push(layout.name),
                Some(why) => {
                    std::fs::remove_file(&path)?;
                    check.replaced.push((layout.name, why));
                }
            },
            Err(err) => {
                std::fs::remove_file(&path)?;
                check
                    .replaced
                    .push((layout.name, format!("unreadable pin: {err}")));
            }
        }
    }
    Ok(check)
}

fn differs(want: &MapLayout, info: &MapInfo) -> Option<String> {
    let got_type = info.map_type().ok();
    if got_type != Some(want.map_type) {
        return Some(format!("type {got_type:?}, want {:?}", want.map_type));
    }
    let got = (info.key_size(), info.value_size(), info.max_entries());
    let wanted = (want.key_size, want.value_size, want.max_entries);
    (got != wanted).then(|| format!("key/value/entries {got:?}, want {wanted:?}"))
}

/// Where the XDP link of `iface` is pinned (`mode` is part of the name so `inspect` can show it).
pub fn xdp_link_path(dir: &Path, iface: &str, mode: &str) -> PathBuf {
    dir.join(LINKS).join(format!("xdp-{mode}@{iface}"))
}

/// Where the TC egress link of `iface` is pinned.
pub fn tc_link_path(dir: &Path, iface: &str) -> PathBuf {
    dir.join(LINKS).join(format!("tc-egress@{iface}"))
}

/// A pinned XDP link of `iface`, whatever its mode: (path, mode).
pub fn find_xdp_link(dir: &Path, iface: &str) -> Option<(PathBuf, String)> {
    let suffix = format!("@{iface}");
    std::fs::read_dir(dir.join(LINKS))
        .ok()?
        .filter_map(Result::ok)
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mode = name.strip_prefix("xdp-")?.strip_suffix(&suffix)?.to_owned();
            Some((e.path(), mode))
        })
}

/// Every pinned link: (kind with mode, interface), e.g. ("xdp-native", "eth0").
pub fn list_links(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir.join(LINKS)) else {
        return Vec::new();
    };
    let mut links: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (kind, iface) = name.split_once('@')?;
            Some((kind.to_owned(), iface.to_owned()))
        })
        .collect();
    links.sort();
    links
}

pub fn links_dir(dir: &Path) -> PathBuf {
    dir.join(LINKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_cover_every_map_name_once() {
        let names: std::collections::BTreeSet<_> =
            expected_layouts().iter().map(|l| l.name).collect();
        assert_eq!(names.len(), expected_layouts().len());
        assert!(names.contains(map_name::FLOWS) && names.contains(map_name::COUNTERS));
    }

    #[test]
    fn link_names_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(links_dir(dir.path())).unwrap();
        std::fs::write(xdp_link_path(dir.path(), "eth0", "native"), b"").unwrap();
        std::fs::write(tc_link_path(dir.path(), "eth0"), b"").unwrap();
        assert_eq!(
            find_xdp_link(dir.path(), "eth0").map(|(_, m)| m),
            Some("native".into())
        );
        assert_eq!(find_xdp_link(dir.path(), "eth1"), None);
        assert_eq!(
            list_links(dir.path()),
            vec![
                ("tc-egress".into(), "eth0".into()),
                ("xdp-native".into(), "eth0".into())
            ]
        );
    }
}
