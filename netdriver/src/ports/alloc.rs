//! Host-port allocation, as Docker's portallocator and bridge driver do it.
//!
//! Requests are sorted so exact ports come before ranges and bindings that differ only in
//! host address are adjacent; each such group gets the same host port on every address.
//! Ephemeral ports come from `ip_local_port_range`, scanning on from the last one handed
//! out, with a few retries when a host socket already holds the candidate.

use std::{
    cmp::Ordering,
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use serde::{Deserialize, Serialize};

use super::{PortError, Proto, spec::PortRequest};

/// How many ephemeral candidates are tried before giving up (Docker: maxAllocatePortAttempts).
pub const EPHEMERAL_ATTEMPTS: usize = 10;

/// An allocated binding: what the data path publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub proto: Proto,
    /// `0.0.0.0` means every IPv4 host address, `::` every IPv6 one. Records written
    /// before IPv6 hold a plain IPv4 string, which still loads.
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

/// Who holds each host port, per protocol.
#[derive(Debug, Default)]
pub struct PortAllocator {
    held: HashMap<(Proto, u16), Vec<(IpAddr, String)>>,
    last_ephemeral: HashMap<Proto, u16>,
}

/// A normalised request (Docker's sortAndNormPBs): `host_port_end` set, host address set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Norm {
    req: PortRequest,
    host_ip: IpAddr,
}

impl PortAllocator {
    /// Marks `binding` as held by `owner` (used when loading state from the store).
    pub fn insert(&mut self, binding: &PortBinding, owner: &str) {
        self.held
            .entry((binding.proto, binding.host_port))
            .or_default()
            .push((binding.host_ip, owner.to_string()));
    }

    /// Releases every port held by `owner`.
    pub fn release(&mut self, owner: &str) {
        self.held.retain(|_, holders| {
            holders.retain(|(_, o)| o != owner);
            !holders.is_empty()
        });
    }

    /// Who holds `port` on `ip` (a wildcard conflicts with every address of its family and
    /// vice versa; `0.0.0.0` and `::` are separate, as Docker binds both with one port).
    #[must_use]
    pub fn holder(&self, proto: Proto, ip: IpAddr, port: u16) -> Option<&str> {
        self.held
            .get(&(proto, port))?
            .iter()
            .find_map(|(held_ip, owner)| {
                let clash = held_ip.is_ipv4() == ip.is_ipv4()
                    && (held_ip == &ip || held_ip.is_unspecified() || ip.is_unspecified());
                clash.then_some(owner.as_str())
            })
    }

    /// Allocates host ports for all of `requests` on behalf of `owner`, or none of them.
    /// `host_free` says whether a host socket leaves the port free.
    pub fn allocate(
        &mut self,
        requests: &[PortRequest],
        owner: &str,
        ephemeral: (u16, u16),
        host_free: &dyn Fn(Proto, IpAddr, u16) -> bool,
    ) -> Result<Vec<PortBinding>, PortError> {
        let sorted = sort_and_norm(requests);
        let mut tentative = PortAllocator {
            held: self.held.clone(),
            last_ephemeral: self.last_ephemeral.clone(),
        };
        let mut out = Vec::with_capacity(sorted.len());
        for group in sorted.chunk_by(|a, b| same_port_group(&a.req, &b.req)) {
            let ips: Vec<IpAddr> = group.iter().map(|n| n.host_ip).collect();
            let port = tentative.pick(&group[0].req, &ips, ephemeral, host_free)?;
            for n in group {
                let binding = PortBinding {
                    proto: n.req.proto,
                    host_ip: n.host_ip,
                    host_port: port,
                    container_port: n.req.container_port,
                };
                tentative.insert(&binding, owner);
                out.push(binding);
            }
        }
        *self = tentative;
        Ok(out)
    }

    /// Picks one host port free on every address of a group.
    fn pick(
        &mut self,
        req: &PortRequest,
        ips: &[IpAddr],
        ephemeral: (u16, u16),
        host_free: &dyn Fn(Proto, IpAddr, u16) -> bool,
    ) -> Result<u16, PortError> {
        let proto = req.proto;
        let free = |this: &Self, port| ips.iter().all(|ip| this.holder(proto, *ip, port).is_none());
        let on_host = |port| ips.iter().all(|ip| host_free(proto, *ip, port));
        if req.host_port == 0 {
            return self.pick_ephemeral(proto, ephemeral, &free, &on_host);
        }
        if req.host_port == req.host_port_end {
            let port = req.host_port;
            if let Some(ip) = ips
                .iter()
                .find(|ip| self.holder(proto, **ip, port).is_some())
            {
                let holder = self
                    .holder(proto, *ip, port)
                    .unwrap_or_default()
                    .to_string();
                return Err(PortError::Taken {
                    proto,
                    ip: *ip,
                    port,
                    owner: holder,
                });
            }
            if let Some(ip) = ips.iter().find(|ip| !host_free(proto, **ip, port)) {
                return Err(PortError::HostInUse {
                    proto,
                    ip: *ip,
                    port,
                });
            }
            return Ok(port);
        }
        (req.host_port..=req.host_port_end)
            .find(|p| free(self, *p) && on_host(*p))
            .ok_or(PortError::RangeExhausted {
                proto,
                start: req.host_port,
                end: req.host_port_end,
            })
    }

