//! Docker endpoints: `CreateEndpoint` records the address and MAC, `Join` creates the veth
//! pair (the container end stays in this namespace; dockerd moves it), ports are published at
//! `ProgramExternalConnectivity` and withdrawn at `RevokeExternalConnectivity`, `Leave` or
//! `DeleteEndpoint`.

use std::{net::Ipv4Addr, path::PathBuf};

use serde_json::{Value, json};

use super::{
    ServiceError, State,
    docker::{DockerEndpoint, invalid, parse_cidr_ip, parse_cidr_ip6, short_name},
    endpoint::Wanted,
};
use crate::{
    ipam::{self, format_mac},
    model::Endpoint,
    plugin::wire::{
        self, CreateEndpointRequest, CreateEndpointResponse, EndpointInterface, InterfaceName,
        JoinRequest, JoinResponse, ProgramRequest,
    },
    ports::{HostSockets, PortBinding, requested_protos},
    store::DockerTable,
};

impl State {
    pub(super) fn docker_create_endpoint(
        &mut self,
        req: &CreateEndpointRequest,
    ) -> Result<CreateEndpointResponse, ServiceError> {
        let (ep, record, wanted) = self.validate_docker_endpoint(req)?;
        let (ep, reply) = self.allocate_docker_endpoint(ep, wanted)?;
        let saved = self
            .store
            .put_docker(DockerTable::Endpoints, &record.endpoint_id, &record)
            .and_then(|()| self.store.put_endpoint(&ep));
        if let Err(e) = saved {
            let _ = self
                .store
                .delete_docker(DockerTable::Endpoints, &record.endpoint_id);
            self.release_endpoint(&ep);
            return Err(e.into());
        }
        tracing::info!(endpoint = %ep.name, ip = %ep.ip, ip6 = ?ep.ip6, "docker endpoint created");
        self.endpoints.insert(ep.name.clone(), ep);
        self.docker
            .endpoints
            .insert(record.endpoint_id.clone(), record);
        Ok(reply)
    }

    fn validate_docker_endpoint(
        &self,
        req: &CreateEndpointRequest,
    ) -> Result<(Endpoint, DockerEndpoint, Wanted), ServiceError> {
        let net_record = self.docker_network(&req.network_id)?;
        let net = &self.network_state(&net_record.name)?.net;
        if self.docker.endpoints.contains_key(&req.endpoint_id) {
            return Err(ServiceError::Conflict(format!(
                "endpoint {:?} already exists",
                req.endpoint_id
            )));
        }
        let name = short_name(&req.endpoint_id)?;
        if self.endpoints.contains_key(&name) {
            return Err(ServiceError::Conflict(format!(
                "endpoint {name:?} already exists"
            )));
        }
        let ip6 = &req.interface.address_ipv6;
        if !ip6.is_empty() && !net.ipv6() {
            return Err(invalid(format!(
                "AddressIPv6 {ip6:?} given, but network {:?} has no IPv6",
                req.network_id
            )));
        }
        let wanted = Wanted {
            ip: (!req.interface.address.is_empty())
                .then(|| parse_cidr_ip(&req.interface.address, "Address"))
                .transpose()?,
            ip6: (!ip6.is_empty())
                .then(|| parse_cidr_ip6(ip6, "AddressIPv6"))
                .transpose()?,
        };
        let mac = wire::requested_mac(req).map_err(invalid)?;
        let exposed = wire::exposed_ports(&req.options).map_err(invalid)?;
        // Docker ids are 64 hex digits; anything else still gets unique interface names.
        let tag: String = req
            .endpoint_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(10)
            .collect();
        let ep = Endpoint {
            id: req.endpoint_id.clone(),
            name: name.clone(),
            network: net.name.clone(),
            netns: PathBuf::new(),
            ifname: String::new(),
            host_ifname: format!("nd{tag}"),
            ip: Ipv4Addr::UNSPECIFIED,
            prefix_len: net.subnet.prefix_len(),
            gateway: net.gateway,
            ip6: None,
            prefix_len6: net.subnet6.map_or(0, |s| s.prefix_len()),
            gateway6: net.gateway6,
            mac: mac.map(format_mac).unwrap_or_default(),
            port_specs: Vec::new(),
            ports: Vec::new(),
            // Links and --expose are the CLI's; dockerd uses legacy links only on its
            // default bridge.
            expose: Vec::new(),
            links: Vec::new(),
            labels: std::collections::BTreeMap::new(),
        };
        let record = DockerEndpoint {
            endpoint_id: req.endpoint_id.clone(),
            network_id: req.network_id.clone(),
            name,
            peer_ifname: format!("np{tag}"),
            joined: false,
            programmed: false,
            exposed,
        };
        Ok((ep, record, wanted))
    }

