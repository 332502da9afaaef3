//! The cgroup socket hooks (published ports from the host itself) and the host addresses
//! they consult.

use std::{
    collections::HashSet,
    fs, io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError,
        links::{FdLink, PinnedLink},
    },
};
use netdriver_common::{
    MAP_HOST_ADDRS, MAP_HOST_ADDRS6, MAP_SOCK_RNAT, MAP_SOCK_RNAT6, PROG_SOCK_BIND4,
    PROG_SOCK_BIND6, PROG_SOCK_CONNECT4, PROG_SOCK_CONNECT6, PROG_SOCK_GETPEERNAME4,
    PROG_SOCK_GETPEERNAME6, PROG_SOCK_RECVMSG4, PROG_SOCK_RECVMSG6, PROG_SOCK_SENDMSG4,
    PROG_SOCK_SENDMSG6, SockRnatKey, SockRnatKey6,
};

use super::{Dataplane, DataplaneError, LINK_DIR, io_err, is_not_found, map_err};

/// The socket programs, all attached to the same cgroup.
pub(super) const SOCK_PROGRAMS: [&str; 10] = [
    PROG_SOCK_BIND4,
    PROG_SOCK_CONNECT4,
    PROG_SOCK_SENDMSG4,
    PROG_SOCK_RECVMSG4,
    PROG_SOCK_GETPEERNAME4,
    PROG_SOCK_BIND6,
    PROG_SOCK_CONNECT6,
    PROG_SOCK_SENDMSG6,
    PROG_SOCK_RECVMSG6,
    PROG_SOCK_GETPEERNAME6,
];

/// The cgroup attachments of the socket programs: bpf links pinned under
/// `<pin dir>/links/<program>@cgroup`, so the hooks outlive the daemon like the tc programs.
#[derive(Debug, Default)]
pub(super) struct CgroupLinks {
    pub(super) cgroup: Option<PathBuf>,
    links: Vec<(&'static str, PinnedLink)>,
}

impl CgroupLinks {
    /// Whether this run attached `program` (a pinned link of that name is ours).
    pub(super) fn holds(&self, program: &str) -> bool {
        self.links.iter().any(|(name, _)| *name == program)
    }
}

/// The pin of a socket program's cgroup link.
fn link_pin(pin_dir: &Path, program: &str) -> PathBuf {
    pin_dir.join(LINK_DIR).join(format!("{program}@cgroup"))
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
) -> Result<&'a mut CgroupSockAddr, DataplaneError> {
    ebpf.program_mut(program)
        .ok_or(DataplaneError::Missing { object: program })?
        .try_into()
        .map_err(|source| prog_err("look up", program, "", source))
}

fn prog_err(
    op: &'static str,
    program: &'static str,
    at: &str,
    source: ProgramError,
) -> DataplaneError {
    DataplaneError::Program {
        op,
        program,
        ifname: at.to_owned(),
        source: Box::new(source),
    }
}

