//! Creating and removing bridge networks.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use netdriver_common::{NET_F_ICC, NET_F_INTERNAL, NET_F_MASQUERADE, NET_F_ROUTED, NetInfo};

use super::{NetState, ServiceError, State, nameservers, new_id, validate_ifname, validate_name};
use crate::{
    ipam::{self, IpamError},
    model::{CreateNetwork, GatewayMode, Network},
};

const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

impl State {
    pub(super) async fn create_network(
        &mut self,
        req: CreateNetwork,
    ) -> Result<Network, ServiceError> {
        let net = self.validate_network(req).await?;
        if let Err(e) = self.apply_network(&net).await {
            self.undo_network(&net).await;
            return Err(e);
        }
        tracing::info!(network = %net.name, subnet = %net.subnet, subnet6 = ?net.subnet6, bridge = %net.bridge, "network created");
        // The gateway is a host address now: the host reaches published ports through it.
        if let Err(e) = self.sync_host_addrs().await {
            tracing::warn!("refreshing host addresses: {e}");
        }
        self.networks
            .insert(net.name.clone(), NetState::new(net.clone()));
        Ok(net)
    }

    async fn validate_network(&self, req: CreateNetwork) -> Result<Network, ServiceError> {
        validate_name("network", &req.name)?;
        if self.networks.contains_key(&req.name) {
            return Err(ServiceError::Conflict(format!(
                "network {:?} already exists",
                req.name
            )));
        }
        let policy = super::options::resolve(&req)?;
        if let Some(mtu) = policy.mtu.filter(|m| !MTU_RANGE.contains(m)) {
            return Err(ServiceError::Invalid(format!(
                "invalid MTU {mtu}: must be 68-65535"
            )));
        }
        let id = new_id();
        self.check_snat_ip(policy.snat_ip).await?;
        let bridge = match policy.bridge {
            Some(b) => b,
            None => format!("nd-{}", &id[..12]),
        };
        self.check_bridge_name(&bridge).await?;
        let subnet = match &req.subnet {
            Some(s) => self.check_subnet(ipam::parse_subnet(s)?)?,
            None => self.pick_subnet().await?,
        };
        let v6 = self.validate_ipv6(&req, policy.ipv6).await?;
        let gateway = match &req.gateway {
            Some(g) => parse_gateway(g, subnet)?,
            None => subnet
                .hosts()
                .next()
                .ok_or(IpamError::TooSmall { subnet })?,
        };
        Ok(Network {
            id,
            name: req.name,
            bridge,
            subnet,
            gateway,
            mtu: policy.mtu,
            icc: policy.icc,
            masquerade: policy.masquerade,
            snat_ip: policy.snat_ip,
            internal: policy.internal,
            gateway_mode: policy.gateway_mode,
            host_binding_ipv4: policy.host_binding_ipv4,
            subnet6: v6.map(|(subnet, _)| subnet),
            gateway6: v6.map(|(_, gateway)| gateway),
        })
    }

    /// A masquerade address must be one of the host's (replies must come back here).
    async fn check_snat_ip(&self, snat_ip: Option<Ipv4Addr>) -> Result<(), ServiceError> {
        let Some(ip) = snat_ip else {
            return Ok(());
        };
        let local = self.nl.ipv4_addresses().await?;
        if local.iter().any(|a| a.addr() == ip) {
            Ok(())
        } else {
            Err(ServiceError::Invalid(format!(
                "masquerade address {ip} is not an address of this host"
            )))
        }
    }

