//! Map key and value types shared by the eBPF data path and the daemon.
//!
//! Every type is `#[repr(C)]`, `Pod`, has explicit padding and a pinned size. Fields that
//! hold network-order data say so in their name (`_be`). A layout change gets a new map name.
#![no_std]
#![expect(
    clippy::pub_underscore_fields,
    reason = "padding is an explicit, public `_pad` field so both sides can build the types \
              with struct literals"
)]

use core::mem::size_of;

use bytemuck::{Pod, Zeroable};

/// IP protocol numbers as they appear in the IPv4 header.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Pinned map names (at most 15 bytes, `ND_` prefix).
pub const MAP_PORTS: &str = "ND_PORTS";
pub const MAP_CT: &str = "ND_CT";
pub const MAP_NETS: &str = "ND_NETS";
pub const MAP_DROPS: &str = "ND_DROPS";
/// The host's own IPv4 addresses (in the daemon's namespace): where a wildcard published
/// port is reachable from the host itself and from containers (hairpin).
pub const MAP_HOST_ADDRS: &str = "ND_HOST_ADDRS";
/// What the socket hooks translated, so replies and `getpeername` show the address the
/// application used.
pub const MAP_SOCK_RNAT: &str = "ND_SOCK_RNAT";
/// Hairpin flows (a container reaching a published port through a host address), keyed by
/// the reply as the target container sends it.
pub const MAP_HAIRPIN: &str = "ND_HAIRPIN";
/// Published port ranges (LPM trie over protocol, host address and port prefix): a range
/// costs at most 30 entries whatever its length. Consulted when `ND_PORTS` has no entry.
pub const MAP_PORT_RANGES: &str = "ND_PORT_RANGES";
/// Gateway address of each container subnet (LPM trie), for hairpin source rewriting.
pub const MAP_GATEWAYS: &str = "ND_GATEWAYS";

/// Program names (the functions in netdriver-ebpf).
pub const PROG_FROM_UPLINK: &str = "nd_from_uplink";
pub const PROG_FROM_CONTAINER: &str = "nd_from_container";
/// cgroup `sock_addr` programs: published ports from the host itself, without a proxy.
pub const PROG_SOCK_CONNECT4: &str = "nd_sock_connect4";
pub const PROG_SOCK_SENDMSG4: &str = "nd_sock_sendmsg4";
pub const PROG_SOCK_RECVMSG4: &str = "nd_sock_recvmsg4";
pub const PROG_SOCK_GETPEERNAME4: &str = "nd_sock_getpeername4";
/// cgroup bind4: published host ports are reserved.
pub const PROG_SOCK_BIND4: &str = "nd_sock_bind4";

/// Load-time global: the cookie of the daemon's network namespace. The socket hooks are
/// attached to a cgroup, and cgroups span namespaces: they act only on sockets whose
/// namespace has this cookie (0, the unset value, matches nothing).
pub const GLOBAL_NETNS_COOKIE: &str = "ND_NETNS_COOKIE";

/// Capacity of the published-port map.
pub const PORTS_MAX_ENTRIES: u32 = 65536;
/// Capacity of the connection-tracking map (LRU).
pub const CT_MAX_ENTRIES: u32 = 262_144;
/// Capacity of the host-address map.
pub const HOST_ADDRS_MAX_ENTRIES: u32 = 4096;
/// Capacity of the socket reverse-translation map (LRU).
pub const SOCK_RNAT_MAX_ENTRIES: u32 = 65536;
/// Capacity of the port-range trie (a range takes at most 30 entries).
pub const PORT_RANGES_MAX_ENTRIES: u32 = 16384;
/// Capacity of the hairpin flow map (LRU).
pub const HAIRPIN_MAX_ENTRIES: u32 = 65536;
/// Capacity of the network-subnet LPM trie.
pub const NETS_MAX_ENTRIES: u32 = 1024;

/// Drop reasons, the index into `ND_DROPS` (a per-CPU array of counters).
pub const DROP_UNPUBLISHED: u32 = 0;
pub const DROP_REDIRECT_FAILED: u32 = 1;
pub const DROP_CSUM: u32 = 2;
/// `ND_CT` refused the entry of a new flow (its replies could not be translated back).
pub const DROP_CT_FAILED: u32 = 3;
pub const DROP_REASONS: u32 = 4;

/// Key of `ND_PORTS`: a published host port. `host_addr_be == 0` means every host address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortKey {
    pub host_addr_be: u32,
    pub host_port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<PortKey>() == 8);

/// Value of `ND_PORTS`: where a published port goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortTarget {
    /// Container address, network order.
    pub addr_be: u32,
    /// Container port, host order.
    pub port: u16,
    pub _pad0: u16,
    /// Index of the host-side veth of the container.
    pub ifindex: u32,
    /// MAC address of the container's interface.
    pub mac: [u8; 6],
    /// MAC address of the network's bridge (used as source MAC towards the container).
    pub gw_mac: [u8; 6],
}
const _: () = assert!(size_of::<PortTarget>() == 24);

