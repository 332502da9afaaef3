//! Header parsing. All packet reads go through [`ptr_at`].

use core::mem::size_of;

use netdriver_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use crate::pkt::Packet;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
/// Offset of the IPv4 checksum field in the frame.
pub const IP_CSUM_OFF: usize = ETH_HLEN + 10;
/// Offset of the IPv4 source address in the frame (the destination follows).
pub const IP_SADDR_OFF: usize = ETH_HLEN + 12;
pub const IP_DADDR_OFF: usize = ETH_HLEN + 16;
/// Offset of the IPv4 TTL (followed by the protocol: one 16-bit checksum word).
pub const IP_TTL_OFF: usize = ETH_HLEN + 8;
/// Offsets of the checksum field inside the TCP and UDP headers.
const TCP_CSUM_OFF: usize = 16;
const UDP_CSUM_OFF: usize = 6;
const ICMP_CSUM_OFF: usize = 2;
/// Offset of the TCP flags byte and of the ICMP echo identifier inside their headers.
const TCP_FLAGS_OFF: usize = 13;
pub const ICMP_ID_OFF: usize = 4;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
/// IGMP: multicast group membership on an IPv4 link.
pub const PROTO_IGMP: u8 = 2;
/// Fragment offset bits of the IPv4 `frag_off` field, and its "more fragments" flag.
const IP_OFFSET_MASK: u16 = 0x1fff;
const IP_MF: u16 = 0x2000;
/// Offsets of the IPv4 total length and `frag_off` fields in the frame.
const IP_TOT_LEN_OFF: usize = ETH_HLEN + 2;
const IP_FRAG_OFF: usize = ETH_HLEN + 6;

#[repr(C)]
pub(crate) struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

/// IPv4 header without options. Multi-byte fields are byte arrays: the header is only
/// 2-byte aligned in the frame.
#[repr(C)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    proto: u8,
    check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}

