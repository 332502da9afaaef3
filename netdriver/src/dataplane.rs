//! Loads the eBPF programs, pins their maps and keeps them up to date.
//!
//! Synchronous on purpose: the daemon holds a [`Dataplane`] behind a `std::sync::Mutex` and
//! every call is a handful of `bpf(2)`/netlink syscalls.

mod batch;
mod bind_ports;
mod ct;
mod hairpin;
mod ip6;
mod ranges;
mod sock;
#[cfg(test)]
mod tests;
mod veths;
mod xdp;

use std::{
    collections::BTreeMap,
    fmt, fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{HashMap, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
    pin::PinError,
    programs::{
        Link as _, ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink},
    },
    sys::SyscallError,
    util::KernelVersion,
};
pub use bind_ports::BindBlock;
pub use ct::{CtTimeouts, FlowKey, SCTP_TIMEOUT_DEFAULT_SECS, SweepReport, monotonic_ns};
use ipnet::Ipv4Net;
use netdriver_common::{
    BindPortKey, CT_MAX_ENTRIES, CtEntry, CtEntry6, CtKey, CtKey6, DROP_REASONS,
    GLOBAL_NAT_PORT_MAX, GLOBAL_NAT_PORT_MIN, GLOBAL_NETNS_COOKIE, GLOBAL_REDIRECT_PEER,
    HairpinEntry, HairpinKey, LinkKey, LinkKey6, MAP_BIND_PORTS, MAP_CT, MAP_CT6, MAP_DROPS,
    MAP_HAIRPIN, MAP_HOST_ADDRS, MAP_HOST_ADDRS6, MAP_LINKS, MAP_LINKS6, MAP_NETS, MAP_NETS6,
    MAP_PORT_RANGES, MAP_PORT_RANGES6, MAP_PORTS, MAP_PORTS6, MAP_SOCK_RNAT, MAP_SOCK_RNAT6,
    MAP_VETHS, NAT_PORT_MAX_DEFAULT, NAT_PORT_MIN_DEFAULT, NetInfo, NetInfo6, PROG_FROM_CONTAINER,
    PROG_FROM_UPLINK, PROG_XDP_UPLINK, PortKey, PortKey6, PortRangeKey, PortRangeKey6,
    PortRangeTarget, PortRangeTarget6, PortTarget, PortTarget6, SockRnatKey, SockRnatKey6,
    SockRnatValue, SockRnatValue6, VethInfo,
};
use nix::{
    mount::{MsFlags, mount},
    net::if_::if_nametoindex,
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
pub use sock::default_cgroup;
pub use xdp::UplinkMode;

/// The object built from netdriver-ebpf by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netdriver"));

/// Every map of the object; all are pinned under the pin directory.
const MAP_NAMES: [&str; 18] = [
    MAP_PORTS,
    MAP_PORTS6,
    MAP_HOST_ADDRS6,
    MAP_CT,
    MAP_CT6,
    MAP_NETS6,
    MAP_LINKS6,
    MAP_NETS,
    MAP_DROPS,
    MAP_LINKS,
    MAP_HOST_ADDRS,
    MAP_SOCK_RNAT,
    MAP_PORT_RANGES,
    MAP_PORT_RANGES6,
    MAP_HAIRPIN,
    MAP_BIND_PORTS,
    MAP_SOCK_RNAT6,
    MAP_VETHS,
];

/// Load-time sizes and knobs of the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Capacity of `ND_CT` (each flow takes one or two entries).
    pub ct_max_entries: u32,
    /// Source ports (and ICMP echo identifiers) masquerade may use, inclusive.
    pub nat_ports: (u16, u16),
    /// Deliver to containers with `bpf_redirect_peer` (straight into the container's end of
    /// the veth) rather than `bpf_redirect` to the host end's egress.
    pub redirect_peer: bool,
    /// Which hook of the uplinks runs the published-port DNAT.
    pub uplink_mode: UplinkMode,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            ct_max_entries: CT_MAX_ENTRIES,
            nat_ports: (NAT_PORT_MIN_DEFAULT, NAT_PORT_MAX_DEFAULT),
            redirect_peer: true,
            uplink_mode: UplinkMode::Tc,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("load the eBPF object: {source}")]
    Object {
        #[source]
        source: Box<EbpfError>,
    },
    #[error("{object} is missing from the eBPF object")]
    Missing { object: &'static str },
    #[error("load program {program}: {source}\nverifier log:\n{verifier_log}")]
    Verifier {
        program: &'static str,
        verifier_log: String,
        #[source]
        source: io::Error,
    },
    #[error("{op} program {program} on {ifname}: {source}")]
    Program {
        op: &'static str,
        program: &'static str,
        ifname: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("{op} map {map}: {source}")]
    Map {
        op: &'static str,
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("pin map {map} at {}: {source}", path.display())]
    Pin {
        map: &'static str,
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("interface {ifname}: {source}")]
    Interface {
        ifname: String,
        #[source]
        source: nix::Error,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// Best-effort teardown met several errors; all of them are kept.
    #[error("{}", Joined(.0))]
    Teardown(Vec<DataplaneError>),
}

/// Displays errors one per line.
struct Joined<'a>(&'a [DataplaneError]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DataplaneError {
    let path = path.to_owned();
    move |source| DataplaneError::Io { op, path, source }
}

fn map_err(op: &'static str, map: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { op, map, source }
}

/// Whether a map operation failed only because the key was not there.
fn is_not_found(err: &MapError) -> bool {
    match err {
        MapError::KeyNotFound => true,
        MapError::SyscallError(SyscallError { io_error, .. }) => {
            io_error.raw_os_error() == Some(libc::ENOENT)
        }
        _ => false,
    }
}

/// Pinned links live in this subdirectory of the pin directory, one file per attachment
/// (`<program>@<ifname>` for tc and XDP, `<program>@cgroup` for the socket hooks): programs
/// stay attached while the daemon is down.
const LINK_DIR: &str = "links";

/// A tc attachment of one of our programs to an interface.
struct Attachment {
    ifindex: u32,
    link: AttachedLink,
}

/// A tcx link is pinned, so it outlives the daemon; unpinning it detaches the program.
/// Kernels before 6.6 get a netlink tc filter, which dropping removes.
enum AttachedLink {
    Pinned(PinnedLink),
    Netlink(SchedClassifierLink),
}

/// The loaded programs, their maps and their attachments.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    ports: HashMap<MapData, PortKey, PortTarget>,
    ct: HashMap<MapData, CtKey, CtEntry>,
    nets: LpmTrie<MapData, u32, NetInfo>,
    ports6: HashMap<MapData, PortKey6, PortTarget6>,
    ct6: HashMap<MapData, CtKey6, CtEntry6>,
    nets6: LpmTrie<MapData, [u8; 16], NetInfo6>,
    links6: HashMap<MapData, LinkKey6, u32>,
    links: HashMap<MapData, LinkKey, u32>,
    drops: PerCpuArray<MapData, u64>,
    host_addrs: HashMap<MapData, u32, u32>,
    sock_rnat: HashMap<MapData, SockRnatKey, SockRnatValue>,
    port_ranges: LpmTrie<MapData, PortRangeKey, PortRangeTarget>,
    port_ranges6: LpmTrie<MapData, PortRangeKey6, PortRangeTarget6>,
    hairpin: HashMap<MapData, HairpinKey, HairpinEntry>,
    bind_ports: LpmTrie<MapData, BindPortKey, u32>,
    host_addrs6: HashMap<MapData, [u8; 16], u32>,
    sock_rnat6: HashMap<MapData, SockRnatKey6, SockRnatValue6>,
    veths: HashMap<MapData, u32, VethInfo>,
    cgroup: sock::CgroupLinks,
    uplinks: BTreeMap<String, Attachment>,
    /// `nd_xdp_uplink` attachments (`UplinkMode::Xdp`), in front of the tc ones.
    xdp_uplinks: BTreeMap<String, Attachment>,
    containers: BTreeMap<String, Attachment>,
    uplink_mode: UplinkMode,
}

