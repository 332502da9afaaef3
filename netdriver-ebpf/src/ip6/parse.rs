//! IPv6 header parsing: Ethernet and the fixed 40-byte header.

use netdriver_common::PROTO_ICMPV6;

use crate::{
    parse::{ETH_HLEN, EthHdr, Ports, ptr_at, transport},
    pkt::Packet,
};

const ETH_P_IPV6: u16 = 0x86dd;
const IP6_HLEN: usize = 40;
/// Offsets of the hop limit and the addresses in the frame.
pub const IP6_HOP_OFF: usize = ETH_HLEN + 7;
pub const IP6_SADDR_OFF: usize = ETH_HLEN + 8;
pub const IP6_DADDR_OFF: usize = ETH_HLEN + 24;
/// `ICMPv6` types of the link's own machinery: MLD (130-132, 143), router solicitation and
/// advertisement (133, 134), neighbour solicitation and advertisement (135, 136), redirect
/// (137).
const ICMPV6_MLD_QUERY: u8 = 130;
const ICMPV6_REDIRECT: u8 = 137;
const ICMPV6_MLD2_REPORT: u8 = 143;
/// The hop-by-hop options header's next-header value.
const IPPROTO_HOPOPTS: u8 = 0;

/// The fixed IPv6 header.
#[repr(C)]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// An IPv6 packet's addresses, as read before any rewrite.
#[derive(Clone, Copy)]
pub struct Ipv6 {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The fixed header's next header: the L4 protocol, or an extension header.
    pub proto: u8,
    pub hop_limit: u8,
    /// The payload length: with no extension headers parsed, the L4 length.
    pub payload_len: u16,
    pub l4_off: usize,
}

/// Whether the frame's Ethernet type is IPv6.
#[inline(always)]
pub fn is_ipv6<P: Packet>(ctx: &P) -> bool {
    ctx.load::<[u8; 2]>(12)
        .is_some_and(|t| u16::from_be_bytes(t) == ETH_P_IPV6)
}

/// Parses Ethernet and the fixed IPv6 header; `None` for anything else.
#[inline(always)]
pub fn ipv6<P: Packet>(ctx: &P) -> Option<Ipv6> {
    let eth = ptr_at::<EthHdr, P>(ctx, 0)?;
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    let (eth_dst, eth_src, ether_type) = unsafe { ((*eth).dst, (*eth).src, (*eth).ether_type) };
    if u16::from_be_bytes(ether_type) != ETH_P_IPV6 {
        return None;
    }
    let ip = ptr_at::<Ipv6Hdr, P>(ctx, ETH_HLEN)?;
    // SAFETY: as above.
    let (vcf, payload_len, proto, hop_limit, saddr, daddr) = unsafe {
        (
            (*ip).version_class_flow,
            (*ip).payload_len,
            (*ip).next_header,
            (*ip).hop_limit,
            (*ip).saddr,
            (*ip).daddr,
        )
    };
    if vcf[0] >> 4 != 6 {
        return None;
    }
    Some(Ipv6 {
        eth_dst,
        eth_src,
        saddr,
        daddr,
        proto,
        hop_limit,
        payload_len: u16::from_be_bytes(payload_len),
        l4_off: ETH_HLEN + IP6_HLEN,
    })
}

/// The ports (or echo identifier) of a packet whose fixed header is followed by TCP, UDP,
/// SCTP or `ICMPv6` echo; `None` otherwise (extension headers included).
#[inline(always)]
pub fn ports<P: Packet>(ctx: &P, ip: &Ipv6) -> Option<Ports> {
    transport(ctx, ip.proto, ip.l4_off)
}

/// Whether the packet is `ICMPv6` of the link's own machinery (NDP, RS/RA, MLD), which must
/// always pass untouched. MLD messages carry a hop-by-hop header (the router alert option,
/// RFC 3810 section 5): one is looked past.
#[inline(always)]
pub fn is_link_control<P: Packet>(ctx: &P, ip: &Ipv6) -> bool {
    let kind = match ip.proto {
        PROTO_ICMPV6 => ptr_at::<u8, P>(ctx, ip.l4_off).map(|kind| {
            // SAFETY: `ptr_at` checked the byte lies inside the packet.
            unsafe { *kind }
        }),
        IPPROTO_HOPOPTS => icmp6_behind_hop_by_hop(ctx, ip.l4_off),
        _ => None,
    };
    kind.is_some_and(|kind| {
        (ICMPV6_MLD_QUERY..=ICMPV6_REDIRECT).contains(&kind) || kind == ICMPV6_MLD2_REPORT
    })
}

/// The `ICMPv6` type behind the hop-by-hop header at `off`, if `ICMPv6` follows it. Copied out
/// (`load`): its offset depends on the header's length, and a direct read there is one the
/// verifier cannot prove in bounds (LLVM turns the bounds check into `pkt >= pkt_end`).
#[inline(always)]
fn icmp6_behind_hop_by_hop<P: Packet>(ctx: &P, off: usize) -> Option<u8> {
    let [next, len] = ctx.load::<[u8; 2]>(off)?;
    if next != PROTO_ICMPV6 {
        return None;
    }
    ctx.load::<u8>(off + (usize::from(len) + 1) * 8)
}

/// Whether `addr` is link-local unicast (`fe80::/10`) or unspecified (`::`): never routed,
/// never translated.
#[inline(always)]
pub fn is_link_local(addr: &[u8; 16]) -> bool {
    (addr[0] == 0xfe && addr[1] & 0xc0 == 0x80) || same_addr(addr, &[0; 16])
}

/// Whether `addr` is multicast (`ff00::/8`).
#[inline(always)]
pub fn is_multicast(addr: &[u8; 16]) -> bool {
    addr[0] == 0xff
}

/// Whether two addresses are equal, compared as two 64-bit words: a plain `==` on the arrays
/// becomes a 128-bit comparison that the BPF backend cannot lower.
#[inline(always)]
pub fn same_addr(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let (a0, a1) = halves(a);
    let (b0, b1) = halves(b);
    (a0 ^ b0) | (a1 ^ b1) == 0
}

#[inline(always)]
fn halves(a: &[u8; 16]) -> (u64, u64) {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&a[..8]);
    hi.copy_from_slice(&a[8..]);
    (u64::from_ne_bytes(lo), u64::from_ne_bytes(hi))
}