/// The one bounds-checked access to packet data: a pointer to a `T` at `offset` from the
/// start of the frame, or `None` if the linear data is too short.
#[inline(always)]
pub(crate) fn ptr_at<T, P: Packet>(ctx: &P, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Reads a `T` at `offset`: directly (`ptr_at`) at an offset the verifier can bound (IPv4's,
/// from the IHL field), copied out (`Packet::load`) when `COPY` (IPv6's, behind extension
/// headers of any length).
#[inline(always)]
fn read<T: Copy, P: Packet, const COPY: bool>(ctx: &P, offset: usize) -> Option<T> {
    if COPY {
        return ctx.load(offset);
    }
    let p = ptr_at::<T, P>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that the `T` lies inside the packet.
    Some(unsafe { p.read_unaligned() })
}

/// An IPv4 packet's addresses, as read before any rewrite.
#[derive(Clone, Copy)]
pub struct Ipv4 {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub proto: u8,
    pub ttl: u8,
    /// Zero for the first (or only) fragment.
    pub frag_offset: u16,
    /// Offset of the L4 header in the frame, from the IHL field.
    pub l4_off: usize,
}

/// TCP or UDP ports (host order) of a first fragment; for ICMP echo, the identifier as the
/// source port of requests and the destination port of replies (the other one 0).
#[derive(Clone, Copy)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
    /// TCP flags byte (0 for other protocols).
    pub tcp_flags: u8,
}

/// Parses Ethernet and IPv4; `None` for anything else (passed on untouched by the callers).
#[inline(always)]
pub fn ipv4<P: Packet>(ctx: &P) -> Option<Ipv4> {
    let eth = ptr_at::<EthHdr, P>(ctx, 0)?;
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    let (eth_dst, eth_src, ether_type) = unsafe { ((*eth).dst, (*eth).src, (*eth).ether_type) };
    if u16::from_be_bytes(ether_type) != ETH_P_IP {
        return None;
    }
    let ip = ptr_at::<Ipv4Hdr, P>(ctx, ETH_HLEN)?;
    // SAFETY: as above.
    let (version_ihl, frag_off, proto, ttl, saddr, daddr) = unsafe {
        (
            (*ip).version_ihl,
            (*ip).frag_off,
            (*ip).proto,
            (*ip).ttl,
            (*ip).saddr,
            (*ip).daddr,
        )
    };
    let ihl = usize::from(version_ihl & 0x0f);
    if version_ihl >> 4 != 4 || ihl < 5 {
        return None;
    }
    Some(Ipv4 {
        eth_dst,
        eth_src,
        saddr_be: u32::from_ne_bytes(saddr),
        daddr_be: u32::from_ne_bytes(daddr),
        proto,
        ttl,
        frag_offset: u16::from_be_bytes(frag_off) & IP_OFFSET_MASK,
        l4_off: ETH_HLEN + ihl * 4,
    })
}

/// Reads the ports of a TCP, UDP or SCTP first fragment, or the identifier of an ICMP echo.
#[inline(always)]
pub fn ports<P: Packet>(ctx: &P, ip: &Ipv4) -> Option<Ports> {
    if ip.frag_offset != 0 {
        return None;
    }
    transport::<P, false>(ctx, ip.proto, ip.l4_off)
}

/// The ports of the TCP, UDP or SCTP header at `l4_off`, or the identifier of the ICMP or
/// `ICMPv6` echo there (whichever `proto` says); `None` for anything else. Shared by both
/// families (`COPY`: see [`read`]).
#[inline(always)]
pub fn transport<P: Packet, const COPY: bool>(ctx: &P, proto: u8, l4_off: usize) -> Option<Ports> {
    match proto {
        PROTO_ICMP => icmp_echo::<P, COPY>(ctx, l4_off, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY),
        PROTO_ICMPV6 => icmp_echo::<P, COPY>(ctx, l4_off, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY),
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => l4_ports::<P, COPY>(ctx, proto, l4_off),
        _ => None,
    }
}

/// The ports: the first four bytes of TCP, UDP and SCTP headers.
#[inline(always)]
fn l4_ports<P: Packet, const COPY: bool>(ctx: &P, proto: u8, l4_off: usize) -> Option<Ports> {
    let [s0, s1, d0, d1] = read::<[u8; 4], P, COPY>(ctx, l4_off)?;
    let tcp_flags = if proto == PROTO_TCP {
        read::<u8, P, COPY>(ctx, l4_off + TCP_FLAGS_OFF)?
    } else {
        0
    };
    Some(Ports {
        src: u16::from_be_bytes([s0, s1]),
        dst: u16::from_be_bytes([d0, d1]),
        tcp_flags,
    })
}

/// The identifier of an echo request (as the source port) or reply (the destination port),
/// from the first eight bytes of its header: type, code, checksum, identifier, sequence.
#[inline(always)]
fn icmp_echo<P: Packet, const COPY: bool>(
    ctx: &P,
    l4_off: usize,
    request: u8,
    reply: u8,
) -> Option<Ports> {
    let head = read::<[u8; 8], P, COPY>(ctx, l4_off)?;
    let (kind, id) = (
        head[0],
        u16::from_be_bytes([head[ICMP_ID_OFF], head[ICMP_ID_OFF + 1]]),
    );
    if kind == request {
        Some(Ports {
            src: id,
            dst: 0,
            tcp_flags: 0,
        })
    } else if kind == reply {
        Some(Ports {
            src: 0,
            dst: id,
            tcp_flags: 0,
        })
    } else {
        None
    }
}

/// The length of the L4 packet (from the IPv4 total length), or `None` when the packet is one
/// of several fragments (the whole L4 packet is not here).
#[inline(always)]
pub fn l4_len<P: Packet>(ctx: &P, ip: &Ipv4) -> Option<u16> {
    let tot_len = u16::from_be_bytes(ctx.load::<[u8; 2]>(IP_TOT_LEN_OFF)?);
    let frag_off = u16::from_be_bytes(ctx.load::<[u8; 2]>(IP_FRAG_OFF)?);
    if frag_off & (IP_MF | IP_OFFSET_MASK) != 0 {
        return None;
    }
    let ip_hlen = u16::try_from(ip.l4_off - ETH_HLEN).ok()?;
    tot_len.checked_sub(ip_hlen)
}

/// Offset of the L4 checksum field in the frame (SCTP has none of this kind: see `sctp`).
#[inline(always)]
pub fn l4_csum_off(ip: &Ipv4) -> usize {
    csum_off(ip.proto, ip.l4_off)
}

/// Offset of the checksum field of the `proto` header at `l4_off`.
#[inline(always)]
pub fn csum_off(proto: u8, l4_off: usize) -> usize {
    l4_off
        + match proto {
            PROTO_TCP => TCP_CSUM_OFF,
            PROTO_ICMP | PROTO_ICMPV6 => ICMP_CSUM_OFF,
            _ => UDP_CSUM_OFF,
        }
}
