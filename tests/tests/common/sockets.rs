//! Client sockets for the published-port tests: what the application sees.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd},
};

use super::{Netns, TIMEOUT, retry_interrupted};

/// A TCP request from `ns` that also returns the peer `getpeername` reported.
pub fn tcp_with_peer(ns: &Netns, addr: &str) -> (String, SocketAddr) {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let peer = s.peer_addr().unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"hello").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        (out, peer)
    })
}

/// A UDP request from `ns` (unconnected socket of the destination's family, dual-stack for
/// IPv6): the answer and the address it came from.
pub fn udp_with_source(ns: &Netns, addr: &str) -> (String, SocketAddr) {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        let any = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let s = UdpSocket::bind(any).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.send_to(b"hello", addr).unwrap();
        let mut buf = [0u8; 128];
        let (n, from) = retry_interrupted(|| s.recv_from(&mut buf)).expect("UDP answer");
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    })
}

/// Binds `addr` (TCP listener or UDP socket) in `ns`; the error kind on failure.
pub fn bind(ns: &Netns, addr: &str, udp: bool) -> Result<(), std::io::ErrorKind> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        if udp {
            UdpSocket::bind(addr).map(drop)
        } else {
            TcpListener::bind(addr).map(drop)
        }
        .map_err(|e| e.kind())
    })
}

/// An 8-byte hop-by-hop or destination-options header holding one `PadN` option; the kernel
/// fills in the next-header byte.
const PADN_OPTIONS: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];

/// Makes every packet `sock` sends carry an options header: `IPV6_HOPOPTS` or `IPV6_DSTOPTS`.
pub fn send_options_header(sock: &impl AsRawFd, kind: libc::c_int) {
    // SAFETY: the option value is 8 readable bytes, as its length says.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            kind,
            PADN_OPTIONS.as_ptr().cast(),
            8,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// A TCP request from `ns` whose every segment, the SYN included, carries a
/// destination-options header: the answer, or the error.
pub fn tcp_request_with_options(ns: &Netns, addr: &str) -> Result<String, String> {
    let SocketAddr::V6(addr) = addr.parse().unwrap() else {
        panic!("{addr}: not IPv6");
    };
    ns.run(move || {
        // SAFETY: a plain socket call; the descriptor is owned by the stream at once.
        let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a fresh socket nobody else owns.
        let mut s = unsafe { TcpStream::from_raw_fd(fd) };
        send_options_header(&s, libc::IPV6_DSTOPTS);
        // SO_SNDTIMEO bounds `connect` too.
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let sa = libc::sockaddr_in6 {
            sin6_family: libc::sa_family_t::try_from(libc::AF_INET6).unwrap(),
            sin6_port: addr.port().to_be(),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: addr.ip().octets(),
            },
            sin6_scope_id: 0,
        };
        // SAFETY: `sa` is a valid `sockaddr_in6` of the length given.
        let rc = unsafe {
            libc::connect(
                fd,
                (&raw const sa).cast(),
                libc::socklen_t::try_from(size_of::<libc::sockaddr_in6>()).unwrap(),
            )
        };
        if rc != 0 {
            return Err(format!("connect: {}", std::io::Error::last_os_error()));
        }
        s.write_all(b"hello").map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    })
}
