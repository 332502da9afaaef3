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

pub mod crc32c;

/// IP protocol numbers as they appear in the IPv4 header.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// ICMP for IPv6 (the IPv6 next-header value 58).
pub const PROTO_ICMPV6: u8 = 58;
/// SCTP: ports at the same offsets as TCP and UDP; a CRC32C (see [`crc32c`]) instead of the
/// Internet checksum.
pub const PROTO_SCTP: u8 = 132;

/// Pinned map names (at most 15 bytes, `ND_` prefix).
pub const MAP_PORTS: &str = "ND_PORTS";
/// Published ports on IPv6 host addresses: `PortKey6` -> `PortTarget6`.
pub const MAP_PORTS6: &str = "ND_PORTS6";
pub const MAP_CT: &str = "ND_CT";
/// IPv6 connection tracking: `CtKey6` -> `CtEntry6` (same semantics as `ND_CT`).
pub const MAP_CT6: &str = "ND_CT6";
/// IPv6 container subnets: LPM trie over the 16 address bytes -> `NetInfo6`.
pub const MAP_NETS6: &str = "ND_NETS6";
/// Legacy links between IPv6 addresses: `LinkKey6` -> `u32` (unused), as `ND_LINKS`.
pub const MAP_LINKS6: &str = "ND_LINKS6";
pub const MAP_NETS: &str = "ND_NETS";
pub const MAP_DROPS: &str = "ND_DROPS";
pub const MAP_LINKS: &str = "ND_LINKS";
/// The host's own IPv4 addresses (in the daemon's namespace): where a wildcard published
/// port is reachable from the host itself and from containers (hairpin).
pub const MAP_HOST_ADDRS: &str = "ND_HOST_ADDRS";
/// The host's own IPv6 addresses (key: the 16 address bytes), as `ND_HOST_ADDRS` for IPv4.
pub const MAP_HOST_ADDRS6: &str = "ND_HOST_ADDRS6";
/// What the socket hooks translated, so replies and `getpeername` show the address the
/// application used.
pub const MAP_SOCK_RNAT: &str = "ND_SOCK_RNAT";
/// The same for IPv6 sockets (IPv4-mapped addresses use `ND_SOCK_RNAT`).
pub const MAP_SOCK_RNAT6: &str = "ND_SOCK_RNAT6";
/// Hairpin flows (a container reaching a published port through a host address), keyed by
/// the reply as the target container sends it.
pub const MAP_HAIRPIN: &str = "ND_HAIRPIN";
/// Published port ranges (LPM trie over protocol, host address and port prefix): a range
/// costs at most 30 entries whatever its length. Consulted when `ND_PORTS` has no entry.
pub const MAP_PORT_RANGES: &str = "ND_PORT_RANGES";
/// Published IPv6 port ranges, as `ND_PORT_RANGES` over IPv6 host addresses; consulted when
/// `ND_PORTS6` has no entry.
pub const MAP_PORT_RANGES6: &str = "ND_PORT_RANGES6";

/// Host ports published on any host address, by protocol and address family (LPM trie of
/// aligned port blocks): a `bind` to the wildcard address of a port published on a single
/// host address fails, as it would against the docker-proxy holding that address and port.
pub const MAP_BIND_PORTS: &str = "ND_BIND_PORTS";

/// Containers' host-side veths: ifindex (`u32`) -> `VethInfo`. What `nd_from_container`
/// cannot tell from a packet whose addresses are in no subnet (IPv6 link-local) or that goes
/// to a group (multicast, broadcast): the veth's network and its bridge.
pub const MAP_VETHS: &str = "ND_VETHS";

