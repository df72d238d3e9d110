//! The BPF side of the daemon: loads the embedded eBPF object with its maps pinned under
//! `<bpffs>/v1/` (adopting the pins a previous daemon left, when their layout matches), attaches
//! XDP (ingress) and TC (egress) through pinned links (replacing the programs of an existing link
//! atomically), and keeps the maps in step with the worker layout (`plan` computes, `apply` writes
//! a minimal diff).
//!
//! Takeover: each daemon bumps `STATE.epoch` when it first programs the maps and serves worker
//! ports of the generation its predecessor did not use. A daemon that reads a newer epoch than its
//! own has been superseded: it drains and exits leaving pins and links to its successor. The owner
//! of the current epoch unpins the links at a clean shutdown, which detaches the programs.
//! Counters are read through a `CounterReader`, so a scrape never waits on the owner of the maps.
pub mod apply;
mod links;
pub mod maglev;
pub mod pins;
pub mod plan;
pub mod policy;

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use ingress_common::{map_name, program_name, Counter, SteerState, PIN_SUBDIR};

pub use apply::ApplyStats;
pub use plan::{plan, DataplanePlan, ListenerLayout, PlanError, SteerBy, WorkerLayout};
pub use policy::{Policy, PolicyError};

/// `statfs` magic of a bpffs mount.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// How to attach XDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeChoice {
    /// Native (driver) mode, falling back to generic with a warning.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works on every interface, slower.
    Generic,
}

/// Errors of the data plane. Messages say what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the eBPF programs failed: permission denied; run as root or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON")]
    Permission(#[source] aya::EbpfError),
    #[error("loading the eBPF object failed")]
    Load(#[from] aya::EbpfError),
    #[error(
        "loading program {name} into the kernel failed (verifier log above in the error chain)"
    )]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("the eBPF object has no {0} (was the daemon built with AYA_BUILD_SKIP?)")]
    MissingMap(&'static str),
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("interface {0:?} not found (see `ip link`); pass an existing one with --interface")]
    NoSuchInterface(String),
    #[error("attaching XDP to {iface} in {mode} mode failed")]
    AttachXdp {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attaching TC egress to {iface} failed")]
    AttachTc {
        iface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{0} is not on a bpffs mount; mount one with `mount -t bpf bpf /sys/fs/bpf` or pass --bpffs-dir")]
    NotBpffs(PathBuf),
    #[error("pinning {what} at {path}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Where XDP ended up attached, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub interface: String,
    pub xdp_mode: &'static str,
}

/// Who owns the data plane once this daemon programs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// The epoch this daemon writes into `STATE` (previous + 1).
    pub epoch: u32,
    /// The worker-port generation this daemon serves (the one its predecessor did not).
    pub generation: u32,
    /// The epoch found in adopted pins, if a predecessor had programmed them.
    pub previous_epoch: Option<u32>,
}

/// The loaded programs and maps.
#[derive(Debug)]
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    attachments: Vec<Attachment>,
    /// Pinned links in use: (path, created by this daemon rather than adopted).
    link_pins: Vec<(PathBuf, bool)>,
    current: DataplanePlan,
    applied: bool,
    active_half: u32,
    takeover: Takeover,
    counters: CounterReader,
}