impl fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataplane")
            .field("pin_dir", &self.pin_dir)
            .field("uplinks", &self.uplinks.keys().collect::<Vec<_>>())
            .field("containers", &self.containers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Mounts bpffs at the parent of `pin_dir` (or `pin_dir` itself) if it is not bpffs yet,
    /// creates `pin_dir`, loads the embedded object, and pins every `ND_*` map under
    /// `pin_dir` — or adopts the maps already pinned there by a previous run, so flows survive
    /// a restart. A pinned map whose layout differs from this build's is replaced (and said so).
    /// The socket programs are told the cookie of the calling thread's network namespace:
    /// they act on that namespace's sockets only.
    pub fn load(pin_dir: &Path) -> Result<Self, DataplaneError> {
        Self::load_with(pin_dir, Tuning::default())
    }

    /// [`Dataplane::load`] with explicit sizes and knobs.
    pub fn load_with(pin_dir: &Path, tuning: Tuning) -> Result<Self, DataplaneError> {
        let (nat_min, nat_max) = tuning.nat_ports;
        if tuning.ct_max_entries == 0 || nat_min == 0 || nat_min > nat_max {
            return Err(DataplaneError::Invalid {
                what: "tuning",
                reason: format!("{tuning:?}: need ct_max_entries > 0 and 0 < min <= max"),
            });
        }
        ensure_bpffs(pin_dir)?;
        fs::create_dir_all(pin_dir.join(LINK_DIR)).map_err(io_err("create", pin_dir))?;
        migrate_pins(pin_dir, tuning)?;
        let paths: Vec<(&str, PathBuf)> = MAP_NAMES.iter().map(|n| (*n, pin_dir.join(n))).collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let redirect_peer = u8::from(tuning.redirect_peer);
        let cookie = sock::netns_cookie()?;
        let mut ebpf = loader
            .override_global(GLOBAL_NETNS_COOKIE, &cookie, true)
            .map_max_entries(MAP_CT, tuning.ct_max_entries)
            .map_max_entries(MAP_CT6, tuning.ct_max_entries)
            .override_global(GLOBAL_NAT_PORT_MIN, &nat_min, true)
            .override_global(GLOBAL_NAT_PORT_MAX, &nat_max, true)
            .override_global(GLOBAL_REDIRECT_PEER, &redirect_peer, true)
            .load(EBPF_OBJECT)
            .map_err(|source| DataplaneError::Object {
                source: Box::new(source),
            })?;
        for program in [PROG_FROM_UPLINK, PROG_FROM_CONTAINER] {
            load_program(&mut ebpf, program)?;
        }
        sock::load(&mut ebpf)?;
        if tuning.uplink_mode == UplinkMode::Xdp {
            xdp::load(&mut ebpf)?;
        }
        Ok(Self {
            ports: take_map(&mut ebpf, pin_dir, MAP_PORTS)?,
            ct: take_map(&mut ebpf, pin_dir, MAP_CT)?,
            nets: take_map(&mut ebpf, pin_dir, MAP_NETS)?,
            ports6: take_map(&mut ebpf, pin_dir, MAP_PORTS6)?,
            ct6: take_map(&mut ebpf, pin_dir, MAP_CT6)?,
            nets6: take_map(&mut ebpf, pin_dir, MAP_NETS6)?,
            links6: take_map(&mut ebpf, pin_dir, MAP_LINKS6)?,
            links: take_map(&mut ebpf, pin_dir, MAP_LINKS)?,
            drops: take_map(&mut ebpf, pin_dir, MAP_DROPS)?,
            host_addrs: take_map(&mut ebpf, pin_dir, MAP_HOST_ADDRS)?,
            sock_rnat: take_map(&mut ebpf, pin_dir, MAP_SOCK_RNAT)?,
            port_ranges: take_map(&mut ebpf, pin_dir, MAP_PORT_RANGES)?,
            port_ranges6: take_map(&mut ebpf, pin_dir, MAP_PORT_RANGES6)?,
            hairpin: take_map(&mut ebpf, pin_dir, MAP_HAIRPIN)?,
            bind_ports: take_map(&mut ebpf, pin_dir, MAP_BIND_PORTS)?,
            host_addrs6: take_map(&mut ebpf, pin_dir, MAP_HOST_ADDRS6)?,
            sock_rnat6: take_map(&mut ebpf, pin_dir, MAP_SOCK_RNAT6)?,
            veths: take_map(&mut ebpf, pin_dir, MAP_VETHS)?,
            cgroup: sock::CgroupLinks::default(),
            ebpf,
            pin_dir: pin_dir.to_owned(),
            uplinks: BTreeMap::new(),
            xdp_uplinks: BTreeMap::new(),
            containers: BTreeMap::new(),
            uplink_mode: tuning.uplink_mode,
        })
    }

    /// Attaches `nd_from_uplink` to the tc ingress of `ifname`, and in XDP mode
    /// `nd_xdp_uplink` to its XDP hook. Idempotent; re-attaches if the interface was
    /// recreated under the same name. When XDP cannot be attached, tc alone carries the
    /// uplink and the error says why.
    pub fn attach_uplink(&mut self, ifname: &str) -> Result<(), DataplaneError> {
        attach(
            &mut self.ebpf,
            &self.pin_dir,
            &mut self.uplinks,
            PROG_FROM_UPLINK,
            ifname,
        )?;
        if self.uplink_mode == UplinkMode::Xdp {
            xdp::attach(&mut self.ebpf, &self.pin_dir, &mut self.xdp_uplinks, ifname)?;
        }
        Ok(())
    }

    pub fn detach_uplink(&mut self, ifname: &str) -> Result<(), DataplaneError> {
        let xdp = detach(&mut self.xdp_uplinks, PROG_XDP_UPLINK, ifname);
        detach(&mut self.uplinks, PROG_FROM_UPLINK, ifname)?;
        xdp
    }

    /// Which hook of the uplinks runs the DNAT.
    #[must_use]
    pub fn uplink_mode(&self) -> UplinkMode {
        self.uplink_mode
    }

    /// The uplinks `nd_xdp_uplink` is attached to.
    #[must_use]
    pub fn xdp_uplinks(&self) -> Vec<String> {
        self.xdp_uplinks.keys().cloned().collect()
    }

    /// The interfaces `nd_from_uplink` is attached to.
    #[must_use]
    pub fn uplinks(&self) -> Vec<String> {
        self.uplinks.keys().cloned().collect()
    }

    /// Publishes (or re-targets) a host port. Ports are in host order, addresses in network
    /// order (`u32::from_ne_bytes(addr.octets())`).
    pub fn publish(&mut self, key: PortKey, target: PortTarget) -> Result<(), DataplaneError> {
        let key = validate_port_key(key)?;
        let target = PortTarget { _pad0: 0, ..target };
        self.ports
            .insert(key, target, 0)
            .map_err(map_err("insert into", MAP_PORTS))
    }

    /// Removes a published port; succeeds if it was not published.
    pub fn unpublish(&mut self, key: &PortKey) -> Result<(), DataplaneError> {
        let key = PortKey { _pad: 0, ..*key };
        match self.ports.remove(&key) {
            Err(err) if !is_not_found(&err) => Err(map_err("remove from", MAP_PORTS)(err)),
            _ => Ok(()),
        }
    }

    /// The published ports, as stored in `ND_PORTS`.
    pub fn published(&self) -> Result<Vec<(PortKey, PortTarget)>, DataplaneError> {
        self.ports
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", MAP_PORTS))
    }

    /// Declares a container subnet: outsiders may reach its addresses only through
    /// published ports.
    pub fn add_network(&mut self, subnet: Ipv4Net, info: NetInfo) -> Result<(), DataplaneError> {
        self.nets
            .insert(&net_key(subnet), info, 0)
            .map_err(map_err("insert into", MAP_NETS))
    }

    /// Removes a container subnet; succeeds if it was not there.
    pub fn remove_network(&mut self, subnet: Ipv4Net) -> Result<(), DataplaneError> {
        match self.nets.remove(&net_key(subnet)) {
            Err(err) if !is_not_found(&err) => Err(map_err("remove from", MAP_NETS)(err)),
            _ => Ok(()),
        }
    }

    /// Lets `key.parent_addr_be` open connections to `key.port` of `key.child_addr_be`.
    pub fn add_link(&mut self, key: LinkKey) -> Result<(), DataplaneError> {
        let key = LinkKey { _pad: 0, ..key };
        self.links
            .insert(key, 1, 0)
            .map_err(map_err("insert into", MAP_LINKS))
    }

    /// Removes every link entry that names `addr` as parent or child.
    pub fn remove_links_of(&mut self, addr: Ipv4Addr) -> Result<usize, DataplaneError> {
        let addr_be = u32::from_ne_bytes(addr.octets());
        let keys: Vec<LinkKey> = self
            .links
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", MAP_LINKS))?;
        let mut removed = 0;
        for key in keys
            .iter()
            .filter(|k| k.parent_addr_be == addr_be || k.child_addr_be == addr_be)
        {
            match self.links.remove(key) {
                Ok(()) => removed += 1,
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(map_err("remove from", MAP_LINKS)(err)),
            }
        }
        Ok(removed)
    }

    /// Drop counters summed over CPUs, indexed by `DROP_*` reason.
    pub fn drop_counters(&self) -> Result<Vec<u64>, DataplaneError> {
        (0..DROP_REASONS)
            .map(|reason| {
                let per_cpu = self
                    .drops
                    .get(&reason, 0)
                    .map_err(map_err("read", MAP_DROPS))?;
                Ok(per_cpu.iter().copied().fold(0, u64::wrapping_add))
            })
            .collect()
    }

    /// Unpins the links of a previous run that no attachment of this run replaced (their
    /// interface is gone or no longer ours), which detaches those programs.
    pub fn release_stale_links(&mut self) -> Result<usize, DataplaneError> {
        let dir = self.pin_dir.join(LINK_DIR);
        let mut released = 0;
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.split_once('@').is_some_and(|(prog, ifname)| {
                if sock::SOCK_PROGRAMS.contains(&prog) {
                    return ifname == "cgroup" && self.cgroup.holds(prog);
                }
                let table = match prog {
                    PROG_FROM_UPLINK => &self.uplinks,
                    PROG_XDP_UPLINK => &self.xdp_uplinks,
                    _ => &self.containers,
                };
                table.contains_key(ifname)
            });
            if !ours {
                tracing::info!(link = %name, "releasing a link no interface of ours needs");
                remove_pin(&entry.path())?;
                released += 1;
            }
        }
        Ok(released)
    }

    /// Detaches every program and removes every pin (`--cleanup-on-exit`, `netdriver
    /// cleanup`). Without this, programs stay attached and maps pinned while the daemon is
    /// down, so traffic keeps flowing.
    pub fn remove_everything(&mut self) -> Result<(), DataplaneError> {
        let mut errors: Vec<DataplaneError> = self.detach_cgroup().err().into_iter().collect();
        for (table, program) in [
            (&mut self.xdp_uplinks, PROG_XDP_UPLINK),
            (&mut self.uplinks, PROG_FROM_UPLINK),
            (&mut self.containers, PROG_FROM_CONTAINER),
        ] {
            let names: Vec<String> = table.keys().cloned().collect();
            errors.extend(names.iter().filter_map(|n| detach(table, program, n).err()));
        }
        errors.extend(remove_pins(&self.pin_dir).err());
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(DataplaneError::Teardown(errors)),
        }
    }

    /// The directory the maps are pinned in.
    #[must_use]
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }
}

