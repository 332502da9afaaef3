//! Published ports: the `-p` syntax, host-port allocation, and which ports host sockets hold.

mod alloc;
mod diag;
pub mod reserved;
mod runs;
mod spec;

pub use alloc::{EPHEMERAL_ATTEMPTS, PortAllocator, PortBinding};
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

pub use runs::{PortRun, blocks, runs, spans};
pub use spec::{PROTO_CHOICES, PortRequest, Proto, parse};

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid port spec {spec:?}: {reason}")]
    Syntax { spec: String, reason: String },
    #[error("host port {port}/{proto} on {ip} is already allocated to endpoint {owner}")]
    Taken {
        proto: Proto,
        ip: IpAddr,
        port: u16,
        owner: String,
    },
    #[error("host port {}:{port}/{proto} is in use by a process on the host", SocketFmt(*ip))]
    HostInUse { proto: Proto, ip: IpAddr, port: u16 },
    #[error("no free host port in {start}-{end}/{proto}")]
    RangeExhausted { proto: Proto, start: u16, end: u16 },
    #[error("no free ephemeral host port for {proto} in {begin}-{end}")]
    EphemeralExhausted { proto: Proto, begin: u16, end: u16 },
}

/// An address as it appears before `:port` (IPv6 in brackets).
struct SocketFmt(IpAddr);

impl std::fmt::Display for SocketFmt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}"),
            IpAddr::V6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// Sockets of the current network namespace that hold a port: listening TCP sockets (from
/// `sock_diag`, see diag.rs; /proc/net/tcp{,6} if that fails) and every bound UDP and SCTP
/// endpoint (/proc/net/udp{,6}, /proc/net/sctp/eps), with the address each is bound to.
#[derive(Debug, Default)]
pub struct HostSockets {
    held: HashSet<(Proto, IpAddr, u16)>,
}

impl HostSockets {
    /// Reads the socket tables; unreadable tables count as empty.
    #[must_use]
    pub fn read() -> Self {
        Self::read_for(&[Proto::Tcp, Proto::Udp, Proto::Sctp])
    }

    /// Like [`Self::read`], only the tables of `protos` (the others count as empty): a
    /// request that publishes no port of a protocol does not list its sockets.
    #[must_use]
    pub fn read_for(protos: &[Proto]) -> Self {
        let mut held = HashSet::new();
        if protos.contains(&Proto::Tcp) {
            held.extend(
                tcp_listeners()
                    .into_iter()
                    .map(|(ip, p)| (Proto::Tcp, ip, p)),
            );
        }
        if protos.contains(&Proto::Udp) {
            for file in ["/proc/net/udp", "/proc/net/udp6"] {
                held.extend(proc_table(file, Proto::Udp).map(|(ip, p)| (Proto::Udp, ip, p)));
            }
        }
        // Absent without SCTP support in the kernel.
        if protos.contains(&Proto::Sctp) {
            if let Ok(text) = std::fs::read_to_string("/proc/net/sctp/eps") {
                held.extend(parse_proc_sctp(&text).map(|(ip, p)| (Proto::Sctp, ip, p)));
            }
        }
        Self { held }
    }

    /// Whether no host socket holds `port` where a binding on `ip` would need it. For an
    /// IPv4 binding: a socket on the same address, on a wildcard (`0.0.0.0`, or `[::]`,
    /// dual-stack) or on the IPv4-mapped form of the address; for a binding on `0.0.0.0`,
    /// any IPv4 socket. A socket on a specific IPv6 address never clashes with an IPv4
    /// binding. For an IPv6 binding: an IPv6 socket on the same address or on `[::]`; for a
    /// binding on `[::]`, any IPv6 socket (IPv4 ones never clash: Docker binds `[::]`
    /// IPv6-only).
    #[must_use]
    pub fn is_free(&self, proto: Proto, ip: IpAddr, port: u16) -> bool {
        !self
            .held
            .iter()
            .any(|&(p, held, held_port)| p == proto && held_port == port && clashes(held, ip))
    }
}

/// The protocols `requests` publish, each once (what [`HostSockets::read_for`] must list).
#[must_use]
pub fn requested_protos(requests: &[PortRequest]) -> Vec<Proto> {
    let mut protos: Vec<Proto> = requests.iter().map(|r| r.proto).collect();
    protos.sort_unstable();
    protos.dedup();
    protos
}

/// Listening TCP sockets: from `sock_diag`, or from /proc/net/tcp{,6} if that fails.
fn tcp_listeners() -> Vec<(IpAddr, u16)> {
    match diag::tcp_listeners() {
        Ok(listeners) => listeners,
        Err(e) => {
            tracing::debug!("sock_diag: {e}; reading /proc/net/tcp{{,6}}");
            ["/proc/net/tcp", "/proc/net/tcp6"]
                .into_iter()
                .flat_map(|file| proc_table(file, Proto::Tcp))
                .collect()
        }
    }
}

/// The sockets holding a port in one /proc/net table; empty if it cannot be read.
fn proc_table(file: &str, proto: Proto) -> impl Iterator<Item = (IpAddr, u16)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    parse_proc_net(&text, proto).collect::<Vec<_>>().into_iter()
}

fn clashes(held: IpAddr, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => return clashes6(held, ip),
    };
    let held = match held {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) if v6.is_unspecified() => return true,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return false,
        },
    };
    held.is_unspecified() || ip.is_unspecified() || held == ip
}