    fn pick_ephemeral(
        &mut self,
        proto: Proto,
        (begin, end): (u16, u16),
        free: &dyn Fn(&Self, u16) -> bool,
        on_host: &dyn Fn(u16) -> bool,
    ) -> Result<u16, PortError> {
        let span = u32::from(end - begin) + 1;
        let mut attempts = 0;
        let mut next = self
            .last_ephemeral
            .get(&proto)
            .map_or(begin, |l| successor(*l, begin, end));
        for _ in 0..span {
            let candidate = next;
            next = successor(candidate, begin, end);
            if !free(self, candidate) {
                continue;
            }
            self.last_ephemeral.insert(proto, candidate);
            if on_host(candidate) {
                return Ok(candidate);
            }
            attempts += 1;
            if attempts == EPHEMERAL_ATTEMPTS {
                break;
            }
        }
        Err(PortError::EphemeralExhausted { proto, begin, end })
    }
}

fn successor(port: u16, begin: u16, end: u16) -> u16 {
    if port >= end || port < begin {
        begin
    } else {
        port + 1
    }
}

/// Normalises and sorts requests in Docker's order (cmpPortBinding). A request without a
/// host address binds `0.0.0.0` (the caller adds the `::` twin on IPv6 networks).
fn sort_and_norm(requests: &[PortRequest]) -> Vec<Norm> {
    let mut out: Vec<Norm> = requests
        .iter()
        .map(|r| {
            let host_ip = r.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let mut req = *r;
            if req.host_port_end == 0 {
                req.host_port_end = req.host_port;
            }
            Norm { req, host_ip }
        })
        .collect();
    out.sort_by(cmp_binding);
    out
}

/// Exact host ports before ranges, then container port, protocol, host port (range), host IP.
fn cmp_binding(a: &Norm, b: &Norm) -> Ordering {
    let is_range = |r: &PortRequest| r.host_port == 0 || r.host_port != r.host_port_end;
    is_range(&a.req)
        .cmp(&is_range(&b.req))
        .then(a.req.container_port.cmp(&b.req.container_port))
        .then(a.req.proto.cmp(&b.req.proto))
        .then(a.req.host_port.cmp(&b.req.host_port))
        .then(a.req.host_port_end.cmp(&b.req.host_port_end))
        .then(a.host_ip.cmp(&b.host_ip))
}

