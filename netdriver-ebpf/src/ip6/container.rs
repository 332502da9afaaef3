//! `nd_from_container` for IPv6: link machinery passes, multicast and link-local unicast by
//! the ICC rule of the veth's network, tracked flows by their `ND_CT6` entry (a container's flows
//! to its own published port in a BPF function of their own), new flows through the policy.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netdriver_common::{CT_ACT_SELF_HAIRPIN, CT_DIR_OUT};

use super::{
    ct as ct6,
    parse::{self, Ipv6},
    policy,
};
use crate::{ct, group, nat::Hop};

#[inline(always)]
pub fn from_container(ctx: &TcContext, ip: &Ipv6) -> Result<i32, u32> {
    // NDP, RS/RA and MLD reach every neighbour.
    if parse::is_link_control(ctx, ip) {
        return Ok(TC_ACT_OK);
    }
    // Other multicast never leaves the bridge's link: by the ICC rule of the veth's network.
    if group::is_group(&ip.eth_dst) || parse::is_multicast(&ip.daddr) {
        return group::from_container(ctx);
    }
    // Link-local traffic is not routed or translated either, but ICC still applies to it.
    if parse::is_link_local(&ip.saddr) || parse::is_link_local(&ip.daddr) {
        return policy::link_local(ctx, ip);
    }
    let ports = parse::ports(ctx, ip);
    if let Some(ports) = ports
        && let Some(entry) = ct::lookup(&ct6::key(ip, ports, CT_DIR_OUT), ports.tcp_flags)
    {
        if entry.action & CT_ACT_SELF_HAIRPIN != 0 {
            return Ok(super::GO_HAIRPIN);
        }
        return ct::apply(ctx, ip, ports, &entry, Hop::Egress);
    }
    policy::new_flow(ctx, ip, ports)
}
