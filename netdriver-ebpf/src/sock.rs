//! cgroup `sock_addr` hooks: a host process reaches published ports (127.0.0.1, or any host
//! address) straight at the container, with no proxy and no per-packet NAT. `connect` and
//! `sendmsg` swap the destination for the container's address and port; `recvmsg` and
//! `getpeername` swap it back, so the application sees the address it used.
//!
//! Cgroups span network namespaces: every hook first checks that the socket lives in the
//! daemon's namespace, so other namespaces (containers' own 127.0.0.1 included) are never
//! touched.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    programs::SockAddrContext,
};
use netdriver_common::{BIND_FAMILY_V4, PortTarget, SockRnatKey, SockRnatValue};

use crate::{
    maps::{ND_SOCK_RNAT, is_host_addr, published_on_any},
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

/// An IPv4 socket address as the hook sees it.
#[derive(Clone, Copy)]
struct SockAddr {
    /// Network order.
    addr_be: u32,
    /// Host order.
    port: u16,
    proto: u8,
}

/// `connect(2)` on TCP and UDP sockets.
#[inline(always)]
pub fn connect4(ctx: &SockAddrContext) -> i32 {
    redirect(ctx);
    ALLOW
}

/// `sendto(2)`/`sendmsg(2)` with an address, on UDP sockets.
#[inline(always)]
pub fn sendmsg4(ctx: &SockAddrContext) -> i32 {
    redirect(ctx);
    ALLOW
}

/// `recvfrom(2)`/`recvmsg(2)` on UDP sockets: the sender's address as the application knows it.
#[inline(always)]
pub fn recvmsg4(ctx: &SockAddrContext) -> i32 {
    reverse(ctx);
    ALLOW
}

/// `getpeername(2)`: the peer as the application connected to it.
#[inline(always)]
pub fn getpeername4(ctx: &SockAddrContext) -> i32 {
    reverse(ctx);
    ALLOW
}

/// `bind(2)`: a published host address and port is reserved for its container. Binding it
/// would get the process no traffic (the tc program and these hooks run before any socket
/// lookup), so it fails the way a port held by a proxy would: `EADDRINUSE`. The wildcard
/// address conflicts with a port published on any single address, as it would with the
/// proxy's socket there.
#[inline(always)]
pub fn bind4(ctx: &SockAddrContext) -> i32 {
    if !in_our_netns(ctx) {
        return ALLOW;
    }
    let addr = read(ctx);
    // Port 0 asks the kernel to pick one: the hook sees no port to check (see the README on
    // ephemeral ports).
    let taken = addr.port != 0
        && (published::lookup(addr.addr_be, addr.port, addr.proto, true).is_some()
            || (addr.addr_be == 0 && published_on_any(addr.port, addr.proto, BIND_FAMILY_V4)));
    if !taken {
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
fn read(ctx: &SockAddrContext) -> SockAddr {
    let sa = ctx.sock_addr;
    // SAFETY: the context the kernel passed in; these fields are readable in every
    // sock_addr hook. `user_port` holds the port in network order in its low 16 bits.
    #[expect(clippy::cast_possible_truncation, reason = "the port is 16 bits wide")]
    unsafe {
        SockAddr {
            addr_be: (*sa).user_ip4,
            port: u16::from_be((*sa).user_port as u16),
            proto: (*sa).protocol as u8,
        }
    }
}

#[inline(always)]
fn write(ctx: &SockAddrContext, addr_be: u32, port: u16) {
    let sa = ctx.sock_addr;
    // SAFETY: as in `read`; both fields are writable (as whole 32-bit words) in these hooks.
    unsafe {
        (*sa).user_ip4 = addr_be;
        (*sa).user_port = u32::from(port.to_be());
    }
}

/// 127.0.0.0/8 (the first octet is the lowest byte of a network-order address).
#[inline(always)]
fn is_loopback(addr_be: u32) -> bool {
    addr_be & 0xff == 127
}

/// Swaps a published host address and port for the container's, and remembers the swap.
#[inline(always)]
fn redirect(ctx: &SockAddrContext) {
    if !in_our_netns(ctx) {
        return;
    }
    let dst = read(ctx);
    let wildcard = is_loopback(dst.addr_be) || is_host_addr(dst.addr_be);
    let Some(target) = published::lookup(dst.addr_be, dst.port, dst.proto, wildcard) else {
        return;
    };
    remember(ctx, dst, &target);
    write(ctx, target.addr_be, target.port);
}

#[inline(always)]
fn rnat_key(ctx: &SockAddrContext, addr_be: u32, port: u16, proto: u8) -> SockRnatKey {
    SockRnatKey {
        // SAFETY: plain helper call on the program's context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        addr_be,
        port,
        proto,
        _pad: 0,
    }
}

#[inline(always)]
fn remember(ctx: &SockAddrContext, dst: SockAddr, target: &PortTarget) {
    let key = rnat_key(ctx, target.addr_be, target.port, dst.proto);
    let value = SockRnatValue {
        addr_be: dst.addr_be,
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

/// Shows a container address and port the hooks connected to as the host address used.
#[inline(always)]
fn reverse(ctx: &SockAddrContext) {
    if !in_our_netns(ctx) {
        return;
    }
    let peer = read(ctx);
    let key = rnat_key(ctx, peer.addr_be, peer.port, peer.proto);
    // SAFETY: copied out at once.
    if let Some(orig) = unsafe { ND_SOCK_RNAT.get(key) }.copied() {
        write(ctx, orig.addr_be, orig.port);
    }
}