/// Program names (the functions in netdriver-ebpf).
pub const PROG_FROM_UPLINK: &str = "nd_from_uplink";
pub const PROG_FROM_CONTAINER: &str = "nd_from_container";
pub const PROG_XDP_UPLINK: &str = "nd_xdp_uplink";
/// cgroup `sock_addr` programs: published ports from the host itself, without a proxy.
pub const PROG_SOCK_CONNECT4: &str = "nd_sock_connect4";
pub const PROG_SOCK_SENDMSG4: &str = "nd_sock_sendmsg4";
pub const PROG_SOCK_RECVMSG4: &str = "nd_sock_recvmsg4";
pub const PROG_SOCK_GETPEERNAME4: &str = "nd_sock_getpeername4";
/// cgroup bind4: published host ports are reserved.
pub const PROG_SOCK_BIND4: &str = "nd_sock_bind4";
/// The IPv6 twins (they also handle IPv4-mapped addresses on dual-stack sockets).
pub const PROG_SOCK_CONNECT6: &str = "nd_sock_connect6";
pub const PROG_SOCK_SENDMSG6: &str = "nd_sock_sendmsg6";
pub const PROG_SOCK_RECVMSG6: &str = "nd_sock_recvmsg6";
pub const PROG_SOCK_GETPEERNAME6: &str = "nd_sock_getpeername6";
pub const PROG_SOCK_BIND6: &str = "nd_sock_bind6";

/// Load-time global: the cookie of the daemon's network namespace. The socket hooks are
/// attached to a cgroup, and cgroups span namespaces: they act only on sockets whose
/// namespace has this cookie (0, the unset value, matches nothing).
pub const GLOBAL_NETNS_COOKIE: &str = "ND_NETNS_COOKIE";

/// Load-time globals of the eBPF object (set by the loader): the source ports (and ICMP echo
/// identifiers) masquerade may use, inclusive, host order.
pub const GLOBAL_NAT_PORT_MIN: &str = "ND_NAT_PORT_MIN";
pub const GLOBAL_NAT_PORT_MAX: &str = "ND_NAT_PORT_MAX";
/// Load-time global (u8): 1 lets redirects into containers use `bpf_redirect_peer`.
pub const GLOBAL_REDIRECT_PEER: &str = "ND_REDIRECT_PEER";
/// Default masquerade port range: above Linux's default `ip_local_port_range` (32768-60999),
/// so masqueraded flows never take a port the host's own connections or ephemeral published
/// ports use.
pub const NAT_PORT_MIN_DEFAULT: u16 = 61000;
pub const NAT_PORT_MAX_DEFAULT: u16 = 65535;
/// How many ports masquerade tries for a new flow before it gives up (`DROP_NAT_EXHAUSTED`).
pub const NAT_PORT_ATTEMPTS: u32 = 32;

/// Capacity of the published-port map.
pub const PORTS_MAX_ENTRIES: u32 = 65536;
/// Default capacity of the connection-tracking map (the daemon's `--ct-max-entries`).
pub const CT_MAX_ENTRIES: u32 = 262_144;
/// Capacity of the host-address map.
pub const HOST_ADDRS_MAX_ENTRIES: u32 = 4096;
/// Capacity of the socket reverse-translation map (LRU).
pub const SOCK_RNAT_MAX_ENTRIES: u32 = 65536;
/// Capacity of the port-range trie (a range takes at most 30 entries).
pub const PORT_RANGES_MAX_ENTRIES: u32 = 16384;
/// Capacity of the bound-port trie (a range takes at most 30 entries).
pub const BIND_PORTS_MAX_ENTRIES: u32 = 65536;
/// Capacity of the hairpin flow map (LRU).
pub const HAIRPIN_MAX_ENTRIES: u32 = 65536;
/// Capacity of the network-subnet LPM trie.
pub const NETS_MAX_ENTRIES: u32 = 1024;
/// Capacity of the legacy-link map.
pub const LINKS_MAX_ENTRIES: u32 = 16384;
/// Capacity of the container-veth map (one entry per endpoint).
pub const VETHS_MAX_ENTRIES: u32 = 65536;

