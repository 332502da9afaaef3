//! IPv6 conntrack keys, and the IPv6 header as `crate::ct::apply` uses it (the table
//! operations and applying an entry are the shared ones in `crate::ct`).

use aya_ebpf::programs::TcContext;
use netdriver_common::CtKey6;

use super::{nat, parse::Ipv6};
use crate::{ct::Header, nat::End, parse::Ports};

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

impl Header<TcContext> for Ipv6 {
    type Addr = [u8; 16];
    #[inline(always)]
    fn has_hop_left(&self) -> bool {
        nat::has_hop_left(self)
    }
    #[inline(always)]
    fn decrement_hop(&self, ctx: &TcContext) -> Result<(), u32> {
        nat::decrement_hop_limit(ctx, self)
    }
    #[inline(always)]
    fn rewrite(
        &self,
        ctx: &TcContext,
        ports: Ports,
        end: End,
        addr: [u8; 16],
        port: u16,
    ) -> Result<(), u32> {
        nat::rewrite(ctx, self, ports, end, addr, port)
    }
}
