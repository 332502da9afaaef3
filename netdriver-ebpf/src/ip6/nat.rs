//! IPv6 address rewriting. IPv6 has no header checksum; the TCP, UDP and `ICMPv6` checksums
//! cover a pseudo-header with both 128-bit addresses, so an address change is folded into
//! the L4 checksum as a `bpf_csum_diff` of the 16 bytes (`BPF_F_PSEUDO_HDR`, so a partial
//! checksum offload stays right). Ports go through the shared `nat::rewrite_port`; SCTP's
//! CRC32C covers no pseudo-header, so an SCTP address change touches no checksum and a port
//! change updates the CRC32C (`crate::sctp`).

use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_PSEUDO_HDR},
    helpers::bpf_csum_diff,
    programs::TcContext,
};
use netdriver_common::{DROP_CSUM, PROTO_SCTP};

use super::parse::{IP6_DADDR_OFF, IP6_HOP_OFF, IP6_SADDR_OFF, Ipv6, same_addr};
use crate::{
    nat::{End, mangled_0, rewrite_port},
    parse::{Ports, csum_off},
    pkt::Packet,
    sctp,
};

/// Rewrites the `end` address and port of `ip` to `addr`/`port` (host order), fixing the L4
/// checksum. For `ICMPv6` echo the "port" is the identifier.
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    ip: &Ipv6,
    ports: Ports,
    end: End,
    addr: [u8; 16],
    port: u16,
) -> Result<(), u32> {
    let (old_port, src) = match end {
        End::Src => (ports.src, true),
        End::Dst => (ports.dst, false),
    };
    let old_addr = if src { &ip.saddr } else { &ip.daddr };
    if !same_addr(old_addr, &addr) {
        let rc = rewrite_addr(ctx.skb.skb, ip, src, &addr);
        if rc != 0 {
            return Err(rc);
        }
    }
    if ip.proto == PROTO_SCTP {
        return rewrite_sctp_port(ctx, ip, end, old_port, port);
    }
    rewrite_port(ctx, ip.proto, ip.l4_off, end, old_port, port)
}

/// An SCTP port rewrite: the CRC32C is updated incrementally over the L4 length (the payload
/// length less the extension headers; see `crate::sctp`).
#[inline(always)]
fn rewrite_sctp_port(ctx: &TcContext, ip: &Ipv6, end: End, old: u16, new: u16) -> Result<(), u32> {
    if old == new {
        return Ok(());
    }
    let at = if end == End::Src { 0 } else { 2 };
    let (old_be, new_be) = (old.to_be(), new.to_be());
    sctp::port_rewritten(ctx, ip.l4_off, ip.l4_len, at, old_be, new_be)?;
    Packet::store(ctx, ip.l4_off + at, &new_be).map_err(|()| DROP_CSUM)
}

/// Writes `addr` as the source (`src`) or destination address of `ip` and folds the change
/// into the L4 checksum; 0 or a drop reason. A BPF function of its own: the 16-byte copies
/// and the `bpf_csum_diff` buffers would otherwise take stack at every inlined call site.
#[inline(never)]
fn rewrite_addr(skb: *mut __sk_buff, ip: &Ipv6, src: bool, addr: &[u8; 16]) -> u32 {
    let ctx = TcContext::new(skb);
    let (addr_off, old_addr) = if src {
        (IP6_SADDR_OFF, &ip.saddr)
    } else {
        (IP6_DADDR_OFF, &ip.daddr)
    };
    // SCTP's CRC32C covers no pseudo-header: only the address changes.
    if ip.proto == PROTO_SCTP {
        return match Packet::store(&ctx, addr_off, addr) {
            Ok(()) => 0,
            Err(()) => DROP_CSUM,
        };
    }
    let Ok(diff) = csum_diff(old_addr, addr) else {
        return DROP_CSUM;
    };
    let flags = u64::from(BPF_F_PSEUDO_HDR) | mangled_0(ip.proto);
    let csum_at = csum_off(ip.proto, ip.l4_off);
    if Packet::l4_csum_replace(&ctx, csum_at, 0, diff, flags).is_err()
        || Packet::store(&ctx, addr_off, addr).is_err()
    {
        return DROP_CSUM;
    }
    0
}

/// The one's-complement difference between two addresses, as `bpf_l4_csum_replace` takes it
/// with a size of 0.
#[inline(always)]
pub fn csum_diff(from: &[u8; 16], to: &[u8; 16]) -> Result<u64, u32> {
    let mut from = words(from);
    let mut to = words(to);
    // SAFETY: both buffers are 16 writable bytes on the stack.
    let diff = unsafe { bpf_csum_diff(from.as_mut_ptr(), 16, to.as_mut_ptr(), 16, 0) };
    u32::try_from(diff).map(u64::from).map_err(|_| DROP_CSUM)
}

#[inline(always)]
fn words(addr: &[u8; 16]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, word) in w.iter_mut().enumerate() {
        *word = u32::from_ne_bytes([
            addr[4 * i],
            addr[4 * i + 1],
            addr[4 * i + 2],
            addr[4 * i + 3],
        ]);
    }
    w
}

/// The addresses as `bpf_fib_lookup` takes them.
#[inline(always)]
pub fn fib_words(addr: &[u8; 16]) -> [u32; 4] {
    words(addr)
}

/// The address `bpf_fib_lookup` returned.
#[inline(always)]
pub fn from_fib_words(w: [u32; 4]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    for (i, word) in w.iter().enumerate() {
        addr[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
    }
    addr
}

/// Whether the packet may take one more hop (see `nat::has_hop_left`).
#[inline(always)]
pub fn has_hop_left(ip: &Ipv6) -> bool {
    ip.hop_limit > 1
}

/// Decrements the hop limit, as a router hop does (no header checksum to fix).
#[inline(always)]
pub fn decrement_hop_limit(ctx: &TcContext, ip: &Ipv6) -> Result<(), u32> {
    let hop = ip.hop_limit.saturating_sub(1);
    Packet::store(ctx, IP6_HOP_OFF, &hop).map_err(|()| DROP_CSUM)
}