impl Dataplane {
    /// Loads the embedded object and verifies both programs. With `pin_root`, the maps are pinned
    /// under `pin_root/v1/`: pins of the same layout are adopted (their state, connection table
    /// included, carries over), pins of another layout are replaced.
    pub fn load(object: &[u8], pin_root: Option<&Path>) -> Result<Self, DataplaneError> {
        if object.is_empty() {
            return Err(DataplaneError::MissingMap(map_name::COUNTERS));
        }
        let pin_dir = pin_root.map(prepare_pin_dir).transpose()?;
        let mut loader = EbpfLoader::new();
        let pin_paths: Vec<(&'static str, PathBuf)> = match &pin_dir {
            Some(dir) => pins::expected_layouts()
                .iter()
                .map(|l| (l.name, dir.join(l.name)))
                .collect(),
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(object).map_err(|e| {
            if is_permission(&e) {
                DataplaneError::Permission(e)
            } else {
                DataplaneError::Load(e)
            }
        })?;
        load_program::<Xdp>(&mut ebpf, program_name::XDP_STEER)?;
        load_program::<SchedClassifier>(&mut ebpf, program_name::TC_RESTORE)?;
        let previous = read_state(&ebpf)?;
        let takeover = takeover_from(previous);
        let counters_map = ebpf
            .take_map(map_name::COUNTERS)
            .ok_or(DataplaneError::MissingMap(map_name::COUNTERS))?;
        let counters =
            PerCpuArray::try_from(counters_map).map_err(|source| DataplaneError::Map {
                name: map_name::COUNTERS,
                source,
            })?;
        Ok(Self {
            ebpf,
            pin_dir,
            attachments: Vec::new(),
            link_pins: Vec::new(),
            current: DataplanePlan::default(),
            applied: false,
            active_half: previous.map_or(0, |p| p.maglev_active & 1),
            takeover,
            counters: CounterReader(Arc::new(Mutex::new(counters))),
        })
    }

    /// The epoch and generation this daemon takes over with.
    pub fn takeover(&self) -> Takeover {
        self.takeover
    }

    /// `Some(epoch)` when a newer daemon has taken over the maps since this one programmed them.
    pub fn superseded(&self) -> Result<Option<u32>, DataplaneError> {
        if !self.applied {
            return Ok(None);
        }
        let epoch = read_state(&self.ebpf)?.unwrap_or_default().epoch;
        Ok((epoch != self.takeover.epoch).then_some(epoch))
    }

    /// Brings the maps to `plan`, writing only what differs. The first apply also publishes this
    /// daemon's epoch and generation: from then on new connections reach its workers.
    pub fn apply(&mut self, plan: &DataplanePlan) -> Result<ApplyStats, DataplaneError> {
        let (half, stats) = apply::apply(
            &mut self.ebpf,
            &self.current,
            self.active_half,
            plan,
            self.takeover,
        )?;
        self.active_half = half;
        self.current = plan.clone();
        self.applied = true;
        Ok(stats)
    }

    /// A handle that reads the per-CPU counters (cheap to clone, usable from any thread).
    pub fn counters(&self) -> CounterReader {
        self.counters.clone()
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Clean shutdown. Superseded: leaves everything to the successor. Owner: unpins the links
    /// (the programs detach when this process's fds close) and, unless `keep_maps`, the maps.
    pub fn shutdown(self, keep_maps: bool) {
        match self.superseded() {
            Ok(Some(epoch)) => {
                tracing::info!(
                    epoch,
                    "superseded: leaving programs, links and maps to the newer daemon"
                );
                return;
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "cannot read STATE at shutdown; leaving pins in place");
                return;
            }
        }
        // Never programmed the maps (start-up failed): undo only what this daemon created, and
        // leave adopted pins to the daemon that may still be serving from them.
        let adopted = !self.applied && self.takeover.previous_epoch.is_some();
        for (path, created) in &self.link_pins {
            if adopted && !created {
                continue;
            }
            if let Err(err) = std::fs::remove_file(path) {
                tracing::warn!(link = %path.display(), %err, "could not unpin link");
            }
        }
        let pin_dir = self.pin_dir.clone();
        if adopted {
            drop(self);
            tracing::info!("start-up failed before taking over; adopted pins left in place");
            return;
        }
        drop(self);
        let Some(dir) = pin_dir else { return };
        if keep_maps {
            let _ = std::fs::remove_dir(pins::links_dir(&dir));
            tracing::info!(dir = %dir.display(), "programs detached; maps left pinned (--keep-pinned)");
            return;
        }
        match std::fs::remove_dir_all(&dir) {
            Err(err) => tracing::warn!(dir = %dir.display(), %err, "could not remove pinned maps"),
            Ok(()) => {
                // Remove the parent too when we left it empty.
                if let Some(parent) = dir.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
                tracing::info!(dir = %dir.display(), "detached and unpinned");
            }
        }
    }
}

/// The epoch and generation to take over with, given the `STATE` found in the maps.
fn takeover_from(previous: Option<SteerState>) -> Takeover {
    match previous {
        Some(p) if p.epoch != 0 || p.slot_count != 0 => Takeover {
            epoch: p.epoch.wrapping_add(1).max(1),
            // A live predecessor serves its generation: take the other one.
            generation: if p.slot_count > 0 {
                (p.generation ^ 1) & 1
            } else {
                p.generation & 1
            },
            previous_epoch: Some(p.epoch),
        },
        _ => Takeover {
            epoch: 1,
            generation: 0,
            previous_epoch: None,
        },
    }
}

/// Reads the `COUNTERS` map, summed over CPUs.
#[derive(Clone)]
pub struct CounterReader(Arc<Mutex<PerCpuArray<MapData, u64>>>);

impl std::fmt::Debug for CounterReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CounterReader")
    }
}

