//! Connection tracking: looking flows up, refreshing them, and applying their entry.

use aya_ebpf::{btf_maps::HashMap, helpers::bpf_ktime_get_ns};
use netdriver_common::{
    CT_ACT_DNAT, CT_ACT_REDIRECT, CT_ACT_REDIRECT_NEIGH, CT_ACT_SNAT, CT_MAX_ENTRIES,
    CT_REFRESH_NS, CtEntry, CtEntry6, CtKey, CtKey6, CtTimes, DROP_CT_FAILED, ct_next_state,
};

use crate::{
    maps::{ND_CT, ND_CT6},
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

/// A conntrack key of either family, with its table: `ND_CT` for [`CtKey`], `ND_CT6` for
/// [`CtKey6`]. The table operations below serve both.
pub trait Flow: Copy + 'static {
    type Entry: Copy + CtTimes + 'static;
    fn table() -> &'static HashMap<Self, Self::Entry, { CT_MAX_ENTRIES as usize }>;
    fn proto(&self) -> u8;
    fn partner(&self, entry: &Self::Entry) -> Option<Self>;
    fn kind(entry: &Self::Entry) -> u8;
}

impl Flow for CtKey {
    type Entry = CtEntry;
    #[inline(always)]
    fn table() -> &'static HashMap<Self, CtEntry, { CT_MAX_ENTRIES as usize }> {
        &ND_CT
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn partner(&self, entry: &CtEntry) -> Option<Self> {
        CtKey::partner(self, entry)
    }
    #[inline(always)]
    fn kind(entry: &CtEntry) -> u8 {
        entry.kind
    }
}

impl Flow for CtKey6 {
    type Entry = CtEntry6;
    #[inline(always)]
    fn table() -> &'static HashMap<Self, CtEntry6, { CT_MAX_ENTRIES as usize }> {
        &ND_CT6
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn partner(&self, entry: &CtEntry6) -> Option<Self> {
        CtKey6::partner(self, entry)
    }
    #[inline(always)]
    fn kind(entry: &CtEntry6) -> u8 {
        entry.kind
    }
}

/// Looks `key` up and, on a hit, records the packet (time, TCP state); returns a copy.
#[inline(always)]
pub fn lookup<K: Flow>(key: &K, tcp_flags: u8) -> Option<K::Entry> {
    let entry = K::table().get_ptr_mut(key)?;
    // SAFETY: the entry stays valid for this program run (hash elements are freed after an
    // RCU grace period); concurrent writers store the same kind of values.
    unsafe {
        let state = ct_next_state((*entry).state(), key.proto(), tcp_flags);
        touch(&mut *entry, state);
        Some(*entry)
    }
}

/// Records a packet of `entry`'s flow that leaves it in `state`. Writes only when the state
/// changes or the stored time is `CT_REFRESH_NS` old: the entry's cache line is shared by
/// both directions' CPUs, and a write per packet makes it bounce between them.
#[inline(always)]
pub fn touch<E: CtTimes>(entry: &mut E, state: u8) {
    let now = now();
    if state != entry.state() || now.wrapping_sub(entry.last_seen_ns()) > CT_REFRESH_NS {
        entry.set_seen(state, now);
    }
}

/// Refreshes the entry under `key` if there is one; whether there was.
#[inline(always)]
pub fn refresh<K: Flow>(key: &K) -> bool {
    let Some(old) = K::table().get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: valid for this program run; only the timestamp is written.
    unsafe { touch(&mut *old, (*old).state()) };
    true
}

/// Stores `entry` under `key` (`flags`: `BPF_ANY`/`BPF_NOEXIST`); a full table refuses it.
#[inline(always)]
pub fn insert<K: Flow>(key: &K, entry: &K::Entry, flags: u64) -> Result<(), i32> {
    K::table().insert(key, entry, flags)
}

/// Like [`insert`], any error counted as a full table.
#[inline(always)]
pub fn insert_or_drop<K: Flow>(key: &K, entry: &K::Entry) -> Result<(), u32> {
    insert(key, entry, 0).map_err(|_| DROP_CT_FAILED)
}

/// A copy of the entry under `key`, without recording a packet.
#[inline(always)]
pub fn peek<K: Flow>(key: &K) -> Option<K::Entry> {
    // SAFETY: copied out at once.
    unsafe { K::table().get(key) }.copied()
}

