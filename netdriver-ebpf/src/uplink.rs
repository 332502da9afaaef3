//! `nd_from_uplink`: published ports to containers (DNAT), nothing else to containers.

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_ktime_get_ns, programs::TcContext};
use netdriver_common::{CtEntry, CtKey, DROP_CT_FAILED, DROP_UNPUBLISHED, PortTarget};

use crate::{
    maps::{ND_CT, in_container_net},
    nat::{self, End},
    parse::{self, Ipv4, Ports},
};

#[inline(always)]
pub fn from_uplink(ctx: &TcContext) -> Result<i32, u32> {
    let Some(ip) = parse::ipv4(ctx) else {
        return Ok(TC_ACT_OK);
    };
    // Later fragments carry no ports; they pass untouched (only the first one is translated).
    if ip.frag_offset != 0 {
        return Ok(TC_ACT_OK);
    }
    if let Some(ports) = parse::ports(ctx, &ip)
        && let Some(target) = published(&ip, ports)
    {
        return dnat(ctx, &ip, ports, &target);
    }
    // Outsiders reach containers only through published ports.
    if in_container_net(ip.daddr_be) {
        return Err(DROP_UNPUBLISHED);
    }
    Ok(TC_ACT_OK)
}

/// Looks the destination up as a published port: the exact host address, then any address.
#[inline(always)]
fn published(ip: &Ipv4, ports: Ports) -> Option<PortTarget> {
    crate::published::lookup(ip.daddr_be, ports.dst, ip.proto, true)
}

#[inline(always)]
fn dnat(ctx: &TcContext, ip: &Ipv4, ports: Ports, target: &PortTarget) -> Result<i32, u32> {
    track(ctx, ip, ports, target)?;
    nat::rewrite(ctx, ip, ports, End::Dst, target.addr_be, target.port)?;
    nat::redirect(ctx, target.mac, target.gw_mac, target.ifindex)
}

/// Records (or refreshes) the flow so that `nd_from_container` can translate the replies.
#[inline(always)]
fn track(ctx: &TcContext, ip: &Ipv4, ports: Ports, target: &PortTarget) -> Result<(), u32> {
    let key = CtKey {
        container_addr_be: target.addr_be,
        remote_addr_be: ip.saddr_be,
        container_port: target.port,
        remote_port: ports.src,
        proto: ip.proto,
        _pad: [0; 3],
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let entry = CtEntry {
        host_addr_be: ip.daddr_be,
        host_port: ports.dst,
        _pad0: 0,
        // SAFETY: `skb` is the context pointer the kernel passed in.
        uplink_ifindex: unsafe { (*ctx.skb.skb).ifindex },
        uplink_mac: ip.eth_dst,
        peer_mac: ip.eth_src,
        last_seen_ns: now,
    };
    if let Some(old) = ND_CT.get_ptr_mut(key) {
        // SAFETY: the entry stays valid until the next update of ND_CT by this program;
        // racing writers store the same values.
        unsafe {
            if same_route(&*old, &entry) {
                (*old).last_seen_ns = now;
                return Ok(());
            }
        }
    }
    ND_CT.insert(key, entry, 0).map_err(|_| DROP_CT_FAILED)
}

#[inline(always)]
fn same_route(a: &CtEntry, b: &CtEntry) -> bool {
    a.host_addr_be == b.host_addr_be
        && a.host_port == b.host_port
        && a.uplink_ifindex == b.uplink_ifindex
        && a.uplink_mac == b.uplink_mac
        && a.peer_mac == b.peer_mac
}
