//! IPv6 hairpin: a container reaching a published port through one of the host's IPv6
//! addresses (found as a destination the route lookup calls local), on its own network or
//! another one, with no detour through the host's stack.
//!
//! The flow is two `ND_CT6` entries of kind `CT_KIND_PUBLISHED`, both seen on container
//! veths: the client's packets are translated to the target and redirected to its veth; the
//! target's replies (to the client's own address, which is kept) are translated back to the
//! host address and port and redirected to the client's veth.
//!
//! A container reaching its own published port is seen from its network's gateway, as with
//! Docker (its own address would be a martian inside it): both entries carry
//! `CT_ACT_SELF_HAIRPIN`, and both ends of their packets are rewritten.
//!
//! [`from_container`] runs as a BPF function of its own (`GO_HAIRPIN`), for the first packet
//! of a flow and for the packets of a flow to the container's own port (the other
//! flows' packets are applied by `container`, like any tracked flow).

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netdriver_common::{
    CT_ACT_DNAT, CT_ACT_REDIRECT, CT_ACT_SELF_HAIRPIN, CT_ACT_SNAT, CT_DIR_OUT, CT_KIND_PUBLISHED,
    CT_ST_NEW, CtEntry6, CtKey6, DROP_CT_FAILED, PROTO_TCP, PortTarget6, TCP_ACK, TCP_SYN,
    ct_next_state,
};

use super::{
    ct as ct6,
    egress::ND_SCRATCH6,
    nat,
    parse::{Ipv6, ipv6, ports as ports_of, same_addr},
    published,
};
use crate::{
    ct,
    maps::net6_of,
    nat::{End, Hop},
    parse::Ports,
    pkt::Packet,
};

/// The target of a packet that may start a hairpin flow: one to a published port that opens
/// a connection.
#[inline(always)]
fn opening(ip: &Ipv6, ports: Ports) -> Option<PortTarget6> {
    // Only a connection attempt starts a hairpin flow: a TCP segment that is not one is
    // typically the reply to a host connection whose ephemeral port is also published.
    let opens = ip.proto != PROTO_TCP || ports.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if !opens {
        return None;
    }
    published::lookup(&ip.daddr, ports.dst, ip.proto, true)
}

/// Records both directions of a new hairpin flow to `target`, which sees the client as
/// `peer` (its own address, or its gateway); `extra`: more `CT_ACT_*` bits for both entries.
/// Returns the client's entry.
#[inline(always)]
fn track(
    ctx: &TcContext,
    ip: &Ipv6,
    ports: Ports,
    target: &PortTarget6,
    peer: &[u8; 16],
    extra: u8,
) -> Result<&'static CtEntry6, u32> {
    let scratch = ND_SCRATCH6.get_ptr_mut(0).ok_or(DROP_CT_FAILED)?;
    // SAFETY: this CPU's slot, used by this program run only.
    let s = unsafe { &mut *scratch };
    let now = ct::now();
    let state = ct_next_state(CT_ST_NEW, ip.proto, ports.tcp_flags);
    // The target's replies: back to the client, from the address and port it used.
    s.in_key = CtKey6 {
        saddr: target.addr,
        daddr: *peer,
        sport: target.port,
        dport: ports.src,
        proto: ip.proto,
        dir: CT_DIR_OUT,
        _pad: [0; 2],
    };
    s.back = CtEntry6 {
        xlate_addr: ip.daddr,
        owner_addr: ip.saddr,
        xlate_port: ports.dst,
        action: CT_ACT_SNAT | CT_ACT_REDIRECT | extra,
        state: CT_ST_NEW,
        ifindex: Packet::ifindex(ctx),
        smac: ip.eth_dst,
        dmac: ip.eth_src,
        kind: CT_KIND_PUBLISHED,
        _pad: [0; 3],
        last_seen_ns: now,
    };
    // The client's packets: to the target.
    s.out_key = ct6::key(ip, ports, CT_DIR_OUT);
    s.out = CtEntry6 {
        xlate_addr: target.addr,
        owner_addr: target.addr,
        xlate_port: target.port,
        action: CT_ACT_DNAT | CT_ACT_REDIRECT | extra,
        state,
        ifindex: target.ifindex,
        smac: target.gw_mac,
        dmac: target.mac,
        kind: CT_KIND_PUBLISHED,
        _pad: [0; 3],
        last_seen_ns: now,
    };
    ct::insert_or_drop(&s.in_key, &s.back)?;
    if ct::insert(&s.out_key, &s.out, 0).is_err() {
        ct::remove(&s.in_key);
        return Err(DROP_CT_FAILED);
    }
    Ok(&s.out)
}

/// A packet `nd_from_container` hands over with `GO_HAIRPIN`, in a BPF function of its own:
/// the first one of a flow to a host address (the route lookup says local), or one of a
/// tracked flow to the container's own published port. The packet is parsed and looked up
/// again (only the context crosses into this BPF function).
#[inline(always)]
pub fn from_container(ctx: &TcContext) -> Result<i32, u32> {
    let Some(ip) = ipv6(ctx) else {
        return Ok(TC_ACT_OK);
    };
    let gateway = net6_of(&ip.saddr).map(|net| net.gateway);
    let (Some(ports), Some(gateway)) = (ports_of(ctx, &ip), gateway) else {
        return Ok(TC_ACT_OK);
    };
    // `ct::apply` hands a packet without a hop left to the kernel: untranslated, not half.
    if !nat::has_hop_left(&ip) {
        return Ok(TC_ACT_OK);
    }
    let entry = if let Some(entry) = ct::find(&ct6::key(&ip, ports, CT_DIR_OUT)) {
        entry
    } else if let Some(target) = opening(&ip, ports) {
        // The target sees the client's address, or its gateway when the client is the
        // target.
        let (peer, extra) = if same_addr(&target.addr, &ip.saddr) {
            (&gateway, CT_ACT_SELF_HAIRPIN)
        } else {
            (&ip.saddr, 0)
        };
        track(ctx, &ip, ports, &target, peer, extra)?
    } else {
        // Not a connection to a published port: the host's business.
        return Ok(TC_ACT_OK);
    };
    if entry.action & CT_ACT_SELF_HAIRPIN != 0 {
        // Both directions' packets come from the container's own address: its packets come
        // from its gateway, its replies go back to itself.
        let (end, addr, port) = if entry.action & CT_ACT_DNAT != 0 {
            (End::Src, gateway, ports.src)
        } else {
            (End::Dst, entry.owner_addr, ports.dst)
        };
        nat::rewrite(ctx, &ip, ports, end, addr, port)?;
    }
    ct::apply(ctx, &ip, ports, entry, Hop::Egress)
}
