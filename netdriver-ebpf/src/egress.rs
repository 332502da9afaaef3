//! Flows leaving the container networks: the route (`bpf_fib_lookup`), then masquerade (a
//! source port claimed in `ND_CT`) or plain forwarding, both tracked in both directions and
//! redirected past the bridge and netfilter.

use core::mem::{size_of, zeroed};

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC, BPF_NOEXIST,
        TC_ACT_OK, bpf_fib_lookup,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_get_prandom_u32},
    programs::TcContext,
};
use netdriver_common::{
    CT_ACT_DNAT, CT_ACT_REDIRECT, CT_ACT_REDIRECT_NEIGH, CT_ACT_SNAT, CT_DIR_IN, CT_DIR_OUT,
    CT_KIND_FORWARD, CT_KIND_MASQ, CT_RECLAIM_IDLE_NS, CT_ST_CLOSING, CT_ST_NEW, CT_ST_RESET,
    CtEntry, CtKey, CtTimes, DROP_CT_FAILED, DROP_NAT_EXHAUSTED, NAT_PORT_ATTEMPTS, NetInfo,
    PROTO_ICMP, PROTO_SCTP, PROTO_TCP, TCP_ACK, TCP_SYN, ct_next_state, nat_port_candidate,
};

use crate::{
    ct::{self, Flow},
    maps::{is_published, nat_port_range},
    nat::Hop,
    parse::{Ipv4, Ports},
};

const AF_INET: u8 = 2;
const EEXIST: i32 = 17;

/// Where the kernel would send a packet.
struct Route {
    ifindex: u32,
    /// The source address the route picks (what MASQUERADE would use), network order.
    src_be: u32,
}

/// A new outbound flow: masqueraded or forwarded as is.
#[inline(always)]
pub fn outbound(
    ctx: &TcContext,
    ip: &Ipv4,
    ports: Ports,
    net: &NetInfo,
    masquerade: bool,
) -> Result<i32, u32> {
    // Local destinations (host addresses) and unroutable ones are the kernel's business.
    let Some(route) = route(ctx, ip, ports) else {
        return Ok(TC_ACT_OK);
    };
    // SAFETY: `skb` is the context pointer the kernel passed in.
    let veth = unsafe { (*ctx.skb.skb).ifindex };
    let now = ct::now();
    let out_key = ct::key(ip, ports, CT_DIR_OUT);
    // The reply direction: back to the container, its L2 from the packet.
    let mut back = CtEntry {
        xlate_addr_be: ip.saddr_be,
        xlate_port: ports.src,
        action: CT_ACT_REDIRECT,
        state: CT_ST_NEW,
        ifindex: veth,
        smac: ip.eth_dst,
        dmac: ip.eth_src,
        owner_addr_be: ip.saddr_be,
        kind: CT_KIND_FORWARD,
        _pad: [0; 3],
        last_seen_ns: now,
    };
    let mut out = CtEntry {
        xlate_addr_be: ip.saddr_be,
        xlate_port: ports.src,
        action: CT_ACT_REDIRECT_NEIGH,
        state: ct_next_state(CT_ST_NEW, ip.proto, ports.tcp_flags),
        ifindex: route.ifindex,
        smac: [0; 6],
        dmac: [0; 6],
        owner_addr_be: ip.saddr_be,
        kind: CT_KIND_FORWARD,
        _pad: [0; 3],
        last_seen_ns: now,
    };
    let in_key = if masquerade {
        let snat = if net.snat_addr_be != 0 {
            net.snat_addr_be
        } else {
            route.src_be
        };
        back.action |= CT_ACT_DNAT;
        back.kind = CT_KIND_MASQ;
        out.action |= CT_ACT_SNAT;
        out.kind = CT_KIND_MASQ;
        out.xlate_addr_be = snat;
        let opens = ip.proto == PROTO_TCP && ports.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        let (key, port) = claim_port(&out_key, snat, &back, opens)?;
        out.xlate_port = port;
        key
    } else {
        let key = out_key.partner(&out).unwrap_or_default();
        ct::insert_or_drop(&key, &back)?;
        key
    };
    if ct::insert(&out_key, &out, 0).is_err() {
        ct::remove(&in_key);
        return Err(DROP_CT_FAILED);
    }
    ct::apply(ctx, ip, ports, &out, Hop::Egress)
}

/// Claims a masquerade port for the flow `out_key` on `snat`: stores the reply entry `back`
/// under the reply key of the first free candidate (`BPF_NOEXIST` makes the claim atomic).
/// Ports published on `snat` (or on every address) are never used; SCTP tries its own source
/// port first.
#[inline(always)]
fn claim_port(
    out_key: &CtKey,
    snat: u32,
    back: &CtEntry,
    opens: bool,
) -> Result<(CtKey, u16), u32> {
    let proto = out_key.proto;
    let mut key = CtKey {
        saddr_be: out_key.daddr_be,
        daddr_be: snat,
        sport: out_key.dport,
        dport: 0,
        proto,
        dir: CT_DIR_IN,
        _pad: [0; 2],
    };
    let port = claim_free_port(
        &mut key,
        // SCTP keeps its source port when it can: the CRC32C then needs no update, and the
        // association keeps the port its peer knows.
        (proto == PROTO_SCTP).then_some(out_key.sport),
        |key, port| key.dport = port,
        |port| proto != PROTO_ICMP && is_published(snat, port, proto),
        back,
        opens,
    )?;
    Ok((key, port))
}

