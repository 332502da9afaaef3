//! Entry points of netdriver's tc, XDP and cgroup socket programs. Each turns an error into
//! the single drop path.
#![no_std]
#![no_main]
#![expect(
    clippy::inline_always,
    reason = "everything is inlined into the entry points: no BPF-to-BPF calls for the \
              verifier to follow with packet pointers and map values"
)]

mod container;
mod ct;
mod egress;
mod group;
mod hairpin;
mod icmp_err;
mod ip6;
mod maps;
mod nat;
mod parse;
mod pkt;
mod policy;
mod published;
mod sctp;
mod sock;
mod uplink;

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_OK},
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};

/// tc ingress of an uplink (IPv4 and IPv6): DNAT of published ports and replies of tracked outbound flows
/// towards containers.
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[classifier] passes the context by value"
)]
pub fn nd_from_uplink(ctx: TcContext) -> i32 {
    if ip6::parse::is_ipv6(&ctx) {
        let verdict = uplink6(ctx.skb.skb);
        if verdict == ip6::GO_ICMP_ERROR {
            return icmp_error6(ctx.skb.skb);
        }
        return verdict;
    }
    uplink4(ctx.skb.skb)
}

// The two families run in separate BPF functions: inlined into one, their stack frames
// would add up past the 512-byte limit. Only the context pointer crosses the call.

#[inline(never)]
fn uplink4(skb: *mut __sk_buff) -> i32 {
    uplink::from_uplink(&TcContext::new(skb)).unwrap_or_else(maps::drop_packet)
}

#[inline(never)]
fn uplink6(skb: *mut __sk_buff) -> i32 {
    let ctx = TcContext::new(skb);
    match ip6::parse::ipv6(&ctx) {
        Some(ip) => ip6::uplink::from_uplink(&ctx, &ip).unwrap_or_else(maps::drop_packet),
        None => TC_ACT_OK,
    }
}

#[inline(never)]
fn icmp_error6(skb: *mut __sk_buff) -> i32 {
    ip6::icmp_err::from_uplink(&TcContext::new(skb)).unwrap_or_else(maps::drop_packet)
}

#[inline(never)]
fn container4(skb: *mut __sk_buff) -> i32 {
    container::from_container(&TcContext::new(skb)).unwrap_or_else(maps::drop_packet)
}

#[inline(never)]
fn container6(skb: *mut __sk_buff) -> i32 {
    let ctx = TcContext::new(skb);
    match ip6::parse::ipv6(&ctx) {
        Some(ip) => ip6::container::from_container(&ctx, &ip).unwrap_or_else(maps::drop_packet),
        None => TC_ACT_OK,
    }
}

#[inline(never)]
fn outbound6(skb: *mut __sk_buff) -> i32 {
    ip6::egress::outbound(&TcContext::new(skb)).unwrap_or_else(maps::drop_packet)
}

#[inline(never)]
fn hairpin6(skb: *mut __sk_buff) -> i32 {
    ip6::hairpin::from_container(&TcContext::new(skb)).unwrap_or_else(maps::drop_packet)
}

/// XDP on an uplink (`--uplink-mode xdp`): the same code as `nd_from_uplink`, run before the
/// kernel builds a socket buffer, for IPv4 only. What it passes on (IPv6 and other non-IPv4, TTL expiring, not for a
/// container) meets `nd_from_uplink` on tc ingress next, which passes it to the kernel.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[xdp] passes the context by value"
)]
pub fn nd_xdp_uplink(ctx: XdpContext) -> u32 {
    match uplink::from_uplink(&ctx) {
        Ok(verdict) => verdict.cast_unsigned(),
        Err(reason) => maps::drop_frame(reason),
    }
}

/// tc ingress of a container's host-side veth: tracked flows, policy (ICC, links, isolation,
/// internal networks) and the way out (masquerade or forwarding).
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[classifier] passes the context by value"
)]
pub fn nd_from_container(ctx: TcContext) -> i32 {
    if ip6::parse::is_ipv6(&ctx) {
        let mut verdict = container6(ctx.skb.skb);
        if verdict == ip6::GO_OUTBOUND {
            verdict = outbound6(ctx.skb.skb);
        }
        if verdict == ip6::GO_HAIRPIN {
            return hairpin6(ctx.skb.skb);
        }
        return verdict;
    }
    container4(ctx.skb.skb)
}

/// cgroup connect4: a host process connecting to a published port goes to the container.
#[cgroup_sock_addr(connect4)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[cgroup_sock_addr] passes the context by value"
)]
pub fn nd_sock_connect4(ctx: SockAddrContext) -> i32 {
    sock::connect::<sock::V4>(&ctx)
}

/// cgroup sendmsg4: the same for unconnected UDP datagrams (IPv4-mapped ones too).
#[cgroup_sock_addr(sendmsg4)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[cgroup_sock_addr] passes the context by value"
)]
pub fn nd_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::sendmsg::<sock::V4>(&ctx)
}

/// cgroup recvmsg4: replies appear to come from the address the client used.
#[cgroup_sock_addr(recvmsg4)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[cgroup_sock_addr] passes the context by value"
)]
pub fn nd_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::recvmsg::<sock::V4>(&ctx)
}

/// cgroup getpeername4: the peer is the address the client connected to.
#[cgroup_sock_addr(getpeername4)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[cgroup_sock_addr] passes the context by value"
)]
pub fn nd_sock_getpeername4(ctx: SockAddrContext) -> i32 {
    sock::getpeername::<sock::V4>(&ctx)
}

/// cgroup bind4: host processes cannot bind a published host address and port.
#[cgroup_sock_addr(bind4)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[cgroup_sock_addr] passes the context by value"
)]
pub fn nd_sock_bind4(ctx: SockAddrContext) -> i32 {
    sock::bind::<sock::V4>(&ctx)
}

/// cgroup connect6: `connect4` for IPv6 sockets, IPv4-mapped addresses included.
#[cgroup_sock_addr(connect6)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[cgroup_sock_addr] passes the context by value"
)]
pub fn nd_sock_connect6(ctx: SockAddrContext) -> i32 {
    sock::connect::<sock::V6>(&ctx)
}

/// cgroup sendmsg6: `sendmsg4` for IPv6 datagrams.
#[cgroup_sock_addr(sendmsg6)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[cgroup_sock_addr] passes the context by value"
)]
pub fn nd_sock_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock::sendmsg::<sock::V6>(&ctx)
}

/// cgroup recvmsg6: `recvmsg4` for IPv6 sockets, IPv4-mapped addresses included.
#[cgroup_sock_addr(recvmsg6)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[cgroup_sock_addr] passes the context by value"
)]
pub fn nd_sock_recvmsg6(ctx: SockAddrContext) -> i32 {
    sock::recvmsg::<sock::V6>(&ctx)
}

/// cgroup getpeername6: `getpeername4` for IPv6 sockets.
#[cgroup_sock_addr(getpeername6)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[cgroup_sock_addr] passes the context by value"
)]
pub fn nd_sock_getpeername6(ctx: SockAddrContext) -> i32 {
    sock::getpeername::<sock::V6>(&ctx)
}

/// cgroup bind6: `bind4` for IPv6 sockets; `[::]` also conflicts with IPv4 ports.
#[cgroup_sock_addr(bind6)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[cgroup_sock_addr] passes the context by value"
)]
pub fn nd_sock_bind6(ctx: SockAddrContext) -> i32 {
    sock::bind::<sock::V6>(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects programs that could reach this; it only satisfies `no_std`.
    loop {}
}

/// The kernel needs a GPL-compatible license string for some helpers; the daemon side keeps
/// the workspace license.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
