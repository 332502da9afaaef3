//! Crafted SCTP packets for the SCTP tests: the kernel here has no SCTP sockets, so both ends
//! exchange INIT and INIT-ACK packets over raw sockets and check the CRC32C themselves.

use std::{
    marker::PhantomData,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

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

/// An address family of [`RawSctp`]: its socket domain and `sockaddr` type.
pub trait Family: Copy + std::fmt::Display {
    /// A plain C struct, valid all-zero.
    type SockAddr;
    const DOMAIN: i32;
    fn sockaddr(self) -> Self::SockAddr;
    fn from_sockaddr(sa: &Self::SockAddr) -> Self;
}

impl Family for Ipv4Addr {
    type SockAddr = libc::sockaddr_in;
    const DOMAIN: i32 = libc::AF_INET;
    fn sockaddr(self) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: u16::try_from(libc::AF_INET).unwrap(),
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(self.octets()),
            },
            sin_zero: [0; 8],
        }
    }
    fn from_sockaddr(sa: &libc::sockaddr_in) -> Self {
        Ipv4Addr::from(sa.sin_addr.s_addr.to_ne_bytes())
    }
}

impl Family for Ipv6Addr {
    type SockAddr = libc::sockaddr_in6;
    const DOMAIN: i32 = libc::AF_INET6;
    fn sockaddr(self) -> libc::sockaddr_in6 {
        libc::sockaddr_in6 {
            sin6_family: u16::try_from(libc::AF_INET6).unwrap(),
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: self.octets(),
            },
            sin6_scope_id: 0,
        }
    }
    fn from_sockaddr(sa: &libc::sockaddr_in6) -> Self {
        Ipv6Addr::from(sa.sin6_addr.s6_addr)
    }
}

/// A raw socket for protocol 132 of family `A`, created in the calling thread's namespace;
/// a receive gives up after 100 ms. An IPv4 raw socket delivers packets with their IP
/// header, an IPv6 one without.
pub struct RawSctp<A: Family>(OwnedFd, PhantomData<A>);

impl<A: Family> RawSctp<A> {
    pub fn open() -> Self {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(A::DOMAIN, libc::SOCK_RAW, IPPROTO_SCTP) };
        assert!(
            fd >= 0,
            "raw SCTP socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` is a new descriptor we own.
        let sock = Self(unsafe { OwnedFd::from_raw_fd(fd) }, PhantomData);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: a valid socket and a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                u32::try_from(size_of::<libc::timeval>()).unwrap(),
            )
        };
        assert_eq!(rc, 0);
        sock
    }

    /// A socket whose packets leave from `addr` (a raw socket's bind sets the source) and
    /// that receives only packets addressed to it.
    pub fn bound(addr: A) -> Self {
        let sock = Self::open();
        let sa = addr.sockaddr();
        // SAFETY: a valid address of the size passed.
        let rc = unsafe {
            libc::bind(
                sock.0.as_raw_fd(),
                (&raw const sa).cast(),
                u32::try_from(size_of::<A::SockAddr>()).unwrap(),
            )
        };
        assert_eq!(rc, 0, "bind {addr}: {}", std::io::Error::last_os_error());
        sock
    }

    /// Sends `sctp` (the kernel adds the IP header) to `to`.
    pub fn send(&self, to: A, sctp: &[u8]) {
        let addr = to.sockaddr();
        // SAFETY: valid buffer and address of the sizes passed.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                sctp.as_ptr().cast(),
                sctp.len(),
                0,
                (&raw const addr).cast(),
                u32::try_from(size_of::<A::SockAddr>()).unwrap(),
            )
        };
        assert_eq!(
            usize::try_from(n).ok(),
            Some(sctp.len()),
            "sendto: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The next packet and its source, or `None` after the receive timeout.
    pub fn recv(&self) -> Option<(A, Vec<u8>)> {
        let mut buf = vec![0u8; 2048];
        // SAFETY: all-zero is a valid `sockaddr_in`/`sockaddr_in6`.
        let mut from: A::SockAddr = unsafe { std::mem::zeroed() };
        let mut len = u32::try_from(size_of::<A::SockAddr>()).unwrap();
        // SAFETY: valid buffers of the sizes passed.
        let n = unsafe {
            libc::recvfrom(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &raw mut len,
            )
        };
        let n = usize::try_from(n).ok()?;
        buf.truncate(n);
        Some((A::from_sockaddr(&from), buf))
    }
}
