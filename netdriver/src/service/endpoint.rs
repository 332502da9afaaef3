//! Creating and removing endpoints: veth pairs, container addresses and published ports.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use netdriver_common::{PortKey, PortTarget, VethInfo};

use super::{
    ServiceError, State, new_id, timing::Stopwatch, validate_ifname, validate_labels, validate_name,
};
use crate::{
    dataplane::UplinkMode,
    fault,
    ipam::{self, format_mac},
    model::{CreateEndpoint, Endpoint, Network},
    netlink::NetnsHandle,
    ports::{self, HostSockets, PortBinding, PortRequest, requested_protos},
};

impl State {
    pub(super) async fn create_endpoint(
        &mut self,
        req: CreateEndpoint,
    ) -> Result<Endpoint, ServiceError> {
        let name = req.name.clone().unwrap_or_default();
        let mut t = Stopwatch::new("endpoint create", &name);
        let (ep, requests, wanted) = self.validate_endpoint(req)?;
        t.lap("validate");
        let ep = self.allocate_endpoint(ep, &requests, wanted)?;
        t.lap("allocate");
        if let Err(e) = self.apply_endpoint(&ep).await {
            self.teardown_endpoint(&ep).await;
            self.release_endpoint(&ep);
            return Err(e);
        }
        tracing::info!(endpoint = %ep.name, ip = %ep.ip, ip6 = ?ep.ip6, ports = ep.ports.len(), "endpoint created");
        self.endpoints.insert(ep.name.clone(), ep.clone());
        Ok(ep)
    }