/// No error, one error, or all of them.
fn joined(mut errors: Vec<DataplaneError>) -> Result<(), DataplaneError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(DataplaneError::Teardown(errors)),
    }
}

fn validate_port_key(key: PortKey) -> Result<PortKey, DataplaneError> {
    use netdriver_common::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};
    validate_proto(
        key.proto,
        &[PROTO_TCP, PROTO_UDP, PROTO_SCTP],
        "TCP, UDP or SCTP",
    )?;
    Ok(PortKey { _pad: 0, ..key })
}

/// A published port's protocol must be one of `allowed` (`names` says which).
fn validate_proto(proto: u8, allowed: &[u8], names: &str) -> Result<(), DataplaneError> {
    if !allowed.contains(&proto) {
        return Err(DataplaneError::Invalid {
            what: "port key",
            reason: format!("protocol {proto} is not {names}"),
        });
    }
    Ok(())
}

fn net_key(subnet: Ipv4Net) -> Key<u32> {
    let subnet = subnet.trunc();
    Key::new(
        u32::from(subnet.prefix_len()),
        u32::from_ne_bytes(subnet.network().octets()),
    )
}

/// Makes sure `pin_dir` exists on a bpffs. Mounts bpffs on the parent when that is an empty
/// directory (an unmounted `/sys/fs/bpf`), otherwise on `pin_dir` itself, so that no existing
/// content is ever hidden.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), DataplaneError> {
    if is_bpffs(pin_dir) {
        return Ok(());
    }
    let parent = pin_dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        if !is_bpffs(parent) && is_empty_dir(parent) {
            mount_bpffs(parent)?;
        }
        if is_bpffs(parent) {
            return fs::create_dir_all(pin_dir).map_err(io_err("create", pin_dir));
        }
    }
    fs::create_dir_all(pin_dir).map_err(io_err("create", pin_dir))?;
    if !is_empty_dir(pin_dir) {
        return Err(DataplaneError::Io {
            op: "mount bpffs on (not empty, not bpffs)",
            path: pin_dir.to_owned(),
            source: io::Error::from(io::ErrorKind::DirectoryNotEmpty),
        });
    }
    mount_bpffs(pin_dir)
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC)
}

fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

fn mount_bpffs(path: &Path) -> Result<(), DataplaneError> {
    tracing::info!(path = %path.display(), "mounting bpffs");
    mount(
        Some("bpf"),
        path,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| DataplaneError::Io {
        op: "mount bpffs on",
        path: path.to_owned(),
        source: errno.into(),
    })
}

/// Removes the pins netdriver made under `pin_dir` (links first, then maps) and the
/// directory itself when nothing else lives there.
pub fn remove_pins(pin_dir: &Path) -> Result<(), DataplaneError> {
    let links = pin_dir.join(LINK_DIR);
    if let Ok(entries) = fs::read_dir(&links) {
        for entry in entries.flatten() {
            remove_pin(&entry.path())?;
        }
        let _ = fs::remove_dir(&links);
    }
    if let Ok(entries) = fs::read_dir(pin_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("ND_") {
                remove_pin(&entry.path())?;
            }
        }
    }
    // Only succeeds if nothing else lives there; a shared directory is left alone.
    let _ = fs::remove_dir(pin_dir);
    Ok(())
}

fn remove_pin(path: &Path) -> Result<(), DataplaneError> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(io_err("remove pin", path)(err)),
        _ => Ok(()),
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    ebpf.program_mut(program)
        .ok_or(DataplaneError::Missing { object: program })?
        .try_into()
        .map_err(|source| DataplaneError::Program {
            op: "look up",
            program,
            ifname: String::new(),
            source: Box::new(source),
        })
}

