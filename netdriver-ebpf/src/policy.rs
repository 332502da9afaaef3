//! What a container may start: ICC and links inside its network (for multicast and broadcast
//! too), isolation between networks, internal networks, and the way out (masquerade or plain
//! forwarding).

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netdriver_common::{
    CT_DIR_OUT, CT_KIND_LINK, CT_ST_NEW, CtEntry, CtKey, DROP_ICC, DROP_INTERNAL, DROP_ISOLATED,
    DROP_SPOOFED, LinkKey, NET_F_ICC, NET_F_INTERNAL, NET_F_MASQUERADE, NetInfo, PROTO_ICMP,
};

use crate::{
    ct, egress, group,
    maps::{ND_CT, ND_LINKS, net_of},
    parse::{Ipv4, PROTO_IGMP, Ports},
};

/// The first packet of a flow from a container (no `ND_CT` entry matched).
#[inline(always)]
pub fn new_flow(ctx: &TcContext, ip: &Ipv4, ports: Option<Ports>) -> Result<i32, u32> {
    let Some(src) = net_of(ip.saddr_be) else {
        return Err(DROP_SPOOFED);
    };
    if let Some(dst) = net_of(ip.daddr_be) {
        // A gateway address is the host's.
        if ip.daddr_be == dst.gateway_be {
            return Ok(TC_ACT_OK);
        }
        if dst.bridge_ifindex != src.bridge_ifindex {
            return Err(DROP_ISOLATED);
        }
        return inter_container(ip, ports, &src);
    }
    if src.flags & NET_F_INTERNAL != 0 {
        return Err(DROP_INTERNAL);
    }
    // Only flows with ports (or echo identifiers) are tracked; the rest is the kernel's.
    let Some(ports) = ports else {
        return Ok(TC_ACT_OK);
    };
    egress::outbound(ctx, ip, ports, &src, src.flags & NET_F_MASQUERADE != 0)
}

/// A multicast or broadcast packet from a container: IGMP, the link's own machinery, passes
/// (its reports may come from `0.0.0.0`); the rest needs a source in a container network and
/// follows the ICC rule of its veth's network (see `group`). None of it is routed or
/// translated: the bridge floods it, and the host's stack does not forward it.
#[inline(always)]
pub fn group(ctx: &TcContext, ip: &Ipv4) -> Result<i32, u32> {
    if ip.proto == PROTO_IGMP {
        return Ok(TC_ACT_OK);
    }
    if net_of(ip.saddr_be).is_none() {
        return Err(DROP_SPOOFED);
    }
    group::from_container(ctx)
}

/// Traffic between two containers of one network (bridged, L2).
#[inline(always)]
fn inter_container(ip: &Ipv4, ports: Option<Ports>, net: &NetInfo) -> Result<i32, u32> {
    if net.flags & NET_F_ICC != 0 {
        return Ok(TC_ACT_OK);
    }
    let Some(ports) = ports else {
        return Err(DROP_ICC);
    };
    if ip.proto == PROTO_ICMP {
        return Err(DROP_ICC);
    }
    let link = LinkKey {
        parent_addr_be: ip.saddr_be,
        child_addr_be: ip.daddr_be,
        port: ports.dst,
        proto: ip.proto,
        _pad: 0,
    };
    if ND_LINKS.get_ptr(link).is_none() {
        return Err(DROP_ICC);
    }
    allow_link_replies(ip, ports)?;
    Ok(TC_ACT_OK)
}

/// Lets the child answer the parent: an entry for the reply direction, seen on the child's
/// veth, that hands the packets to the bridge.
#[inline(always)]
fn allow_link_replies(ip: &Ipv4, ports: Ports) -> Result<(), u32> {
    let key = CtKey {
        saddr_be: ip.daddr_be,
        daddr_be: ip.saddr_be,
        sport: ports.dst,
        dport: ports.src,
        proto: ip.proto,
        dir: CT_DIR_OUT,
        _pad: [0; 2],
    };
    let now = ct::now();
    if let Some(old) = ND_CT.get_ptr_mut(key) {
        // SAFETY: valid for this program run; only the timestamp is written.
        unsafe { ct::touch(&mut *old, (*old).state) };
        return Ok(());
    }
    let entry = CtEntry {
        xlate_addr_be: ip.daddr_be,
        xlate_port: ports.dst,
        state: CT_ST_NEW,
        owner_addr_be: ip.daddr_be,
        kind: CT_KIND_LINK,
        last_seen_ns: now,
        ..CtEntry::default()
    };
    ct::insert_or_drop(&key, &entry)
}
