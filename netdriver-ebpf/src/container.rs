//! `nd_from_container`: replies of published-port flows back to the uplink (SNAT); hairpin
//! traffic (see `hairpin`) for packets no flow claims.

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_ktime_get_ns, programs::TcContext};
use netdriver_common::CtKey;

use crate::{
    hairpin,
    maps::ND_CT,
    nat::{self, End},
    parse,
};

#[inline(always)]
pub fn from_container(ctx: &TcContext) -> Result<i32, u32> {
    let Some(ip) = parse::ipv4(ctx) else {
        return Ok(TC_ACT_OK);
    };
    let Some(ports) = parse::ports(ctx, &ip) else {
        return Ok(TC_ACT_OK);
    };
    let key = CtKey {
        container_addr_be: ip.saddr_be,
        remote_addr_be: ip.daddr_be,
        container_port: ports.src,
        remote_port: ports.dst,
        proto: ip.proto,
        _pad: [0; 3],
    };
    let Some(entry) = ND_CT.get_ptr_mut(key) else {
        return hairpin::from_container(ctx, &ip, ports);
    };
    // SAFETY: the entry is valid until the next update of ND_CT, and this program makes
    // none; it is copied out before any helper runs.
    let entry = unsafe {
        (*entry).last_seen_ns = bpf_ktime_get_ns();
        *entry
    };
    nat::rewrite(
        ctx,
        &ip,
        ports,
        End::Src,
        entry.host_addr_be,
        entry.host_port,
    )?;
    nat::redirect(ctx, entry.peer_mac, entry.uplink_mac, entry.uplink_ifindex)
}
