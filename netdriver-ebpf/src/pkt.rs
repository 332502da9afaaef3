//! The packet operations the shared logic needs, for both hooks: tc (`TcContext`, through
//! the skb helpers, which keep the skb's checksum state right) and XDP (`XdpContext`, direct
//! access with software checksum updates). `nd_from_uplink` and `nd_xdp_uplink` run the same
//! code (`uplink::from_uplink`) through this trait.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        BPF_F_MARK_MANGLED_0, TC_ACT_OK, TC_ACT_REDIRECT,
        xdp_action::{XDP_PASS, XDP_REDIRECT},
    },
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::{TcContext, XdpContext},
};
use netdriver_common::{csum_replace2, csum_replace4};

use crate::maps::redirect_peer_allowed;

/// Where a redirect hands a frame to a container's host-side veth.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// `bpf_redirect`: the egress of the interface; a veth then queues the frame to its
    /// peer's backlog (a second softirq pass).
    Egress,
    /// `bpf_redirect_peer`: straight into the ingress of the veth's peer, the container's
    /// end, in the same softirq pass (Linux 5.10, commit 9aa1206e8f48). Only valid from tc
    /// ingress, towards a veth whose peer lives in another namespace: a container's. XDP
    /// has no such helper and takes `Egress`.
    Peer,
}

/// Errors are `()`: every caller maps them to its own drop reason.
pub trait Packet {
    /// The verdict that hands the packet on to the kernel.
    const PASS: i32;
    /// The verdict of a successful redirect.
    const REDIRECT: i32;
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The interface the packet arrived on.
    fn ifindex(&self) -> u32;
    /// Copies a `T` out of the packet at `off`.
    fn load<T: Copy>(&self, off: usize) -> Option<T>;
    fn store<T: Copy>(&self, off: usize, value: &T) -> Result<(), ()>;
    /// `bpf_l3_csum_replace`: `size` (2 or 4) bytes at the covered field changed.
    fn l3_csum_replace(&self, off: usize, from: u64, to: u64, size: u64) -> Result<(), ()>;
    /// `bpf_l4_csum_replace`: the low 4 bits of `flags` are the size; `BPF_F_PSEUDO_HDR`
    /// and `BPF_F_MARK_MANGLED_0` as the helper takes them.
    fn l4_csum_replace(&self, off: usize, from: u64, to: u64, flags: u64) -> Result<(), ()>;
    fn redirect(&self, ifindex: u32, hop: Hop) -> Result<i32, ()>;
    /// `bpf_redirect_neigh` (tc only; XDP refuses).
    fn redirect_neigh(&self, ifindex: u32) -> Result<i32, ()>;
}

impl Packet for TcContext {
    const PASS: i32 = TC_ACT_OK;
    const REDIRECT: i32 = TC_ACT_REDIRECT;

    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: `skb` is the context pointer the kernel passed in.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        TcContext::load(self, off).ok()
    }

    #[inline(always)]
    fn store<T: Copy>(&self, off: usize, value: &T) -> Result<(), ()> {
        TcContext::store(self, off, value, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn l3_csum_replace(&self, off: usize, from: u64, to: u64, size: u64) -> Result<(), ()> {
        TcContext::l3_csum_replace(self, off, from, to, size).map_err(|_| ())
    }

    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u64, to: u64, flags: u64) -> Result<(), ()> {
        TcContext::l4_csum_replace(self, off, from, to, flags).map_err(|_| ())
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32, hop: Hop) -> Result<i32, ()> {
        // SAFETY: plain helper calls; they only record the target in per-CPU state.
        let verdict = unsafe {
            if hop == Hop::Peer && redirect_peer_allowed() {
                bpf_redirect_peer(ifindex, 0)
            } else {
                bpf_redirect(ifindex, 0)
            }
        };
        redirected(verdict, Self::REDIRECT)
    }

    #[inline(always)]
    fn redirect_neigh(&self, ifindex: u32) -> Result<i32, ()> {
        // SAFETY: no parameters (the kernel looks the next hop up itself).
        let verdict = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
        redirected(verdict, Self::REDIRECT)
    }
}

#[inline(always)]
fn redirected(verdict: i64, expected: i32) -> Result<i32, ()> {
    if verdict == i64::from(expected) {
        Ok(expected)
    } else {
        Err(())
    }
}

/// A pointer to a `T` at `off` in the XDP frame, bounds-checked.
#[inline(always)]
fn xdp_ptr<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut T)
}

/// Replaces a 16-bit checksum at `off` after `size` bytes it covers went `from` → `to`
/// (values as they lie in memory). `mangled_0`: a stored 0 means "no checksum" (UDP) and
/// stays 0, and a computed 0 is written as 0xffff.
#[inline(always)]
fn xdp_csum(ctx: &XdpContext, off: usize, from: u64, to: u64, flags: u64) -> Result<(), ()> {
    let p = xdp_ptr::<[u8; 2]>(ctx, off).ok_or(())?;
    // SAFETY: `xdp_ptr` checked the two bytes lie inside the frame.
    let old = u16::from_ne_bytes(unsafe { p.read_unaligned() });
    let mangled_0 = flags & u64::from(BPF_F_MARK_MANGLED_0) != 0;
    if mangled_0 && old == 0 {
        return Ok(());
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the helper's size semantics"
    )]
    let mut new = match flags & 0xf {
        2 => csum_replace2(old, from as u16, to as u16),
        4 => csum_replace4(old, from as u32, to as u32),
        _ => return Err(()),
    };
    if mangled_0 && new == 0 {
        new = 0xffff;
    }
    // SAFETY: as above.
    unsafe { p.write_unaligned(new.to_ne_bytes()) };
    Ok(())
}

impl Packet for XdpContext {
    #[expect(clippy::cast_possible_wrap, reason = "a small enum value")]
    const PASS: i32 = XDP_PASS as i32;
    #[expect(clippy::cast_possible_wrap, reason = "a small enum value")]
    const REDIRECT: i32 = XDP_REDIRECT as i32;

    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: `ctx` is the context pointer the kernel passed in.
        unsafe { (*self.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        let p = xdp_ptr::<T>(self, off)?;
        // SAFETY: bounds-checked above.
        Some(unsafe { p.read_unaligned() })
    }

    #[inline(always)]
    fn store<T: Copy>(&self, off: usize, value: &T) -> Result<(), ()> {
        let p = xdp_ptr::<T>(self, off).ok_or(())?;
        // SAFETY: bounds-checked above.
        unsafe { p.write_unaligned(*value) };
        Ok(())
    }

    #[inline(always)]
    fn l3_csum_replace(&self, off: usize, from: u64, to: u64, size: u64) -> Result<(), ()> {
        xdp_csum(self, off, from, to, size)
    }

    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u64, to: u64, flags: u64) -> Result<(), ()> {
        // An XDP frame carries complete checksums (a NIC's frame; see the README on XDP and
        // partial checksums), so the pseudo-header flag changes nothing: the field is
        // updated like any other covered word.
        xdp_csum(self, off, from, to, flags)
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32, _hop: Hop) -> Result<i32, ()> {
        // SAFETY: a plain helper call; it only records the target in per-CPU state.
        let verdict = unsafe { bpf_redirect(ifindex, 0) };
        redirected(verdict, Self::REDIRECT)
    }

    #[inline(always)]
    fn redirect_neigh(&self, _ifindex: u32) -> Result<i32, ()> {
        Err(())
    }
}