fn load_program(ebpf: &mut Ebpf, program: &'static str) -> Result<(), DataplaneError> {
    classifier(ebpf, program)?
        .load()
        .map_err(|err| load_error(program, err))
}

/// A load failure, with the verifier's log when there is one.
fn load_error(program: &'static str, err: ProgramError) -> DataplaneError {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => DataplaneError::Verifier {
            program,
            verifier_log: verifier_log.to_string(),
            source: io_error,
        },
        source => DataplaneError::Program {
            op: "load",
            program,
            ifname: String::new(),
            source: Box::new(source),
        },
    }
}

/// Takes a map out of the object; the loader already pinned it (or adopted its pin).
fn take_map<T>(ebpf: &mut Ebpf, _pin_dir: &Path, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::Missing { object: name })?;
    T::try_from(map).map_err(map_err("open", name))
}

/// Removes pinned maps this build cannot adopt: `ND_*` pins of names it no longer has, and
/// pins whose key, value or size differ from this build's definition (a layout change). Their
/// content is re-derived from the store (ports, networks) or lost (flows), and the log says so.
fn migrate_pins(pin_dir: &Path, tuning: Tuning) -> Result<(), DataplaneError> {
    let object = aya_obj::Object::parse(EBPF_OBJECT).map_err(|e| DataplaneError::Invalid {
        what: "embedded eBPF object",
        reason: e.to_string(),
    })?;
    let entries = fs::read_dir(pin_dir).map_err(io_err("list", pin_dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("ND_") {
            continue;
        }
        let path = entry.path();
        let reason = match object.maps.get(&name) {
            None => Some("no longer used by this version".to_string()),
            Some(def) => {
                let max_entries = if name == MAP_CT || name == MAP_CT6 {
                    tuning.ct_max_entries
                } else {
                    def.max_entries()
                };
                layout_change(&path, def, max_entries)
            }
        };
        if let Some(reason) = reason {
            tracing::warn!(map = %name, "replacing pinned map: {reason}");
            remove_pin(&path)?;
        }
    }
    Ok(())
}

/// Why the map pinned at `path` does not fit `def`, if it does not.
fn layout_change(path: &Path, def: &aya_obj::Map, max_entries: u32) -> Option<String> {
    let info = match aya::maps::MapInfo::from_pin(path) {
        Ok(info) => info,
        Err(e) => return Some(format!("unreadable pin ({e})")),
    };
    let pinned = (info.key_size(), info.value_size(), info.max_entries());
    let wanted = (def.key_size(), def.value_size(), max_entries);
    (pinned != wanted).then(|| {
        format!(
            "layout changed (key/value/max entries {}/{}/{} -> {}/{}/{})",
            pinned.0, pinned.1, pinned.2, wanted.0, wanted.1, wanted.2
        )
    })
}

fn ifindex(ifname: &str) -> Result<u32, DataplaneError> {
    if_nametoindex(ifname).map_err(|source| DataplaneError::Interface {
        ifname: ifname.to_owned(),
        source,
    })
}

/// The index of `ifname`, or `None` when it already carries this attachment. An attachment
/// to an older interface of the same name is defunct: it is released.
fn needs_attach(
    attachments: &mut BTreeMap<String, Attachment>,
    ifname: &str,
) -> Result<Option<u32>, DataplaneError> {
    let ifindex = ifindex(ifname)?;
    if let Some(old) = attachments.remove(ifname) {
        if old.ifindex == ifindex {
            attachments.insert(ifname.to_owned(), old);
            return Ok(None);
        }
        release(old.link);
    }
    Ok(Some(ifindex))
}

fn attach(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    attachments: &mut BTreeMap<String, Attachment>,
    program: &'static str,
    ifname: &str,
) -> Result<(), DataplaneError> {
    let Some(ifindex) = needs_attach(attachments, ifname)? else {
        return Ok(());
    };
    let prog_err = |op, source| DataplaneError::Program {
        op,
        program,
        ifname: ifname.to_owned(),
        source: Box::new(source),
    };
    // aya uses tcx links from Linux 6.6 on and netlink (which needs clsact) before that.
    let tcx = !KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0));
    if !tcx {
        add_clsact(ifname).map_err(|e| prog_err("add clsact for", ProgramError::TcError(e)))?;
    }
    // A previous run's link (this program's older version, still attached while we were
    // down) is replaced only once the new one is attached: no packet goes unhandled.
    let pin = pin_dir.join(LINK_DIR).join(format!("{program}@{ifname}"));
    let previous = PinnedLink::from_pin(&pin).ok();
    let prog = classifier(ebpf, program)?;
    let link_id = prog
        .attach(ifname, TcAttachType::Ingress)
        .map_err(|e| prog_err("attach", e))?;
    let link = prog.take_link(link_id).map_err(|e| prog_err("attach", e))?;
    if let Some(previous) = previous {
        release(AttachedLink::Pinned(previous));
    }
    let link = if tcx {
        let fd = FdLink::try_from(link)
            .map_err(|e| prog_err("pin", ProgramError::IOError(io::Error::other(e))))?;
        AttachedLink::Pinned(fd.pin(&pin).map_err(|source| DataplaneError::Pin {
            map: program,
            path: pin.clone(),
            source,
        })?)
    } else {
        AttachedLink::Netlink(link)
    };
    attachments.insert(ifname.to_owned(), Attachment { ifindex, link });
    Ok(())
}