/// The search behind masquerade of both families: stores `back` under the reply key `key`
/// with the destination port (`set_port`) of the first candidate port (`first`, if given,
/// then the NAT range) that is not `published` and free; that port (`key` keeps it). A TCP SYN
/// (`opens`) may take over the port of a reset, or closed and idle, masqueraded flow, as Linux
/// conntrack reopens a closed tuple, instead of waiting for the sweeper.
#[inline(always)]
pub fn claim_free_port<K: Flow>(
    key: &mut K,
    first: Option<u16>,
    set_port: impl Fn(&mut K, u16),
    published: impl Fn(u16) -> bool,
    back: &K::Entry,
    opens: bool,
) -> Result<u16, u32> {
    let (min, max) = nat_port_range();
    // SAFETY: plain helper call.
    let seed = unsafe { bpf_get_prandom_u32() };
    for attempt in 0..NAT_PORT_ATTEMPTS {
        let port = match first {
            Some(port) if attempt == 0 => port,
            _ => nat_port_candidate(min, max, seed, attempt),
        };
        if published(port) {
            continue;
        }
        set_port(key, port);
        match ct::insert(key, back, u64::from(BPF_NOEXIST)) {
            Ok(()) => return Ok(port),
            Err(err) if err == -EEXIST => {
                if opens && reclaim_closed(key) {
                    match ct::insert(key, back, u64::from(BPF_NOEXIST)) {
                        Ok(()) => return Ok(port),
                        Err(err) if err == -EEXIST => {}
                        Err(_) => return Err(DROP_CT_FAILED),
                    }
                }
            }
            Err(_) => return Err(DROP_CT_FAILED),
        }
    }
    Err(DROP_NAT_EXHAUSTED)
}

/// Removes the masqueraded TCP flow whose reply entry is `key` if it is over, both its
/// entries; whether it did. Over: reset (a RST seen either way; nothing more is carried), or
/// closed (a FIN seen) and idle for `CT_RECLAIM_IDLE_NS`; the idle time spares a half-closed
/// flow that still carries data (its entries are refreshed at least every `CT_REFRESH_NS`
/// while packets flow). A BPF function of its own: the port search is unrolled, and inlined,
/// each call site would take its own partner key on the stack.
#[inline(never)]
fn reclaim_closed<K: Flow>(key: &K) -> bool {
    let Some(old) = K::table().get_ptr(key) else {
        return false;
    };
    // SAFETY: valid for this program run (freed after an RCU grace period); read in place,
    // not copied, to keep the stack small inside the search loop.
    let (kind, state, seen, partner) = unsafe {
        (
            K::kind(&*old),
            (*old).state(),
            (*old).last_seen_ns(),
            key.partner(&*old),
        )
    };
    if kind != CT_KIND_MASQ {
        return false;
    }
    // The reset usually travels one way only (the client's RST), so the partner's state counts.
    let partner_state = partner
        .and_then(|p| K::table().get_ptr(p))
        // SAFETY: as above.
        .map_or(CT_ST_NEW, |e| unsafe { (*e).state() });
    let reset = state == CT_ST_RESET || partner_state == CT_ST_RESET;
    let idle = ct::now().wrapping_sub(seen);
    if !reset && (state != CT_ST_CLOSING || idle < CT_RECLAIM_IDLE_NS) {
        return false;
    }
    if let Some(partner) = partner {
        ct::remove(&partner);
    }
    ct::remove(key);
    true
}

/// The route of a forwarded packet: egress interface and preferred source address. `None`
/// for local, blackholed or unreachable destinations.
#[inline(always)]
fn route(ctx: &TcContext, ip: &Ipv4, ports: Ports) -> Option<Route> {
    // SAFETY: a plain C struct; all-zero is a valid value.
    let mut params: bpf_fib_lookup = unsafe { zeroed() };
    params.family = AF_INET;
    params.l4_protocol = ip.proto;
    params.sport = ports.src.to_be();
    params.dport = ports.dst.to_be();
    params.__bindgen_anon_3.ipv4_src = ip.saddr_be;
    params.__bindgen_anon_4.ipv4_dst = ip.daddr_be;
    // SAFETY: as above.
    params.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if !fib_lookup_src(ctx, &mut params) {
        return None;
    }
    Some(Route {
        ifindex: params.ifindex,
        // SAFETY: the kernel filled the IPv4 member (BPF_FIB_LOOKUP_SRC).
        src_be: unsafe { params.__bindgen_anon_3.ipv4_src },
    })
}

/// `bpf_fib_lookup` with the preferred source filled in and no neighbour resolution, for
/// either family; whether a route to a remote destination was found (local, blackholed and
/// unreachable destinations are not).
#[inline(always)]
pub fn fib_lookup_src(ctx: &TcContext, params: &mut bpf_fib_lookup) -> bool {
    fib_lookup_rc(ctx, params) == i64::from(BPF_FIB_LKUP_RET_SUCCESS)
}

/// [`fib_lookup_src`]'s helper call, with its `BPF_FIB_LKUP_RET_*` code.
#[inline(always)]
pub fn fib_lookup_rc(ctx: &TcContext, params: &mut bpf_fib_lookup) -> i64 {
    #[expect(clippy::cast_possible_truncation, reason = "the struct is 64 bytes")]
    #[expect(clippy::cast_possible_wrap, reason = "the struct is 64 bytes")]
    let len = size_of::<bpf_fib_lookup>() as i32;
    // SAFETY: `params` is a valid, writable `bpf_fib_lookup` of `len` bytes.
    unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            core::ptr::from_mut(params),
            len,
            BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    }
}
