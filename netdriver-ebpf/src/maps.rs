//! The maps shared with the daemon (types and names in `netdriver-common`), and the load-time
//! globals the loader sets.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, xdp_action::XDP_DROP},
    btf_maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    macros::btf_map,
};
use netdriver_common::{
    BIND_PORT_PREFIX_BASE, BIND_PORTS_MAX_ENTRIES, BindPortKey, CT_MAX_ENTRIES, CtEntry, CtEntry6,
    CtKey, CtKey6, DROP_REASONS, HAIRPIN_MAX_ENTRIES, HOST_ADDRS_MAX_ENTRIES, HairpinEntry,
    HairpinKey, LINKS_MAX_ENTRIES, LinkKey, LinkKey6, NAT_PORT_MAX_DEFAULT, NAT_PORT_MIN_DEFAULT,
    NETS_MAX_ENTRIES, NetInfo, NetInfo6, PORT_RANGES_MAX_ENTRIES, PORTS_MAX_ENTRIES, PortKey,
    PortKey6, PortRangeKey, PortRangeKey6, PortRangeTarget, PortRangeTarget6, PortTarget,
    PortTarget6, SOCK_RNAT_MAX_ENTRIES, SockRnatKey, SockRnatKey6, SockRnatValue, SockRnatValue6,
    VETHS_MAX_ENTRIES, VethInfo,
};

/// Published ports.
#[btf_map]
pub static ND_PORTS: HashMap<PortKey, PortTarget, { PORTS_MAX_ENTRIES as usize }> = HashMap::new();

/// Connection tracking and NAT state: one entry per direction of a flow. A plain hash, not an
/// LRU: an LRU evicts live flows silently when it is full, while a hash refuses the new flow
/// (`DROP_CT_FAILED`) and keeps the existing ones. The daemon sweeps expired entries and sets
/// the capacity at load time (`--ct-max-entries`).
#[btf_map]
pub static ND_CT: HashMap<CtKey, CtEntry, { CT_MAX_ENTRIES as usize }> = HashMap::new();

/// IPv6 connection tracking, as `ND_CT` (the daemon sets the same capacity).
#[btf_map]
pub static ND_CT6: HashMap<CtKey6, CtEntry6, { CT_MAX_ENTRIES as usize }> = HashMap::new();

/// IPv6 container subnets; the key data is the 16 address bytes.
#[btf_map]
pub static ND_NETS6: LpmTrie<[u8; 16], NetInfo6, { NETS_MAX_ENTRIES as usize }> = LpmTrie::new();

/// Container subnets; the key data is the IPv4 address in network order.
#[btf_map]
pub static ND_NETS: LpmTrie<u32, NetInfo, { NETS_MAX_ENTRIES as usize }> = LpmTrie::new();

/// Legacy links between IPv6 addresses, as `ND_LINKS`.
#[btf_map]
pub static ND_LINKS6: HashMap<LinkKey6, u32, { LINKS_MAX_ENTRIES as usize }> = HashMap::new();

/// Legacy links (parent → child's exposed port), consulted when ICC is off.
#[btf_map]
pub static ND_LINKS: HashMap<LinkKey, u32, { LINKS_MAX_ENTRIES as usize }> = HashMap::new();

/// The host's own addresses (network order); the value is unused.
#[btf_map]
pub static ND_HOST_ADDRS: HashMap<u32, u32, { HOST_ADDRS_MAX_ENTRIES as usize }> = HashMap::new();

/// Published ports on IPv6 host addresses.
#[btf_map]
pub static ND_PORTS6: HashMap<PortKey6, PortTarget6, { PORTS_MAX_ENTRIES as usize }> =
    HashMap::new();

/// The host's own IPv6 addresses (the 16 bytes as on the wire); the value is unused.
#[btf_map]
pub static ND_HOST_ADDRS6: HashMap<[u8; 16], u32, { HOST_ADDRS_MAX_ENTRIES as usize }> =
    HashMap::new();

/// Translations made by the socket hooks, for replies and `getpeername`.
#[btf_map]
pub static ND_SOCK_RNAT: LruHashMap<
    SockRnatKey,
    SockRnatValue,
    { SOCK_RNAT_MAX_ENTRIES as usize },
> = LruHashMap::new();

/// Translations made by the IPv6 socket hooks (IPv4-mapped ones go to `ND_SOCK_RNAT`).
#[btf_map]
pub static ND_SOCK_RNAT6: LruHashMap<
    SockRnatKey6,
    SockRnatValue6,
    { SOCK_RNAT_MAX_ENTRIES as usize },
> = LruHashMap::new();

/// Published port ranges.
#[btf_map]
pub static ND_PORT_RANGES: LpmTrie<
    PortRangeKey,
    PortRangeTarget,
    { PORT_RANGES_MAX_ENTRIES as usize },
> = LpmTrie::new();

/// Published IPv6 port ranges.
#[btf_map]
pub static ND_PORT_RANGES6: LpmTrie<
    PortRangeKey6,
    PortRangeTarget6,
    { PORT_RANGES_MAX_ENTRIES as usize },
> = LpmTrie::new();