    async fn check_bridge_name(&self, bridge: &str) -> Result<(), ServiceError> {
        validate_ifname(bridge)?;
        if let Some(n) = self.networks.values().find(|n| n.net.bridge == bridge) {
            return Err(ServiceError::Conflict(format!(
                "bridge {bridge} is already used by network {}",
                n.net.name
            )));
        }
        if self.nl.link_by_name(bridge).await?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "interface {bridge} already exists"
            )));
        }
        Ok(())
    }

    /// An explicit subnet may not overlap another network's (routes are the user's call).
    fn check_subnet(&self, subnet: Ipv4Net) -> Result<Ipv4Net, ServiceError> {
        match self
            .networks
            .values()
            .find(|n| ipam::overlaps(&n.net.subnet, &subnet))
        {
            Some(n) => Err(IpamError::Overlap {
                subnet: subnet.into(),
                other: n.net.subnet.into(),
                network: n.net.name.clone(),
            }
            .into()),
            None => Ok(subnet),
        }
    }

    /// The first default pool clear of routes, interface addresses, nameservers and networks.
    async fn pick_subnet(&self) -> Result<Ipv4Net, ServiceError> {
        Ok(ipam::pick_pool(&self.taken_subnets().await?)?)
    }

    /// What a default pool must not overlap: routes (but the default route), interface
    /// addresses, nameservers, and the networks' subnets.
    pub(super) async fn taken_subnets(&self) -> Result<Vec<Ipv4Net>, ServiceError> {
        let mut taken: Vec<Ipv4Net> = self
            .nl
            .ipv4_routes()
            .await?
            .into_iter()
            .filter(|r| r.prefix_len() > 0)
            .collect();
        taken.extend(self.nl.ipv4_addresses().await?);
        taken.extend(nameservers(&self.config.resolv_conf));
        taken.extend(self.networks.values().map(|n| n.net.subnet));
        Ok(taken)
    }

    async fn apply_network(&mut self, net: &Network) -> Result<(), ServiceError> {
        let bridge = self.nl.create_bridge(&net.bridge, net.mtu).await?;
        self.nl
            .add_address(
                bridge.index,
                IpAddr::V4(net.gateway),
                net.subnet.prefix_len(),
            )
            .await?;
        self.configure_bridge6(net, bridge.index).await?;
        self.nl.set_up(bridge.index).await?;
        self.dp
            .add_network(net.subnet, net_info(bridge.index, net))?;
        self.add_network6(net, bridge.index)?;
        self.store.put_network(net)?;
        Ok(())
    }

    /// Best-effort undo of a half-created network.
    async fn undo_network(&mut self, net: &Network) {
        if let Err(e) = self.dp.remove_network(net.subnet) {
            tracing::warn!(network = %net.name, "undo: {e}");
        }
        if let Some(subnet6) = net.subnet6
            && let Err(e) = self.dp.remove_network6(subnet6)
        {
            tracing::warn!(network = %net.name, "undo: {e}");
        }
        match self.nl.link_by_name(&net.bridge).await {
            Ok(Some(link)) => {
                if let Err(e) = self.nl.delete_link(link.index).await {
                    tracing::warn!(network = %net.name, "undo: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(network = %net.name, "undo: {e}"),
        }
    }

    /// Re-creates a network's bridge if it is missing (after a reboot) and registers the
    /// subnet with the data path.
    pub(super) async fn ensure_bridge(&mut self, net: &Network) -> Result<(), ServiceError> {
        let index = if let Some(link) = self.nl.link_by_name(&net.bridge).await? {
            // A bridge made by a version that left its MAC to the kernel: pinned where it is
            // now, so the endpoints' `ND_VETHS` entries stay true.
            if let Some(mac) = link.mac {
                self.nl.set_mac(link.index, mac).await?;
            }
            link.index
        } else {
            {
                tracing::info!(network = %net.name, bridge = %net.bridge, "re-creating missing bridge");
                let link = self.nl.create_bridge(&net.bridge, net.mtu).await?;
                self.nl
                    .add_address(link.index, IpAddr::V4(net.gateway), net.subnet.prefix_len())
                    .await?;
                self.configure_bridge6(net, link.index).await?;
                link.index
            }
        };
        if net.ipv6() {
            // A restarted namespace keeps its bridge, not necessarily its sysctls.
            crate::netlink::enable_ipv6_forwarding()?;
        }
        self.nl.set_up(index).await?;
        self.dp.add_network(net.subnet, net_info(index, net))?;
        self.add_network6(net, index)?;
        Ok(())
    }

    pub(super) async fn remove_network(&mut self, name: &str) -> Result<(), ServiceError> {
        let net = self.network_state(name)?.net.clone();
        let eps: Vec<&str> = self
            .endpoints
            .values()
            .filter(|e| e.network == name)
            .map(|e| e.name.as_str())
            .collect();
        if !eps.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "network {name:?} still has {} endpoint(s): {}; remove them first",
                eps.len(),
                eps.join(", ")
            )));
        }
        self.store.delete_network(name)?;
        self.networks.remove(name);
        self.undo_network(&net).await;
        if let Err(e) = self.sync_host_addrs().await {
            tracing::warn!("refreshing host addresses: {e}");
        }
        tracing::info!(network = %name, "network removed");
        Ok(())
    }
}

fn net_info(bridge_ifindex: u32, net: &Network) -> NetInfo {
    NetInfo {
        bridge_ifindex,
        flags: net_flags(net),
        gateway_be: u32::from_ne_bytes(net.gateway.octets()),
        snat_addr_be: net.snat_ip.map_or(0, |ip| u32::from_ne_bytes(ip.octets())),
    }
}

/// The `NET_F_*` bits of a network, shared by its IPv4 and IPv6 entries.
pub(super) fn net_flags(net: &Network) -> u32 {
    let flag = |on: bool, bit: u32| if on { bit } else { 0 };
    flag(net.icc, NET_F_ICC)
        | flag(net.masquerade, NET_F_MASQUERADE)
        | flag(net.internal, NET_F_INTERNAL)
        | flag(net.gateway_mode == GatewayMode::Routed, NET_F_ROUTED)
}

fn parse_gateway(s: &str, subnet: Ipv4Net) -> Result<Ipv4Addr, ServiceError> {
    let addr: Ipv4Addr = s.trim().parse().map_err(|_| {
        ServiceError::Invalid(format!("invalid gateway {s:?}: expected an IPv4 address"))
    })?;
    if !ipam::is_host_addr(&subnet, addr) {
        return Err(IpamError::OutOfSubnet {
            addr: addr.into(),
            subnet: subnet.into(),
        }
        .into());
    }
    Ok(addr)
}
