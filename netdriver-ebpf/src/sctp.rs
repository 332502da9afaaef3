//! SCTP: a port rewrite must update the CRC32C, which covers the whole SCTP packet and no
//! pseudo-header (address rewrites leave it alone). The update is incremental
//! (`netdriver_common::crc32c`): the packet is never read past the common header. The code
//! takes the L4 offset and length, so it does not depend on the IP version.

use aya_ebpf::{cty::c_void, helpers::bpf_loop};
use netdriver_common::{
    DROP_CSUM,
    crc32c::{GfMul, sctp_crc_update_with},
};

use crate::pkt::Packet;

/// Offset of the checksum inside the SCTP common header, and the header's length.
const SCTP_CSUM_OFF: usize = 8;
const SCTP_HLEN: u16 = 12;

/// Updates the CRC32C of the SCTP packet at `l4_off` (`l4_len` bytes) after the port at
/// `port_at` (0: source, 2: destination) changed from `old_be` to `new_be` (as they lie in
/// memory). `l4_len` is 0 when the length is unknown (the first of several IP fragments): the
/// packet is refused. A plain integer rather than an `Option`: LLVM once filled the payload
/// of a `None` with whatever register was at hand, the XDP context pointer, and the verifier
/// refused the masking of a pointer. A checksum field of 0 is left alone: the sender's stack
/// offloaded the CRC (`CHECKSUM_PARTIAL` with `csum_not_inet`; veth advertises
/// `NETIF_F_SCTP_CRC`), which is computed later over the rewritten packet.
#[inline(always)]
pub fn port_rewritten<P: Packet>(
    ctx: &P,
    l4_off: usize,
    l4_len: u16,
    port_at: usize,
    old_be: u16,
    new_be: u16,
) -> Result<(), u32> {
    let field: [u8; 4] = ctx.load(l4_off + SCTP_CSUM_OFF).ok_or(DROP_CSUM)?;
    let crc = u32::from_le_bytes(field);
    if crc == 0 {
        return Ok(());
    }
    if l4_len < SCTP_HLEN {
        return Err(DROP_CSUM);
    }
    let [a, b] = (old_be ^ new_be).to_ne_bytes();
    let xor = if port_at == 0 {
        [a, b, 0, 0]
    } else {
        [0, 0, a, b]
    };
    let crc = sctp_crc_update_with(gf_mul, crc, xor, l4_len);
    ctx.store(l4_off + SCTP_CSUM_OFF, &crc.to_le_bytes())
        .map_err(|()| DROP_CSUM)
}

/// `a * b mod P` (see `netdriver_common::crc32c`): the 32 steps run in a `bpf_loop` callback
/// (Linux 5.17). Unrolled, they were about 300 instructions the verifier walked for every
/// inlined copy on every path, which doubled the verification of `nd_from_container`; the
/// callback is walked until its state converges, a few times.
#[inline(always)]
fn gf_mul(a: u32, b: u32) -> u32 {
    let mut state = GfMul::new(a, b);
    // SAFETY: the callback only touches `state`, which outlives the call.
    unsafe {
        bpf_loop(32, gf_mul_step as *mut c_void, (&raw mut state).cast(), 0);
    }
    state.product
}

/// One step of [`gf_mul`]: `ctx` is the `GfMul` on the caller's stack.
#[inline(never)]
extern "C" fn gf_mul_step(index: u64, ctx: *mut c_void) -> i64 {
    let state = ctx.cast::<GfMul>();
    #[expect(clippy::cast_possible_truncation, reason = "index < 32")]
    let i = index as u32;
    // SAFETY: `ctx` is the pointer `gf_mul` passed: a live, exclusive `GfMul`.
    unsafe { (*state).step(i) };
    0
}
