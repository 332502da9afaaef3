//! Looking up published ports: shared by the tc programs and the socket hooks.

use aya_ebpf::btf_maps::lpm_trie::Key;
use netdriver_common::{PORT_RANGE_PREFIX_BASE, PortKey, PortRangeKey, PortTarget};

use crate::maps::{ND_PORT_RANGES, ND_PORTS};

/// The target of `port`/`proto` published on `addr_be` exactly, or on every address when
/// `wildcard` says the wildcard entries apply to this address: single ports first, then
/// ranges.
#[inline(always)]
pub fn lookup(addr_be: u32, port: u16, proto: u8, wildcard: bool) -> Option<PortTarget> {
    if let Some(target) = single(addr_be, port, proto) {
        return Some(target);
    }
    if wildcard && let Some(target) = single(0, port, proto) {
        return Some(target);
    }
    if let Some(target) = range(addr_be, port, proto) {
        return Some(target);
    }
    if wildcard {
        return range(0, port, proto);
    }
    None
}

#[inline(always)]
fn single(addr_be: u32, port: u16, proto: u8) -> Option<PortTarget> {
    let key = PortKey {
        host_addr_be: addr_be,
        host_port: port,
        proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once, before any map update.
    unsafe { ND_PORTS.get(key) }.copied()
}

#[inline(always)]
fn range(addr_be: u32, port: u16, proto: u8) -> Option<PortTarget> {
    let key = Key::new(
        PORT_RANGE_PREFIX_BASE + 16,
        PortRangeKey {
            proto,
            host_addr: addr_be.to_ne_bytes(),
            port_be: port.to_be_bytes(),
            _pad: 0,
        },
    );
    let hit = ND_PORT_RANGES.get(&key)?;
    let mut target = hit.target;
    target.port = target.port.wrapping_add(port.wrapping_sub(hit.host_start));
    Some(target)
}
