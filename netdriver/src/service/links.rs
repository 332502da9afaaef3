//! Legacy links and exposed ports (`endpoint create --expose`, `--link`), and the routed-mode
//! entries that publish a container's own address.

use std::net::Ipv4Addr;

use netdriver_common::{LinkKey, LinkKey6, PortKey, PortTarget};

use super::{ServiceError, State};
use crate::{
    model::{Endpoint, ExposedPort, GatewayMode},
    ports::Proto,
};

/// The most ports one `--expose` range may declare.
const EXPOSE_RANGE_MAX: u32 = 1024;

/// Parses `PORT[-END][/tcp|/udp|/sctp]` (Docker's `--expose`).
pub(super) fn parse_expose(spec: &str) -> Result<Vec<ExposedPort>, ServiceError> {
    let bad = |why: &str| ServiceError::Invalid(format!("invalid exposed port {spec:?}: {why}"));
    let (ports, proto) = match spec.trim().split_once('/') {
        Some((p, proto)) => (
            p,
            proto
                .parse::<Proto>()
                .map_err(|_| bad(crate::ports::PROTO_CHOICES))?,
        ),
        None => (spec.trim(), Proto::Tcp),
    };
    let port = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("ports are 1-65535"))
    };
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if start > end || u32::from(end - start) >= EXPOSE_RANGE_MAX {
        return Err(bad("a range is START-END with at most 1024 ports"));
    }
    Ok((start..=end)
        .map(|port| ExposedPort { port, proto })
        .collect())
}

/// The endpoint name of a `NAME[:ALIAS]` link.
pub(super) fn link_target(spec: &str) -> &str {
    spec.split_once(':').map_or(spec, |(name, _)| name).trim()
}

fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

impl State {
    /// Links must name other endpoints of the same network.
    pub(super) fn check_links(&self, ep: &Endpoint) -> Result<(), ServiceError> {
        for spec in &ep.links {
            let name = link_target(spec);
            if name == ep.name {
                return Err(ServiceError::Invalid(format!(
                    "endpoint {name:?} cannot link to itself"
                )));
            }
            let child = self.endpoints.get(name).ok_or_else(|| {
                ServiceError::NotFound(format!("cannot link to {name:?}: no endpoint of that name"))
            })?;
            if child.network != ep.network {
                return Err(ServiceError::Invalid(format!(
                    "cannot link to {name:?}: it is on network {:?}, not {:?} (links work within one network)",
                    child.network, ep.network
                )));
            }
        }
        Ok(())
    }

    /// Programs the links where `ep` is the parent and where it is the child (parents that
    /// name it, created before it or kept across its re-creation).
    pub(super) fn program_links(&mut self, ep: &Endpoint) -> Result<(), ServiceError> {
        let mut keys = Vec::new();
        let mut keys6 = Vec::new();
        for spec in &ep.links {
            if let Some(child) = self.endpoints.get(link_target(spec))
                && child.network == ep.network
            {
                keys.extend(link_keys(ep, child));
                keys6.extend(link_keys6(ep, child));
            }
        }
        for parent in self.endpoints.values().filter(|p| {
            p.network == ep.network
                && p.name != ep.name
                && p.links.iter().any(|l| link_target(l) == ep.name)
        }) {
            keys.extend(link_keys(parent, ep));
            keys6.extend(link_keys6(parent, ep));
        }
        for key in keys {
            self.dp.add_link(key)?;
        }
        for key in keys6 {
            self.dp.add_link6(key)?;
        }
        Ok(())
    }

    /// Routed mode: the container's own address and port are published as themselves.
    pub(super) fn routed_ports(&self, ep: &Endpoint) -> Vec<PortKey> {
        let routed = self
            .networks
            .get(&ep.network)
            .is_some_and(|n| n.net.gateway_mode == GatewayMode::Routed);
        if !routed {
            return Vec::new();
        }
        let mut keys: Vec<PortKey> = ep
            .ports
            .iter()
            .map(|b| PortKey {
                host_addr_be: be(ep.ip),
                host_port: b.container_port,
                proto: b.proto.number(),
                _pad: 0,
            })
            .collect();
        keys.sort_by_key(|k| (k.host_port, k.proto));
        keys.dedup();
        keys
    }

    pub(super) fn publish_routed(
        &mut self,
        ep: &Endpoint,
        target: PortTarget,
    ) -> Result<(), ServiceError> {
        for key in self.routed_ports(ep) {
            self.dp.publish(
                key,
                PortTarget {
                    port: key.host_port,
                    ..target
                },
            )?;
        }
        Ok(())
    }
}

fn link_keys(parent: &Endpoint, child: &Endpoint) -> Vec<LinkKey> {
    child
        .expose
        .iter()
        .map(|e| LinkKey {
            parent_addr_be: be(parent.ip),
            child_addr_be: be(child.ip),
            port: e.port,
            proto: e.proto.number(),
            _pad: 0,
        })
        .collect()
}

/// The IPv6 twins of [`link_keys`], when both ends have an IPv6 address.
fn link_keys6(parent: &Endpoint, child: &Endpoint) -> Vec<LinkKey6> {
    let (Some(p), Some(c)) = (parent.ip6, child.ip6) else {
        return Vec::new();
    };
    child
        .expose
        .iter()
        .map(|e| LinkKey6 {
            parent_addr: p.octets(),
            child_addr: c.octets(),
            port: e.port,
            proto: e.proto.number(),
            _pad: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_syntax() {
        assert_eq!(
            parse_expose("80").unwrap(),
            vec![ExposedPort {
                port: 80,
                proto: Proto::Tcp
            }]
        );
        assert_eq!(parse_expose("53/udp").unwrap()[0].proto, Proto::Udp);
        assert_eq!(parse_expose("8000-8002/tcp").unwrap().len(), 3);
        assert_eq!(parse_expose("9000/sctp").unwrap()[0].proto, Proto::Sctp);
        for bad in [
            "", "0", "x", "80/sctpx", "80/icmp", "9-8", "1-2000", "70000",
        ] {
            let err = parse_expose(bad).unwrap_err();
            assert_eq!(err.status(), 400, "{bad}");
        }
    }

    #[test]
    fn link_names() {
        assert_eq!(link_target("db"), "db");
        assert_eq!(link_target("db:alias"), "db");
    }
}