/// Drop reasons, the index into `ND_DROPS` (a per-CPU array of counters).
pub const DROP_UNPUBLISHED: u32 = 0;
pub const DROP_REDIRECT_FAILED: u32 = 1;
pub const DROP_CSUM: u32 = 2;
/// `ND_CT` refused the entry of a new flow (the table is full): the flow is not started.
pub const DROP_CT_FAILED: u32 = 3;
/// No free masquerade port for a new flow (every candidate is taken or published).
pub const DROP_NAT_EXHAUSTED: u32 = 4;
/// Inter-container traffic on a network with ICC off that no link allows.
pub const DROP_ICC: u32 = 5;
/// Traffic from one network's container to another network's container.
pub const DROP_ISOLATED: u32 = 6;
/// Traffic leaving an internal network.
pub const DROP_INTERNAL: u32 = 7;
/// A packet from a container whose source address is in no container network.
pub const DROP_SPOOFED: u32 = 8;
pub const DROP_REASONS: u32 = 9;
/// Names of the drop reasons, by index (for logs and `status`).
pub const DROP_NAMES: [&str; DROP_REASONS as usize] = [
    "unpublished",
    "redirect_failed",
    "checksum",
    "conntrack_full",
    "nat_ports_exhausted",
    "icc",
    "isolated",
    "internal",
    "spoofed",
];

/// Key of `ND_PORTS`: a published host port. `host_addr_be == 0` means every host address.
/// In a routed network the container's own address and port are published too (target ==
/// key: reachable without translation).
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

/// Key of `ND_PORTS6`: a published host port on an IPv6 host address (`host_addr == [0; 16]`
/// means every IPv6 host address). The IPv6 twin of [`PortKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortKey6 {
    /// Host address, network order (the 16 bytes as on the wire).
    pub host_addr: [u8; 16],
    /// Host port, host order.
    pub host_port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<PortKey6>() == 20);

/// Value of `ND_PORTS6`: where a published IPv6 port goes. The IPv6 twin of [`PortTarget`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortTarget6 {
    /// Container IPv6 address, network order.
    pub addr: [u8; 16],
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
const _: () = assert!(size_of::<PortTarget6>() == 36);

/// `CtKey::dir`: the packet was seen on a container's veth (`nd_from_container`).
pub const CT_DIR_OUT: u8 = 0;
/// `CtKey::dir`: the packet was seen on an uplink (`nd_from_uplink`).
pub const CT_DIR_IN: u8 = 1;

/// Key of `ND_CT`: a flow as the packet carries it at the hook named by `dir`. Ports are host
/// order; for ICMP echo the identifier is the source "port" of requests and the destination
/// "port" of replies (the other port is 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct CtKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<CtKey>() == 16);

/// `CtEntry::action` bits, applied in this order. No bit set: hand the packet to the kernel.
/// Rewrite the source address/port to `xlate_*`.
pub const CT_ACT_SNAT: u8 = 1;
/// Rewrite the destination address/port to `xlate_*`.
pub const CT_ACT_DNAT: u8 = 2;
/// Set `dmac`/`smac` and redirect to the egress of `ifindex`.
pub const CT_ACT_REDIRECT: u8 = 4;
/// Redirect to the egress of `ifindex`, L2 filled in by the kernel's neighbour table.
pub const CT_ACT_REDIRECT_NEIGH: u8 = 8;
/// A container's flow to its own published port (IPv6 hairpin): the other end is rewritten
/// too, keeping its port. With `CT_ACT_DNAT` (the container's packets) the source becomes
/// the gateway of `owner_addr`'s network; with `CT_ACT_SNAT` (its replies) the destination
/// becomes `owner_addr`. The container then sees itself reached from its gateway, as with
/// Docker (its own address would be a martian there).
pub const CT_ACT_SELF_HAIRPIN: u8 = 16;

/// `CtEntry::kind`: the reply direction of a published-port flow (its forward direction is
/// `ND_PORTS`, so it has no partner entry).
pub const CT_KIND_PUBLISHED: u8 = 1;
/// One direction of a masqueraded flow; the other direction is its partner.
pub const CT_KIND_MASQ: u8 = 2;
/// One direction of an outbound flow that keeps the container's address (routed mode or
/// masquerade off); the other direction is its partner.
pub const CT_KIND_FORWARD: u8 = 3;
/// The reply direction of a flow a legacy link allowed (ICC off); no partner.
pub const CT_KIND_LINK: u8 = 4;

