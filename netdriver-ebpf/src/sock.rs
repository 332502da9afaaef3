//! cgroup `sock_addr` hooks: a host process reaches published ports (127.0.0.1, `::1`, or any
//! host address) straight at the container, with no proxy and no per-packet NAT. `connect`
//! and `sendmsg` swap the destination for the container's address and port; `recvmsg` and
//! `getpeername` swap it back, so the application sees the address it used; `bind` keeps
//! published ports for their containers.
//!
//! The IPv4 and IPv6 hooks share this code through [`Family`]. An IPv4-mapped address
//! (`::ffff:a.b.c.d`) on a dual-stack socket is treated as the IPv4 address it maps: it
//! goes to the IPv4 target (written back as a mapped address) and is remembered in the IPv4
//! translation map, where `sendmsg4` (which the kernel runs for such a socket's mapped
//! datagrams) also leaves its translations.
//!
//! Cgroups span network namespaces: every hook first checks that the socket lives in the
//! daemon's namespace, so other namespaces (containers' own 127.0.0.1 included) are never
//! touched.

use aya_ebpf::{
    EbpfContext,
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    programs::SockAddrContext,
};
use netdriver_common::{
    BIND_FAMILY_V4, BIND_FAMILY_V6, SockRnatKey, SockRnatKey6, SockRnatValue, SockRnatValue6,
};

use crate::{
    ip6,
    maps::{ND_SOCK_RNAT, ND_SOCK_RNAT6, is_host_addr, is_host_addr6, published_on_any},
    published,
};

/// The cookie of the daemon's network namespace, set by the loader (0: act nowhere).
#[unsafe(no_mangle)]
static ND_NETNS_COOKIE: u64 = 0;

/// The verdict that lets the call go on.
const ALLOW: i32 = 1;
/// The verdict that fails the call (with the errno set by `bpf_set_retval`, else EPERM).
const REFUSE: i32 = 0;
/// `EADDRINUSE`, what `bind(2)` says when a socket already holds the address.
const EADDRINUSE: i32 = 98;

/// A socket address as the hook sees it.
#[derive(Clone, Copy)]
pub struct SockAddr<A> {
    addr: A,
    /// Host order.
    port: u16,
    proto: u8,
}

/// What differs between the IPv4 and the IPv6 hooks.
pub trait Family {
    /// An address as the context holds it (network order).
    type Addr: Copy;
    /// Reads the context's address.
    ///
    /// # Safety
    /// `sa` is the context the kernel passed to a hook of this family.
    unsafe fn read_addr(sa: *const bpf_sock_addr) -> Self::Addr;
    /// Writes the context's address.
    ///
    /// # Safety
    /// As for `read_addr`.
    unsafe fn write_addr(sa: *mut bpf_sock_addr, addr: Self::Addr);
    /// Where a connection or datagram to `dst` goes instead: the container's address and
    /// port, when `dst` is a published port.
    fn target(dst: &SockAddr<Self::Addr>) -> Option<(Self::Addr, u16)>;
    /// Whether binding `at` would take a published port.
    fn bind_taken(at: &SockAddr<Self::Addr>) -> bool;
    /// Remembers that the socket `cookie` was sent to `target` instead of `dst`.
    fn remember(cookie: u64, dst: &SockAddr<Self::Addr>, target: (Self::Addr, u16));
    /// The address the application used for the container's `peer`, if it was translated.
    fn recall(cookie: u64, peer: &SockAddr<Self::Addr>) -> Option<(Self::Addr, u16)>;
}

/// `connect(2)` on TCP and UDP sockets.
#[inline(always)]
pub fn connect<F: Family>(ctx: &SockAddrContext) -> i32 {
    redirect::<F>(ctx);
    ALLOW
}

/// `sendto(2)`/`sendmsg(2)` with an address, on UDP sockets.
#[inline(always)]
pub fn sendmsg<F: Family>(ctx: &SockAddrContext) -> i32 {
    redirect::<F>(ctx);
    ALLOW
}

/// `recvfrom(2)`/`recvmsg(2)` on UDP sockets: the sender's address as the application knows it.
#[inline(always)]
pub fn recvmsg<F: Family>(ctx: &SockAddrContext) -> i32 {
    reverse::<F>(ctx);
    ALLOW
}

/// `getpeername(2)`: the peer as the application connected to it.
#[inline(always)]
pub fn getpeername<F: Family>(ctx: &SockAddrContext) -> i32 {
    reverse::<F>(ctx);
    ALLOW
}

/// `bind(2)`: a published host address and port is reserved for its container. Binding it
/// would get the process no traffic (the tc program and these hooks run before any socket
/// lookup), so it fails the way a port held by a proxy would: `EADDRINUSE`. The wildcard
/// address conflicts with a port published on any single address, as it would with the
/// proxy's socket there.
#[inline(always)]
pub fn bind<F: Family>(ctx: &SockAddrContext) -> i32 {
    if !in_our_netns(ctx) {
        return ALLOW;
    }
    let at = read::<F>(ctx);
    // Port 0 asks the kernel to pick one: the hook sees no port to check (see the README on
    // ephemeral ports).
    if at.port == 0 || !F::bind_taken(&at) {
        return ALLOW;
    }
    // SAFETY: plain helper call (Linux 5.18+), available to cgroup sock_addr programs.
    unsafe { bpf_set_retval(-EADDRINUSE) };
    REFUSE
}

#[inline(always)]
fn in_our_netns(ctx: &SockAddrContext) -> bool {
    // SAFETY: a global of this object, written only by the loader before the program runs.
    let ours = unsafe { core::ptr::read_volatile(&raw const ND_NETNS_COOKIE) };
    // SAFETY: plain helper call on the program's context.
    ours != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == ours
}

#[inline(always)]
fn cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: plain helper call on the program's context.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

#[inline(always)]
fn read<F: Family>(ctx: &SockAddrContext) -> SockAddr<F::Addr> {
    let sa = ctx.sock_addr;
    // SAFETY: the context the kernel passed in; these fields are readable in every
    // sock_addr hook. `user_port` holds the port in network order in its low 16 bits.
    #[expect(clippy::cast_possible_truncation, reason = "the port is 16 bits wide")]
    unsafe {
        SockAddr {
            addr: F::read_addr(sa),
            port: u16::from_be((*sa).user_port as u16),
            proto: (*sa).protocol as u8,
        }
    }
}

#[inline(always)]
fn write<F: Family>(ctx: &SockAddrContext, addr: F::Addr, port: u16) {
    let sa = ctx.sock_addr;
    // SAFETY: as in `read`; the address and port are writable (as whole 32-bit words) in
    // the hooks that write them.
    unsafe {
        F::write_addr(sa, addr);
        (*sa).user_port = u32::from(port.to_be());
    }
}

/// Swaps a published host address and port for the container's, and remembers the swap.
#[inline(always)]
fn redirect<F: Family>(ctx: &SockAddrContext) {
    if !in_our_netns(ctx) {
        return;
    }
    let dst = read::<F>(ctx);
    let Some(target) = F::target(&dst) else {
        return;
    };
    F::remember(cookie(ctx), &dst, target);
    write::<F>(ctx, target.0, target.1);
}

/// Shows a container address and port the hooks connected to as the host address used.
#[inline(always)]
fn reverse<F: Family>(ctx: &SockAddrContext) {
    if !in_our_netns(ctx) {
        return;
    }
    let peer = read::<F>(ctx);
    if let Some((addr, port)) = F::recall(cookie(ctx), &peer) {
        write::<F>(ctx, addr, port);
    }
}

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
