//! Published ports: the `-p` syntax, host-port allocation, and which ports host sockets hold.

mod alloc;
mod spec;

use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
};

pub use alloc::{EPHEMERAL_ATTEMPTS, PortAllocator, PortBinding};
pub use spec::{PortRequest, Proto, parse};

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid port spec {spec:?}: {reason}")]
    Syntax { spec: String, reason: String },
    #[error("host port {port}/{proto} on {ip} is already allocated to endpoint {owner}")]
    Taken {
        proto: Proto,
        ip: Ipv4Addr,
        port: u16,
        owner: String,
    },
    #[error("host port {port}/{proto} is in use by a process on the host")]
    HostInUse { proto: Proto, port: u16 },
    #[error("no free host port in {start}-{end}/{proto}")]
    RangeExhausted { proto: Proto, start: u16, end: u16 },
    #[error("no free ephemeral host port for {proto} in {begin}-{end}")]
    EphemeralExhausted { proto: Proto, begin: u16, end: u16 },
    #[error("IPv6 host address {0} is not supported yet (IPv4 only)")]
    Ipv6Unsupported(Ipv6Addr),
}

/// Ports bound by sockets of the current network namespace, from /proc/net/{tcp,udp}{,6}:
/// listening TCP sockets and every bound UDP socket.
#[derive(Debug, Default)]
pub struct HostSockets {
    held: HashSet<(Proto, u16)>,
}

impl HostSockets {
    /// Reads the socket tables; unreadable tables count as empty.
    #[must_use]
    pub fn read() -> Self {
        let mut held = HashSet::new();
        for (file, proto) in [
            ("/proc/net/tcp", Proto::Tcp),
            ("/proc/net/tcp6", Proto::Tcp),
            ("/proc/net/udp", Proto::Udp),
            ("/proc/net/udp6", Proto::Udp),
        ] {
            if let Ok(text) = std::fs::read_to_string(file) {
                held.extend(parse_proc_net(&text, proto).map(|p| (proto, p)));
            }
        }
        Self { held }
    }

    /// Whether no host socket holds `port` (on any address: a conservative view).
    #[must_use]
    pub fn is_free(&self, proto: Proto, port: u16) -> bool {
        !self.held.contains(&(proto, port))
    }
}

/// Local ports of sockets in a /proc/net table: TCP in LISTEN (state 0A), UDP any.
fn parse_proc_net(text: &str, proto: Proto) -> impl Iterator<Item = u16> + '_ {
    text.lines().skip(1).filter_map(move |line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let state = fields.nth(1)?;
        if proto == Proto::Tcp && state != "0A" {
            return None;
        }
        let port = local.rsplit_once(':')?.1;
        u16::from_str_radix(port, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_parsing() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:0050 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1\n";
        let ports: Vec<u16> = parse_proc_net(tcp, Proto::Tcp).collect();
        assert_eq!(ports, vec![8080]);
        let udp: Vec<u16> = parse_proc_net(tcp, Proto::Udp).collect();
        assert_eq!(udp, vec![8080, 80]);
    }
}