    /// Takes the address out of the network's pool (dockerd's choice, or the lowest free one
    /// when dockerd sent none); returns what the reply must tell dockerd.
    fn allocate_docker_endpoint(
        &mut self,
        mut ep: Endpoint,
        wanted: Wanted,
    ) -> Result<(Endpoint, CreateEndpointResponse), ServiceError> {
        let net = self.networks.get_mut(&ep.network).expect("validated");
        ep.ip = net.pool.allocate(wanted.ip)?;
        let mut reply = EndpointInterface::default();
        if wanted.ip.is_none() {
            reply.address = format!("{}/{}", ep.ip, ep.prefix_len);
        }
        if ep.mac.is_empty() {
            ep.mac = format_mac(ipam::mac_from_ip(ep.ip));
            reply.mac_address.clone_from(&ep.mac);
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
            if wanted.ip6.is_none() {
                reply.address_ipv6 = format!("{}/{}", ep.ip6.expect("set"), ep.prefix_len6);
            }
        }
        let interface = (reply != EndpointInterface::default()).then_some(reply);
        Ok((ep, CreateEndpointResponse { interface }))
    }

    /// Creates the veth pair on the bridge; the container end stays in this namespace.
    pub(super) async fn docker_join(
        &mut self,
        req: JoinRequest,
    ) -> Result<JoinResponse, ServiceError> {
        let mut record = self.docker_endpoint(&req.endpoint_id)?;
        if record.network_id != req.network_id {
            return Err(invalid(format!(
                "endpoint {:?} is not on network {:?}",
                req.endpoint_id, req.network_id
            )));
        }
        if record.joined {
            return Err(ServiceError::Conflict(format!(
                "endpoint {:?} has already joined a sandbox",
                req.endpoint_id
            )));
        }
        let internal = self.docker_network(&req.network_id)?.internal;
        let mut ep = self.endpoint_of(&record)?;
        ep.netns = PathBuf::from(&req.sandbox_key);
        record.joined = true;
        if let Err(e) = self.attach_docker_endpoint(&ep, &record).await {
            self.detach_docker_veth(&ep).await;
            return Err(e);
        }
        self.docker
            .endpoints
            .insert(record.endpoint_id.clone(), record.clone());
        self.endpoints.insert(ep.name.clone(), ep.clone());
        tracing::info!(endpoint = %ep.name, sandbox = %req.sandbox_key, "docker endpoint joined");
        Ok(JoinResponse {
            interface_name: InterfaceName {
                src_name: record.peer_ifname,
                dst_prefix: "eth".into(),
            },
            gateway: if internal {
                String::new()
            } else {
                ep.gateway.to_string()
            },
            gateway_ipv6: match ep.gateway6 {
                Some(g) if !internal => g.to_string(),
                _ => String::new(),
            },
            disable_gateway_service: internal,
        })
    }

    async fn attach_docker_endpoint(
        &mut self,
        ep: &Endpoint,
        record: &DockerEndpoint,
    ) -> Result<(), ServiceError> {
        let mtu = self.networks[&ep.network].net.mtu;
        let (host, _) = self
            .nl
            .create_veth(&ep.host_ifname, &record.peer_ifname, mtu)
            .await?;
        self.prepare_container_end(&record.peer_ifname)?;
        let bridge = self.bridge_link(&ep.network).await?;
        self.nl.set_master(host.index, bridge.index).await?;
        self.nl.set_up(host.index).await?;
        // A previous holder of this address may have left flows behind.
        self.dp.flush_conntrack(ep.ip)?;
        self.flush_flows6(ep)?;
        self.program_endpoint(ep).await?;
        self.store
            .put_docker(DockerTable::Endpoints, &record.endpoint_id, record)?;
        self.store.put_endpoint(ep)?;
        Ok(())
    }

    /// Best-effort removal of a half-joined endpoint's veth pair.
    async fn detach_docker_veth(&mut self, ep: &Endpoint) {
        if let Err(e) = self.dp.detach_container(&ep.host_ifname) {
            tracing::warn!(endpoint = %ep.name, "undo: {e}");
        }
        if let Ok(Some(link)) = self.nl.link_by_name(&ep.host_ifname).await {
            if let Err(e) = self.nl.delete_link(link.index).await {
                tracing::warn!(endpoint = %ep.name, "undo: {e}");
            }
        }
    }