    /// Checks the request without touching anything; returns the endpoint without its
    /// addresses and ports, the parsed port requests and the wanted addresses.
    fn validate_endpoint(
        &self,
        req: CreateEndpoint,
    ) -> Result<(Endpoint, Vec<PortRequest>, Wanted), ServiceError> {
        let net = &self.network_state(&req.network)?.net;
        let id = new_id();
        let name = req.name.unwrap_or_else(|| format!("ep-{}", &id[..12]));
        validate_name("endpoint", &name)?;
        if self.endpoints.contains_key(&name) {
            return Err(ServiceError::Conflict(format!(
                "endpoint {name:?} already exists"
            )));
        }
        let ifname = req.ifname.unwrap_or_else(|| "eth0".into());
        validate_ifname(&ifname)?;
        check_netns(&req.netns)?;
        let wanted = Wanted {
            ip: req.ip.as_deref().map(parse_ip).transpose()?,
            ip6: req.ip6.as_deref().map(|s| parse_ip6(net, s)).transpose()?,
        };
        let mac = match req.mac.as_deref() {
            Some(m) => Some(ipam::parse_mac(m).ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "invalid MAC address {m:?}: expected a unicast aa:bb:cc:dd:ee:ff"
                ))
            })?),
            None => None,
        };
        let mut requests = Vec::new();
        for spec in &req.ports {
            requests.extend(ports::parse(spec)?);
        }
        if net.internal && !requests.is_empty() {
            return Err(ServiceError::Invalid(format!(
                "network {:?} is internal: no port can be published on it",
                net.name
            )));
        }
        // Docker's host_binding_ipv4: the host address of bindings that name none.
        if let Some(ip) = net.host_binding_ipv4 {
            for r in requests.iter_mut().filter(|r| r.host_ip.is_none()) {
                r.host_ip = Some(ip.into());
            }
        }
        let requests = bindings_for_network(net, requests)?;
        validate_labels(&req.labels)?;
        let mut expose = Vec::new();
        for spec in &req.expose {
            expose.extend(super::links::parse_expose(spec)?);
        }
        let ep = Endpoint {
            host_ifname: format!("nd{}", &id[..10]),
            id,
            name,
            network: net.name.clone(),
            netns: req.netns,
            ifname,
            ip: Ipv4Addr::UNSPECIFIED,
            prefix_len: net.subnet.prefix_len(),
            gateway: net.gateway,
            ip6: None,
            prefix_len6: net.subnet6.map_or(0, |s| s.prefix_len()),
            gateway6: net.gateway6,
            mac: mac.map(format_mac).unwrap_or_default(),
            port_specs: req.ports,
            ports: Vec::new(),
            expose,
            links: req.links,
            labels: req.labels,
        };
        self.check_links(&ep)?;
        Ok((ep, requests, wanted))
    }

    /// Reserves the addresses and host ports (in memory only); all or nothing.
    fn allocate_endpoint(
        &mut self,
        mut ep: Endpoint,
        requests: &[PortRequest],
        wanted: Wanted,
    ) -> Result<Endpoint, ServiceError> {
        let net = self.networks.get_mut(&ep.network).expect("validated");
        ep.ip = net.pool.allocate(wanted.ip)?;
        if ep.mac.is_empty() {
            ep.mac = format_mac(ipam::mac_from_ip(ep.ip));
        }
        if let Some(pool6) = net.pool6.as_mut() {
            let mac = ipam::parse_mac(&ep.mac).expect("valid MAC");
            match pool6.allocate(wanted.ip6, mac) {
                Ok(ip6) => ep.ip6 = Some(ip6),
                Err(e) => {
                    net.pool.release(ep.ip);
                    return Err(e.into());
                }
            }
        }
        let mut t = Stopwatch::new("endpoint allocate", &ep.name);
        let sockets = HostSockets::read_for(&requested_protos(requests));
        t.lap("host sockets");
        let host_free = |proto, ip, port| sockets.is_free(proto, ip, port);
        let ephemeral = crate::netlink::ip_local_port_range()?;
        t.lap("ephemeral range");
        match self
            .ports
            .allocate(requests, &ep.name, ephemeral, &host_free)
        {
            Ok(bindings) => {
                ep.ports = bindings;
                Ok(ep)
            }
            Err(e) => {
                self.release_endpoint(&ep);
                Err(e.into())
            }
        }
    }

    /// In XDP mode, turns GRO on at the container's end of a new veth (while it is still in
    /// this namespace): a veth accepts frames redirected by XDP only when its peer runs NAPI.
    /// The setting moves with the interface.
    pub(super) fn prepare_container_end(&self, peer: &str) -> Result<(), ServiceError> {
        if self.dp.uplink_mode() == UplinkMode::Xdp {
            crate::netlink::set_gro(peer, true)?;
        }
        Ok(())
    }

    /// Creates the veth pair, configures the container side and publishes the ports.
    pub(super) async fn apply_endpoint(&mut self, ep: &Endpoint) -> Result<(), ServiceError> {
        let mut t = Stopwatch::new("endpoint apply", &ep.name);
        let mtu = self.networks[&ep.network].net.mtu;
        let peer = format!("np{}", &ep.id[..10]);
        let host = self.create_veth(ep, &peer, mtu).await?;
        t.lap("veth create");
        let bridge = self.bridge_link(&ep.network).await?;
        t.lap("bridge lookup");
        self.nl.set_master(host.index, bridge.index).await?;
        t.lap("set master");
        self.nl.set_up(host.index).await?;
        t.lap("host end up");
        fault::point("endpoint-create:moved");
        let mac = ipam::parse_mac(&ep.mac).expect("stored MAC is valid");
        let netns = NetnsHandle::open(&ep.netns).await?;
        t.lap("netns open");
        netns
            .configure_container_link(
                &peer,
                &ep.ifname,
                mac,
                ep.ip,
                ep.prefix_len,
                ep.gateway,
                mtu,
            )
            .await?;
        t.lap("container link config");
        if let (Some(ip6), Some(gateway6)) = (ep.ip6, ep.gateway6) {
            netns
                .configure_container_ipv6(&ep.ifname, ip6, ep.prefix_len6, gateway6)
                .await?;
            t.lap("container ipv6 config");
        }
        // A previous holder of this address or of these host ports may have left flows
        // behind (moby#53384: UDP flows of a restarted container).
        self.flush_flows(ep)?;
        t.lap("flush flows");
        self.program_endpoint(ep).await?;
        t.lap("program");
        fault::point("endpoint-create:published");
        self.store.put_endpoint(ep)?;
        t.lap("store");
        fault::point("endpoint-create:stored");
        Ok(())
    }

    /// Creates the endpoint's veth pair with the container's end (`peer`) in the endpoint's
    /// namespace; returns the host end. In tc mode the peer is born there; in XDP mode it is
    /// created here first, GRO turned on (see [`Self::prepare_container_end`]), then moved.
    async fn create_veth(
        &self,
        ep: &Endpoint,
        peer: &str,
        mtu: Option<u32>,
    ) -> Result<crate::netlink::LinkInfo, ServiceError> {
        if self.dp.uplink_mode() != UplinkMode::Xdp {
            let host = (self.nl)
                .create_veth_into(&ep.host_ifname, peer, mtu, &ep.netns)
                .await?;
            fault::point("endpoint-create:veth");
            return Ok(host);
        }
        let (host, peer_link) = self.nl.create_veth(&ep.host_ifname, peer, mtu).await?;
        fault::point("endpoint-create:veth");
        self.prepare_container_end(peer)?;
        self.nl.move_to_netns(peer_link.index, &ep.netns).await?;
        Ok(host)
    }

    pub(super) async fn bridge_link(
        &self,
        network: &str,
    ) -> Result<crate::netlink::LinkInfo, ServiceError> {
        let name = &self.networks[network].net.bridge;
        self.nl.link_by_name(name).await?.ok_or_else(|| {
            ServiceError::Conflict(format!("bridge {name} of network {network} is missing"))
        })
    }

    /// Attaches the data path to the endpoint's veth and publishes its ports.
    pub(super) async fn program_endpoint(&mut self, ep: &Endpoint) -> Result<(), ServiceError> {
        let mut t = Stopwatch::new("endpoint program", &ep.name);
        let host = self
            .nl
            .link_by_name(&ep.host_ifname)
            .await?
            .ok_or_else(|| {
                ServiceError::Conflict(format!(
                    "host interface {} of endpoint {} is missing",
                    ep.host_ifname, ep.name
                ))
            })?;
        let bridge = self.bridge_link(&ep.network).await?;
        let gw_mac = bridge.mac.unwrap_or_default();
        t.lap("link lookups");
        let veth = VethInfo {
            flags: super::network::net_flags(&self.networks[&ep.network].net),
            bridge_mac: gw_mac,
            _pad: [0; 2],
            bridge_ifindex: bridge.index,
        };
        self.dp.attach_container(&ep.host_ifname, veth)?;
        t.lap("tc attach");
        let target = PortTarget {
            addr_be: u32::from_ne_bytes(ep.ip.octets()),
            port: 0,
            _pad0: 0,
            ifindex: host.index,
            mac: ipam::parse_mac(&ep.mac).expect("stored MAC is valid"),
            gw_mac,
        };
        // Runs of consecutive ports are one range in the data path, whatever their length.
        for run in ports::runs(&ep.ports) {
            let target = PortTarget {
                port: run.container_start,
                ..target
            };
            let Some(start) = port_key(&run.first()) else {
                continue;
            };
            if run.len() == 1 {
                self.dp.publish(start, target)?;
            } else {
                self.dp.publish_range(start, &run.blocks(), target)?;
            }
        }
        t.lap("publish");
        self.publish_v6(ep, &target)?;
        t.lap("publish v6");
        self.publish_routed(ep, target)?;
        t.lap("publish routed");
        self.program_links(ep)?;
        t.lap("links");
        Ok(())
    }

    /// Forgets every tracked flow of the endpoint's address and of its host ports.
    fn flush_flows(&mut self, ep: &Endpoint) -> Result<(), ServiceError> {
        let mut t = Stopwatch::new("endpoint flush", &ep.name);
        self.flush_flows6(ep)?;
        t.lap("ipv6");
        // One pass over the table for the address and all the host ports (a range may hold
        // thousands).
        let host_ports = ep
            .ports
            .iter()
            .map(|b| (b.host_port, b.proto.number()))
            .collect();
        self.dp.flush_conntrack_endpoint(ep.ip, &host_ports)?;
        t.lap("conntrack");
        self.dp.flush_hairpin(ep.ip)?;
        t.lap("hairpin");
        self.dp.flush_sock_rnat(ep.ip)?;
        if let Some(ip6) = ep.ip6 {
            self.dp.flush_sock_rnat6(ip6)?;
        }
        t.lap("sock rnat");
        Ok(())
    }

    /// Withdraws published bindings from the data path (single ports and ranges alike).
    pub(super) fn unpublish_bindings(&mut self, bindings: &[PortBinding]) -> Vec<ServiceError> {
        let mut errors = Vec::new();
        for run in ports::runs(bindings) {
            let Some(start) = port_key(&run.first()) else {
                continue;
            };
            let unpublished = if run.len() == 1 {
                self.dp.unpublish(&start)
            } else {
                self.dp.unpublish_range(&start, &run.blocks())
            };
            if let Err(e) = unpublished {
                errors.push(e.into());
            }
        }
        errors
    }

    /// Undoes what `apply_endpoint` did, as far as it got; reports every error it meets.
    pub(super) async fn teardown_endpoint(&mut self, ep: &Endpoint) -> Vec<ServiceError> {
        let mut t = Stopwatch::new("endpoint teardown", &ep.name);
        let mut errors = Vec::new();
        errors.extend(self.unpublish_bindings(&ep.ports));
        errors.extend(self.unpublish_v6(ep));
        for key in self.routed_ports(ep) {
            if let Err(e) = self.dp.unpublish(&key) {
                errors.push(e.into());
            }
        }
        t.lap("unpublish");
        fault::point("endpoint-remove:unpublished");
        if let Err(e) = self.dp.remove_links_of(ep.ip) {
            errors.push(e.into());
        }
        if let Some(ip6) = ep.ip6
            && let Err(e) = self.dp.remove_links_of6(ip6)
        {
            errors.push(e.into());
        }
        t.lap("links");
        if let Err(e) = self.flush_flows(ep) {
            errors.push(e);
        }
        t.lap("flush flows");
        if let Err(e) = self.dp.detach_container(&ep.host_ifname) {
            errors.push(e.into());
        }
        t.lap("tc detach");
        match self.nl.link_by_name(&ep.host_ifname).await {
            // Deleting one end of a veth pair deletes both, wherever the peer is.
            Ok(Some(link)) => {
                if let Err(e) = self.nl.delete_link(link.index).await {
                    errors.push(e.into());
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e.into()),
        }
        t.lap("veth delete");
        for e in &errors {
            tracing::warn!(endpoint = %ep.name, "teardown: {e}");
        }
        errors
    }

    pub(super) fn release_endpoint(&mut self, ep: &Endpoint) {
        if let Some(n) = self.networks.get_mut(&ep.network) {
            n.pool.release(ep.ip);
            if let (Some(pool6), Some(ip6)) = (n.pool6.as_mut(), ep.ip6) {
                pool6.release(ip6);
            }
        }
        self.ports.release(&ep.name);
    }

    pub(super) async fn remove_endpoint(&mut self, name: &str) -> Result<(), ServiceError> {
        let ep = self
            .endpoints
            .get(name)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound(format!("no endpoint named {name:?}")))?;
        let mut t = Stopwatch::new("endpoint remove", name);
        self.store.delete_endpoint(name)?;
        t.lap("store");
        fault::point("endpoint-remove:unstored");
        self.endpoints.remove(name);
        let errors = self.teardown_endpoint(&ep).await;
        t.lap("teardown");
        self.release_endpoint(&ep);
        tracing::info!(endpoint = %name, "endpoint removed");
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Docker's address families of port bindings: on an IPv6 network a binding that names no
/// host address is published on `0.0.0.0` and on `[::]` (with one host port); on a network
/// without IPv6, an IPv6 host address is refused.
pub(super) fn bindings_for_network(
    net: &Network,
    requests: Vec<PortRequest>,
) -> Result<Vec<PortRequest>, ServiceError> {
    if let Some(r) = requests
        .iter()
        .find(|r| r.host_ip.is_some_and(|ip| ip.is_ipv6()))
    {
        if !net.ipv6() {
            return Err(ServiceError::Invalid(format!(
                "IPv6 host address {} in a port binding, but network {:?} has no IPv6 (create it with --ipv6)",
                r.host_ip.expect("checked"),
                net.name
            )));
        }
    }
    let mut out = Vec::with_capacity(requests.len() * 2);
    for r in requests {
        out.push(r);
        if r.host_ip.is_none() && net.ipv6() {
            out.push(PortRequest {
                host_ip: Some(Ipv6Addr::UNSPECIFIED.into()),
                ..r
            });
        }
    }
    Ok(out)
}

/// The `ND_PORTS` key of an IPv4 binding; `None` for an IPv6 one (see `publish_v6`).
pub(super) fn port_key(b: &PortBinding) -> Option<PortKey> {
    let IpAddr::V4(ip) = b.host_ip else {
        return None;
    };
    Some(PortKey {
        host_addr_be: u32::from_ne_bytes(ip.octets()),
        host_port: b.host_port,
        proto: b.proto.number(),
        _pad: 0,
    })
}

/// The addresses an endpoint request asks for.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Wanted {
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
}