/// `CtEntry::state` of TCP flows (other protocols stay `CT_ST_NEW`/`CT_ST_ESTABLISHED`).
pub const CT_ST_NEW: u8 = 0;
pub const CT_ST_ESTABLISHED: u8 = 1;
/// A FIN was seen in this direction.
pub const CT_ST_CLOSING: u8 = 2;
/// A RST was seen in this direction: the connection is over (until a SYN reopens the tuple).
pub const CT_ST_RESET: u8 = 3;

/// The data path rewrites an entry's `last_seen_ns` only when the flow's state changes or the
/// stored time is older than this: one shared cache-line write per second per flow instead of
/// one per packet (two CPUs writing the same entry bounce its line). The sweeper adds this
/// much slack to every idle timeout, so no active flow is ever seen as idle.
pub const CT_REFRESH_NS: u64 = 1_000_000_000;
/// How long a closed (FIN) masqueraded TCP flow must have been idle before a new connection
/// may take over its NAT port (twice the refresh interval: a half-closed flow still carrying
/// data is refreshed at least every `CT_REFRESH_NS`). A reset flow (`CT_ST_RESET` in either
/// direction) carries nothing more: its port is taken over at once.
pub const CT_RECLAIM_IDLE_NS: u64 = 2 * CT_REFRESH_NS;

/// TCP header flag bits (byte 13 of the header).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Value of `ND_CT`: what to do with the packets of one direction of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtEntry {
    /// Address written by `CT_ACT_SNAT`/`CT_ACT_DNAT`, network order. For entries without a
    /// translation, the container's address (so the partner key can be derived).
    pub xlate_addr_be: u32,
    /// Port written with the address, host order (ICMP: the echo identifier).
    pub xlate_port: u16,
    /// `CT_ACT_*` bits.
    pub action: u8,
    /// `CT_ST_*`.
    pub state: u8,
    /// Redirect target.
    pub ifindex: u32,
    /// Source MAC of redirected frames (`CT_ACT_REDIRECT`).
    pub smac: [u8; 6],
    /// Destination MAC of redirected frames (`CT_ACT_REDIRECT`).
    pub dmac: [u8; 6],
    /// The container the flow belongs to, network order (for flushing an endpoint's flows).
    pub owner_addr_be: u32,
    /// `CT_KIND_*`.
    pub kind: u8,
    pub _pad: [u8; 3],
    /// `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`) when a packet last used the entry.
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<CtEntry>() == 40);

impl CtKey {
    /// The key of the other direction of a two-entry flow (`CT_KIND_MASQ`, `CT_KIND_FORWARD`):
    /// what the reply carries at the other hook. `None` for single-entry kinds.
    #[must_use]
    pub fn partner(&self, entry: &CtEntry) -> Option<Self> {
        if entry.kind != CT_KIND_MASQ && entry.kind != CT_KIND_FORWARD {
            return None;
        }
        let (saddr_be, daddr_be, sport, dport, dir) = if self.dir == CT_DIR_OUT {
            // Replies come from the remote end to the translated source.
            (
                self.daddr_be,
                entry.xlate_addr_be,
                self.dport,
                entry.xlate_port,
                CT_DIR_IN,
            )
        } else {
            // The container sends from its own address to the remote end.
            (
                entry.xlate_addr_be,
                self.saddr_be,
                entry.xlate_port,
                self.sport,
                CT_DIR_OUT,
            )
        };
        Some(Self {
            saddr_be,
            daddr_be,
            sport,
            dport,
            proto: self.proto,
            dir,
            _pad: [0; 2],
        })
    }
}

