//! Listening TCP sockets of the current network namespace through `NETLINK_SOCK_DIAG`.
//!
//! /proc/net/tcp{,6} walk the kernel's whole established-connection hash (shared by every
//! namespace; tens of milliseconds on a large machine for the reads of an endpoint create),
//! while a dump asking for `TCP_LISTEN` only walks the listening hash.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_LISTEN: u32 = 10;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, `inet_diag_sockid` (48).
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg` up to the source address: family, state, timer, retrans, sport,
/// dport, src (16 bytes).
const MSG_MIN: usize = 24;

/// The local address and port of every listening TCP socket (IPv4 and IPv6) of the current
/// network namespace.
pub(super) fn tcp_listeners() -> io::Result<Vec<(IpAddr, u16)>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        dump(family, &mut out)?;
    }
    Ok(out)
}

fn dump(family: i32, out: &mut Vec<(IpAddr, u16)>) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let req = request(family);
    // SAFETY: `req` is a valid buffer of its length; the kernel is the default destination.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: `buf` is a valid writable buffer of its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        if parse(&buf[..n], out)? {
            return Ok(());
        }
    }
}

/// A dump request for the listening TCP sockets of `family`.
fn request(family: i32) -> Vec<u8> {
    let len = NLMSG_HDR + REQ_LEN;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).expect("small").to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = u16::try_from(libc::NLM_F_REQUEST | libc::NLM_F_DUMP).expect("flags fit");
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    m.push(u8::try_from(family).expect("family fits"));
    m.push(u8::try_from(libc::IPPROTO_TCP).expect("protocol fits"));
    m.extend_from_slice(&[0, 0]); // ext, pad
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    m.resize(len, 0); // inet_diag_sockid: no filter
    m
}

/// Appends the sockets of one datagram of the answer; `true` once the dump is done.
fn parse(mut buf: &[u8], out: &mut Vec<(IpAddr, u16)>) -> io::Result<bool> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "truncated sock_diag message");
    while buf.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        let kind = i32::from(u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes")));
        if len < NLMSG_HDR || len > buf.len() {
            return Err(bad());
        }
        let payload = &buf[NLMSG_HDR..len];
        match kind {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                let errno = payload.get(..4).ok_or_else(bad)?;
                let errno = i32::from_ne_bytes(errno.try_into().expect("4 bytes"));
                return Err(io::Error::from_raw_os_error(-errno));
            }
            _ => out.push(socket(payload).ok_or_else(bad)?),
        }
        // Messages are 4-byte aligned.
        buf = buf.get((len + 3) & !3..).unwrap_or_default();
    }
    Ok(false)
}

/// The local address and port of one `inet_diag_msg`.
fn socket(msg: &[u8]) -> Option<(IpAddr, u16)> {
    if msg.len() < MSG_MIN {
        return None;
    }
    let port = u16::from_be_bytes([msg[4], msg[5]]);
    let src = &msg[8..24];
    let ip = match i32::from(msg[0]) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(src).ok()?)),
        _ => return None,
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener, TcpStream};

    use super::*;

    #[test]
    fn lists_listeners_of_both_families_and_no_connected_socket() {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").unwrap();
        let client = TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        let listed = tcp_listeners().unwrap();
        let has = |a: SocketAddr| listed.contains(&(a.ip(), a.port()));
        assert!(has(v4.local_addr().unwrap()), "{listed:?}");
        assert!(has(v6.local_addr().unwrap()), "{listed:?}");
        assert!(!has(client.local_addr().unwrap()), "{listed:?}");
    }

    #[test]
    fn parses_a_multipart_answer_and_reports_errors() {
        let msg = |family: u8, port: u16, src: &[u8]| {
            let mut m = vec![0u8; NLMSG_HDR + 72];
            let len = u32::try_from(m.len()).unwrap();
            m[0..4].copy_from_slice(&len.to_ne_bytes());
            m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
            m[NLMSG_HDR] = family;
            m[NLMSG_HDR + 4..NLMSG_HDR + 6].copy_from_slice(&port.to_be_bytes());
            m[NLMSG_HDR + 8..NLMSG_HDR + 8 + src.len()].copy_from_slice(src);
            m
        };
        let mut buf = msg(2, 8080, &[198, 51, 100, 7]);
        buf.extend(msg(10, 443, &Ipv6Addr::LOCALHOST.octets()));
        let mut out = Vec::new();
        assert!(!parse(&buf, &mut out).unwrap());
        assert_eq!(
            out,
            vec![
                ("198.51.100.7".parse().unwrap(), 8080),
                ("::1".parse().unwrap(), 443)
            ]
        );
        let mut done = vec![0u8; NLMSG_HDR + 4];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&u16::try_from(libc::NLMSG_DONE).unwrap().to_ne_bytes());
        assert!(parse(&done, &mut out).unwrap());
        let mut err = done.clone();
        err[4..6].copy_from_slice(&u16::try_from(libc::NLMSG_ERROR).unwrap().to_ne_bytes());
        err[NLMSG_HDR..].copy_from_slice(&(-libc::EINVAL).to_ne_bytes());
        let e = parse(&err, &mut out).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert!(parse(&buf[..30], &mut out).is_err(), "truncated");
    }
}