/// A requested IPv6 address: only on an IPv6 network (IPAM checks the rest).
pub(super) fn parse_ip6(net: &Network, s: &str) -> Result<Ipv6Addr, ServiceError> {
    if !net.ipv6() {
        return Err(ServiceError::Invalid(format!(
            "IPv6 address {s:?} requested, but network {:?} has no IPv6 (create it with --ipv6)",
            net.name
        )));
    }
    s.trim().parse().map_err(|_| {
        ServiceError::Invalid(format!(
            "invalid IPv6 address {s:?}: expected an address such as 2001:db8:1::10"
        ))
    })
}

fn parse_ip(s: &str) -> Result<Ipv4Addr, ServiceError> {
    s.trim().parse().map_err(|_| {
        ServiceError::Invalid(format!(
            "invalid IP address {s:?}: expected an IPv4 address"
        ))
    })
}

/// The netns path must exist and be a namespace file (nsfs).
pub(super) fn check_netns(path: &Path) -> Result<(), ServiceError> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| {
        ServiceError::Invalid(format!("netns path {}: {}", path.display(), e.desc()))
    })?;
    if st.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(ServiceError::Invalid(format!(
            "netns path {} is not a network namespace file",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(ipv6: bool) -> Network {
        let mut net: Network = serde_json::from_str(
            r#"{"id": "n", "name": "n", "bridge": "nd-n", "subnet": "10.20.0.0/24",
                "gateway": "10.20.0.1", "mtu": null}"#,
        )
        .unwrap();
        if ipv6 {
            net.subnet6 = Some("2001:db8:1::/64".parse().unwrap());
            net.gateway6 = Some("2001:db8:1::1".parse().unwrap());
        }
        net
    }

    fn hosts(requests: &[PortRequest]) -> Vec<Option<String>> {
        requests
            .iter()
            .map(|r| r.host_ip.map(|ip| ip.to_string()))
            .collect()
    }

    #[test]
    fn ipv6_networks_add_the_wildcard_twin_and_others_refuse_ipv6() {
        let reqs: Vec<PortRequest> = ["8080:80", "127.0.0.1:9090:90", "[::1]:7070:70"]
            .iter()
            .flat_map(|s| ports::parse(s).unwrap())
            .collect();
        let got = bindings_for_network(&net(true), reqs.clone()).unwrap();
        assert_eq!(
            hosts(&got),
            vec![
                None,
                Some("::".into()),
                Some("127.0.0.1".into()),
                Some("::1".into())
            ]
        );
        assert!(got[0].host_port == got[1].host_port && got[1].container_port == 80);
        let err = bindings_for_network(&net(false), reqs).unwrap_err();
        assert!(err.to_string().contains("has no IPv6"), "{err}");
        let v4 = ports::parse("8080:80").unwrap();
        assert_eq!(
            hosts(&bindings_for_network(&net(false), v4).unwrap()),
            vec![None]
        );
    }
}
