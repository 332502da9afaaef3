//! Published ports on IPv6 host addresses (`-p [::]:8080:80`, and the `[::]` twin of a
//! binding without a host address on an `--ipv6` network), and the endpoint's IPv6 flows.
//!
//! The endpoint calls these wherever it publishes or withdraws its IPv4 bindings (create,
//! restart, reconcile, remove). Bindings go to `ND_PORTS6` one port at a time (IPv6 port
//! ranges are not stored as ranges).

use std::net::IpAddr;

use netdriver_common::{PortKey6, PortTarget, PortTarget6};

use super::{ServiceError, State};
use crate::{
    model::{Endpoint, GatewayMode},
    ports::{PortBinding, Proto},
};

/// The endpoint's bindings on IPv6 host addresses.
pub(super) fn v6_bindings(ep: &Endpoint) -> impl Iterator<Item = &PortBinding> {
    ep.ports.iter().filter(|b| b.host_ip.is_ipv6())
}

/// Whether the IPv6 data path translates `proto` (SCTP's CRC32C update is IPv4 only).
fn in_v6_data_path(proto: Proto) -> bool {
    proto != Proto::Sctp
}

/// The `ND_PORTS6` key of an IPv6 binding (`[::]`: every IPv6 host address); `None` for an
/// IPv4 one.
pub(super) fn port_key6(b: &PortBinding) -> Option<PortKey6> {
    let IpAddr::V6(ip) = b.host_ip else {
        return None;
    };
    Some(PortKey6 {
        host_addr: ip.octets(),
        host_port: b.host_port,
        proto: b.proto.number(),
        _pad: 0,
    })
}

impl State {
    /// Publishes the endpoint's IPv6 bindings towards `ep.ip6` (and in routed mode its own
    /// address and ports), delivered like its IPv4 ones (`target`: the veth, the container's
    /// and the bridge's MACs). An endpoint without an
    /// IPv6 address has no IPv6 bindings (the allocation refuses them).
    pub(super) fn publish_v6(
        &mut self,
        ep: &Endpoint,
        target: &PortTarget,
    ) -> Result<(), ServiceError> {
        let Some(ip6) = ep.ip6 else {
            return Ok(());
        };
        for b in v6_bindings(ep) {
            let Some(key) = port_key6(b) else {
                continue;
            };
            if !in_v6_data_path(b.proto) {
                tracing::warn!(
                    endpoint = %ep.name,
                    port = b.host_port,
                    "SCTP is published on IPv4 only: the IPv6 data path does not translate it"
                );
                continue;
            }
            let container_port = b.container_port;
            self.dp.publish6(
                key,
                PortTarget6 {
                    addr: ip6.octets(),
                    port: container_port,
                    _pad0: 0,
                    ifindex: target.ifindex,
                    mac: target.mac,
                    gw_mac: target.gw_mac,
                },
            )?;
        }
        for key in self.routed_ports6(ep) {
            self.dp.publish6(
                key,
                PortTarget6 {
                    addr: ip6.octets(),
                    port: key.host_port,
                    _pad0: 0,
                    ifindex: target.ifindex,
                    mac: target.mac,
                    gw_mac: target.gw_mac,
                },
            )?;
        }
        Ok(())
    }

    /// Withdraws the endpoint's IPv6 bindings (and routed-mode ports); reports every error
    /// it meets.
    pub(super) fn unpublish_v6(&mut self, ep: &Endpoint) -> Vec<ServiceError> {
        let keys: Vec<PortKey6> = v6_bindings(ep)
            .filter_map(port_key6)
            .chain(self.routed_ports6(ep))
            .collect();
        keys.iter()
            .filter_map(|key| self.dp.unpublish6(key).err().map(Into::into))
            .collect()
    }

    /// Routed mode: the container's own IPv6 address and ports are published as themselves
    /// (reachable from outside without translation), as `routed_ports` does for IPv4.
    pub(super) fn routed_ports6(&self, ep: &Endpoint) -> Vec<PortKey6> {
        let routed = self
            .networks
            .get(&ep.network)
            .is_some_and(|n| n.net.gateway_mode == GatewayMode::Routed);
        let (true, Some(ip6)) = (routed, ep.ip6) else {
            return Vec::new();
        };
        let mut keys: Vec<PortKey6> = ep
            .ports
            .iter()
            .filter(|b| in_v6_data_path(b.proto))
            .map(|b| PortKey6 {
                host_addr: ip6.octets(),
                host_port: b.container_port,
                proto: b.proto.number(),
                _pad: 0,
            })
            .collect();
        keys.sort_by_key(|k| (k.host_port, k.proto));
        keys.dedup();
        keys
    }

    /// Forgets every tracked IPv6 flow of the endpoint's IPv6 address.
    pub(super) fn flush_flows6(&mut self, ep: &Endpoint) -> Result<(), ServiceError> {
        if let Some(ip6) = ep.ip6 {
            self.dp.flush_conntrack6(ip6)?;
        }
        Ok(())
    }

    /// IPv6 published ports no endpoint owns are unpublished (see `delete_stray_ports`).
    pub(super) fn delete_stray_ports6(&mut self) -> Result<(), ServiceError> {
        let owned: Vec<PortKey6> = self
            .endpoints
            .values()
            .flat_map(|e| {
                e.ports
                    .iter()
                    .filter_map(port_key6)
                    .chain(self.routed_ports6(e))
            })
            .collect();
        for (key, _) in self.dp.published6()? {
            if !owned.contains(&key) {
                tracing::warn!(
                    port = key.host_port,
                    "unpublishing an IPv6 port no endpoint owns"
                );
                self.dp.unpublish6(&key)?;
            }
        }
        Ok(())
    }
}
