//! Looking up IPv6 published ports (`ND_PORTS6`): the exact host address, then the wildcard
//! `[0; 16]`. IPv6 port ranges are not supported (single ports only).

use netdriver_common::{PortKey6, PortTarget6};

use crate::maps::ND_PORTS6;

/// The target of `port`/`proto` published on `addr`, or on every IPv6 host address when
/// `wildcard` says the wildcard entries apply to this address.
#[inline(always)]
pub fn lookup(addr: &[u8; 16], port: u16, proto: u8, wildcard: bool) -> Option<PortTarget6> {
    if let Some(target) = single(*addr, port, proto) {
        return Some(target);
    }
    if wildcard {
        return single([0; 16], port, proto);
    }
    None
}

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
