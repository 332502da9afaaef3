//! IPv6 conntrack keys and applying an `ND_CT6` entry (the table operations are the shared
//! ones in `crate::ct`).

use aya_ebpf::programs::TcContext;
use netdriver_common::{
    CT_ACT_DNAT, CT_ACT_REDIRECT, CT_ACT_REDIRECT_NEIGH, CT_ACT_SNAT, CtEntry6, CtKey6,
};

use super::{nat, parse::Ipv6};
use crate::{
    nat::{End, Hop, redirect, redirect_neigh},
    parse::Ports,
    pkt::Packet,
};

/// The key of `ip`/`ports` as seen at the hook `dir` (`CT_DIR_*`).
#[inline(always)]
pub fn key(ip: &Ipv6, ports: Ports, dir: u8) -> CtKey6 {
    CtKey6 {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: ports.src,
        dport: ports.dst,
        proto: ip.proto,
        dir,
        _pad: [0; 2],
    }
}

/// Applies an entry's actions, as `crate::ct::apply` does for IPv4.
#[inline(always)]
pub fn apply(
    ctx: &TcContext,
    ip: &Ipv6,
    ports: Ports,
    entry: &CtEntry6,
    hop: Hop,
) -> Result<i32, u32> {
    let redirects = entry.action & (CT_ACT_REDIRECT | CT_ACT_REDIRECT_NEIGH) != 0;
    if redirects {
        if !nat::has_hop_left(ip) {
            return Ok(<TcContext as Packet>::PASS);
        }
        nat::decrement_hop_limit(ctx, ip)?;
    }
    if entry.action & CT_ACT_SNAT != 0 {
        nat::rewrite(ctx, ip, ports, End::Src, entry.xlate_addr, entry.xlate_port)?;
    }
    if entry.action & CT_ACT_DNAT != 0 {
        nat::rewrite(ctx, ip, ports, End::Dst, entry.xlate_addr, entry.xlate_port)?;
    }
    if entry.action & CT_ACT_REDIRECT != 0 {
        redirect(ctx, entry.dmac, entry.smac, entry.ifindex, hop)
    } else if entry.action & CT_ACT_REDIRECT_NEIGH != 0 {
        redirect_neigh(ctx, entry.ifindex)
    } else {
        Ok(<TcContext as Packet>::PASS)
    }
}