/// The TCP state of a direction after a packet with `tcp_flags` (`TCP_*` bits); other
/// protocols are established from their first packet on.
#[must_use]
pub fn ct_next_state(state: u8, proto: u8, tcp_flags: u8) -> u8 {
    if proto != PROTO_TCP {
        return CT_ST_ESTABLISHED;
    }
    if tcp_flags & TCP_RST != 0 {
        CT_ST_RESET
    } else if tcp_flags & TCP_SYN != 0 {
        // A SYN on a closed entry reuses the tuple for a new connection.
        if state == CT_ST_CLOSING || state == CT_ST_RESET {
            CT_ST_NEW
        } else {
            state
        }
    } else if state == CT_ST_RESET {
        // Stray segments after a reset do not reopen the flow.
        CT_ST_RESET
    } else if tcp_flags & TCP_FIN != 0 {
        CT_ST_CLOSING
    } else if state == CT_ST_NEW {
        CT_ST_ESTABLISHED
    } else {
        state
    }
}

/// The `attempt`-th masquerade port candidate in `min..=max` for a flow whose search starts at
/// `seed`: consecutive ports from a random start, wrapping around.
#[must_use]
pub fn nat_port_candidate(min: u16, max: u16, seed: u32, attempt: u32) -> u16 {
    let (lo, hi) = if min <= max { (min, max) } else { (max, min) };
    let span = u32::from(hi) - u32::from(lo) + 1;
    // `checked_rem` rather than `%`: the eBPF build must contain no panic path.
    let offset = seed.wrapping_add(attempt).checked_rem(span).unwrap_or(0);
    // `offset < span <= 65536 - lo`, so the sum fits.
    #[expect(clippy::cast_possible_truncation, reason = "offset < span, see above")]
    let port = lo + offset as u16;
    port
}

/// A 16-bit Internet checksum after a 32-bit field it covers changed from `old` to `new`
/// (RFC 1624: `HC' = ~(~HC + ~m + m')`). All three are used as they lie in memory (read
/// with `from_ne_bytes`); the one's-complement sum does not care about byte order.
#[must_use]
pub fn csum_replace4(csum: u16, old: u32, new: u32) -> u16 {
    let halves = |v: u32| [v & 0xffff, v >> 16];
    let mut sum = u32::from(!csum);
    for h in halves(old) {
        sum += !h & 0xffff;
    }
    for h in halves(new) {
        sum += h;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    let folded = sum as u16;
    !folded
}

/// [`csum_replace4`] for a 16-bit field.
#[must_use]
pub fn csum_replace2(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    let folded = sum as u16;
    !folded
}

/// `NetInfo::flags`: containers of the network may talk to each other.
pub const NET_F_ICC: u32 = 1;
/// Outbound traffic leaves with the host's address (or `snat_addr_be`).
pub const NET_F_MASQUERADE: u32 = 2;
/// No traffic leaves the network in either direction.
pub const NET_F_INTERNAL: u32 = 4;
/// Gateway mode routed: published ports are reachable on container addresses.
pub const NET_F_ROUTED: u32 = 8;

/// Value of `ND_NETS`, an LPM trie of container subnets (IPv4). Its key is aya's
/// `lpm_trie::Key<u32>`: the prefix length, then the address in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetInfo {
    /// Index of the network's bridge (identifies the network).
    pub bridge_ifindex: u32,
    /// `NET_F_*` bits.
    pub flags: u32,
    /// The bridge's address (the host, as seen from the network), network order.
    pub gateway_be: u32,
    /// Masquerade source address, network order; 0: the egress interface's address.
    pub snat_addr_be: u32,
}
const _: () = assert!(size_of::<NetInfo>() == 16);

/// Key of `ND_LINKS` (value: `u32`, unused): a legacy link lets `parent` open connections to
/// `port`/`proto` of `child` even with ICC off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LinkKey {
    pub parent_addr_be: u32,
    pub child_addr_be: u32,
    /// Host order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<LinkKey>() == 12);

