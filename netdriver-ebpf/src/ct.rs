//! Connection tracking: looking flows up, refreshing them, and applying their entry.

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_ktime_get_ns, programs::TcContext};
use netdriver_common::{
    CT_ACT_DNAT, CT_ACT_REDIRECT, CT_ACT_REDIRECT_NEIGH, CT_ACT_SNAT, CtEntry, CtKey,
    DROP_CT_FAILED, ct_next_state,
};

use crate::{
    maps::ND_CT,
    nat::{self, End},
    parse::{Ipv4, Ports},
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
        (*entry).last_seen_ns = now();
        let state = ct_next_state((*entry).state, key.proto, tcp_flags);
        if state != (*entry).state {
            (*entry).state = state;
        }
        Some(*entry)
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

#[inline(always)]
pub fn remove(key: &CtKey) {
    let _ = ND_CT.remove(key);
}

/// Applies an entry's actions to the packet: translation, then the redirect (or the kernel).
/// A redirect is a router hop: the TTL is decremented, and a packet without a hop left goes
/// to the kernel untranslated.
#[inline(always)]
pub fn apply(ctx: &TcContext, ip: &Ipv4, ports: Ports, entry: &CtEntry) -> Result<i32, u32> {
    let redirects = entry.action & (CT_ACT_REDIRECT | CT_ACT_REDIRECT_NEIGH) != 0;
    if redirects {
        if !nat::has_hop_left(ip) {
            return Ok(TC_ACT_OK);
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
        nat::redirect(ctx, entry.dmac, entry.smac, entry.ifindex)
    } else if entry.action & CT_ACT_REDIRECT_NEIGH != 0 {
        nat::redirect_neigh(entry.ifindex)
    } else {
        Ok(TC_ACT_OK)
    }
}
