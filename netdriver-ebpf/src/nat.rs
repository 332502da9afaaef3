//! Address and port rewriting with incremental checksum updates, and the final redirects.
//!
//! Writes go through [`Packet`]: on tc `bpf_skb_store_bytes` and the checksum helpers, so no
//! packet pointer is held across a helper that can move packet data.

use aya_ebpf::bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR};
use netdriver_common::{
    DROP_CSUM, DROP_REDIRECT_FAILED, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_UDP,
};

pub use crate::pkt::Hop;
use crate::{
    parse::{
        ICMP_ID_OFF, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, IP_TTL_OFF, Ipv4, Ports, csum_off,
        l4_csum_off, l4_len,
    },
    pkt::Packet,
    sctp,
};

/// Which end of the packet a translation rewrites.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Src,
    Dst,
}

/// Rewrites the `end` address and port of `ip` to `addr_be`/`port` (host order), fixing
/// the IPv4 and L4 checksums (SCTP: the CRC32C, after a port change only). For ICMP echo the
/// "port" is the identifier. Parts that do not change are left alone.
#[inline(always)]
pub fn rewrite<P: Packet>(
    ctx: &P,
    ip: &Ipv4,
    ports: Ports,
    end: End,
    addr_be: u32,
    port: u16,
) -> Result<(), u32> {
    let (addr_off, old_addr, old_port) = match end {
        End::Src => (IP_SADDR_OFF, ip.saddr_be, ports.src),
        End::Dst => (IP_DADDR_OFF, ip.daddr_be, ports.dst),
    };
    let icmp = ip.proto == PROTO_ICMP;
    // The ICMP and SCTP checksums cover no pseudo-header.
    let pseudo_hdr = !icmp && ip.proto != PROTO_SCTP;
    let mangled = mangled_0(ip.proto);
    let csum_off = l4_csum_off(ip);
    if old_addr != addr_be {
        if pseudo_hdr {
            ctx.l4_csum_replace(
                csum_off,
                u64::from(old_addr),
                u64::from(addr_be),
                u64::from(BPF_F_PSEUDO_HDR) | mangled | 4,
            )
            .map_err(|()| DROP_CSUM)?;
        }
        ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old_addr), u64::from(addr_be), 4)
            .map_err(|()| DROP_CSUM)?;
        ctx.store(addr_off, &addr_be).map_err(|()| DROP_CSUM)?;
    }
    if ip.proto == PROTO_SCTP {
        return rewrite_sctp_port(ctx, ip, end, old_port, port);
    }
    rewrite_port(ctx, ip.proto, ip.l4_off, end, old_port, port)
}

/// An SCTP port rewrite: its CRC32C is recomputed over the whole packet (see `sctp`).
#[inline(always)]
fn rewrite_sctp_port<P: Packet>(
    ctx: &P,
    ip: &Ipv4,
    end: End,
    old: u16,
    new: u16,
) -> Result<(), u32> {
    if old == new {
        return Ok(());
    }
    let at = if end == End::Src { 0 } else { 2 };
    let (old_be, new_be) = (old.to_be(), new.to_be());
    let len = l4_len(ctx, ip).unwrap_or(0);
    sctp::port_rewritten(ctx, ip.l4_off, len, at, old_be, new_be)?;
    ctx.store(ip.l4_off + at, &new_be).map_err(|()| DROP_CSUM)
}

/// The checksum flag of `proto`: a UDP checksum of 0 means "none" and must stay 0, and a
/// computed 0 becomes 0xffff. (IPv6 forbids a UDP checksum of 0; such a packet is left for
/// the kernel to drop.)
#[inline(always)]
pub fn mangled_0(proto: u8) -> u64 {
    if proto == PROTO_UDP {
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    }
}

/// Rewrites the `end` port (ICMP/`ICMPv6` echo: the identifier) of the L4 header at `l4_off`
/// from `old` to `new` (host order), fixing the L4 checksum. Shared by both families.
#[inline(always)]
pub fn rewrite_port<P: Packet>(
    ctx: &P,
    proto: u8,
    l4_off: usize,
    end: End,
    old: u16,
    new: u16,
) -> Result<(), u32> {
    if old == new {
        return Ok(());
    }
    let port_off = if proto == PROTO_ICMP || proto == PROTO_ICMPV6 {
        l4_off + ICMP_ID_OFF
    } else if end == End::Src {
        l4_off
    } else {
        l4_off + 2
    };
    let (old_be, new_be) = (old.to_be(), new.to_be());
    ctx.l4_csum_replace(
        csum_off(proto, l4_off),
        u64::from(old_be),
        u64::from(new_be),
        mangled_0(proto) | 2,
    )
    .map_err(|()| DROP_CSUM)?;
    ctx.store(port_off, &new_be).map_err(|()| DROP_CSUM)
}

/// Whether the packet may take one more hop. Redirected packets skip the kernel's forwarding
/// path, so its TTL handling is done here: a packet whose TTL would expire is left to the
/// kernel (which answers with ICMP time exceeded).
#[inline(always)]
pub fn has_hop_left(ip: &Ipv4) -> bool {
    ip.ttl > 1
}

/// Decrements the TTL (and fixes the IPv4 checksum), as a router hop does.
#[inline(always)]
pub fn decrement_ttl<P: Packet>(ctx: &P, ip: &Ipv4) -> Result<(), u32> {
    let ttl = ip.ttl.saturating_sub(1);
    let old = u16::from_ne_bytes([ip.ttl, ip.proto]);
    let new = u16::from_ne_bytes([ttl, ip.proto]);
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old), u64::from(new), 2)
        .map_err(|()| DROP_CSUM)?;
    ctx.store(IP_TTL_OFF, &ttl).map_err(|()| DROP_CSUM)
}

/// Sets the Ethernet destination and source and redirects to `ifindex` by `hop`.
#[inline(always)]
pub fn redirect<P: Packet>(
    ctx: &P,
    dst: [u8; 6],
    src: [u8; 6],
    ifindex: u32,
    hop: Hop,
) -> Result<i32, u32> {
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&dst);
    macs[6..].copy_from_slice(&src);
    ctx.store(0, &macs).map_err(|()| DROP_REDIRECT_FAILED)?;
    ctx.redirect(ifindex, hop)
        .map_err(|()| DROP_REDIRECT_FAILED)
}

/// Redirects to the egress of `ifindex` with the L2 header from the kernel's neighbour table
/// (resolving the next hop if needed): the route's work without the netfilter hooks.
#[inline(always)]
pub fn redirect_neigh<P: Packet>(ctx: &P, ifindex: u32) -> Result<i32, u32> {
    ctx.redirect_neigh(ifindex)
        .map_err(|()| DROP_REDIRECT_FAILED)
}
