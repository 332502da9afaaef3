//! `nd_from_uplink` for IPv6: published ports to containers (DNAT), replies of tracked
//! outbound flows back to their container, nothing else to containers. NDP passes.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netdriver_common::{
    CT_ACT_REDIRECT, CT_ACT_SNAT, CT_DIR_IN, CT_DIR_OUT, CT_KIND_PUBLISHED, CT_ST_NEW, CtEntry6,
    CtKey6, DROP_UNPUBLISHED, PortTarget6, ct_next_state,
};

use super::{
    ct as ct6, icmp_err, nat,
    parse::{self, Ipv6, same_addr},
    published,
};
use crate::{
    ct,
    maps::net6_of,
    nat::{End, Hop, redirect},
    parse::Ports,
    pkt::Packet,
};

#[inline(always)]
pub fn from_uplink(ctx: &TcContext, ip: &Ipv6) -> Result<i32, u32> {
    if parse::is_link_control(ctx, ip) {
        return Ok(TC_ACT_OK);
    }
    if let Some(ports) = parse::ports(ctx, ip) {
        // Published ports first: a binding always wins over older state.
        let wildcard = net6_of(&ip.daddr).is_none();
        if let Some(target) = published::lookup(&ip.daddr, ports.dst, ip.proto, wildcard) {
            return dnat(ctx, ip, ports, &target);
        }
        if let Some(entry) = ct::lookup(&ct6::key(ip, ports, CT_DIR_IN), ports.tcp_flags) {
            return ct::apply(ctx, ip, ports, &entry, Hop::Peer);
        }
    } else if icmp_err::is_error(ctx, ip) {
        return Ok(super::GO_ICMP_ERROR);
    }
    not_published(ip)
}

/// What is left of traffic from outside: outsiders reach containers only through published
/// ports; the rest is the host's.
#[inline(always)]
pub fn not_published(ip: &Ipv6) -> Result<i32, u32> {
    if net6_of(&ip.daddr).is_some() {
        return Err(DROP_UNPUBLISHED);
    }
    Ok(TC_ACT_OK)
}

#[inline(always)]
fn dnat(ctx: &TcContext, ip: &Ipv6, ports: Ports, target: &PortTarget6) -> Result<i32, u32> {
    if !nat::has_hop_left(ip) {
        return Ok(TC_ACT_OK);
    }
    track(ctx, ip, ports, target)?;
    nat::decrement_hop_limit(ctx, ip)?;
    nat::rewrite(ctx, ip, ports, End::Dst, target.addr, target.port)?;
    redirect(ctx, target.mac, target.gw_mac, target.ifindex, Hop::Peer)
}

/// Records (or refreshes) the reply direction so that `nd_from_container` translates it.
#[inline(always)]
fn track(ctx: &TcContext, ip: &Ipv6, ports: Ports, target: &PortTarget6) -> Result<(), u32> {
    let key = CtKey6 {
        saddr: target.addr,
        daddr: ip.saddr,
        sport: target.port,
        dport: ports.src,
        proto: ip.proto,
        dir: CT_DIR_OUT,
        _pad: [0; 2],
    };
    let entry = CtEntry6 {
        xlate_addr: ip.daddr,
        owner_addr: target.addr,
        xlate_port: ports.dst,
        action: CT_ACT_SNAT | CT_ACT_REDIRECT,
        state: ct_next_state(CT_ST_NEW, ip.proto, ports.tcp_flags),
        ifindex: Packet::ifindex(ctx),
        smac: ip.eth_dst,
        dmac: ip.eth_src,
        kind: CT_KIND_PUBLISHED,
        _pad: [0; 3],
        last_seen_ns: ct::now(),
    };
    if let Some(old) = ct::peek(&key)
        && same_route(&old, &entry)
    {
        ct::refresh(&key);
        return Ok(());
    }
    ct::insert_or_drop(&key, &entry)
}

#[inline(always)]
fn same_route(a: &CtEntry6, b: &CtEntry6) -> bool {
    same_addr(&a.xlate_addr, &b.xlate_addr)
        && a.xlate_port == b.xlate_port
        && a.ifindex == b.ifindex
        && a.smac == b.smac
        && a.dmac == b.dmac
        && a.kind == b.kind
}