/// Detaches a link: a pinned one by removing its pin (the kernel detaches the program once
/// nothing refers to the link), a netlink one by removing the filter.
fn release(link: AttachedLink) -> Option<ProgramError> {
    match link {
        AttachedLink::Pinned(pinned) => match pinned.unpin() {
            Ok(_fd) => None,
            Err(e) => Some(ProgramError::IOError(e)),
        },
        AttachedLink::Netlink(link) => link.detach().err(),
    }
}

fn add_clsact(ifname: &str) -> Result<(), tc::TcError> {
    match tc::qdisc_add_clsact(ifname) {
        Err(tc::TcError::NetlinkError(err)) if err.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

fn detach(
    attachments: &mut BTreeMap<String, Attachment>,
    program: &'static str,
    ifname: &str,
) -> Result<(), DataplaneError> {
    let Some(Attachment { link, .. }) = attachments.remove(ifname) else {
        return Ok(());
    };
    match release(link) {
        // A netlink filter goes away with its interface.
        Some(_) if if_nametoindex(ifname).is_err() => Ok(()),
        Some(source) => Err(DataplaneError::Program {
            op: "detach",
            program,
            ifname: ifname.to_owned(),
            source: Box::new(source),
        }),
        None => Ok(()),
    }
}

// The daemon shares the dataplane between tokio tasks behind a `std::sync::Mutex`.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Dataplane>();
};
