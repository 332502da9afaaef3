//! Connection tracking: looking flows up, refreshing them, and applying their entry.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use netdriver_common::{
    CT_ACT_DNAT, CT_ACT_REDIRECT, CT_ACT_REDIRECT_NEIGH, CT_ACT_SNAT, CT_REFRESH_NS, CtEntry,
    CtKey, DROP_CT_FAILED, ct_next_state,
};

use crate::{
    maps::ND_CT,
    nat::{self, End, Hop},
    parse::{Ipv4, Ports},
    pkt::Packet,
};

/// The key of `ip`/`ports` as seen at the hook `dir` (`CT_DIR_*`).
#[inline(always)]
pub fn key(ip: &Ipv4, ports: Ports, dir: u8) -> CtKey {
    CtKey {
        saddr_be: ip.saddr_be,
        daddr_be: ip.daddr_be,
        sport: ports.src,
        dport: ports.dst,
        proto: ip.proto,
        dir,
        _pad: [0; 2],
    }
}

/// Now, in the clock of `CtEntry::last_seen_ns`.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// Looks `key` up and, on a hit, records the packet (time, TCP state); returns a copy.
#[inline(always)]
pub fn lookup(key: &CtKey, tcp_flags: u8) -> Option<CtEntry> {
    let entry = ND_CT.get_ptr_mut(key)?;
    // SAFETY: the entry stays valid for this program run (hash elements are freed after an
    // RCU grace period); concurrent writers store the same kind of values.
    unsafe {
        let state = ct_next_state((*entry).state, key.proto, tcp_flags);
        touch(&mut *entry, state);
        Some(*entry)
    }
}

/// Records a packet of `entry`'s flow that leaves it in `state`. Writes only when the state
/// changes or the stored time is `CT_REFRESH_NS` old: the entry's cache line is shared by
/// both directions' CPUs, and a write per packet makes it bounce between them.
#[inline(always)]
pub fn touch(entry: &mut CtEntry, state: u8) {
    let now = now();
    if state != entry.state || now.wrapping_sub(entry.last_seen_ns) > CT_REFRESH_NS {
        entry.state = state;
        entry.last_seen_ns = now;
    }
}

/// Stores `entry` under `key` (`flags`: `BPF_ANY`/`BPF_NOEXIST`); a full table refuses it.
#[inline(always)]
pub fn insert(key: &CtKey, entry: &CtEntry, flags: u64) -> Result<(), i32> {
    ND_CT.insert(key, entry, flags)
}

/// Like [`insert`], any error counted as a full table.
#[inline(always)]
pub fn insert_or_drop(key: &CtKey, entry: &CtEntry) -> Result<(), u32> {
    insert(key, entry, 0).map_err(|_| DROP_CT_FAILED)
}

/// A copy of the entry under `key`, without recording a packet.
#[inline(always)]
pub fn peek(key: &CtKey) -> Option<CtEntry> {
    // SAFETY: copied out at once.
    unsafe { ND_CT.get(key) }.copied()
}

#[inline(always)]
pub fn remove(key: &CtKey) {
    let _ = ND_CT.remove(key);
}

/// Applies an entry's actions to the packet: translation, then the redirect (or the kernel).
/// A redirect is a router hop: the TTL is decremented, and a packet without a hop left goes
/// to the kernel untranslated. `hop` is how a `CT_ACT_REDIRECT` reaches its interface.
#[inline(always)]
pub fn apply<P: Packet>(
    ctx: &P,
    ip: &Ipv4,
    ports: Ports,
    entry: &CtEntry,
    hop: Hop,
) -> Result<i32, u32> {
    let redirects = entry.action & (CT_ACT_REDIRECT | CT_ACT_REDIRECT_NEIGH) != 0;
    if redirects {
        if !nat::has_hop_left(ip) {
            return Ok(P::PASS);
        }
        nat::decrement_ttl(ctx, ip)?;
    }
    if entry.action & CT_ACT_SNAT != 0 {
        nat::rewrite(
            ctx,
            ip,
            ports,
            End::Src,
            entry.xlate_addr_be,
            entry.xlate_port,
        )?;
    }
    if entry.action & CT_ACT_DNAT != 0 {
        nat::rewrite(
            ctx,
            ip,
            ports,
            End::Dst,
            entry.xlate_addr_be,
            entry.xlate_port,
        )?;
    }
    if entry.action & CT_ACT_REDIRECT != 0 {
        nat::redirect(ctx, entry.dmac, entry.smac, entry.ifindex, hop)
    } else if entry.action & CT_ACT_REDIRECT_NEIGH != 0 {
        nat::redirect_neigh(ctx, entry.ifindex)
    } else {
        Ok(P::PASS)
    }
}