/// Key of `ND_CT`: one translated flow, as seen from the container side
/// (the container's address and port, the remote client's address and port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtKey {
    pub container_addr_be: u32,
    pub remote_addr_be: u32,
    pub container_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<CtKey>() == 16);

/// Value of `ND_CT`: how to translate the container's replies back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtEntry {
    /// The address the client connected to, network order.
    pub host_addr_be: u32,
    /// The published host port, host order.
    pub host_port: u16,
    pub _pad0: u16,
    /// The uplink the flow came in on; replies leave through it.
    pub uplink_ifindex: u32,
    /// MAC of the uplink (source MAC of replies).
    pub uplink_mac: [u8; 6],
    /// MAC the client's frames came from (destination MAC of replies).
    pub peer_mac: [u8; 6],
    /// `bpf_ktime_get_ns` when the flow was last seen.
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<CtEntry>() == 32);

/// Value of `ND_NETS`, an LPM trie of container subnets (IPv4). Its key is aya's
/// `lpm_trie::Key<u32>`: the prefix length, then the address in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetInfo {
    /// Index of the network's bridge.
    pub bridge_ifindex: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<NetInfo>() == 8);

/// Key data of `ND_PORT_RANGES` (behind the trie's prefix length): byte arrays so there is
/// no padding between the fields, which the prefix covers in order: the protocol (8 bits),
/// the host address (32, `0.0.0.0` for every address), then the leading bits of the port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortRangeKey {
    pub proto: u8,
    pub host_addr: [u8; 4],
    /// Big-endian, so that a prefix is a block of consecutive ports.
    pub port_be: [u8; 2],
    pub _pad: u8,
}
const _: () = assert!(size_of::<PortRangeKey>() == 8);
/// Bits of `PortRangeKey` before the port.
pub const PORT_RANGE_PREFIX_BASE: u32 = 40;

/// Value of `ND_PORT_RANGES`: the container side of a published range. Host port `p` goes
/// to container port `target.port + (p - host_start)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortRangeTarget {
    pub target: PortTarget,
    /// First host port of the whole range (not of this trie entry's block), host order.
    pub host_start: u16,
    pub _pad: [u16; 3],
}
const _: () = assert!(size_of::<PortRangeTarget>() == 32);

/// Key of `ND_SOCK_RNAT`: a socket (its cookie) and the container address and port the
/// socket hooks sent it to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SockRnatKey {
    pub cookie: u64,
    /// Container address, network order.
    pub addr_be: u32,
    /// Container port, host order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<SockRnatKey>() == 16);

/// Value of `ND_SOCK_RNAT`: the address and port the application asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SockRnatValue {
    /// Network order.
    pub addr_be: u32,
    /// Host order.
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<SockRnatValue>() == 8);

/// Key of `ND_HAIRPIN`: a reply of a hairpin flow as the target container sends it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HairpinKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    /// Host order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<HairpinKey>() == 16);

/// Value of `ND_HAIRPIN`: how to turn the reply into what the client expects and where to
/// send it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HairpinEntry {
    /// The host address the client sent to (the reply's new source), network order.
    pub saddr_be: u32,
    /// The client's own address (the reply's new destination), network order.
    pub daddr_be: u32,
    /// The published host port and the client's port, host order.
    pub sport: u16,
    pub dport: u16,
    /// The client's host-side veth; replies are redirected to its egress.
    pub ifindex: u32,
    /// The client's MAC (destination of the reply frame).
    pub dmac: [u8; 6],
    /// The client's gateway MAC (source of the reply frame).
    pub smac: [u8; 6],
    pub _pad: u32,
    /// `bpf_ktime_get_ns` when the flow was last seen.
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<HairpinEntry>() == 40);

#[cfg(feature = "user")]
mod user {
    use super::{
        CtEntry, CtKey, HairpinEntry, HairpinKey, NetInfo, PortKey, PortRangeKey, PortRangeTarget,
        PortTarget, SockRnatKey, SockRnatValue,
    };

    macro_rules! aya_pod {
        ($($t:ty),* $(,)?) => { $(
            // SAFETY: each type is `repr(C)`, `bytemuck::Pod` (checked by its derive): no
            // padding, no invalid bit patterns.
            unsafe impl aya::Pod for $t {}
        )* };
    }
    aya_pod!(
        PortKey,
        PortTarget,
        CtKey,
        CtEntry,
        NetInfo,
        SockRnatKey,
        SockRnatValue,
        HairpinKey,
        HairpinEntry,
        PortRangeKey,
        PortRangeTarget,
    );
}
