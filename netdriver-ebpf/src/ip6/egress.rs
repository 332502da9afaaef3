//! IPv6 flows leaving the container networks: the route, then masquerade (a NAT port
//! claimed in `ND_CT6` by the shared search) or plain forwarding, tracked both ways; local
//! destinations may be hairpin traffic (`hairpin`, reached with `GO_HAIRPIN`).

use core::mem::zeroed;

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, bpf_fib_lookup,
    },
    btf_maps::PerCpuArray,
    macros::btf_map,
    programs::TcContext,
};
use netdriver_common::{
    CT_ACT_DNAT, CT_ACT_REDIRECT, CT_ACT_REDIRECT_NEIGH, CT_ACT_SNAT, CT_DIR_IN, CT_DIR_OUT,
    CT_KIND_FORWARD, CT_KIND_MASQ, CT_ST_NEW, CtEntry6, CtKey6, DROP_CT_FAILED, NET_F_MASQUERADE,
    NetInfo6, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, TCP_ACK, TCP_SYN, ct_next_state,
};

use super::{
    ct as ct6,
    nat::{fib_words, from_fib_words},
    parse::{Ipv6, ipv6, ports, same_addr},
    published,
};
use crate::{
    ct,
    egress::{claim_free_port, fib_lookup_rc},
    maps::net6_of,
    nat::Hop,
    parse::Ports,
    pkt::Packet,
};

const AF_INET6: u8 = 10;

/// Where the kernel would send a packet.
struct Route {
    ifindex: u32,
    /// The source address the route picks.
    src: [u8; 16],
}

/// A new outbound flow (the policy said `GO_OUTBOUND`): masqueraded or forwarded as is. The
/// packet is parsed again: only the context crosses into this BPF function.
#[inline(always)]
pub fn outbound(ctx: &TcContext) -> Result<i32, u32> {
    let Some(ip) = ipv6(ctx) else {
        return Ok(TC_ACT_OK);
    };
    let (Some(ports), Some(net)) = (ports(ctx, &ip), net6_of(&ip.saddr)) else {
        return Ok(TC_ACT_OK);
    };
    outbound_flow(ctx, &ip, ports, &net)
}

