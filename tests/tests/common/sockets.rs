//! Client sockets for the published-port-from-the-host tests: what the application sees.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
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
