//! Hairpin: a container reaching a published port through a host address (its own port, a
//! neighbour's, or one on another network), with no detour through the host's stack.
//!
//! The forward packet is translated to the target and redirected to its veth. The source is
//! kept, because the target's replies come back through `nd_from_container` on its veth,
//! where [`from_container`] translates them and redirects them to the client's veth. Only
//! when the client is the target itself is the source rewritten to the gateway (Docker
//! does the same): a packet from a container's own address would be a martian there.
//!
//! State lives in `ND_HAIRPIN` only, so this module does not depend on how `ND_CT` is laid
//! out; `nd_from_container` calls it once, for packets that no `ND_CT` entry claims, before
//! the policy (reaching published ports through the host is allowed across networks, as
//! with Docker). Like every redirect, a hairpin hop decrements the TTL.

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_ktime_get_ns, programs::TcContext};
use netdriver_common::{HairpinEntry, HairpinKey, PROTO_TCP, PortTarget, TCP_SYN};

use crate::{
    maps::{ND_HAIRPIN, is_host_addr, net_of},
    nat::{self, End},
    parse::{Ipv4, Ports},
    published,
};

/// Handles hairpin traffic in a packet from a container: the reply of a hairpin flow, or a
/// packet to a published port on a host address. `None`: not hairpin traffic.
#[inline(always)]
pub fn from_container(ctx: &TcContext, ip: &Ipv4, ports: Ports) -> Result<Option<i32>, u32> {
    if let Some(entry) = reply_entry(ip, ports) {
        return reply(ctx, ip, ports, &entry).map(Some);
    }
    if !is_host_addr(ip.daddr_be) {
        return Ok(None);
    }
    let Some(target) = published::lookup(ip.daddr_be, ports.dst, ip.proto, true) else {
        return Ok(None);
    };
    let Some(source) = source_for(ip, &target) else {
        return Ok(None);
    };
    // A TCP packet that neither opens a connection nor belongs to a known hairpin flow is
    // not one: typically the reply to a host connection whose ephemeral source port is also
    // a published port.
    let key = reply_key(ip, ports, &target, source);
    if ip.proto == PROTO_TCP
        && ports.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN
        && ND_HAIRPIN.get_ptr(key).is_none()
    {
        return Ok(None);
    }
    forward(ctx, ip, ports, &target, source, key).map(Some)
}

/// TCP's ACK flag (byte 13 of the header).
const TCP_ACK: u8 = 0x10;

/// The source the target sees: the client's own address, or its gateway when the client is
/// the target itself (its own address would be a martian there). `None`: no network known.
#[inline(always)]
fn source_for(ip: &Ipv4, target: &PortTarget) -> Option<u32> {
    if target.addr_be == ip.saddr_be {
        net_of(ip.saddr_be).map(|net| net.gateway_be)
    } else {
        Some(ip.saddr_be)
    }
}

/// The key of the replies the target sends to `source`.
#[inline(always)]
fn reply_key(ip: &Ipv4, ports: Ports, target: &PortTarget, source: u32) -> HairpinKey {
    HairpinKey {
        saddr_be: target.addr_be,
        daddr_be: source,
        sport: target.port,
        dport: ports.src,
        proto: ip.proto,
        _pad: [0; 3],
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn reply_entry(ip: &Ipv4, ports: Ports) -> Option<HairpinEntry> {
    let key = HairpinKey {
        saddr_be: ip.saddr_be,
        daddr_be: ip.daddr_be,
        sport: ports.src,
        dport: ports.dst,
        proto: ip.proto,
        _pad: [0; 3],
    };
    let entry = ND_HAIRPIN.get_ptr_mut(key)?;
    // SAFETY: valid for this program run; copied out at once.
    unsafe {
        (*entry).last_seen_ns = now();
        Some(*entry)
    }
}

/// The target's reply: from the published address, to the client as it sent.
#[inline(always)]
fn reply(ctx: &TcContext, ip: &Ipv4, ports: Ports, entry: &HairpinEntry) -> Result<i32, u32> {
    if !nat::has_hop_left(ip) {
        return Ok(TC_ACT_OK);
    }
    nat::decrement_ttl(ctx, ip)?;
    nat::rewrite(ctx, ip, ports, End::Src, entry.saddr_be, entry.sport)?;
    nat::rewrite(ctx, ip, ports, End::Dst, entry.daddr_be, entry.dport)?;
    nat::redirect(ctx, entry.dmac, entry.smac, entry.ifindex, nat::Hop::Egress)
}

/// A new (or continuing) packet of a hairpin flow: record the reply, translate, redirect.
#[inline(always)]
fn forward(
    ctx: &TcContext,
    ip: &Ipv4,
    ports: Ports,
    target: &PortTarget,
    source: u32,
    key: HairpinKey,
) -> Result<i32, u32> {
    if !nat::has_hop_left(ip) {
        return Ok(TC_ACT_OK);
    }
    remember(ctx, ip, ports, key)?;
    nat::decrement_ttl(ctx, ip)?;
    nat::rewrite(ctx, ip, ports, End::Dst, target.addr_be, target.port)?;
    if source != ip.saddr_be {
        nat::rewrite(ctx, ip, ports, End::Src, source, ports.src)?;
    }
    nat::redirect(
        ctx,
        target.mac,
        target.gw_mac,
        target.ifindex,
        nat::Hop::Egress,
    )
}

#[inline(always)]
fn remember(ctx: &TcContext, ip: &Ipv4, ports: Ports, key: HairpinKey) -> Result<(), u32> {
    let entry = HairpinEntry {
        saddr_be: ip.daddr_be,
        daddr_be: ip.saddr_be,
        sport: ports.dst,
        dport: ports.src,
        // SAFETY: `skb` is the context pointer the kernel passed in.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        dmac: ip.eth_src,
        smac: ip.eth_dst,
        _pad: 0,
        last_seen_ns: now(),
    };
    if let Some(old) = ND_HAIRPIN.get_ptr_mut(key) {
        // SAFETY: valid for this program run; racing writers store the same values.
        unsafe {
            let refreshed = HairpinEntry {
                last_seen_ns: entry.last_seen_ns,
                ..*old
            };
            if refreshed == entry {
                (*old).last_seen_ns = entry.last_seen_ns;
                return Ok(());
            }
        }
    }
    ND_HAIRPIN
        .insert(key, entry, 0)
        .map_err(|_| netdriver_common::DROP_CT_FAILED)
}
