//! IPv6 header parsing: Ethernet, the fixed 40-byte header and the extension headers in
//! front of the L4 header (hop-by-hop, routing with no segment left, destination options).

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
/// Next-header values of the extension headers walked past: hop-by-hop options, routing
/// (only with no segment left) and destination options. Each starts with its next header and
/// its length in 8-byte units, not counting the first 8.
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_DSTOPTS: u8 = 60;
/// Offset of a routing header's "segments left" byte.
const ROUTING_SEGMENTS_LEFT: usize = 3;
/// How many extension headers are walked: RFC 8200 section 4.1 allows each of these once
/// (destination options twice), so a real packet has at most four in front of its L4 header.
const MAX_EXT_HDRS: usize = 4;

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
    /// The L4 protocol behind the extension headers walked past; or the header where the
    /// walk stopped (a fragment header, a routing header with segments left, a fifth
    /// extension header, ESP, AH, a truncated header), which has no ports.
    pub proto: u8,
    pub hop_limit: u8,
    /// The L4 length: the payload length less the extension headers.
    pub l4_len: u16,
    /// Offset of the L4 header (of `proto`) in the frame. It depends on the extension
    /// headers' lengths, so the L4 header is read with `Packet::load` (a direct read at such
    /// an offset is one the verifier cannot prove in bounds: LLVM turns the bounds check into
    /// `pkt >= pkt_end`).
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
    let (proto, l4_off) = skip_ext_headers(ctx, proto, ETH_HLEN + IP6_HLEN);
    let ext_len = u16::try_from(l4_off - (ETH_HLEN + IP6_HLEN)).unwrap_or(u16::MAX);
    Some(Ipv6 {
        eth_dst,
        eth_src,
        saddr,
        daddr,
        proto,
        hop_limit,
        l4_len: u16::from_be_bytes(payload_len).saturating_sub(ext_len),
        l4_off,
    })
}

/// Walks past up to [`MAX_EXT_HDRS`] hop-by-hop, destination-options and routing headers
/// (routing only with no segment left: with segments left the packet's final destination is
/// another address, so it is not ours to translate) from the header `next` at `off`; returns
/// the header where the walk stopped and its offset. Fragment headers stop it: a later
/// fragment has no L4 header, and translating the first one alone would send one datagram's
/// fragments to two places. Read with `load` (see `Ipv6::l4_off`).
#[inline(always)]
fn skip_ext_headers<P: Packet>(ctx: &P, mut next: u8, mut off: usize) -> (u8, usize) {
    for _ in 0..MAX_EXT_HDRS {
        if !matches!(next, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS) {
            break;
        }
        let Some(hdr) = ctx.load::<[u8; 4]>(off) else {
            break;
        };
        if next == IPPROTO_ROUTING && hdr[ROUTING_SEGMENTS_LEFT] != 0 {
            break;
        }
        next = hdr[0];
        off += (usize::from(hdr[1]) + 1) * 8;
    }
    (next, off)
}

/// The ports (or echo identifier) of a TCP, UDP, SCTP or `ICMPv6` echo packet behind the
/// extension headers; `None` otherwise.
#[inline(always)]
pub fn ports<P: Packet>(ctx: &P, ip: &Ipv6) -> Option<Ports> {
    transport::<P, true>(ctx, ip.proto, ip.l4_off)
}

/// Whether the packet is `ICMPv6` of the link's own machinery (NDP, RS/RA, MLD), which must
/// always pass untouched. MLD messages carry a hop-by-hop header (the router alert option,
/// RFC 3810 section 5), which `ipv6` walked past.
#[inline(always)]
pub fn is_link_control<P: Packet>(ctx: &P, ip: &Ipv6) -> bool {
    ip.proto == PROTO_ICMPV6
        && ctx.load::<u8>(ip.l4_off).is_some_and(|kind| {
            (ICMPV6_MLD_QUERY..=ICMPV6_REDIRECT).contains(&kind) || kind == ICMPV6_MLD2_REPORT
        })
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