/// Value of `ND_VETHS` (key: the host-side veth's ifindex): the veth's network as seen from
/// its packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VethInfo {
    /// The network's `NET_F_*` bits.
    pub flags: u32,
    /// MAC address of the network's bridge: frames addressed to it go to the host, any other
    /// unicast MAC is another container of the bridge.
    pub bridge_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Ifindex of that bridge: with ICC off, a container's multicast and broadcast frames are
    /// handed to the host there (and to no other container).
    pub bridge_ifindex: u32,
}
const _: () = assert!(size_of::<VethInfo>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_candidates_stay_in_range_and_cover_it() {
        let mut seen = [false; 4];
        for attempt in 0..4 {
            let p = nat_port_candidate(61000, 61003, 7, attempt);
            assert!((61000..=61003).contains(&p));
            seen[usize::from(p - 61000)] = true;
        }
        assert!(seen.iter().all(|s| *s), "4 attempts cover a 4-port range");
        assert_eq!(nat_port_candidate(65535, 65535, u32::MAX, 9), 65535);
        assert_eq!(nat_port_candidate(0, 65535, u32::MAX, 1), 0);
        // Reversed bounds are tolerated.
        assert!((10..=20).contains(&nat_port_candidate(20, 10, 12345, 3)));
    }

    #[test]
    fn partners_are_symmetric() {
        let out = CtKey {
            saddr_be: 0x0a58_0002,
            daddr_be: 0xcb00_710a,
            sport: 40000,
            dport: 80,
            proto: PROTO_TCP,
            dir: CT_DIR_OUT,
            _pad: [0; 2],
        };
        let out_entry = CtEntry {
            xlate_addr_be: 0xc633_6401,
            xlate_port: 61000,
            kind: CT_KIND_MASQ,
            ..CtEntry::default()
        };
        let inn = out.partner(&out_entry).unwrap();
        assert_eq!(
            (inn.saddr_be, inn.daddr_be, inn.sport, inn.dport, inn.dir),
            (0xcb00_710a, 0xc633_6401, 80, 61000, CT_DIR_IN)
        );
        let in_entry = CtEntry {
            xlate_addr_be: out.saddr_be,
            xlate_port: out.sport,
            kind: CT_KIND_MASQ,
            ..CtEntry::default()
        };
        assert_eq!(inn.partner(&in_entry), Some(out));
        let published = CtEntry {
            kind: CT_KIND_PUBLISHED,
            ..CtEntry::default()
        };
        assert_eq!(out.partner(&published), None);
    }

    /// The checksum of `data` computed from scratch, stored as it would lie in memory.
    fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_ne_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !u16::try_from(sum).unwrap()
    }

    #[test]
    fn incremental_checksum_matches_a_full_one() {
        let mut hdr = [
            0x45, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 198, 51, 100, 1, 203, 0, 113, 10,
        ];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_ne_bytes());
        for new in [
            [10, 89, 0, 2],
            [255, 255, 255, 255],
            [0, 0, 0, 0],
            [10, 0, 0, 1],
        ] {
            let mut h = hdr;
            let old = u32::from_ne_bytes(h[12..16].try_into().unwrap());
            let csum = u16::from_ne_bytes([h[10], h[11]]);
            let updated = csum_replace4(csum, old, u32::from_ne_bytes(new));
            h[12..16].copy_from_slice(&new);
            h[10..12].copy_from_slice(&[0, 0]);
            assert_eq!(updated, checksum(&h), "{new:?}");
        }
        // A 16-bit field: the TTL/protocol word, as a router's TTL decrement changes it.
        for ttl in [64u8, 1, 255] {
            let mut h = hdr;
            h[8] = ttl;
            h[10..12].copy_from_slice(&[0, 0]);
            let csum = checksum(&h);
            let old = u16::from_ne_bytes([h[8], h[9]]);
            let new = u16::from_ne_bytes([ttl - 1, h[9]]);
            let updated = csum_replace2(csum, old, new);
            h[8] = ttl - 1;
            h[10..12].copy_from_slice(&[0, 0]);
            assert_eq!(updated, checksum(&h), "ttl {ttl}");
        }
    }

    #[test]
    fn tcp_states() {
        let s = ct_next_state(CT_ST_NEW, PROTO_TCP, TCP_SYN);
        assert_eq!(s, CT_ST_NEW);
        let s = ct_next_state(s, PROTO_TCP, 0x10);
        assert_eq!(s, CT_ST_ESTABLISHED);
        let s = ct_next_state(s, PROTO_TCP, TCP_FIN | 0x10);
        assert_eq!(s, CT_ST_CLOSING);
        assert_eq!(ct_next_state(s, PROTO_TCP, 0x10), CT_ST_CLOSING);
        assert_eq!(ct_next_state(s, PROTO_TCP, TCP_SYN), CT_ST_NEW);
        let r = ct_next_state(CT_ST_ESTABLISHED, PROTO_TCP, TCP_RST | 0x10);
        assert_eq!(r, CT_ST_RESET);
        assert_eq!(
            ct_next_state(CT_ST_CLOSING, PROTO_TCP, TCP_RST),
            CT_ST_RESET
        );
        // Stray segments after the reset keep it; a SYN reopens the tuple.
        assert_eq!(ct_next_state(r, PROTO_TCP, 0x10), CT_ST_RESET);
        assert_eq!(ct_next_state(r, PROTO_TCP, TCP_FIN | 0x10), CT_ST_RESET);
        assert_eq!(ct_next_state(r, PROTO_TCP, TCP_SYN), CT_ST_NEW);
        assert_eq!(ct_next_state(CT_ST_NEW, PROTO_UDP, 0), CT_ST_ESTABLISHED);
    }
}

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

