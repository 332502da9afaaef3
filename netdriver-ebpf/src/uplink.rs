//! `nd_from_uplink`: published ports to containers (DNAT), replies of tracked outbound flows
//! back to their container, nothing else to containers.

use netdriver_common::{
    CT_ACT_REDIRECT, CT_ACT_SNAT, CT_DIR_IN, CT_DIR_OUT, CT_KIND_PUBLISHED, CT_ST_NEW, CtEntry,
    DROP_UNPUBLISHED, PortTarget, ct_next_state,
};

use crate::{
    ct, icmp_err,
    maps::{ND_CT, in_container_net},
    nat::{self, End, Hop},
    parse::{self, Ipv4, Ports},
    pkt::Packet,
};

#[inline(always)]
pub fn from_uplink<P: Packet>(ctx: &P) -> Result<i32, u32> {
    let Some(ip) = parse::ipv4(ctx) else {
        return Ok(P::PASS);
    };
    // Later fragments carry no ports; they pass untouched (only the first one is translated).
    if ip.frag_offset != 0 {
        return Ok(P::PASS);
    }
    if let Some(ports) = parse::ports(ctx, &ip) {
        // Published ports first: a binding always wins over older state (no stale flows).
        if let Some(target) = published(&ip, ports) {
            return dnat(ctx, &ip, ports, &target);
        }
        if let Some(entry) = ct::lookup(&ct::key(&ip, ports, CT_DIR_IN), ports.tcp_flags) {
            return ct::apply(ctx, &ip, ports, &entry, Hop::Peer);
        }
    } else if let Some(verdict) = icmp_err::from_uplink(ctx, &ip)? {
        return Ok(verdict);
    }
    // Outsiders reach containers only through published ports.
    if in_container_net(ip.daddr_be) {
        return Err(DROP_UNPUBLISHED);
    }
    Ok(P::PASS)
}

/// Looks the destination up as a published port: the exact address (a host address, or a
/// container address in routed mode), then any host address.
#[inline(always)]
fn published(ip: &Ipv4, ports: Ports) -> Option<PortTarget> {
    // A wildcard binding is for host addresses, never for a container's.
    let wildcard = !in_container_net(ip.daddr_be);
    crate::published::lookup(ip.daddr_be, ports.dst, ip.proto, wildcard)
}

#[inline(always)]
fn dnat<P: Packet>(ctx: &P, ip: &Ipv4, ports: Ports, target: &PortTarget) -> Result<i32, u32> {
    if !nat::has_hop_left(ip) {
        return Ok(P::PASS);
    }
    track(ctx, ip, ports, target)?;
    nat::decrement_ttl(ctx, ip)?;
    nat::rewrite(ctx, ip, ports, End::Dst, target.addr_be, target.port)?;
    nat::redirect(ctx, target.mac, target.gw_mac, target.ifindex, Hop::Peer)
}

/// Records (or refreshes) the reply direction so that `nd_from_container` can translate it.
#[inline(always)]
fn track<P: Packet>(ctx: &P, ip: &Ipv4, ports: Ports, target: &PortTarget) -> Result<(), u32> {
    let key = netdriver_common::CtKey {
        saddr_be: target.addr_be,
        daddr_be: ip.saddr_be,
        sport: target.port,
        dport: ports.src,
        proto: ip.proto,
        dir: CT_DIR_OUT,
        _pad: [0; 2],
    };
    let now = ct::now();
    let entry = CtEntry {
        xlate_addr_be: ip.daddr_be,
        xlate_port: ports.dst,
        action: CT_ACT_SNAT | CT_ACT_REDIRECT,
        state: ct_next_state(CT_ST_NEW, ip.proto, ports.tcp_flags),
        ifindex: ctx.ifindex(),
        smac: ip.eth_dst,
        dmac: ip.eth_src,
        owner_addr_be: target.addr_be,
        kind: CT_KIND_PUBLISHED,
        _pad: [0; 3],
        last_seen_ns: now,
    };
    if let Some(old) = ND_CT.get_ptr_mut(key) {
        // SAFETY: the entry stays valid for this program run; racing writers store the same
        // values.
        unsafe {
            if same_route(&*old, &entry) {
                ct::touch(&mut *old, (*old).state);
                return Ok(());
            }
        }
    }
    ct::insert_or_drop(&key, &entry)
}

#[inline(always)]
fn same_route(a: &CtEntry, b: &CtEntry) -> bool {
    a.xlate_addr_be == b.xlate_addr_be
        && a.xlate_port == b.xlate_port
        && a.ifindex == b.ifindex
        && a.smac == b.smac
        && a.dmac == b.dmac
        && a.kind == b.kind
}
