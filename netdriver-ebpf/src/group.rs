//! Multicast and broadcast frames from a container (both families). The bridge floods them to
//! every port and to the host; with ICC off only the host may have them, as with Docker, whose
//! `-i br -o br -j DROP` (through `br_netfilter`) drops them between containers while the
//! bridge still delivers them locally. Link machinery (ARP, NDP, RS/RA, MLD, IGMP) is the
//! callers' to let through first: it must reach every neighbour.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_OK},
    programs::TcContext,
};
use netdriver_common::{DROP_ICC, NET_F_ICC};

use crate::{maps::veth_of, parse::Ipv4, pkt::Packet};

/// Whether a destination MAC is a group address (the I/G bit): the bridge floods the frame.
#[inline(always)]
pub fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// Whether an IPv4 packet goes to a group: a group MAC, or a multicast (`224.0.0.0/4`) or
/// limited broadcast destination (whatever MAC it is sent to: no ICC bypass through a
/// neighbour's MAC). A subnet's broadcast address behind a unicast MAC is in the subnet, and
/// the unicast policy refuses it with ICC off.
#[inline(always)]
pub fn is_group4(ip: &Ipv4) -> bool {
    let daddr = ip.daddr_be.to_ne_bytes();
    is_group(&ip.eth_dst) || daddr[0] & 0xf0 == 0xe0 || ip.daddr_be == u32::MAX
}

/// A group frame from a container: passed to the bridge with ICC on (or on a veth without an
/// `ND_VETHS` entry, attached by an older version). With ICC off a clone enters the bridge's
/// ingress, which is how a bridged frame reaches the host's stack, and the original, which the
/// bridge would flood to the other containers, is dropped as an ICC drop. A clone that fails
/// (no memory, a bridge gone) costs the host its copy, never the policy.
#[inline(always)]
pub fn from_container(ctx: &TcContext) -> Result<i32, u32> {
    let Some(veth) = veth_of(ctx.ifindex()) else {
        return Ok(TC_ACT_OK);
    };
    if veth.flags & NET_F_ICC != 0 {
        return Ok(TC_ACT_OK);
    }
    let _ = ctx.clone_redirect(veth.bridge_ifindex, u64::from(BPF_F_INGRESS));
    Err(DROP_ICC)
}
