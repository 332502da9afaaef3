//! IPv6 hairpin: a container reaching a published port through one of the host's IPv6
//! addresses (found as a destination the route lookup calls local), on its own network or
//! another one, with no detour through the host's stack.
//!
//! The flow is two `ND_CT6` entries of kind `CT_KIND_PUBLISHED`, both seen on container
//! veths: the client's packets are translated to the target and redirected to its veth; the
//! target's replies (to the client's own address, which is kept) are translated back to the
//! host address and port and redirected to the client's veth. A container reaching its own
//! published port this way is not handled (its own address would be a martian there): the
//! packet goes to the host's stack.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netdriver_common::{
    CT_ACT_DNAT, CT_ACT_REDIRECT, CT_ACT_SNAT, CT_DIR_OUT, CT_KIND_PUBLISHED, CT_ST_NEW, CtEntry6,
    CtKey6, DROP_CT_FAILED, PROTO_TCP, TCP_ACK, TCP_SYN, ct_next_state,
};

use super::{
    ct as ct6,
    egress::ND_SCRATCH6,
    nat,
    parse::{Ipv6, same_addr},
    published,
};
use crate::{ct, nat::Hop, parse::Ports, pkt::Packet};

/// A new flow from a container to a local (host) address: hairpin if the destination is a
/// published port, the host's business otherwise.
#[inline(always)]
pub fn from_container(ctx: &TcContext, ip: &Ipv6, ports: Ports) -> Result<i32, u32> {
    let Some(target) = published::lookup(&ip.daddr, ports.dst, ip.proto, true) else {
        return Ok(TC_ACT_OK);
    };
    // Only a connection attempt starts a hairpin flow: a TCP segment that is not one is
    // typically the reply to a host connection whose ephemeral port is also published.
    let opens = ip.proto != PROTO_TCP || ports.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if !opens || same_addr(&target.addr, &ip.saddr) || !nat::has_hop_left(ip) {
        return Ok(TC_ACT_OK);
    }
    let scratch = ND_SCRATCH6.get_ptr_mut(0).ok_or(DROP_CT_FAILED)?;
    // SAFETY: this CPU's slot, used by this program run only.
    let s = unsafe { &mut *scratch };
    let now = ct::now();
    let state = ct_next_state(CT_ST_NEW, ip.proto, ports.tcp_flags);
    // The target's replies: back to the client, from the address and port it used.
    s.in_key = CtKey6 {
        saddr: target.addr,
        daddr: ip.saddr,
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
        action: CT_ACT_SNAT | CT_ACT_REDIRECT,
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
        action: CT_ACT_DNAT | CT_ACT_REDIRECT,
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
    ct::apply(ctx, ip, ports, &s.out, Hop::Egress)
}