/// Loads the socket programs (they are attached later, by [`Dataplane::attach_cgroup`]).
pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    for name in SOCK_PROGRAMS {
        program(ebpf, name)?
            .load()
            .map_err(|err| super::load_error(name, err))?;
    }
    Ok(())
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`, Linux 5.14).
pub(super) fn netns_cookie() -> Result<u64, DataplaneError> {
    let err = |source| DataplaneError::Io {
        op: "read the network namespace cookie",
        path: PathBuf::from("SO_NETNS_COOKIE"),
        source,
    };
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").map_err(err)?;
    let mut cookie = 0u64;
    let mut len = libc::socklen_t::try_from(size_of::<u64>()).expect("8 fits");
    // SAFETY: a valid socket fd and an 8-byte out buffer with its length.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(cookie)
}

/// The mount point of the cgroup v2 (unified) hierarchy, from /proc/self/mountinfo.
#[must_use]
pub fn default_cgroup() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_mount(&text)
}

fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

impl Dataplane {
    /// Attaches the socket hooks to the cgroup v2 at `path` through bpf links pinned under
    /// the pin directory: they stay attached while the daemon is down (stopped or killed),
    /// so the host keeps reaching published ports. A previous run's link is replaced only
    /// once the new one is attached (no gap; both act the same meanwhile, and the second
    /// finds nothing left to translate), so each hook ends up attached once. Idempotent.
    pub fn attach_cgroup(&mut self, path: &Path) -> Result<(), DataplaneError> {
        if self.cgroup.cgroup.is_some() {
            return Ok(());
        }
        let dir = fs::File::open(path).map_err(io_err("open cgroup", path))?;
        let at = path.display().to_string();
        for name in SOCK_PROGRAMS {
            match self.attach_sock_program(name, &dir, &at) {
                Ok(link) => self.cgroup.links.push((name, link)),
                Err(e) => {
                    let _ = self.detach_cgroup();
                    return Err(e);
                }
            }
        }
        self.cgroup.cgroup = Some(path.to_owned());
        Ok(())
    }

    fn attach_sock_program(
        &mut self,
        name: &'static str,
        cgroup: &fs::File,
        at: &str,
    ) -> Result<PinnedLink, DataplaneError> {
        let pin = link_pin(&self.pin_dir, name);
        let previous = PinnedLink::from_pin(&pin).ok();
        let prog = program(&mut self.ebpf, name)?;
        let id = prog
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(|e| prog_err("attach", name, at, e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| prog_err("attach", name, at, e))?;
        // A bpf link (Linux 5.7+); older kernels attach without one, which cannot be pinned.
        let link = FdLink::try_from(link)
            .map_err(|e| prog_err("pin", name, at, ProgramError::IOError(io::Error::other(e))))?;
        if let Some(previous) = previous {
            // Unpinning closes the last reference: the old program is detached.
            previous
                .unpin()
                .map_err(|e| prog_err("replace", name, at, ProgramError::IOError(e)))?;
        }
        link.pin(&pin).map_err(|source| DataplaneError::Pin {
            map: name,
            path: pin.clone(),
            source,
        })
    }

    /// Detaches the socket hooks (unpins their links); best effort, reports every error.
    pub fn detach_cgroup(&mut self) -> Result<(), DataplaneError> {
        let at = self
            .cgroup
            .cgroup
            .take()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut errors = Vec::new();
        for (name, link) in std::mem::take(&mut self.cgroup.links) {
            if let Err(e) = link.unpin() {
                errors.push(prog_err("detach", name, &at, ProgramError::IOError(e)));
            }
        }
        super::joined(errors)
    }

    /// The cgroup the socket hooks are attached to.
    #[must_use]
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.cgroup.as_deref()
    }

    /// Forgets the socket translations towards a container address (the endpoint went away).
    pub fn flush_sock_rnat(&mut self, addr: Ipv4Addr) -> Result<(), DataplaneError> {
        let addr_be = u32::from_ne_bytes(addr.octets());
        let keys: Vec<SockRnatKey> = self
            .sock_rnat
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", MAP_SOCK_RNAT))?;
        for key in keys.iter().filter(|k| k.addr_be == addr_be) {
            match self.sock_rnat.remove(key) {
                Err(err) if !is_not_found(&err) => {
                    return Err(map_err("remove from", MAP_SOCK_RNAT)(err));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Forgets the IPv6 socket translations towards a container address.
    pub fn flush_sock_rnat6(&mut self, addr: Ipv6Addr) -> Result<(), DataplaneError> {
        let addr = addr.octets();
        let keys: Vec<SockRnatKey6> = self
            .sock_rnat6
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", MAP_SOCK_RNAT6))?;
        for key in keys.iter().filter(|k| k.addr == addr) {
            match self.sock_rnat6.remove(key) {
                Err(err) if !is_not_found(&err) => {
                    return Err(map_err("remove from", MAP_SOCK_RNAT6)(err));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Makes `ND_HOST_ADDRS6` hold exactly `addrs`.
    pub fn set_host_addrs6(&mut self, addrs: &HashSet<Ipv6Addr>) -> Result<(), DataplaneError> {
        let wanted: HashSet<[u8; 16]> = addrs.iter().map(Ipv6Addr::octets).collect();
        let present: HashSet<[u8; 16]> = self
            .host_addrs6
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", MAP_HOST_ADDRS6))?;
        for gone in present.difference(&wanted) {
            match self.host_addrs6.remove(gone) {
                Err(err) if !is_not_found(&err) => {
                    return Err(map_err("remove from", MAP_HOST_ADDRS6)(err));
                }
                _ => {}
            }
        }
        for new in wanted.difference(&present) {
            self.host_addrs6
                .insert(new, 1, 0)
                .map_err(map_err("insert into", MAP_HOST_ADDRS6))?;
        }
        Ok(())
    }

    /// Makes `ND_HOST_ADDRS` hold exactly `addrs`.
    pub fn set_host_addrs(&mut self, addrs: &HashSet<Ipv4Addr>) -> Result<(), DataplaneError> {
        let wanted: HashSet<u32> = addrs
            .iter()
            .map(|a| u32::from_ne_bytes(a.octets()))
            .collect();
        let present: HashSet<u32> = self
            .host_addrs
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", MAP_HOST_ADDRS))?;
        for gone in present.difference(&wanted) {
            match self.host_addrs.remove(gone) {
                Err(err) if !is_not_found(&err) => {
                    return Err(map_err("remove from", MAP_HOST_ADDRS)(err));
                }
                _ => {}
            }
        }
        for new in wanted.difference(&present) {
            self.host_addrs
                .insert(new, 1, 0)
                .map_err(map_err("insert into", MAP_HOST_ADDRS))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_hierarchy() {
        let hybrid = "\
24 1 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,name=systemd
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount("24 1 0:22 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }
}
