//! Attaching the programs: XDP on ingress and TC on egress of an interface, through links pinned
//! under `<bpffs>/v1/links/` when the daemon pins. A link an earlier daemon pinned is adopted and
//! its program replaced in place (`bpf_link_update`), so no packet meets an interface without a
//! program during an upgrade; otherwise a new link is made (native XDP, falling back to generic
//! when the driver has no native support and the mode allows it) and pinned. The pins are
//! recorded in `Dataplane::link_pins`, which `shutdown` removes when this daemon owns them.
use std::path::Path;

use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{self, SchedClassifierLink},
    xdp::{XdpLink, XdpLinkId},
    SchedClassifier, TcAttachType, Xdp, XdpMode,
};
use ingress_common::program_name;

use super::{
    error_chain, pin_error, pins, program_mut, Attachment, Dataplane, DataplaneError, XdpModeChoice,
};

impl Dataplane {
    /// Attaches XDP (ingress) and TC (egress) to `iface`. With pins, a link pinned by an earlier
    /// daemon is reused: its program is replaced atomically, so no packet meets no program.
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
        let pin_dir = self.pin_dir.clone();
        let xdp_mode = self.attach_xdp(iface, mode, pin_dir.as_deref())?;
        self.attach_tc(iface, pin_dir.as_deref())?;
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

    fn attach_xdp(
        &mut self,
        iface: &str,
        mode: XdpModeChoice,
        pin_dir: Option<&Path>,
    ) -> Result<&'static str, DataplaneError> {
        let xdp: &mut Xdp = program_mut(&mut self.ebpf, program_name::XDP_STEER)?;
        if let Some((path, pinned_mode)) = pin_dir.and_then(|d| pins::find_xdp_link(d, iface)) {
            let replaced = adopt_link::<XdpLink>(&path).and_then(|link| {
                xdp.attach_to_link(link)
                    .map_err(|source| DataplaneError::AttachXdp {
                        iface: iface.to_owned(),
                        mode: "pinned",
                        source,
                    })
            });
            match replaced {
                Ok(_) => {
                    tracing::info!(interface = iface, link = %path.display(), "replaced the program of the pinned XDP link");
                    self.link_pins.push((path, false));
                    return Ok(if pinned_mode == "native" {
                        "native"
                    } else {
                        "generic"
                    });
                }
                Err(err) => {
                    tracing::warn!(interface = iface, error = %error_chain(&err), "pinned XDP link unusable; attaching anew");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let (id, label) = match mode {
            XdpModeChoice::Generic => attach_xdp(xdp, iface, XdpMode::Skb, "generic")?,
            XdpModeChoice::Native => attach_xdp(xdp, iface, XdpMode::Driver, "native")?,
            XdpModeChoice::Auto => match attach_xdp(xdp, iface, XdpMode::Driver, "native") {
                Ok(attached) => attached,
                Err(err) => {
                    tracing::warn!(interface = iface, error = %error_chain(&err), "native XDP unavailable, attaching in generic (skb) mode: slower, but correct");
                    attach_xdp(xdp, iface, XdpMode::Skb, "generic")?
                }
            },
        };
        if let Some(dir) = pin_dir {
            let link = xdp
                .take_link(id)
                .map_err(|source| DataplaneError::Program {
                    name: program_name::XDP_STEER,
                    source,
                })?;
            let path = pins::xdp_link_path(dir, iface, label);
            pin_fd_link(
                FdLink::try_from(link).map_err(|e| pin_error("the XDP link", &path, e))?,
                &path,
            )?;
            self.link_pins.push((path, true));
        }
        Ok(label)
    }

    fn attach_tc(&mut self, iface: &str, pin_dir: Option<&Path>) -> Result<(), DataplaneError> {
        let tc_prog: &mut SchedClassifier = program_mut(&mut self.ebpf, program_name::TC_RESTORE)?;
        if let Some(path) = pin_dir
            .map(|d| pins::tc_link_path(d, iface))
            .filter(|p| p.exists())
        {
            let replaced = adopt_link::<SchedClassifierLink>(&path).and_then(|link| {
                tc_prog
                    .attach_to_link(link)
                    .map_err(|source| DataplaneError::AttachTc {
                        iface: iface.to_owned(),
                        source,
                    })
            });
            match replaced {
                Ok(_) => {
                    self.link_pins.push((path, false));
                    return Ok(());
                }
                Err(err) => {
                    tracing::warn!(interface = iface, error = %error_chain(&err), "pinned TC link unusable; attaching anew");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        // clsact is only needed for netlink attachment on kernels before 6.6; adding it where it
        // already exists fails harmlessly.
        let _ = tc::qdisc_add_clsact(iface);
        let id = tc_prog
            .attach(iface, TcAttachType::Egress)
            .map_err(|source| DataplaneError::AttachTc {
                iface: iface.to_owned(),
                source,
            })?;
        if let Some(dir) = pin_dir {
            let link = tc_prog
                .take_link(id)
                .map_err(|source| DataplaneError::Program {
                    name: program_name::TC_RESTORE,
                    source,
                })?;
            match FdLink::try_from(link) {
                Ok(fd_link) => {
                    let path = pins::tc_link_path(dir, iface);
                    pin_fd_link(fd_link, &path)?;
                    self.link_pins.push((path, true));
                }
                // Netlink-attached (kernel before 6.6): cannot be pinned; it lives with the
                // qdisc, and the next daemon replaces it.
                Err(_) => tracing::warn!(
                    interface = iface,
                    "TC attached through netlink (kernel < 6.6): the link cannot be pinned"
                ),
            }
        }
        Ok(())
    }
}

fn attach_xdp(
    xdp: &mut Xdp,
    iface: &str,
    mode: XdpMode,
    label: &'static str,
) -> Result<(XdpLinkId, &'static str), DataplaneError> {
    xdp.attach(iface, mode)
        .map(|id| (id, label))
        .map_err(|source| DataplaneError::AttachXdp {
            iface: iface.to_owned(),
            mode: label,
            source,
        })
}

/// Opens a pinned link as the link type of a program.
fn adopt_link<L: TryFrom<FdLink>>(path: &Path) -> Result<L, DataplaneError>
where
    L::Error: std::fmt::Display,
{
    let pinned = PinnedLink::from_pin(path).map_err(|e| pin_error("a link", path, e))?;
    L::try_from(FdLink::from(pinned)).map_err(|e| pin_error("a link", path, e))
}

fn pin_fd_link(link: FdLink, path: &Path) -> Result<(), DataplaneError> {
    link.pin(path)
        .map(drop)
        .map_err(|e| pin_error("a link", path, e))
}
