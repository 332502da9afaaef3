//! Looking up IPv6 published ports: single ports (`ND_PORTS6`) on the exact host address,
//! then on the wildcard `[0; 16]`, then ranges (`ND_PORT_RANGES6`) the same way.

use aya_ebpf::{
    btf_maps::{PerCpuArray, lpm_trie::Key},
    macros::btf_map,
};
use netdriver_common::{PORT_RANGE6_PREFIX_BASE, PortKey6, PortRangeKey6, PortTarget6};

use crate::maps::{ND_PORT_RANGES6, ND_PORTS6};

/// The target of `port`/`proto` published on `addr`, or on every IPv6 host address when
/// `wildcard` says the wildcard entries apply to this address.
#[inline(always)]
pub fn lookup(addr: &[u8; 16], port: u16, proto: u8, wildcard: bool) -> Option<PortTarget6> {
    if let Some(target) = single(*addr, port, proto) {
        return Some(target);
    }
    if wildcard && let Some(target) = single([0; 16], port, proto) {
        return Some(target);
    }
    range(addr, port, proto, wildcard)
}

/// [`lookup`] for the socket hooks, which run in process context and may be preempted or
/// interrupted on their CPU: the range key is on their stack, not in the per-CPU slot.
#[inline(always)]
pub fn lookup_from_socket(
    addr: &[u8; 16],
    port: u16,
    proto: u8,
    wildcard: bool,
) -> Option<PortTarget6> {
    if let Some(target) = single(*addr, port, proto) {
        return Some(target);
    }
    if wildcard && let Some(target) = single([0; 16], port, proto) {
        return Some(target);
    }
    if let Some(target) = range_on_stack(*addr, port, proto) {
        return Some(target);
    }
    if wildcard {
        return range_on_stack([0; 16], port, proto);
    }
    None
}

#[inline(always)]
fn range_on_stack(addr: [u8; 16], port: u16, proto: u8) -> Option<PortTarget6> {
    let key = Key::new(
        PORT_RANGE6_PREFIX_BASE + 16,
        PortRangeKey6 {
            proto,
            host_addr: addr,
            port_be: port.to_be_bytes(),
            _pad: 0,
        },
    );
    let hit = ND_PORT_RANGES6.get(&key)?;
    let mut target = hit.target;
    target.port = target.port.wrapping_add(port.wrapping_sub(hit.host_start));
    Some(target)
}

/// The range holding `port` on `addr`, else (`wildcard`) on every address, for the tc
/// programs (softirq: they do not nest on a CPU). The trie key is built in a per-CPU slot,
/// not on the stack: inlined into the masquerade and hairpin paths,
/// 24 more bytes of frame exceeded the verifier's 512-byte combined stack. A BPF function of
/// its own for the same reason (the target it copies out).
#[inline(never)]
fn range(addr: &[u8; 16], port: u16, proto: u8, wildcard: bool) -> Option<PortTarget6> {
    let slot = ND_RANGE_KEY6.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, used by this program run only (tc programs do not nest on a
    // CPU), and only for the lookups below.
    let key = unsafe { &mut *slot };
    key.prefix_len = PORT_RANGE6_PREFIX_BASE + 16;
    key.data.proto = proto;
    key.data.host_addr = *addr;
    key.data.port_be = port.to_be_bytes();
    key.data._pad = 0;
    let mut hit = ND_PORT_RANGES6.get(key);
    if hit.is_none() && wildcard {
        key.data.host_addr = [0; 16];
        hit = ND_PORT_RANGES6.get(key);
    }
    let hit = hit?;
    let mut target = hit.target;
    target.port = target.port.wrapping_add(port.wrapping_sub(hit.host_start));
    Some(target)
}

/// The per-CPU room for [`range`]'s key.
#[btf_map]
static ND_RANGE_KEY6: PerCpuArray<Key<PortRangeKey6>, 1> = PerCpuArray::new();

#[inline(always)]
fn single(addr: [u8; 16], port: u16, proto: u8) -> Option<PortTarget6> {
    let key = PortKey6 {
        host_addr: addr,
        host_port: port,
        proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once, before any map update.
    unsafe { ND_PORTS6.get(key) }.copied()
}

/// Whether `port`/`proto` is published on `addr` or on every IPv6 host address. A BPF
/// function of its own: masquerade calls it in its unrolled port search, and inlined, each
/// call would take its own 20-byte key on the caller's stack.
#[inline(never)]
pub fn is_published(addr: &[u8; 16], port: u16, proto: u8) -> bool {
    lookup(addr, port, proto, true).is_some()
}