/// Bindings that differ only in host address must get the same host port.
fn same_port_group(a: &PortRequest, b: &PortRequest) -> bool {
    a.container_port == b.container_port
        && a.proto == b.proto
        && a.host_port == b.host_port
        && a.host_port_end == b.host_port_end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::spec::parse;

    const EPH: (u16, u16) = (40000, 40009);

    fn reqs(specs: &[&str]) -> Vec<PortRequest> {
        specs.iter().flat_map(|s| parse(s).unwrap()).collect()
    }

    fn all_free(_: Proto, _: IpAddr, _: u16) -> bool {
        true
    }

    fn ports(b: &[PortBinding]) -> Vec<(u16, u16)> {
        b.iter().map(|b| (b.host_port, b.container_port)).collect()
    }

    #[test]
    fn exact_before_ranges_and_same_port_per_group() {
        let mut a = PortAllocator::default();
        let got = a
            .allocate(
                &reqs(&[
                    "8000-8010:81",
                    "8005:80",
                    "198.51.100.1::90",
                    "198.51.100.2::90",
                ]),
                "e1",
                EPH,
                &all_free,
            )
            .unwrap();
        // the exact 8005 is allocated first, so the range skips it and gives 8000; the two
        // addresses of container port 90 share one ephemeral port.
        assert_eq!(
            ports(&got),
            vec![(8005, 80), (8000, 81), (40000, 90), (40000, 90)]
        );
        assert_eq!(got[2].host_ip, IpAddr::from([198, 51, 100, 1]));
        assert_eq!(got[3].host_ip, IpAddr::from([198, 51, 100, 2]));
    }

    #[test]
    fn range_skips_ports_held_by_others() {
        let mut a = PortAllocator::default();
        a.allocate(&reqs(&["8000:80"]), "e1", EPH, &all_free)
            .unwrap();
        let got = a
            .allocate(&reqs(&["8000-8002:80"]), "e2", EPH, &all_free)
            .unwrap();
        assert_eq!(ports(&got), vec![(8001, 80)]);
    }

    #[test]
    fn taken_port_names_owner_and_leaves_nothing() {
        let mut a = PortAllocator::default();
        a.allocate(&reqs(&["8080:80"]), "web", EPH, &all_free)
            .unwrap();
        let err = a
            .allocate(
                &reqs(&["9090:90", "198.51.100.1:8080:80/tcp"]),
                "other",
                EPH,
                &all_free,
            )
            .unwrap_err();
        assert!(err.to_string().contains("8080"), "{err}");
        assert!(err.to_string().contains("web"), "{err}");
        // 9090 was tentatively taken before the failure: it must be free again.
        assert_eq!(
            a.holder(Proto::Tcp, Ipv4Addr::UNSPECIFIED.into(), 9090),
            None
        );
        // udp is a different port space
        a.allocate(&reqs(&["8080:80/udp"]), "other", EPH, &all_free)
            .unwrap();
    }

    #[test]
    fn wildcard_conflicts_with_specific() {
        let mut a = PortAllocator::default();
        a.allocate(&reqs(&["198.51.100.1:8080:80"]), "e1", EPH, &all_free)
            .unwrap();
        assert!(
            a.allocate(&reqs(&["8080:80"]), "e2", EPH, &all_free)
                .is_err()
        );
        a.allocate(&reqs(&["198.51.100.2:8080:80"]), "e2", EPH, &all_free)
            .unwrap();
    }

    #[test]
    fn ephemeral_scans_on_and_wraps() {
        let mut a = PortAllocator::default();
        let first = a
            .allocate(&reqs(&["80", "81"]), "e1", EPH, &all_free)
            .unwrap();
        assert_eq!(ports(&first), vec![(40000, 80), (40001, 81)]);
        a.release("e1");
        let again = a.allocate(&reqs(&["80"]), "e2", EPH, &all_free).unwrap();
        assert_eq!(ports(&again), vec![(40002, 80)]);
        let many = a.allocate(&reqs(&["1-9"]), "e3", EPH, &all_free).unwrap();
        assert_eq!(many.len(), 9);
        assert!(matches!(
            a.allocate(&reqs(&["99"]), "e4", EPH, &all_free),
            Err(PortError::EphemeralExhausted { .. })
        ));
    }

    #[test]
    fn ephemeral_retries_when_host_holds_port() {
        let mut a = PortAllocator::default();
        let busy = |_: Proto, _: IpAddr, p: u16| p > 40002;
        let got = a.allocate(&reqs(&["80"]), "e1", EPH, &busy).unwrap();
        assert_eq!(got[0].host_port, 40003);
        let never = |_: Proto, _: IpAddr, _: u16| false;
        assert!(
            a.allocate(&reqs(&["80"]), "e2", (40000, 40100), &never)
                .is_err()
        );
        let exact = a
            .allocate(&reqs(&["8080:80"]), "e3", EPH, &never)
            .unwrap_err();
        assert!(matches!(exact, PortError::HostInUse { port: 8080, .. }));
    }

    #[test]
    fn duplicate_request_in_one_call_fails() {
        let mut a = PortAllocator::default();
        assert!(
            a.allocate(&reqs(&["8080:80", "8080:81"]), "e1", EPH, &all_free)
                .is_err()
        );
        assert!(a.held.is_empty());
    }

    #[test]
    fn ipv4_and_ipv6_wildcards_share_one_port_per_group() {
        let mut a = PortAllocator::default();
        let got = a
            .allocate(
                &reqs(&["80", "[::]::80", "8080:81", "[::]:8080:81"]),
                "e1",
                EPH,
                &all_free,
            )
            .unwrap();
        let v6 = IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED);
        let v4 = IpAddr::from(Ipv4Addr::UNSPECIFIED);
        let rows: Vec<_> = got
            .iter()
            .map(|b| (b.host_ip, b.host_port, b.container_port))
            .collect();
        assert_eq!(
            rows,
            vec![
                (v4, 8080, 81),
                (v6, 8080, 81),
                (v4, 40000, 80),
                (v6, 40000, 80)
            ]
        );
        // `::` holds every IPv6 address but no IPv4 one.
        assert_eq!(
            a.holder(Proto::Tcp, "2001:db8::1".parse().unwrap(), 8080),
            Some("e1")
        );
        a.release("e1");
        a.allocate(&reqs(&["[2001:db8::1]:8080:80"]), "e2", EPH, &all_free)
            .unwrap();
        a.allocate(&reqs(&["8080:80"]), "e3", EPH, &all_free)
            .unwrap();
        let err = a
            .allocate(&reqs(&["[::]:8080:80"]), "e4", EPH, &all_free)
            .unwrap_err();
        assert!(err.to_string().contains("e2"), "{err}");
        a.allocate(&reqs(&["[2001:db8::2]:8080:80"]), "e4", EPH, &all_free)
            .unwrap();
    }
}
