//! Looking up published ports: shared by the tc programs and the socket hooks.

use netdriver_common::{PortKey, PortTarget};

use crate::maps::ND_PORTS;

/// The target of `port`/`proto` published on `addr_be` exactly, or on every address when
/// `wildcard` says the wildcard entries apply to this address.
#[inline(always)]
pub fn lookup(addr_be: u32, port: u16, proto: u8, wildcard: bool) -> Option<PortTarget> {
    let mut key = PortKey {
        host_addr_be: addr_be,
        host_port: port,
        proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once, before any map update.
    if let Some(target) = unsafe { ND_PORTS.get(key) } {
        return Some(*target);
    }
    if !wildcard {
        return None;
    }
    key.host_addr_be = 0;
    // SAFETY: as above.
    unsafe { ND_PORTS.get(key) }.copied()
}
