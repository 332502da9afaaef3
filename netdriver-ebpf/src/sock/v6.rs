//! The IPv6 hooks' side of [`Family`]: `user_ip6`, `ND_PORTS6`, `ND_HOST_ADDRS6`,
//! `ND_SOCK_RNAT6`; IPv4-mapped addresses are handed to [`V4`].

use aya_ebpf::bindings::bpf_sock_addr;
use netdriver_common::{BIND_FAMILY_V4, BIND_FAMILY_V6, SockRnatKey6, SockRnatValue6};

use super::{Family, SockAddr, V4};
use crate::{
    ip6,
    maps::{ND_SOCK_RNAT6, is_host_addr6, published_on_any},
};

/// IPv6 (`user_ip6`, four network-order words), IPv4-mapped addresses included.
pub struct V6;

/// The third word of an IPv4-mapped address (`::ffff:0:0/96`).
const MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
/// The last word of `::1`.
const LOOPBACK_WORD: u32 = u32::from_ne_bytes([0, 0, 0, 1]);

/// The IPv4 address an IPv4-mapped address maps.
#[inline(always)]
fn unmapped(addr: [u32; 4]) -> Option<u32> {
    (addr[0] == 0 && addr[1] == 0 && addr[2] == MAPPED_WORD).then_some(addr[3])
}

#[inline(always)]
fn mapped(addr_be: u32) -> [u32; 4] {
    [0, 0, MAPPED_WORD, addr_be]
}

#[inline(always)]
fn bytes(addr: [u32; 4]) -> [u8; 16] {
    let [a, b, c, d] = addr.map(u32::to_ne_bytes);
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

#[inline(always)]
fn words(b: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// The IPv4 view of a mapped socket address.
#[inline(always)]
fn as_v4(sa: &SockAddr<[u32; 4]>, addr_be: u32) -> SockAddr<u32> {
    SockAddr {
        addr: addr_be,
        port: sa.port,
        proto: sa.proto,
    }
}

#[inline(always)]
fn mapped_target(target: Option<(u32, u16)>) -> Option<([u32; 4], u16)> {
    target.map(|(addr, port)| (mapped(addr), port))
}

impl Family for V6 {
    type Addr = [u32; 4];

    #[inline(always)]
    unsafe fn read_addr(sa: *const bpf_sock_addr) -> [u32; 4] {
        // SAFETY: the caller's promise; word by word, as the verifier wants it.
        unsafe {
            [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ]
        }
    }

    #[inline(always)]
    unsafe fn write_addr(sa: *mut bpf_sock_addr, addr: [u32; 4]) {
        // SAFETY: the caller's promise; word by word, as the verifier wants it.
        unsafe {
            (*sa).user_ip6[0] = addr[0];
            (*sa).user_ip6[1] = addr[1];
            (*sa).user_ip6[2] = addr[2];
            (*sa).user_ip6[3] = addr[3];
        }
    }

    #[inline(always)]
    fn target(dst: &SockAddr<[u32; 4]>) -> Option<([u32; 4], u16)> {
        if let Some(v4) = unmapped(dst.addr) {
            return mapped_target(V4::target(&as_v4(dst, v4)));
        }
        let addr = bytes(dst.addr);
        let loopback = dst.addr == [0, 0, 0, LOOPBACK_WORD];
        let wildcard = loopback || is_host_addr6(addr);
        ip6::published::lookup(&addr, dst.port, dst.proto, wildcard)
            .map(|t| (words(t.addr), t.port))
    }

    #[inline(always)]
    fn bind_taken(at: &SockAddr<[u32; 4]>) -> bool {
        if let Some(v4) = unmapped(at.addr) {
            return V4::bind_taken(&as_v4(at, v4));
        }
        if at.addr == [0; 4] {
            // `[::]` is dual-stack unless IPV6_V6ONLY, which the hook cannot see: a port
            // published on IPv4 counts too.
            return published_on_any(at.port, at.proto, BIND_FAMILY_V6)
                || published_on_any(at.port, at.proto, BIND_FAMILY_V4);
        }
        ip6::published::lookup(&bytes(at.addr), at.port, at.proto, true).is_some()
    }

    #[inline(always)]
    fn remember(cookie: u64, dst: &SockAddr<[u32; 4]>, target: ([u32; 4], u16)) {
        if let (Some(v4), Some(t4)) = (unmapped(dst.addr), unmapped(target.0)) {
            V4::remember(cookie, &as_v4(dst, v4), (t4, target.1));
            return;
        }
        let key = SockRnatKey6 {
            cookie,
            addr: bytes(target.0),
            port: target.1,
            proto: dst.proto,
            _pad: [0; 5],
        };
        let value = SockRnatValue6 {
            addr: bytes(dst.addr),
            port: dst.port,
            _pad: 0,
        };
        // SAFETY: compared at once, before any map update.
        if unsafe { ND_SOCK_RNAT6.get(key) }.is_some_and(|old| *old == value) {
            return;
        }
        // A full LRU evicts the oldest entry; a failure only loses the reverse view.
        let _ = ND_SOCK_RNAT6.insert(key, value, 0);
    }

    #[inline(always)]
    fn recall(cookie: u64, peer: &SockAddr<[u32; 4]>) -> Option<([u32; 4], u16)> {
        if let Some(v4) = unmapped(peer.addr) {
            return mapped_target(V4::recall(cookie, &as_v4(peer, v4)));
        }
        let key = SockRnatKey6 {
            cookie,
            addr: bytes(peer.addr),
            port: peer.port,
            proto: peer.proto,
            _pad: [0; 5],
        };
        // SAFETY: copied out at once.
        unsafe { ND_SOCK_RNAT6.get(key) }.map(|orig| (words(orig.addr), orig.port))
    }
}
