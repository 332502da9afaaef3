//! What a container may start over IPv6: ICC inside its network, isolation between networks,
//! internal networks; a flow that may leave is handed to `egress` (`GO_OUTBOUND`). Legacy links are IPv4 only: with ICC off, IPv6
//! between containers is refused.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netdriver_common::{
    DROP_ICC, DROP_INTERNAL, DROP_ISOLATED, DROP_SPOOFED, NET_F_ICC, NET_F_INTERNAL,
};

use super::parse::{Ipv6, same_addr};
use crate::{maps::net6_of, parse::Ports};

/// The first packet of a flow from a container (no `ND_CT6` entry matched).
#[inline(always)]
pub fn new_flow(ctx: &TcContext, ip: &Ipv6, ports: Option<Ports>) -> Result<i32, u32> {
    let Some(src) = net6_of(&ip.saddr) else {
        return Err(DROP_SPOOFED);
    };
    if let Some(dst) = net6_of(&ip.daddr) {
        // A gateway address is the host's.
        if same_addr(&ip.daddr, &dst.gateway) {
            return Ok(TC_ACT_OK);
        }
        if dst.bridge_ifindex != src.bridge_ifindex {
            return Err(DROP_ISOLATED);
        }
        if src.flags & NET_F_ICC != 0 {
            return Ok(TC_ACT_OK);
        }
        return Err(DROP_ICC);
    }
    if src.flags & NET_F_INTERNAL != 0 {
        return Err(DROP_INTERNAL);
    }
    // Only flows with ports (or echo identifiers) are tracked; the rest is the kernel's.
    let Some(ports) = ports else {
        return Ok(TC_ACT_OK);
    };
    let _ = (ctx, ports);
    Ok(super::GO_OUTBOUND)
}
