//! ICMP errors about translated flows ("related" traffic): destination unreachable (PMTU's
//! "fragmentation needed" included), time exceeded and parameter problem arriving on an
//! uplink for a masqueraded or published flow are translated back and sent to the
//! container, so its sockets see them (without this, PMTU discovery would black-hole).
//!
//! The quoted packet is the one netdriver sent: its source is the translated address and
//! port. Both the outer destination and the quoted source are rewritten, with the outer IPv4
//! checksum, the quoted IPv4 checksum and the ICMP checksum (which covers the quote) fixed.
//! The quoted L4 checksum is left as is (only 8 bytes of it are guaranteed to be quoted; for
//! SCTP those are the ports and the verification tag, which is what the stack matches on).

use netdriver_common::{
    CT_ACT_DNAT, CT_DIR_IN, CT_KIND_FORWARD, CT_KIND_MASQ, CtKey, DROP_CSUM, PROTO_ICMP,
    PROTO_SCTP, PROTO_TCP, PROTO_UDP, PortKey, csum_replace4,
};

use crate::{
    maps::{ND_CT, ND_PORTS},
    nat,
    parse::{ICMP_ID_OFF, IP_CSUM_OFF, IP_DADDR_OFF, Ipv4},
    pkt::Packet,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROB: u8 = 12;
const ICMP_ECHO_REQUEST: u8 = 8;
/// Length of the ICMP error header before the quoted packet.
const ICMP_ERR_HLEN: usize = 8;

/// Where the translated flow really belongs.
struct Back {
    addr_be: u32,
    port: u16,
    ifindex: u32,
    dmac: [u8; 6],
    smac: [u8; 6],
}

/// The quoted packet of an ICMP error.
struct Quote {
    /// Offset of the quoted IPv4 header.
    off: usize,
    /// Offset of its source "port" (TCP/UDP source port, echo identifier).
    port_off: usize,
    saddr_be: u32,
    daddr_be: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    csum: u16,
}

/// Translates an ICMP error about a tracked or published flow; `None` if it is not one.
#[inline(always)]
pub fn from_uplink<P: Packet>(ctx: &P, ip: &Ipv4) -> Result<Option<i32>, u32> {
    if ip.proto != PROTO_ICMP || ip.frag_offset != 0 {
        return Ok(None);
    }
    let Some(q) = quote(ctx, ip) else {
        return Ok(None);
    };
    // The error must be addressed to the quoted packet's sender.
    if q.saddr_be != ip.daddr_be {
        return Ok(None);
    }
    let Some(back) = tracked(&q).or_else(|| published(&q)) else {
        return Ok(None);
    };
    if !nat::has_hop_left(ip) {
        return Ok(Some(P::PASS));
    }
    nat::decrement_ttl(ctx, ip)?;
    if back.addr_be != q.saddr_be || back.port != q.sport {
        rewrite(ctx, ip, &q, &back)?;
    }
    nat::redirect(ctx, back.dmac, back.smac, back.ifindex, nat::Hop::Peer).map(Some)
}

#[inline(always)]
fn quote<P: Packet>(ctx: &P, ip: &Ipv4) -> Option<Quote> {
    let icmp: [u8; 2] = ctx.load(ip.l4_off)?;
    if !matches!(
        icmp[0],
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROB
    ) {
        return None;
    }
    let off = ip.l4_off + ICMP_ERR_HLEN;
    let hdr: [u8; 20] = ctx.load(off)?;
    let ihl = usize::from(hdr[0] & 0x0f);
    if hdr[0] >> 4 != 4 || ihl < 5 {
        return None;
    }
    let l4 = off + ihl * 4;
    let head: [u8; 8] = ctx.load(l4)?;
    let proto = hdr[9];
    let (sport, dport, port_off) = match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => (
            u16::from_be_bytes([head[0], head[1]]),
            u16::from_be_bytes([head[2], head[3]]),
            l4,
        ),
        PROTO_ICMP if head[0] == ICMP_ECHO_REQUEST => {
            (u16::from_be_bytes([head[4], head[5]]), 0, l4 + ICMP_ID_OFF)
        }
        _ => return None,
    };
    Some(Quote {
        off,
        port_off,
        saddr_be: u32::from_ne_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]),
        daddr_be: u32::from_ne_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]),
        sport,
        dport,
        proto,
        csum: u16::from_ne_bytes([hdr[10], hdr[11]]),
    })
}

/// A masqueraded or forwarded flow: the reply direction's entry says where it belongs.
#[inline(always)]
fn tracked(q: &Quote) -> Option<Back> {
    let key = CtKey {
        saddr_be: q.daddr_be,
        daddr_be: q.saddr_be,
        sport: q.dport,
        dport: q.sport,
        proto: q.proto,
        dir: CT_DIR_IN,
        _pad: [0; 2],
    };
    // SAFETY: copied out at once.
    let entry = unsafe { ND_CT.get(key) }.copied()?;
    if entry.kind != CT_KIND_MASQ && entry.kind != CT_KIND_FORWARD {
        return None;
    }
    let translated = entry.action & CT_ACT_DNAT != 0;
    Some(Back {
        addr_be: if translated {
            entry.xlate_addr_be
        } else {
            q.saddr_be
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
fn published(q: &Quote) -> Option<Back> {
    if q.proto == PROTO_ICMP {
        return None;
    }
    let mut key = PortKey {
        host_addr_be: q.saddr_be,
        host_port: q.sport,
        proto: q.proto,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    let target = unsafe { ND_PORTS.get(key) }.copied().or_else(|| {
        key.host_addr_be = 0;
        // SAFETY: as above.
        unsafe { ND_PORTS.get(key) }.copied()
    })?;
    Some(Back {
        addr_be: target.addr_be,
        port: target.port,
        ifindex: target.ifindex,
        dmac: target.mac,
        smac: target.gw_mac,
    })
}

/// Rewrites the outer destination and the quoted source (address, checksum, port).
#[inline(always)]
fn rewrite<P: Packet>(ctx: &P, ip: &Ipv4, q: &Quote, back: &Back) -> Result<(), u32> {
    let csum_off = ip.l4_off + 2;
    let fail = |()| DROP_CSUM;
    ctx.l3_csum_replace(
        IP_CSUM_OFF,
        u64::from(ip.daddr_be),
        u64::from(back.addr_be),
        4,
    )
    .map_err(fail)?;
    ctx.store(IP_DADDR_OFF, &back.addr_be).map_err(fail)?;
    let quote_csum = csum_replace4(q.csum, q.saddr_be, back.addr_be);
    ctx.l4_csum_replace(csum_off, u64::from(q.saddr_be), u64::from(back.addr_be), 4)
        .map_err(fail)?;
    ctx.l4_csum_replace(csum_off, u64::from(q.csum), u64::from(quote_csum), 2)
        .map_err(fail)?;
    ctx.store(q.off + 12, &back.addr_be).map_err(fail)?;
    ctx.store(q.off + 10, &quote_csum).map_err(fail)?;
    let (old_port, new_port) = (q.sport.to_be(), back.port.to_be());
    ctx.l4_csum_replace(csum_off, u64::from(old_port), u64::from(new_port), 2)
        .map_err(fail)?;
    ctx.store(q.port_off, &new_port).map_err(fail)
}
