//! `ICMPv6` errors about translated flows: destination unreachable, packet too big (IPv6
//! routers do not fragment, so PMTU discovery depends on it), time exceeded and parameter
//! problem arriving on an uplink for a masqueraded, forwarded or published flow go back to
//! the container, as `crate::icmp_err` does for IPv4.
//!
//! The quoted packet is the one netdriver sent: its source is the translated address and
//! port. The outer destination and the quoted source are rewritten; the `ICMPv6` checksum
//! covers both (the first through the pseudo-header). The quoted L4 checksum is left as is.

use aya_ebpf::{bindings::BPF_F_PSEUDO_HDR, programs::TcContext};
use netdriver_common::{
    CT_ACT_DNAT, CT_DIR_IN, CT_KIND_FORWARD, CT_KIND_MASQ, CtKey6, DROP_CSUM, PROTO_ICMPV6,
    PROTO_TCP, PROTO_UDP,
};

use super::{
    nat::{self, csum_diff},
    parse::{IP6_DADDR_OFF, Ipv6, ipv6, same_addr},
    published,
    uplink::not_published,
};
use crate::{
    ct,
    nat::{Hop, redirect},
    parse::ICMP_ID_OFF,
    pkt::Packet,
};

const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PARAM_PROB: u8 = 4;
const ICMPV6_ECHO_REQUEST: u8 = 128;
/// Length of the error header before the quoted packet, and of a fixed IPv6 header.
const ERR_HLEN: usize = 8;
const IP6_HLEN: usize = 40;

/// Where the translated flow really belongs.
struct Back {
    addr: [u8; 16],
    port: u16,
    ifindex: u32,
    dmac: [u8; 6],
    smac: [u8; 6],
}

/// The quoted packet of an error.
struct Quote {
    /// Offset of the quoted IPv6 header.
    off: usize,
    /// Offset of its source "port" (TCP/UDP source port, echo identifier).
    port_off: usize,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
}

/// Whether the packet is an `ICMPv6` error (types 1 to 4).
#[inline(always)]
pub fn is_error(ctx: &TcContext, ip: &Ipv6) -> bool {
    ip.proto == PROTO_ICMPV6
        && Packet::load::<u8>(ctx, ip.l4_off)
            .is_some_and(|t| (ICMPV6_DEST_UNREACH..=ICMPV6_PARAM_PROB).contains(&t))
}

/// Translates an error about a tracked or published flow and redirects it to the container;
/// anything else is treated like other traffic from outside.
#[inline(always)]
pub fn from_uplink(ctx: &TcContext) -> Result<i32, u32> {
    let Some(ip) = ipv6(ctx) else {
        return Ok(<TcContext as Packet>::PASS);
    };
    let Some(q) = quote(ctx, &ip) else {
        return not_published(&ip);
    };
    // The error must be addressed to the quoted packet's sender.
    if !same_addr(&q.saddr, &ip.daddr) {
        return not_published(&ip);
    }
    let Some(back) = tracked(&q).or_else(|| published_flow(&q)) else {
        return not_published(&ip);
    };
    if !nat::has_hop_left(&ip) {
        return Ok(<TcContext as Packet>::PASS);
    }
    nat::decrement_hop_limit(ctx, &ip)?;
    if !same_addr(&back.addr, &q.saddr) || back.port != q.sport {
        rewrite(ctx, &ip, &q, &back)?;
    }
    redirect(ctx, back.dmac, back.smac, back.ifindex, Hop::Peer)
}

#[inline(always)]
fn quote(ctx: &TcContext, ip: &Ipv6) -> Option<Quote> {
    if !is_error(ctx, ip) {
        return None;
    }
    let off = ip.l4_off + ERR_HLEN;
    let hdr: [u8; 8] = Packet::load(ctx, off)?;
    let saddr: [u8; 16] = Packet::load(ctx, off + 8)?;
    let daddr: [u8; 16] = Packet::load(ctx, off + 24)?;
    if hdr[0] >> 4 != 6 {
        return None;
    }
    let proto = hdr[6];
    let l4 = off + IP6_HLEN;
    let head: [u8; 8] = Packet::load(ctx, l4)?;
    let (sport, dport, port_off) = match proto {
        PROTO_TCP | PROTO_UDP => (
            u16::from_be_bytes([head[0], head[1]]),
            u16::from_be_bytes([head[2], head[3]]),
            l4,
        ),
        PROTO_ICMPV6 if head[0] == ICMPV6_ECHO_REQUEST => {
            (u16::from_be_bytes([head[4], head[5]]), 0, l4 + ICMP_ID_OFF)
        }
        _ => return None,
    };
    Some(Quote {
        off,
        port_off,
        saddr,
        daddr,
        sport,
        dport,
        proto,
    })
}

/// A masqueraded or forwarded flow: the reply direction's entry says where it belongs.
#[inline(always)]
fn tracked(q: &Quote) -> Option<Back> {
    let key = CtKey6 {
        saddr: q.daddr,
        daddr: q.saddr,
        sport: q.dport,
        dport: q.sport,
        proto: q.proto,
        dir: CT_DIR_IN,
        _pad: [0; 2],
    };
    let entry = ct::peek(&key)?;
    if entry.kind != CT_KIND_MASQ && entry.kind != CT_KIND_FORWARD {
        return None;
    }
    let translated = entry.action & CT_ACT_DNAT != 0;
    Some(Back {
        addr: if translated {
            entry.xlate_addr
        } else {
            q.saddr
        },
        port: if translated {
            entry.xlate_port
        } else {
            q.sport
        },
        ifindex: entry.ifindex,
        dmac: entry.dmac,
        smac: entry.smac,
    })
}

/// The reply of a published-port flow: the quoted source is the published address and port.
#[inline(always)]
fn published_flow(q: &Quote) -> Option<Back> {
    if q.proto == PROTO_ICMPV6 {
        return None;
    }
    let target = published::lookup(&q.saddr, q.sport, q.proto, true)?;
    Some(Back {
        addr: target.addr,
        port: target.port,
        ifindex: target.ifindex,
        dmac: target.mac,
        smac: target.gw_mac,
    })
}

/// Rewrites the outer destination and the quoted source address and port, folding each
/// change into the `ICMPv6` checksum (the outer address through the pseudo-header).
#[inline(always)]
fn rewrite(ctx: &TcContext, ip: &Ipv6, q: &Quote, back: &Back) -> Result<(), u32> {
    let csum_off = ip.l4_off + 2;
    let fail = |()| DROP_CSUM;
    let outer = csum_diff(&ip.daddr, &back.addr)?;
    Packet::l4_csum_replace(ctx, csum_off, 0, outer, u64::from(BPF_F_PSEUDO_HDR)).map_err(fail)?;
    Packet::store(ctx, IP6_DADDR_OFF, &back.addr).map_err(fail)?;
    let inner = csum_diff(&q.saddr, &back.addr)?;
    Packet::l4_csum_replace(ctx, csum_off, 0, inner, 0).map_err(fail)?;
    Packet::store(ctx, q.off + 8, &back.addr).map_err(fail)?;
    let (old_port, new_port) = (q.sport.to_be(), back.port.to_be());
    Packet::l4_csum_replace(ctx, csum_off, u64::from(old_port), u64::from(new_port), 2)
        .map_err(fail)?;
    Packet::store(ctx, q.port_off, &new_port).map_err(fail)
}