#[inline(always)]
fn outbound_flow(ctx: &TcContext, ip: &Ipv6, ports: Ports, net: &NetInfo6) -> Result<i32, u32> {
    let mut route = Route {
        ifindex: 0,
        src: [0; 16],
    };
    match find_route(ctx.skb.skb, ip, &ports, &mut route) {
        ROUTED => {}
        // A host address: a published port there is hairpin traffic.
        LOCAL => return Ok(super::GO_HAIRPIN),
        _ => return Ok(TC_ACT_OK),
    }
    let scratch = ND_SCRATCH6.get_ptr_mut(0).ok_or(DROP_CT_FAILED)?;
    // SAFETY: this CPU's slot, used by this program run only (tc programs do not nest on a
    // CPU).
    let s = unsafe { &mut *scratch };
    let now = ct::now();
    s.out_key = ct6::key(ip, ports, CT_DIR_OUT);
    // The reply direction: back to the container, its L2 from the packet.
    s.back = CtEntry6 {
        xlate_addr: ip.saddr,
        owner_addr: ip.saddr,
        xlate_port: ports.src,
        action: CT_ACT_REDIRECT,
        state: CT_ST_NEW,
        ifindex: Packet::ifindex(ctx),
        smac: ip.eth_dst,
        dmac: ip.eth_src,
        kind: CT_KIND_FORWARD,
        _pad: [0; 3],
        last_seen_ns: now,
    };
    s.out = CtEntry6 {
        xlate_addr: ip.saddr,
        owner_addr: ip.saddr,
        xlate_port: ports.src,
        action: CT_ACT_REDIRECT_NEIGH,
        state: ct_next_state(CT_ST_NEW, ip.proto, ports.tcp_flags),
        ifindex: route.ifindex,
        smac: [0; 6],
        dmac: [0; 6],
        kind: CT_KIND_FORWARD,
        _pad: [0; 3],
        last_seen_ns: now,
    };
    if net.flags & NET_F_MASQUERADE != 0 {
        let snat = if same_addr(&net.snat_addr, &[0; 16]) {
            route.src
        } else {
            net.snat_addr
        };
        s.back.action |= CT_ACT_DNAT;
        s.back.kind = CT_KIND_MASQ;
        s.out.action |= CT_ACT_SNAT;
        s.out.kind = CT_KIND_MASQ;
        s.out.xlate_addr = snat;
        let opens = ip.proto == PROTO_TCP && ports.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        let proto = ip.proto;
        s.in_key = CtKey6 {
            saddr: ip.daddr,
            daddr: snat,
            sport: ports.dst,
            dport: 0,
            proto,
            dir: CT_DIR_IN,
            _pad: [0; 2],
        };
        s.out.xlate_port = claim_free_port(
            &mut s.in_key,
            // SCTP keeps its source port when it can (see `crate::egress`).
            (proto == PROTO_SCTP).then_some(ports.src),
            |key, port| key.dport = port,
            |port| proto != PROTO_ICMPV6 && published::is_published(&snat, port, proto),
            &s.back,
            opens,
        )?;
    } else {
        s.in_key = s.out_key.partner(&s.out).unwrap_or_default();
        ct::insert_or_drop(&s.in_key, &s.back)?;
    }
    if ct::insert(&s.out_key, &s.out, 0).is_err() {
        ct::remove(&s.in_key);
        return Err(DROP_CT_FAILED);
    }
    ct::apply(ctx, ip, ports, &s.out, Hop::Egress)
}

/// Per-CPU room for a new flow's keys and entries: on the stack they would not fit in one
/// BPF frame next to the IPv6 addresses.
#[repr(C)]
pub struct Scratch6 {
    pub out_key: CtKey6,
    pub in_key: CtKey6,
    pub out: CtEntry6,
    pub back: CtEntry6,
}

#[btf_map]
pub static ND_SCRATCH6: PerCpuArray<Scratch6, 1> = PerCpuArray::new();

/// `find_route`'s answers: a route out, a local destination (or another one the kernel does
/// not forward: multicast, link-local), anything else (unreachable, no forwarding, ...).
const ROUTED: u8 = 0;
const LOCAL: u8 = 1;
const OTHER: u8 = 2;

/// The route of a forwarded packet: egress interface and preferred source address, into
/// `route`; `ROUTED`, `LOCAL` or `OTHER`. A BPF function of its own (the lookup's 64-byte
/// parameters off the caller's frame).
#[inline(never)]
fn find_route(skb: *mut __sk_buff, ip: &Ipv6, ports: &Ports, route: &mut Route) -> u8 {
    let ctx = TcContext::new(skb);
    // SAFETY: a plain C struct; all-zero is a valid value.
    let mut params: bpf_fib_lookup = unsafe { zeroed() };
    params.family = AF_INET6;
    params.l4_protocol = ip.proto;
    params.sport = ports.src.to_be();
    params.dport = ports.dst.to_be();
    params.__bindgen_anon_3.ipv6_src = fib_words(&ip.saddr);
    params.__bindgen_anon_4.ipv6_dst = fib_words(&ip.daddr);
    params.ifindex = Packet::ifindex(&ctx);
    let rc = fib_lookup_rc(&ctx, &mut params);
    if rc == i64::from(BPF_FIB_LKUP_RET_NOT_FWDED) {
        return LOCAL;
    }
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return OTHER;
    }
    route.ifindex = params.ifindex;
    // SAFETY: the kernel filled the IPv6 member (BPF_FIB_LOOKUP_SRC).
    route.src = from_fib_words(unsafe { params.__bindgen_anon_3.ipv6_src });
    ROUTED
}