fn clashes6(held: IpAddr, ip: Ipv6Addr) -> bool {
    match held {
        IpAddr::V6(held) if held.to_ipv4_mapped().is_none() => {
            held.is_unspecified() || ip.is_unspecified() || held == ip
        }
        _ => false,
    }
}

/// Local addresses and ports of sockets in a /proc/net table: TCP in LISTEN (state 0A),
/// UDP any.
fn parse_proc_net(text: &str, proto: Proto) -> impl Iterator<Item = (IpAddr, u16)> + '_ {
    text.lines().skip(1).filter_map(move |line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let state = fields.nth(1)?;
        if proto == Proto::Tcp && state != "0A" {
            return None;
        }
        let (addr, port) = local.rsplit_once(':')?;
        Some((parse_proc_addr(addr)?, u16::from_str_radix(port, 16).ok()?))
    })
}

/// Local addresses and ports of SCTP endpoints in /proc/net/sctp/eps (`ENDPT SOCK STY SST
/// HBKT LPORT UID INODE LADDRS...`, the port in decimal, then every bound address as text,
/// IPv6 uncompressed: `net/sctp/proc.c`).
fn parse_proc_sctp(text: &str) -> impl Iterator<Item = (IpAddr, u16)> + '_ {
    text.lines().skip(1).flat_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = fields.get(5).and_then(|p| p.parse::<u16>().ok());
        fields
            .get(8..)
            .unwrap_or_default()
            .iter()
            .filter_map(move |a| Some((a.trim_start_matches('*').parse().ok()?, port?)))
            .collect::<Vec<_>>()
    })
}

/// An address as /proc/net prints it: 32-bit words in hex, each in the CPU's byte order.
fn parse_proc_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_parsing() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:0050 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1\n";
        let ports: Vec<_> = parse_proc_net(tcp, Proto::Tcp).collect();
        assert_eq!(ports, vec![(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080)]);
        let udp: Vec<u16> = parse_proc_net(tcp, Proto::Udp).map(|(_, p)| p).collect();
        assert_eq!(udp, vec![8080, 80]);
    }

    #[test]
    fn proc_sctp_parsing() {
        let eps = " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n\
ffff8880041c4000 ffff888004c8e900 2   10  29   9000      0 21873 0.0.0.0 \n\
ffff8880041c5000 ffff888004c8f200 1   10  31   3868      0 21874 198.51.100.1 2001:0db8:0000:0000:0000:0000:0000:0001 \n\
garbage line\n";
        let held: Vec<(IpAddr, u16)> = parse_proc_sctp(eps).collect();
        assert_eq!(
            held,
            [
                ("0.0.0.0".parse().unwrap(), 9000),
                ("198.51.100.1".parse().unwrap(), 3868),
                ("2001:db8::1".parse().unwrap(), 3868),
            ]
        );
        let sockets = HostSockets {
            held: held
                .into_iter()
                .map(|(ip, p)| (Proto::Sctp, ip, p))
                .collect(),
        };
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(!sockets.is_free(Proto::Sctp, a, 9000));
        assert!(sockets.is_free(Proto::Tcp, a, 9000), "per protocol");
        assert!(!sockets.is_free(Proto::Sctp, a, 3868));
        assert!(sockets.is_free(Proto::Sctp, "198.51.100.7".parse().unwrap(), 3868));
    }

    #[test]
    fn ipv6_addresses() {
        assert_eq!(
            parse_proc_addr("00000000000000000000000000000000"),
            Some("::".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("0000000000000000FFFF00000100007F"),
            Some("::ffff:127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("B80D0120000000000000000001000000"),
            Some("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn a_host_socket_blocks_exactly_the_addresses_it_holds() {
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.7".parse().unwrap();
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let only = |ip: &str| HostSockets {
            held: [(Proto::Tcp, ip.parse().unwrap(), 8080)].into(),
        };
        let on_a = only("198.51.100.1");
        assert!(!on_a.is_free(Proto::Tcp, a, 8080));
        assert!(on_a.is_free(Proto::Tcp, b, 8080), "another address is free");
        assert!(
            !on_a.is_free(Proto::Tcp, any, 8080),
            "the wildcard needs every address"
        );
        assert!(on_a.is_free(Proto::Udp, a, 8080), "per protocol");
        assert!(on_a.is_free(Proto::Tcp, a, 8081));
        for wildcard in ["0.0.0.0", "::"] {
            assert!(!only(wildcard).is_free(Proto::Tcp, b, 8080), "{wildcard}");
        }
        assert!(!only("::ffff:198.51.100.1").is_free(Proto::Tcp, a, 8080));
        assert!(only("2001:db8::1").is_free(Proto::Tcp, any, 8080));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let any6: IpAddr = "::".parse().unwrap();
        assert!(!only("2001:db8::1").is_free(Proto::Tcp, v6, 8080));
        assert!(!only("2001:db8::1").is_free(Proto::Tcp, any6, 8080));
        assert!(!only("::").is_free(Proto::Tcp, v6, 8080));
        assert!(only("2001:db8::2").is_free(Proto::Tcp, v6, 8080));
        assert!(
            only("0.0.0.0").is_free(Proto::Tcp, any6, 8080),
            "IPv4 never clashes"
        );
        assert!(only("::ffff:198.51.100.1").is_free(Proto::Tcp, any6, 8080));
    }
}
