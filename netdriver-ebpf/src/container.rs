//! `nd_from_container`: multicast and broadcast by the ICC rule of the veth's network (see
//! `group`); tracked flows (published-port replies, masqueraded and forwarded flows, link
//! replies) by their `ND_CT` entry; hairpin traffic (see `hairpin`); new flows through the
//! policy.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netdriver_common::CT_DIR_OUT;

use crate::{ct, group, hairpin, nat::Hop, parse, policy};

#[inline(always)]
pub fn from_container(ctx: &TcContext) -> Result<i32, u32> {
    let Some(ip) = parse::ipv4(ctx) else {
        return Ok(TC_ACT_OK);
    };
    if group::is_group4(&ip) {
        return policy::group(ctx, &ip);
    }
    let ports = parse::ports(ctx, &ip);
    if let Some(ports) = ports {
        if let Some(entry) = ct::lookup(&ct::key(&ip, ports, CT_DIR_OUT), ports.tcp_flags) {
            return ct::apply(ctx, &ip, ports, &entry, Hop::Egress);
        }
        if let Some(verdict) = hairpin::from_container(ctx, &ip, ports)? {
            return Ok(verdict);
        }
    }
    policy::new_flow(ctx, &ip, ports)
}
