//! The IPv6 side of a network (`--ipv6`): its subnet and gateway, and the bridge's IPv6
//! addresses. Docker's bridge driver is the model: the gateway address and `fe80::1/64` on
//! the bridge, IPv6 forwarding on in the host namespace.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use netdriver_common::NetInfo6;

use super::{ServiceError, State};
use crate::{
    ipam::{IpamError, v6},
    model::{CreateNetwork, Network},
    netlink,
};

/// Docker's link-local address of the bridge.
const BRIDGE_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

impl State {
    /// The IPv6 subnet and gateway of a new network, or `None` without `--ipv6`.
    pub(super) async fn validate_ipv6(
        &self,
        req: &CreateNetwork,
        enabled: bool,
    ) -> Result<Option<(Ipv6Net, Ipv6Addr)>, ServiceError> {
        if !enabled {
            if req.subnet_v6.is_some() || req.gateway_v6.is_some() {
                return Err(ServiceError::Invalid(
                    "an IPv6 subnet or gateway needs IPv6 enabled: add --ipv6".into(),
                ));
            }
            return Ok(None);
        }
        if req.gateway_v6.is_some() && req.subnet_v6.is_none() {
            return Err(ServiceError::Invalid(
                "an IPv6 gateway needs the IPv6 subnet it is in (--subnet-v6)".into(),
            ));
        }
        let subnet = match &req.subnet_v6 {
            Some(s) => self.check_subnet6(v6::parse_subnet(s)?)?,
            None => self.pick_subnet6().await?,
        };
        let gateway = match &req.gateway_v6 {
            Some(g) => parse_gateway6(g, subnet)?,
            None => v6::first_host(&subnet),
        };
        Ok(Some((subnet, gateway)))
    }

    /// An IPv6 subnet may not overlap another network's.
    fn check_subnet6(&self, subnet: Ipv6Net) -> Result<Ipv6Net, ServiceError> {
        let clash = self.networks.values().find_map(|n| {
            n.net
                .subnet6
                .filter(|other| v6::overlaps(other, &subnet))
                .map(|other| (other, &n.net.name))
        });
        match clash {
            Some((other, network)) => Err(IpamError::Overlap {
                subnet: subnet.into(),
                other: other.into(),
                network: network.clone(),
            }
            .into()),
            None => Ok(subnet),
        }
    }

    /// A random unique local /64 clear of the host's IPv6 routes and addresses and of every
    /// network's IPv6 subnet.
    async fn pick_subnet6(&self) -> Result<Ipv6Net, ServiceError> {
        Ok(v6::pick_pool(
            &self.taken_subnets6().await?,
            &mut random_id,
        )?)
    }

    /// What a default IPv6 subnet must not overlap: the host's IPv6 routes and addresses
    /// and the networks' IPv6 subnets.
    pub(super) async fn taken_subnets6(&self) -> Result<Vec<Ipv6Net>, ServiceError> {
        let mut taken = self.nl.ipv6_routes().await?;
        taken.extend(self.nl.ipv6_addresses().await?);
        taken.extend(self.networks.values().filter_map(|n| n.net.subnet6));
        Ok(taken)
    }

    /// Turns IPv6 on for the bridge, gives it the gateway address and `fe80::1/64`, and
    /// turns IPv6 forwarding on in the daemon's namespace. Nothing for an IPv4-only network.
    pub(super) async fn configure_bridge6(
        &self,
        net: &Network,
        index: u32,
    ) -> Result<(), ServiceError> {
        let (Some(subnet), Some(gateway)) = (net.subnet6, net.gateway6) else {
            return Ok(());
        };
        netlink::enable_ipv6(&net.bridge)?;
        self.nl
            .add_address6(index, gateway, subnet.prefix_len())
            .await?;
        self.nl.add_address6(index, BRIDGE_LINK_LOCAL, 64).await?;
        netlink::enable_ipv6_forwarding()?;
        Ok(())
    }
}

impl State {
    /// Registers the network's IPv6 subnet with the data path (`ND_NETS6`: policy, and
    /// outsiders reach its addresses only through published ports). Nothing for an
    /// IPv4-only network. IPv6 masquerade uses the route's source address (`snat_ip` is
    /// IPv4).
    pub(super) fn add_network6(
        &mut self,
        net: &Network,
        bridge_ifindex: u32,
    ) -> Result<(), ServiceError> {
        let (Some(subnet), Some(gateway)) = (net.subnet6, net.gateway6) else {
            return Ok(());
        };
        self.dp.add_network6(
            subnet,
            NetInfo6 {
                bridge_ifindex,
                flags: super::network::net_flags(net),
                gateway: gateway.octets(),
                snat_addr: [0; 16],
            },
        )?;
        Ok(())
    }
}

fn parse_gateway6(s: &str, subnet: Ipv6Net) -> Result<Ipv6Addr, ServiceError> {
    let addr: Ipv6Addr = s.trim().parse().map_err(|_| {
        ServiceError::Invalid(format!(
            "invalid IPv6 gateway {s:?}: expected an IPv6 address"
        ))
    })?;
    if !v6::is_host_addr(&subnet, addr) {
        return Err(IpamError::OutOfSubnet {
            addr: addr.into(),
            subnet: subnet.into(),
        }
        .into());
    }
    Ok(addr)
}

/// The 40 random bits of an RFC 4193 global id.
pub(super) fn random_id() -> [u8; 5] {
    crate::ipam::random_bytes()
}
