//! `--uplink-mode xdp`: `nd_xdp_uplink` on an uplink's XDP hook, in front of `nd_from_uplink`
//! on its tc ingress (which stays attached and handles whatever XDP passes on).
//!
//! The link is pinned like the tc ones. A new run replaces the program of a previous run's
//! link in place (`bpf_link_update`): an interface has one XDP link at most, so attaching a
//! second one would fail.

use std::{collections::BTreeMap, io, path::Path};

use aya::{
    Ebpf,
    programs::{
        ProgramError, Xdp,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpMode},
    },
};
use netdriver_common::PROG_XDP_UPLINK;

use super::{AttachedLink, Attachment, DataplaneError, LINK_DIR, needs_attach};

/// Which hook of an uplink runs the published-port DNAT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UplinkMode {
    /// tc ingress only (`nd_from_uplink`).
    #[default]
    Tc,
    /// Native XDP (`nd_xdp_uplink`) in front of tc. Needs a driver with native XDP and
    /// complete checksums in received frames; see the README ("Uplink modes").
    Xdp,
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(PROG_XDP_UPLINK)
        .ok_or(DataplaneError::Missing {
            object: PROG_XDP_UPLINK,
        })?
        .try_into()
        .map_err(|source| DataplaneError::Program {
            op: "look up",
            program: PROG_XDP_UPLINK,
            ifname: String::new(),
            source: Box::new(source),
        })
}

pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    program(ebpf)?.load().map_err(|err| match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => DataplaneError::Verifier {
            program: PROG_XDP_UPLINK,
            verifier_log: verifier_log.to_string(),
            source: io_error,
        },
        source => DataplaneError::Program {
            op: "load",
            program: PROG_XDP_UPLINK,
            ifname: String::new(),
            source: Box::new(source),
        },
    })
}

/// Attaches `nd_xdp_uplink` to `ifname` in native (driver) mode, or moves a previous run's
/// pinned link to this run's program. Idempotent.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    attachments: &mut BTreeMap<String, Attachment>,
    ifname: &str,
) -> Result<(), DataplaneError> {
    let Some(ifindex) = needs_attach(attachments, ifname)? else {
        return Ok(());
    };
    let prog_err = |op, source| DataplaneError::Program {
        op,
        program: PROG_XDP_UPLINK,
        ifname: ifname.to_owned(),
        source: Box::new(source),
    };
    let pin = pin_dir
        .join(LINK_DIR)
        .join(format!("{PROG_XDP_UPLINK}@{ifname}"));
    let prog = program(ebpf)?;
    if let Ok(previous) = PinnedLink::from_pin(&pin) {
        // The pin keeps naming the same link; only its program changes.
        let link = XdpLink::try_from(FdLink::from(previous))
            .map_err(|e| prog_err("adopt", ProgramError::IOError(io::Error::other(e))))?;
        match prog.attach_to_link(link) {
            Ok(id) => {
                // Dropping our handle closes an fd; the pin keeps the link.
                drop(prog.take_link(id));
                let link = PinnedLink::from_pin(&pin)
                    .map_err(|e| prog_err("reopen", ProgramError::IOError(io::Error::other(e))))?;
                attachments.insert(
                    ifname.to_owned(),
                    Attachment {
                        ifindex,
                        link: AttachedLink::Pinned(link),
                    },
                );
                return Ok(());
            }
            // The interface the old link was on is gone; start afresh.
            Err(e) => tracing::info!(uplink = %ifname, "previous XDP link not reusable: {e}"),
        }
        let _ = std::fs::remove_file(&pin);
    }
    let id = prog
        .attach(ifname, XdpMode::Driver)
        .map_err(|e| prog_err("attach", e))?;
    let link = prog.take_link(id).map_err(|e| prog_err("attach", e))?;
    let fd = FdLink::try_from(link)
        .map_err(|e| prog_err("pin", ProgramError::IOError(io::Error::other(e))))?;
    let link = fd.pin(&pin).map_err(|source| DataplaneError::Pin {
        map: PROG_XDP_UPLINK,
        path: pin.clone(),
        source,
    })?;
    attachments.insert(
        ifname.to_owned(),
        Attachment {
            ifindex,
            link: AttachedLink::Pinned(link),
        },
    );
    Ok(())
}
