//! Crafted SCTP packets for the SCTP tests: the kernel here has no SCTP sockets, so both ends
//! exchange INIT and INIT-ACK packets over raw sockets and check the CRC32C themselves.

pub const IPPROTO_SCTP: i32 = 132;
pub const CHUNK_INIT: u8 = 1;
pub const CHUNK_INIT_ACK: u8 = 2;

/// CRC32C (reflected polynomial 0x82F63B78), written independently of the daemon's.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Whether the SCTP packet's checksum (little-endian at bytes 8..12) is its CRC32C.
pub fn crc_ok(sctp: &[u8]) -> bool {
    let mut zeroed = sctp.to_vec();
    zeroed[8..12].fill(0);
    sctp[8..12] == crc32c(&zeroed).to_le_bytes()
}

/// An SCTP packet with one chunk, its CRC32C filled in.
pub fn packet(sport: u16, dport: u16, vtag: u32, chunk_type: u8, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&[chunk_type, 0]);
    p.extend_from_slice(&u16::try_from(4 + body.len()).unwrap().to_be_bytes());
    p.extend_from_slice(body);
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// The fixed part of INIT and INIT-ACK: initiate tag, `a_rwnd`, streams, initial TSN, then
/// `extra` (a state cookie for INIT-ACK), padded to 4 bytes.
pub fn init_body(tag: u32, extra: &[u8]) -> Vec<u8> {
    let mut b = tag.to_be_bytes().to_vec();
    b.extend_from_slice(&[0, 1, 0, 0, 0, 10, 0, 10]);
    b.extend_from_slice(&tag.wrapping_mul(7).to_be_bytes());
    b.extend_from_slice(extra);
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
    b
}

/// The INIT-ACK answering an INIT sent from port `client` to port `server` with
/// `initiate_tag`, carrying `cookie` as its state cookie.
pub fn init_ack(client: u16, server: u16, initiate_tag: u32, cookie: &[u8]) -> Vec<u8> {
    packet(
        server,
        client,
        initiate_tag,
        CHUNK_INIT_ACK,
        &init_body(initiate_tag ^ 0xffff, cookie),
    )
}
