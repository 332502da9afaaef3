//! What a container may start over IPv6: ICC inside its network (with legacy links,
//! `ND_LINKS6`, opening single ports when it is off; link-local traffic by its veth's entry
//! in `ND_VETHS`), isolation between networks, internal networks; a flow that may leave is
//! handed to `egress` (`GO_OUTBOUND`).

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netdriver_common::{
    CT_DIR_OUT, CT_KIND_LINK, CT_ST_NEW, CtEntry6, CtKey6, DROP_ICC, DROP_INTERNAL, DROP_ISOLATED,
    DROP_SPOOFED, LinkKey6, NET_F_ICC, NET_F_INTERNAL, PROTO_ICMPV6,
};

use super::parse::{Ipv6, same_addr};
use crate::{
    ct,
    maps::{ND_LINKS6, net6_of, veth_of},
    parse::Ports,
    pkt::Packet,
};

/// The first packet of a flow from a container (no `ND_CT6` entry matched).
#[inline(always)]
pub fn new_flow(ctx: &TcContext, ip: &Ipv6, ports: Option<Ports>) -> Result<i32, u32> {
    let Some(src) = net6_of(&ip.saddr) else {
        return Err(DROP_SPOOFED);
    };
    if let Some(dst) = net6_of(&ip.daddr) {
        // A gateway address is the host's: a published port there is hairpin traffic (of
        // any network's container, as through any other host address), the rest the host's.
        if same_addr(&ip.daddr, &dst.gateway) {
            return Ok(if ports.is_some() {
                super::GO_HAIRPIN
            } else {
                TC_ACT_OK
            });
        }
        if dst.bridge_ifindex != src.bridge_ifindex {
            return Err(DROP_ISOLATED);
        }
        if src.flags & NET_F_ICC != 0 {
            return Ok(TC_ACT_OK);
        }
        return linked(ip, ports);
    }
    if src.flags & NET_F_INTERNAL != 0 {
        return Err(DROP_INTERNAL);
    }
    // Only flows with ports (or echo identifiers) are tracked; the rest is the kernel's.
    let Some(ports) = ports else {
        return Ok(TC_ACT_OK);
    };
    let _ = (ctx, ports);
    Ok(super::GO_OUTBOUND)
}

/// Link-local unicast (or unspecified-source) traffic that is not link control: its addresses
/// are in no subnet, so the veth says which network it is on. With ICC off only frames to the
/// bridge's MAC (the host: the gateway's `fe80::1` or the bridge's own link-local address)
/// pass; a frame bridged to another container is dropped, as Docker's `-i br -o br -j DROP`
/// does. Legacy links name global addresses, so they open nothing here. A veth without an
/// entry (attached by a version that did not fill `ND_VETHS`) passes.
#[inline(always)]
pub fn link_local(ctx: &TcContext, ip: &Ipv6) -> Result<i32, u32> {
    let Some(veth) = veth_of(ctx.ifindex()) else {
        return Ok(TC_ACT_OK);
    };
    if veth.flags & NET_F_ICC != 0 || same_mac(&ip.eth_dst, &veth.bridge_mac) {
        return Ok(TC_ACT_OK);
    }
    Err(DROP_ICC)
}

/// Whether two MAC addresses are equal, compared as a 32- and a 16-bit word (no `memcmp`
/// call for the BPF backend to lower).
#[inline(always)]
fn same_mac(a: &[u8; 6], b: &[u8; 6]) -> bool {
    let word = |m: &[u8; 6]| {
        (
            u32::from_ne_bytes([m[0], m[1], m[2], m[3]]),
            u16::from_ne_bytes([m[4], m[5]]),
        )
    };
    let ((a0, a1), (b0, b1)) = (word(a), word(b));
    a0 == b0 && a1 == b1
}

/// ICC is off: only a legacy link lets the flow through (one port, one way), and its replies
/// are let back (an `ND_CT6` entry seen on the child's veth).
#[inline(always)]
fn linked(ip: &Ipv6, ports: Option<Ports>) -> Result<i32, u32> {
    let Some(ports) = ports else {
        return Err(DROP_ICC);
    };
    if ip.proto == PROTO_ICMPV6 {
        return Err(DROP_ICC);
    }
    let link = LinkKey6 {
        parent_addr: ip.saddr,
        child_addr: ip.daddr,
        port: ports.dst,
        proto: ip.proto,
        _pad: 0,
    };
    if ND_LINKS6.get_ptr(link).is_none() {
        return Err(DROP_ICC);
    }
    let key = CtKey6 {
        saddr: ip.daddr,
        daddr: ip.saddr,
        sport: ports.dst,
        dport: ports.src,
        proto: ip.proto,
        dir: CT_DIR_OUT,
        _pad: [0; 2],
    };
    if !ct::refresh(&key) {
        let entry = CtEntry6 {
            xlate_addr: ip.daddr,
            owner_addr: ip.daddr,
            xlate_port: ports.dst,
            state: CT_ST_NEW,
            kind: CT_KIND_LINK,
            last_seen_ns: ct::now(),
            ..CtEntry6::default()
        };
        ct::insert_or_drop(&key, &entry)?;
    }
    Ok(TC_ACT_OK)
}
