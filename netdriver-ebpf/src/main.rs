//! Entry points of netdriver's tc and XDP programs. Each turns an error into the single drop
//! path.
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
mod icmp_err;
mod maps;
mod nat;
mod parse;
mod pkt;
mod policy;
mod uplink;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// tc ingress of an uplink: DNAT of published ports and replies of tracked outbound flows
/// towards containers.
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[classifier] passes the context by value"
)]
pub fn nd_from_uplink(ctx: TcContext) -> i32 {
    uplink::from_uplink(&ctx).unwrap_or_else(maps::drop_packet)
}

/// XDP on an uplink (`--uplink-mode xdp`): the same code as `nd_from_uplink`, run before the
/// kernel builds a socket buffer. What it passes on (not IPv4, TTL expiring, not for a
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
    container::from_container(&ctx).unwrap_or_else(maps::drop_packet)
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
