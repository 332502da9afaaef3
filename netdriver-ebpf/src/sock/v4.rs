//! The IPv4 hooks' side of [`Family`]: `user_ip4`, `ND_PORTS`/`ND_PORT_RANGES`,
//! `ND_HOST_ADDRS`, `ND_SOCK_RNAT`.

use aya_ebpf::bindings::bpf_sock_addr;
use netdriver_common::{BIND_FAMILY_V4, SockRnatKey, SockRnatValue};

use super::{Family, SockAddr};
use crate::{
    maps::{ND_SOCK_RNAT, is_host_addr, published_on_any},
    published,
};

/// IPv4 (`user_ip4`).
pub struct V4;

/// 127.0.0.0/8 (the first octet is the lowest byte of a network-order address).
#[inline(always)]
fn is_loopback4(addr_be: u32) -> bool {
    addr_be & 0xff == 127
}

impl Family for V4 {
    type Addr = u32;

    #[inline(always)]
    unsafe fn read_addr(sa: *const bpf_sock_addr) -> u32 {
        // SAFETY: the caller's promise.
        unsafe { (*sa).user_ip4 }
    }

    #[inline(always)]
    unsafe fn write_addr(sa: *mut bpf_sock_addr, addr: u32) {
        // SAFETY: the caller's promise.
        unsafe { (*sa).user_ip4 = addr };
    }

    #[inline(always)]
    fn target(dst: &SockAddr<u32>) -> Option<(u32, u16)> {
        let wildcard = is_loopback4(dst.addr) || is_host_addr(dst.addr);
        published::lookup(dst.addr, dst.port, dst.proto, wildcard).map(|t| (t.addr_be, t.port))
    }

    #[inline(always)]
    fn bind_taken(at: &SockAddr<u32>) -> bool {
        published::lookup(at.addr, at.port, at.proto, true).is_some()
            || (at.addr == 0 && published_on_any(at.port, at.proto, BIND_FAMILY_V4))
    }

    #[inline(always)]
    fn remember(cookie: u64, dst: &SockAddr<u32>, target: (u32, u16)) {
        let key = SockRnatKey {
            cookie,
            addr_be: target.0,
            port: target.1,
            proto: dst.proto,
            _pad: 0,
        };
        let value = SockRnatValue {
            addr_be: dst.addr,
            port: dst.port,
            _pad: 0,
        };
        // SAFETY: compared at once, before any map update.
        if unsafe { ND_SOCK_RNAT.get(key) }.is_some_and(|old| *old == value) {
            return;
        }
        // A full LRU evicts the oldest entry; a failure only loses the reverse view.
        let _ = ND_SOCK_RNAT.insert(key, value, 0);
    }

    #[inline(always)]
    fn recall(cookie: u64, peer: &SockAddr<u32>) -> Option<(u32, u16)> {
        let key = SockRnatKey {
            cookie,
            addr_be: peer.addr,
            port: peer.port,
            proto: peer.proto,
            _pad: 0,
        };
        // SAFETY: copied out at once.
        unsafe { ND_SOCK_RNAT.get(key) }.map(|orig| (orig.addr_be, orig.port))
    }
}
