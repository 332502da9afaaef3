//! CRC32C (Castagnoli), the SCTP checksum (RFC 9260, appendix A), and its incremental update
//! after a port rewrite.
//!
//! A CRC is linear over GF(2): for two messages of the same length,
//! `crc(a) ^ crc(b) == raw(a ^ b)`, where `raw` is the CRC register with a zero start and no
//! final inversion (the start and the inversion cancel out). A port rewrite changes only the
//! first four bytes of the SCTP packet, so `a ^ b` is the XOR of those four bytes, followed by
//! zeros; and appending a zero byte to a message multiplies its register by `x^8` modulo the
//! polynomial. The update is therefore `raw(first four bytes XOR) * x^(8 * (len - 4))`,
//! computed from two small tables and two multiplications whatever the packet size, without
//! reading the packet. No branch depends on data.
//!
//! CRC32C is reflected: bit 31 of a register holds the coefficient of `x^0`, bit 0 that of
//! `x^31`. SCTP stores the final CRC little-endian (`u32::from_le_bytes` of the field).

/// The CRC32C polynomial, reflected.
const POLY: u32 = 0x82f6_3b78;
/// `1`, the polynomial `x^0`, in the reflected representation.
const ONE: u32 = 1 << 31;

/// All ones when `bit` (0 or 1) is 1, else zero: a branchless select.
const fn mask(bit: u32) -> u32 {
    0u32.wrapping_sub(bit & 1)
}

/// `a * b mod P` in the reflected representation.
#[must_use]
pub const fn gf_mul(a: u32, b: u32) -> u32 {
    let mut state = GfMul::new(a, b);
    let mut i = 0;
    while i < 32 {
        state.step(i);
        i += 1;
    }
    state.product
}

/// A multiplication `a * b mod P` in progress, one coefficient of `a` per [`GfMul::step`]
/// (32 steps, `i` in `0..32`, in order). The eBPF programs run the steps in a `bpf_loop`
/// callback, which the verifier walks once instead of once per step and per path.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GfMul {
    pub a: u32,
    /// The original `b` times `x^i` before step `i`.
    pub b: u32,
    pub product: u32,
    pub _pad: u32,
}

impl GfMul {
    #[must_use]
    pub const fn new(a: u32, b: u32) -> Self {
        Self {
            a,
            b,
            product: 0,
            _pad: 0,
        }
    }

    /// Adds the term of the coefficient of `x^i` in `a`.
    pub const fn step(&mut self, i: u32) {
        self.product ^= self.b & mask(self.a >> (31 - (i & 31)));
        self.b = (self.b >> 1) ^ (POLY & mask(self.b));
    }
}

/// `x^(8 * l) mod P` for `l` in `0..256`, and `x^(8 * 256 * h) mod P` for `h` in `0..256`: a
/// byte count `n < 65536` appends `x^(8 * n) = HIGH[n >> 8] * LOW[n & 0xff]`. Two 1 KiB
/// tables instead of square-and-multiply: the eBPF verifier walks every inlined copy of this
/// code once per path that reaches it, so it must be short.
const LOW: [u32; 256] = powers(ONE >> 8);
const HIGH: [u32; 256] = powers(x8n_slow(256));

/// `[1, step, step^2, ...]`.
const fn powers(step: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut p = ONE;
    let mut i = 0;
    while i < 256 {
        table[i] = p;
        p = gf_mul(p, step);
        i += 1;
    }
    table
}

/// `x^(8 * n)` by repeated multiplication (compile time only).
const fn x8n_slow(n: u32) -> u32 {
    let mut p = ONE;
    let mut i = 0;
    while i < n {
        p = gf_mul(p, ONE >> 8);
        i += 1;
    }
    p
}

/// `x^(8 * n) mod P`: the factor by which `n` appended zero bytes multiply a register.
#[must_use]
pub fn zeros_factor(n: u16) -> u32 {
    zeros_factor_with(gf_mul, n)
}

/// [`zeros_factor`] with the multiplication `mul`.
#[inline]
pub fn zeros_factor_with(mul: impl Fn(u32, u32) -> u32, n: u16) -> u32 {
    let [high, low] = n.to_be_bytes();
    mul(HIGH[usize::from(high)], LOW[usize::from(low)])
}

/// The CRC register after `data` from the start value `crc` (no inversions).
#[must_use]
pub fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (POLY & mask(crc));
        }
    }
    crc
}

/// The CRC32C of `data`, as SCTP computes it (checksum field zero) and stores it
/// little-endian.
#[must_use]
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_raw(!0, data)
}

/// The CRC32C of an SCTP packet of `len` bytes after its first four bytes (the ports) changed
/// by `ports_xor` (old XOR new, as they lie in the packet): `crc` is the packet's checksum
/// (the field read with `u32::from_le_bytes`).
#[must_use]
pub fn sctp_crc_update(crc: u32, ports_xor: [u8; 4], len: u16) -> u32 {
    sctp_crc_update_with(gf_mul, crc, ports_xor, len)
}

/// [`sctp_crc_update`] with the multiplication `mul` (the eBPF programs bring their own,
/// built on [`GfMul`]).
#[inline]
pub fn sctp_crc_update_with(
    mul: impl Fn(u32, u32) -> u32,
    crc: u32,
    ports_xor: [u8; 4],
    len: u16,
) -> u32 {
    // The register after the four bytes from zero is `v * x^32` (`v` the bytes read
    // little-endian: the reflected order); the `len - 4` zero bytes that follow make it
    // `v * x^(8 * len)`.
    let factor = zeros_factor_with(&mul, len);
    crc ^ mul(u32::from_le_bytes(ports_xor), factor)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_answers() {
        // RFC 3720, B.4 (iSCSI uses the same CRC32C), and the common check value.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[0; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xff; 32]), 0x62a8_ab43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46dd_794e);
    }

    #[test]
    fn zeros_factor_matches_shifting() {
        for n in [0u16, 1, 2, 3, 7, 255, 256, 1500, 65535] {
            let r = 0x1234_5678;
            let zeros = std::vec![0u8; usize::from(n)];
            assert_eq!(gf_mul(r, zeros_factor(n)), crc32c_raw(r, &zeros), "n = {n}");
        }
    }

    /// An SCTP-like packet with a valid checksum at bytes 8..12.
    fn with_crc(mut pkt: Vec<u8>) -> Vec<u8> {
        pkt[8..12].fill(0);
        let crc = crc32c(&pkt);
        pkt[8..12].copy_from_slice(&crc.to_le_bytes());
        pkt
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn incremental_update_matches_a_full_crc(
            body in prop::collection::vec(any::<u8>(), 12..1600),
            new_ports in any::<[u8; 4]>(),
        ) {
            let old = with_crc(body);
            let mut new = old.clone();
            new[..4].copy_from_slice(&new_ports);
            let new = with_crc(new);
            let field = |p: &[u8]| u32::from_le_bytes(p[8..12].try_into().unwrap());
            let xor: [u8; 4] = core::array::from_fn(|i| old[i] ^ new_ports[i]);
            let len = u16::try_from(old.len()).unwrap();
            prop_assert_eq!(sctp_crc_update(field(&old), xor, len), field(&new));
        }
    }
}