/// Host ports published on any host address, by protocol and family (for wildcard binds).
#[btf_map]
pub static ND_BIND_PORTS: LpmTrie<BindPortKey, u32, { BIND_PORTS_MAX_ENTRIES as usize }> =
    LpmTrie::new();

/// Hairpin flows, keyed by the reply as the target container sends it.
#[btf_map]
pub static ND_HAIRPIN: LruHashMap<HairpinKey, HairpinEntry, { HAIRPIN_MAX_ENTRIES as usize }> =
    LruHashMap::new();

/// Containers' host-side veths by ifindex: their network's flags and bridge MAC.
#[btf_map]
pub static ND_VETHS: HashMap<u32, VethInfo, { VETHS_MAX_ENTRIES as usize }> = HashMap::new();

/// Drop counters, indexed by `DROP_*` reason.
#[btf_map]
pub static ND_DROPS: PerCpuArray<u64, { DROP_REASONS as usize }> = PerCpuArray::new();

/// Masquerade source-port range (inclusive), set by the loader.
#[unsafe(no_mangle)]
static ND_NAT_PORT_MIN: u16 = NAT_PORT_MIN_DEFAULT;
#[unsafe(no_mangle)]
static ND_NAT_PORT_MAX: u16 = NAT_PORT_MAX_DEFAULT;

/// Whether redirects into containers may use `bpf_redirect_peer` (1) or must take the
/// veth's egress (0), set by the loader (`--no-redirect-peer`).
#[unsafe(no_mangle)]
static ND_REDIRECT_PEER: u8 = 1;

/// See [`ND_REDIRECT_PEER`].
#[inline(always)]
pub fn redirect_peer_allowed() -> bool {
    // SAFETY: a read-only global, read volatile for the same reason as the port range.
    unsafe { core::ptr::read_volatile(&raw const ND_REDIRECT_PEER) != 0 }
}

/// The masquerade port range.
#[inline(always)]
pub fn nat_port_range() -> (u16, u16) {
    // SAFETY: read-only globals; volatile so the compiler does not fold the defaults in
    // (the loader rewrites them).
    unsafe {
        (
            core::ptr::read_volatile(&raw const ND_NAT_PORT_MIN),
            core::ptr::read_volatile(&raw const ND_NAT_PORT_MAX),
        )
    }
}

/// Counts a drop under `reason` and returns tc's verdict that drops the packet.
#[inline(always)]
pub fn drop_packet(reason: u32) -> i32 {
    count_drop(reason);
    TC_ACT_SHOT
}

/// Counts a drop under `reason` and returns XDP's verdict that drops the packet.
#[inline(always)]
pub fn drop_frame(reason: u32) -> u32 {
    count_drop(reason);
    XDP_DROP
}

#[inline(always)]
fn count_drop(reason: u32) {
    if let Some(counter) = ND_DROPS.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot of an array map, valid for the program's run; no other
        // writer on this CPU while we run.
        unsafe { *counter += 1 };
    }
}

/// The container network `addr_be` belongs to.
#[inline(always)]
pub fn net_of(addr_be: u32) -> Option<NetInfo> {
    ND_NETS.get(&Key::new(32, addr_be)).copied()
}

/// Whether `addr_be` is inside a container subnet.
#[inline(always)]
pub fn in_container_net(addr_be: u32) -> bool {
    ND_NETS.get(&Key::new(32, addr_be)).is_some()
}

/// Whether `addr_be` is one of the host's own addresses.
#[inline(always)]
pub fn is_host_addr(addr_be: u32) -> bool {
    // SAFETY: only the presence is read.
    unsafe { ND_HOST_ADDRS.get(addr_be) }.is_some()
}

/// Whether `addr` is one of the host's own IPv6 addresses.
#[inline(always)]
pub fn is_host_addr6(addr: [u8; 16]) -> bool {
    // SAFETY: only the presence is read.
    unsafe { ND_HOST_ADDRS6.get(addr) }.is_some()
}

/// Whether `port`/`proto` is published on `addr_be` (or on every host address), as a single
/// port or inside a range.
#[inline(always)]
pub fn is_published(addr_be: u32, port: u16, proto: u8) -> bool {
    crate::published::lookup(addr_be, port, proto, true).is_some()
}

/// Whether `port`/`proto` is published on some host address of `family` (`BIND_FAMILY_*`).
#[inline(always)]
pub fn published_on_any(port: u16, proto: u8, family: u8) -> bool {
    let key = BindPortKey {
        proto,
        family,
        port_be: port.to_be_bytes(),
    };
    ND_BIND_PORTS
        .get(&Key::new(BIND_PORT_PREFIX_BASE + 16, key))
        .is_some()
}

/// The IPv6 container network `addr` belongs to.
#[inline(always)]
pub fn net6_of(addr: &[u8; 16]) -> Option<NetInfo6> {
    ND_NETS6.get(&Key::new(128, *addr)).copied()
}

/// The container veth `ifindex` (the daemon fills it when it attaches `nd_from_container`);
/// `None` for a veth attached by a version that did not.
#[inline(always)]
pub fn veth_of(ifindex: u32) -> Option<VethInfo> {
    // SAFETY: the value is copied out at once.
    unsafe { ND_VETHS.get(ifindex) }.copied()
}