/// The entry under `key` where it is stored, without recording a packet: no copy on the
/// stack, for BPF functions short of it.
#[inline(always)]
pub fn find<K: Flow>(key: &K) -> Option<&'static K::Entry> {
    // SAFETY: the entry stays valid for this program run (see `lookup`).
    unsafe { K::table().get(key) }
}

#[inline(always)]
pub fn remove<K: Flow>(key: &K) {
    let _ = K::table().remove(key);
}

/// A parsed IP header of either family, as applying an entry needs it (IPv4: any hook;
/// IPv6: tc).
pub trait Header<P: Packet> {
    type Addr: Copy;
    /// Whether the packet may take one more hop.
    fn has_hop_left(&self) -> bool;
    /// Decrements the TTL or hop limit, as a router hop does.
    fn decrement_hop(&self, ctx: &P) -> Result<(), u32>;
    /// Rewrites the `end` address and port, fixing the checksums.
    fn rewrite(
        &self,
        ctx: &P,
        ports: Ports,
        end: End,
        addr: Self::Addr,
        port: u16,
    ) -> Result<(), u32>;
}

/// What a conntrack entry of either table says to do with a packet.
pub trait Action {
    type Addr: Copy;
    fn action(&self) -> u8;
    fn xlate(&self) -> (Self::Addr, u16);
    /// Redirect target: interface, destination MAC, source MAC.
    fn target(&self) -> (u32, [u8; 6], [u8; 6]);
}

impl Action for CtEntry {
    type Addr = u32;
    #[inline(always)]
    fn action(&self) -> u8 {
        self.action
    }
    #[inline(always)]
    fn xlate(&self) -> (u32, u16) {
        (self.xlate_addr_be, self.xlate_port)
    }
    #[inline(always)]
    fn target(&self) -> (u32, [u8; 6], [u8; 6]) {
        (self.ifindex, self.dmac, self.smac)
    }
}

impl Action for CtEntry6 {
    type Addr = [u8; 16];
    #[inline(always)]
    fn action(&self) -> u8 {
        self.action
    }
    #[inline(always)]
    fn xlate(&self) -> ([u8; 16], u16) {
        (self.xlate_addr, self.xlate_port)
    }
    #[inline(always)]
    fn target(&self) -> (u32, [u8; 6], [u8; 6]) {
        (self.ifindex, self.dmac, self.smac)
    }
}

impl<P: Packet> Header<P> for Ipv4 {
    type Addr = u32;
    #[inline(always)]
    fn has_hop_left(&self) -> bool {
        nat::has_hop_left(self)
    }
    #[inline(always)]
    fn decrement_hop(&self, ctx: &P) -> Result<(), u32> {
        nat::decrement_ttl(ctx, self)
    }
    #[inline(always)]
    fn rewrite(&self, ctx: &P, ports: Ports, end: End, addr: u32, port: u16) -> Result<(), u32> {
        nat::rewrite(ctx, self, ports, end, addr, port)
    }
}

/// Applies an entry's actions to the packet: translation, then the redirect (or the kernel).
/// A redirect is a router hop: the TTL (hop limit) is decremented, and a packet without a
/// hop left goes to the kernel untranslated. `hop` is how a `CT_ACT_REDIRECT` reaches its
/// interface. One implementation for both families.
#[inline(always)]
pub fn apply<P: Packet, H: Header<P>, E: Action<Addr = H::Addr>>(
    ctx: &P,
    ip: &H,
    ports: Ports,
    entry: &E,
    hop: Hop,
) -> Result<i32, u32> {
    let action = entry.action();
    if action & (CT_ACT_REDIRECT | CT_ACT_REDIRECT_NEIGH) != 0 {
        if !ip.has_hop_left() {
            return Ok(P::PASS);
        }
        ip.decrement_hop(ctx)?;
    }
    let (addr, port) = entry.xlate();
    if action & CT_ACT_SNAT != 0 {
        ip.rewrite(ctx, ports, End::Src, addr, port)?;
    }
    if action & CT_ACT_DNAT != 0 {
        ip.rewrite(ctx, ports, End::Dst, addr, port)?;
    }
    let (ifindex, dmac, smac) = entry.target();
    if action & CT_ACT_REDIRECT != 0 {
        nat::redirect(ctx, dmac, smac, ifindex, hop)
    } else if action & CT_ACT_REDIRECT_NEIGH != 0 {
        nat::redirect_neigh(ctx, ifindex)
    } else {
        Ok(P::PASS)
    }
}