/// Key data of `ND_PORT_RANGES6`: as [`PortRangeKey`], with a 128-bit host address (`::` for
/// every IPv6 host address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortRangeKey6 {
    pub proto: u8,
    pub host_addr: [u8; 16],
    /// Big-endian, so that a prefix is a block of consecutive ports.
    pub port_be: [u8; 2],
    pub _pad: u8,
}
const _: () = assert!(size_of::<PortRangeKey6>() == 20);
/// Bits of `PortRangeKey6` before the port.
pub const PORT_RANGE6_PREFIX_BASE: u32 = 136;

/// Value of `ND_PORT_RANGES6`: host port `p` goes to container port
/// `target.port + (p - host_start)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortRangeTarget6 {
    pub target: PortTarget6,
    /// First host port of the whole range (not of this trie entry's block), host order.
    pub host_start: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<PortRangeTarget6>() == 40);

/// Key data of `ND_BIND_PORTS` (behind the trie's prefix length): the protocol, the address
/// family of the host address (`BIND_FAMILY_*`), then the leading bits of the port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Pod, Zeroable)]
pub struct BindPortKey {
    pub proto: u8,
    pub family: u8,
    /// Big-endian, so that a prefix is a block of consecutive ports.
    pub port_be: [u8; 2],
}
const _: () = assert!(size_of::<BindPortKey>() == 4);
/// Bits of `BindPortKey` before the port.
pub const BIND_PORT_PREFIX_BASE: u32 = 16;
/// `BindPortKey::family`: published on an IPv4 host address.
pub const BIND_FAMILY_V4: u8 = 4;
/// `BindPortKey::family`: published on an IPv6 host address.
pub const BIND_FAMILY_V6: u8 = 6;

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

/// Key of `ND_SOCK_RNAT6`: a socket (its cookie) and the container IPv6 address and port the
/// socket hooks sent it to. The IPv6 twin of [`SockRnatKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SockRnatKey6 {
    pub cookie: u64,
    /// Container address, network order.
    pub addr: [u8; 16],
    /// Container port, host order.
    pub port: u16,
    pub proto: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(size_of::<SockRnatKey6>() == 32);

/// Value of `ND_SOCK_RNAT6`: the address and port the application asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SockRnatValue6 {
    /// Network order.
    pub addr: [u8; 16],
    /// Host order.
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<SockRnatValue6>() == 20);

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

/// Key of `ND_CT6`: the IPv6 twin of [`CtKey`] (same field meanings).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct CtKey6 {
    /// Network order (the 16 bytes as on the wire).
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<CtKey6>() == 40);

/// Value of `ND_CT6`: the IPv6 twin of [`CtEntry`] (same field meanings, same `CT_*`
/// constants, same timeouts).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtEntry6 {
    pub xlate_addr: [u8; 16],
    /// The container the flow belongs to.
    pub owner_addr: [u8; 16],
    pub xlate_port: u16,
    pub action: u8,
    pub state: u8,
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub kind: u8,
    pub _pad: [u8; 3],
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<CtEntry6>() == 64);

