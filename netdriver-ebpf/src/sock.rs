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

mod v4;
mod v6;

use aya_ebpf::{
    EbpfContext,
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    programs::SockAddrContext,
};
pub use v4::V4;
pub use v6::V6;

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