    /// Allocates and publishes the sandbox's port mappings; all or nothing. Dockerd may send
    /// it again when the gateway endpoint changes: an endpoint already programmed is left as
    /// it is.
    pub(super) async fn docker_program(&mut self, req: ProgramRequest) -> Result<(), ServiceError> {
        let mut record = self.docker_endpoint(&req.endpoint_id)?;
        if record.programmed {
            return Ok(());
        }
        if !record.joined {
            return Err(ServiceError::Conflict(format!(
                "endpoint {:?} has not joined a sandbox",
                req.endpoint_id
            )));
        }
        let host_ip = self.docker_network(&record.network_id)?.host_binding_ipv4;
        let requests = wire::port_requests(&req.options, host_ip).map_err(invalid)?;
        if let Ok(exposed) = wire::exposed_ports(&req.options) {
            if !exposed.is_empty() {
                record.exposed = exposed;
            }
        }
        let mut ep = self.endpoint_of(&record)?;
        let requests =
            super::endpoint::bindings_for_network(&self.network_state(&ep.network)?.net, requests)?;
        let sockets = HostSockets::read_for(&requested_protos(&requests));
        let host_free = |proto, ip, port| sockets.is_free(proto, ip, port);
        let ephemeral = crate::netlink::ip_local_port_range()?;
        ep.ports = self
            .ports
            .allocate(&requests, &ep.name, ephemeral, &host_free)?;
        ep.port_specs = requests.iter().map(wire::request_spec).collect();
        record.programmed = true;
        let applied = match self.program_endpoint(&ep).await {
            Ok(()) => self
                .store
                .put_docker(DockerTable::Endpoints, &record.endpoint_id, &record)
                .and_then(|()| self.store.put_endpoint(&ep))
                .map_err(ServiceError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            self.unpublish_ports(&ep);
            self.ports.release(&ep.name);
            return Err(e);
        }
        tracing::info!(endpoint = %ep.name, ports = ep.ports.len(), "docker ports published");
        self.endpoints.insert(ep.name.clone(), ep);
        self.docker
            .endpoints
            .insert(record.endpoint_id.clone(), record);
        Ok(())
    }

    /// Withdraws the endpoint's published ports and forgets their flows.
    fn unpublish_ports(&mut self, ep: &Endpoint) -> Vec<ServiceError> {
        let mut errors = self.unpublish_bindings(&ep.ports);
        errors.extend(self.unpublish_v6(ep));
        let host_ports = ep
            .ports
            .iter()
            .map(|b| (b.host_port, b.proto.number()))
            .collect();
        if let Err(e) = self.dp.flush_conntrack_host_ports(&host_ports) {
            errors.push(e.into());
        }
        errors
    }

    /// Unknown ids succeed (dockerd retries cleanup).
    pub(super) fn docker_revoke(&mut self, id: &str) -> Result<(), ServiceError> {
        let Some(mut record) = self.docker.endpoints.get(id).cloned() else {
            return Ok(());
        };
        let Ok(mut ep) = self.endpoint_of(&record) else {
            return Ok(());
        };
        let errors = self.unpublish_ports(&ep);
        self.ports.release(&ep.name);
        ep.ports = Vec::<PortBinding>::new();
        ep.port_specs.clear();
        record.programmed = false;
        self.store
            .put_docker(DockerTable::Endpoints, &record.endpoint_id, &record)?;
        self.store.put_endpoint(&ep)?;
        self.endpoints.insert(ep.name.clone(), ep);
        self.docker.endpoints.insert(id.to_string(), record);
        errors.into_iter().next().map_or(Ok(()), Err)
    }

    /// Withdraws the ports; the veth pair stays until `DeleteEndpoint` (dockerd moves the
    /// container end back after Leave). Unknown ids succeed.
    pub(super) fn docker_leave(&mut self, id: &str) -> Result<(), ServiceError> {
        self.docker_revoke(id)?;
        let Some(mut record) = self.docker.endpoints.get(id).cloned() else {
            return Ok(());
        };
        record.joined = false;
        self.store
            .put_docker(DockerTable::Endpoints, &record.endpoint_id, &record)?;
        self.docker.endpoints.insert(id.to_string(), record);
        Ok(())
    }

    /// Removes the veth pair, the address and the ports. Unknown ids succeed.
    pub(super) async fn docker_delete_endpoint(&mut self, id: &str) -> Result<(), ServiceError> {
        let Some(record) = self.docker.endpoints.get(id).cloned() else {
            return Ok(());
        };
        let result = match self.remove_endpoint(&record.name).await {
            Err(ServiceError::NotFound(_)) => Ok(()),
            other => other,
        };
        self.store.delete_docker(DockerTable::Endpoints, id)?;
        self.docker.endpoints.remove(id);
        result
    }

    /// `EndpointOperInfo`: what netdriver made of the endpoint.
    pub(super) fn docker_endpoint_info(&self, id: &str) -> Result<Value, ServiceError> {
        let record = self.docker_endpoint(id)?;
        let ep = self.endpoint_of(&record)?;
        let ports: Vec<String> = ep
            .ports
            .iter()
            .map(|b| {
                format!(
                    "{}:{}->{}/{}",
                    b.host_ip, b.host_port, b.container_port, b.proto
                )
            })
            .collect();
        Ok(json!({
            "Value": {
                "netdriver.endpoint": ep.name,
                "netdriver.network": ep.network,
                "netdriver.host_ifname": ep.host_ifname,
                "netdriver.ip": ep.ip.to_string(),
                "netdriver.ip6": ep.ip6.map(|ip| ip.to_string()),
                "netdriver.mac": ep.mac,
                "netdriver.ports": ports,
            }
        }))
    }
}
