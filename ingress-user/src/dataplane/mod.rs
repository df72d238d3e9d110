//! The BPF side of the daemon: loads the embedded eBPF object, attaches XDP (ingress) and TC
//! (egress) to the configured interfaces, pins the maps under `<bpffs>/v1/`, and keeps the maps in
//! step with the worker layout (`plan` computes, `apply` writes a minimal diff).
//!
//! The `Dataplane` value owns the programs: dropping it detaches them (the links are fd-based), and
//! `shutdown` also removes the pins. Counters are read through a `CounterReader`, which the admin
//! server holds, so a scrape never waits on the owner of the maps.
pub mod apply;
pub mod maglev;
pub mod plan;

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aya::{
    maps::{MapData, PerCpuArray},
    programs::{tc, SchedClassifier, TcAttachType, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use ingress_common::{map_name, program_name, Counter, PIN_SUBDIR};

pub use apply::ApplyStats;
pub use plan::{plan, DataplanePlan, ListenerLayout, PlanError, SteerBy, WorkerLayout};

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

/// The loaded programs and maps.
#[derive(Debug)]
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    attachments: Vec<Attachment>,
    current: DataplanePlan,
    active_half: u32,
    counters: CounterReader,
}

impl Dataplane {
    /// Loads the embedded object and verifies both programs. With `pin_root`, the maps are pinned
    /// under `pin_root/v1/` (stale pins of an earlier run are replaced).
    pub fn load(object: &[u8], pin_root: Option<&Path>) -> Result<Self, DataplaneError> {
        if object.is_empty() {
            return Err(DataplaneError::MissingMap(map_name::COUNTERS));
        }
        let mut ebpf = EbpfLoader::new().load(object).map_err(|e| {
            if is_permission(&e) {
                DataplaneError::Permission(e)
            } else {
                DataplaneError::Load(e)
            }
        })?;
        load_program::<Xdp>(&mut ebpf, program_name::XDP_STEER)?;
        load_program::<SchedClassifier>(&mut ebpf, program_name::TC_RESTORE)?;
        let pin_dir = match pin_root {
            Some(root) => Some(pin_maps(&ebpf, root)?),
            None => None,
        };
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
            current: DataplanePlan::default(),
            active_half: 0,
            counters: CounterReader(Arc::new(Mutex::new(counters))),
        })
    }

    /// Attaches XDP (ingress) and TC (egress) to `iface`.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: XdpModeChoice,
    ) -> Result<&Attachment, DataplaneError> {
        let c_name = std::ffi::CString::new(iface)
            .map_err(|_| DataplaneError::NoSuchInterface(iface.to_owned()))?;
        // SAFETY: c_name is a valid NUL-terminated string.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            return Err(DataplaneError::NoSuchInterface(iface.to_owned()));
        }
        let xdp: &mut Xdp = program_mut(&mut self.ebpf, program_name::XDP_STEER)?;
        let xdp_mode = match mode {
            XdpModeChoice::Generic => attach_xdp(xdp, iface, XdpMode::Skb, "generic")?,
            XdpModeChoice::Native => attach_xdp(xdp, iface, XdpMode::Driver, "native")?,
            XdpModeChoice::Auto => match attach_xdp(xdp, iface, XdpMode::Driver, "native") {
                Ok(mode) => mode,
                Err(err) => {
                    tracing::warn!(interface = iface, error = %error_chain(&err), "native XDP unavailable, attaching in generic (skb) mode: slower, but correct");
                    attach_xdp(xdp, iface, XdpMode::Skb, "generic")?
                }
            },
        };
        // clsact is only needed for netlink attachment on kernels before 6.6; adding it where it
        // already exists fails harmlessly.
        let _ = tc::qdisc_add_clsact(iface);
        let tc_prog: &mut SchedClassifier = program_mut(&mut self.ebpf, program_name::TC_RESTORE)?;
        tc_prog
            .attach(iface, TcAttachType::Egress)
            .map_err(|source| DataplaneError::AttachTc {
                iface: iface.to_owned(),
                source,
            })?;
        tracing::info!(
            interface = iface,
            xdp_mode,
            "attached XDP (ingress) and TC (egress)"
        );
        self.attachments.push(Attachment {
            interface: iface.to_owned(),
            xdp_mode,
        });
        Ok(self.attachments.last().expect("just pushed"))
    }

    /// Brings the maps to `plan`, writing only what differs.
    pub fn apply(&mut self, plan: &DataplanePlan) -> Result<ApplyStats, DataplaneError> {
        let (half, stats) = apply::apply(&mut self.ebpf, &self.current, self.active_half, plan)?;
        self.active_half = half;
        self.current = plan.clone();
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

    /// Detaches the programs and removes the pins (unless `keep_pins`).
    pub fn shutdown(self, keep_pins: bool) {
        let pin_dir = self.pin_dir.clone();
        drop(self);
        if let (Some(dir), false) = (pin_dir, keep_pins) {
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), %err, "could not remove pinned maps");
            } else {
                // Remove the parent too when we left it empty.
                if let Some(parent) = dir.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
                tracing::info!(dir = %dir.display(), "detached and unpinned");
            }
        }
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

fn attach_xdp(
    xdp: &mut Xdp,
    iface: &str,
    mode: XdpMode,
    label: &'static str,
) -> Result<&'static str, DataplaneError> {
    xdp.attach(iface, mode)
        .map(|_| label)
        .map_err(|source| DataplaneError::AttachXdp {
            iface: iface.to_owned(),
            mode: label,
            source,
        })
}

fn pin_maps(ebpf: &Ebpf, root: &Path) -> Result<PathBuf, DataplaneError> {
    let pin_err = |what, path: &Path| {
        let path = path.to_owned();
        move |source| DataplaneError::Pin { what, path, source }
    };
    // The nearest existing ancestor must be on bpffs (sysfs would refuse the mkdir anyway, with
    // a less helpful error).
    let existing = root.ancestors().find(|p| p.exists()).unwrap_or(root);
    if !is_bpffs(existing) {
        return Err(DataplaneError::NotBpffs(root.to_owned()));
    }
    std::fs::create_dir_all(root).map_err(pin_err("the pin folder", root))?;
    let dir = root.join(PIN_SUBDIR);
    if dir.exists() {
        tracing::warn!(dir = %dir.display(), "replacing pinned maps left by an earlier run");
        std::fs::remove_dir_all(&dir).map_err(pin_err("stale pins", &dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(pin_err("the pin folder", &dir))?;
    for (name, map) in ebpf.maps() {
        if name.starts_with('.') {
            continue; // .rodata/.bss of the programs
        }
        let path = dir.join(name);
        map.pin(&path).map_err(|e| DataplaneError::Pin {
            what: "a map",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
    }
    tracing::info!(dir = %dir.display(), "maps pinned");
    Ok(dir)
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