/// What the data path and the sweeper need of a conntrack entry, whatever its family.
pub trait CtTimes {
    fn state(&self) -> u8;
    fn last_seen_ns(&self) -> u64;
    fn set_seen(&mut self, state: u8, now_ns: u64);
}

macro_rules! ct_times {
    ($($t:ty),*) => { $(
        impl CtTimes for $t {
            #[inline(always)]
            fn state(&self) -> u8 {
                self.state
            }
            #[inline(always)]
            fn last_seen_ns(&self) -> u64 {
                self.last_seen_ns
            }
            #[inline(always)]
            fn set_seen(&mut self, state: u8, now_ns: u64) {
                self.state = state;
                self.last_seen_ns = now_ns;
            }
        }
    )* };
}
ct_times!(CtEntry, CtEntry6);

impl CtKey6 {
    /// The key of the other direction of a two-entry flow, as [`CtKey::partner`].
    #[must_use]
    pub fn partner(&self, entry: &CtEntry6) -> Option<Self> {
        if entry.kind != CT_KIND_MASQ && entry.kind != CT_KIND_FORWARD {
            return None;
        }
        let (saddr, daddr, sport, dport, dir) = if self.dir == CT_DIR_OUT {
            (
                self.daddr,
                entry.xlate_addr,
                self.dport,
                entry.xlate_port,
                CT_DIR_IN,
            )
        } else {
            (
                entry.xlate_addr,
                self.saddr,
                entry.xlate_port,
                self.sport,
                CT_DIR_OUT,
            )
        };
        Some(Self {
            saddr,
            daddr,
            sport,
            dport,
            proto: self.proto,
            dir,
            _pad: [0; 2],
        })
    }
}

/// Value of `ND_NETS6` (key: aya's `lpm_trie::Key<[u8; 16]>`): the IPv6 twin of [`NetInfo`],
/// same `NET_F_*` flags. A network with IPv6 has an entry in both tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetInfo6 {
    pub bridge_ifindex: u32,
    pub flags: u32,
    /// The bridge's IPv6 address.
    pub gateway: [u8; 16],
    /// Masquerade source address; all zero: the egress interface's address (the route's
    /// preferred source).
    pub snat_addr: [u8; 16],
}
const _: () = assert!(size_of::<NetInfo6>() == 40);

/// Key of `ND_LINKS6`: the IPv6 twin of [`LinkKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LinkKey6 {
    pub parent_addr: [u8; 16],
    pub child_addr: [u8; 16],
    /// Host order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<LinkKey6>() == 36);

#[cfg(feature = "user")]
mod user {
    use super::{
        BindPortKey, CtEntry, CtEntry6, CtKey, CtKey6, HairpinEntry, HairpinKey, LinkKey, LinkKey6,
        NetInfo, NetInfo6, PortKey, PortKey6, PortRangeKey, PortRangeKey6, PortRangeTarget,
        PortRangeTarget6, PortTarget, PortTarget6, SockRnatKey, SockRnatKey6, SockRnatValue,
        SockRnatValue6, VethInfo,
    };

    macro_rules! aya_pod {
        ($($t:ty),* $(,)?) => { $(
            // SAFETY: each type is `repr(C)`, `bytemuck::Pod` (checked by its derive): no
            // padding, no invalid bit patterns.
            unsafe impl aya::Pod for $t {}
        )* };
    }
    aya_pod!(
        LinkKey6,
        CtKey6,
        CtEntry6,
        NetInfo6,
        PortKey6,
        PortTarget6,
        PortKey,
        PortTarget,
        CtKey,
        CtEntry,
        NetInfo,
        LinkKey,
        SockRnatKey,
        SockRnatValue,
        HairpinKey,
        HairpinEntry,
        PortRangeKey,
        PortRangeTarget,
        PortRangeKey6,
        PortRangeTarget6,
        BindPortKey,
        SockRnatKey6,
        SockRnatValue6,
        VethInfo,
    );
}