impl CounterReader {
    /// Every counter, in `Counter::ALL` order.
    pub fn read(&self) -> Result<Vec<(Counter, u64)>, DataplaneError> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Counter::ALL
            .iter()
            .map(|&c| {
                let per_cpu = map
                    .get(&(c as u32), 0)
                    .map_err(|source| DataplaneError::Map {
                        name: map_name::COUNTERS,
                        source,
                    })?;
                Ok((c, per_cpu.iter().sum()))
            })
            .collect()
    }
}

fn load_program<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<(), DataplaneError>
where
    for<'a> &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    T: LoadProgram,
{
    let prog: &mut T = program_mut(ebpf, name)?;
    prog.load_program()
        .map_err(|source| DataplaneError::Program { name, source })
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(DataplaneError::MissingProgram(name))?;
    prog.try_into()
        .map_err(|source| DataplaneError::Program { name, source })
}

/// The two program kinds we load, behind one `load` call.
trait LoadProgram {
    fn load_program(&mut self) -> Result<(), aya::programs::ProgramError>;
}
impl LoadProgram for Xdp {
    fn load_program(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}
impl LoadProgram for SchedClassifier {
    fn load_program(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

/// Checks the bpffs, creates `<root>/v1/links/`, and drops pins whose layout differs.
fn prepare_pin_dir(root: &Path) -> Result<PathBuf, DataplaneError> {
    // The nearest existing ancestor must be on bpffs (sysfs would refuse the mkdir anyway, with
    // a less helpful error).
    let existing = root.ancestors().find(|p| p.exists()).unwrap_or(root);
    if !is_bpffs(existing) {
        return Err(DataplaneError::NotBpffs(root.to_owned()));
    }
    let dir = root.join(PIN_SUBDIR);
    std::fs::create_dir_all(pins::links_dir(&dir))
        .map_err(|e| pin_error("the pin folder", &dir, e))?;
    let check = pins::check_map_pins(&dir, &pins::expected_layouts())
        .map_err(|e| pin_error("stale pins", &dir, e))?;
    for (name, why) in &check.replaced {
        tracing::warn!(map = name, reason = %why, "pinned map has another layout; replacing it");
    }
    if !check.adopted.is_empty() {
        tracing::info!(dir = %dir.display(), maps = check.adopted.len(), "adopting pinned maps of an earlier daemon");
    }
    Ok(dir)
}

fn pin_error(what: &'static str, path: &Path, err: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Pin {
        what,
        path: path.to_owned(),
        source: io::Error::other(err.to_string()),
    }
}

/// The single `STATE` entry, if the map holds one.
fn read_state(ebpf: &Ebpf) -> Result<Option<SteerState>, DataplaneError> {
    let map = ebpf
        .map(map_name::STATE)
        .ok_or(DataplaneError::MissingMap(map_name::STATE))?;
    let state: Array<&MapData, SteerState> =
        Array::try_from(map).map_err(|source| DataplaneError::Map {
            name: map_name::STATE,
            source,
        })?;
    Ok(state.get(&0, 0).ok())
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; c_path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

fn is_permission(err: &aya::EbpfError) -> bool {
    let text = error_chain(err);
    text.contains("Operation not permitted")
        || text.contains("EPERM")
        || text.contains("permission denied")
}

/// An error and its sources on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_picks_the_next_epoch_and_the_free_generation() {
        assert_eq!(
            takeover_from(None),
            Takeover {
                epoch: 1,
                generation: 0,
                previous_epoch: None
            }
        );
        let fresh_maps = SteerState::default();
        assert_eq!(takeover_from(Some(fresh_maps)).previous_epoch, None);
        let live = SteerState {
            epoch: 7,
            generation: 0,
            slot_count: 2,
            ..SteerState::default()
        };
        assert_eq!(
            takeover_from(Some(live)),
            Takeover {
                epoch: 8,
                generation: 1,
                previous_epoch: Some(7)
            }
        );
        let live_gen1 = SteerState {
            epoch: 8,
            generation: 1,
            slot_count: 2,
            ..SteerState::default()
        };
        assert_eq!(takeover_from(Some(live_gen1)).generation, 0);
        // A clean predecessor (slot_count 0) frees its generation.
        let stopped = SteerState {
            epoch: 9,
            generation: 1,
            slot_count: 0,
            ..SteerState::default()
        };
        assert_eq!(takeover_from(Some(stopped)).generation, 1);
        let wrapped = SteerState {
            epoch: u32::MAX,
            slot_count: 1,
            ..SteerState::default()
        };
        assert_eq!(takeover_from(Some(wrapped)).epoch, 1);
    }
}
