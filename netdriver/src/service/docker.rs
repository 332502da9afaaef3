//! Docker's remote network driver, on the same networks, endpoints and ports as the CLI.
//!
//! dockerd drives an endpoint differently from the CLI: `CreateEndpoint` only records the
//! address (chosen by dockerd's IPAM) and MAC; `Join` creates the veth pair and leaves the
//! container end in the host namespace for dockerd to move and configure; ports are published
//! at `ProgramExternalConnectivity` and withdrawn at `RevokeExternalConnectivity`, `Leave` or
//! `DeleteEndpoint`. dockerd never replays `CreateNetwork`, so the plugin's records (Docker
//! ids, options) are kept in the store next to the networks and endpoints they describe.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ServiceError, State, validate_name};
use crate::{
    model::{CreateNetwork, Endpoint},
    plugin::wire::{self, CreateNetworkRequest, ExposedPort},
    store::DockerTable,
};

/// Bridge-driver options (`docker network create -o KEY=VALUE`) that netdriver applies.
const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
const OPT_MTU: &str = "com.docker.network.driver.mtu";
const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";

/// What the plugin remembers about a network dockerd created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerNetwork {
    pub network_id: String,
    /// The netdriver network (`netdriver network ls`): the first 12 digits of the id.
    pub name: String,
    #[serde(default)]
    pub internal: bool,
    /// Host address for port mappings that name none.
    #[serde(default)]
    pub host_binding_ipv4: Option<Ipv4Addr>,
    /// `--aux-address` reservations.
    #[serde(default)]
    pub aux_addresses: Vec<Ipv4Addr>,
    /// Every `-o` option as given.
    #[serde(default)]
    pub generic: BTreeMap<String, String>,
}

/// What the plugin remembers about an endpoint dockerd created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEndpoint {
    pub endpoint_id: String,
    pub network_id: String,
    /// The netdriver endpoint: the first 12 digits of the id.
    pub name: String,
    /// Name of the container end of the veth pair while it is in the host namespace.
    pub peer_ifname: String,
    #[serde(default)]
    pub joined: bool,
    /// Ports were published by `ProgramExternalConnectivity` (and not revoked since).
    #[serde(default)]
    pub programmed: bool,
    #[serde(default)]
    pub exposed: Vec<ExposedPort>,
}

/// The Docker plugin's records, by Docker id.
#[derive(Debug, Default)]
pub struct DockerState {
    pub networks: BTreeMap<String, DockerNetwork>,
    pub endpoints: BTreeMap<String, DockerEndpoint>,
    pub pools: BTreeMap<String, super::docker_ipam::IpamPool>,
}

/// The netdriver name for a Docker id: Docker's short id.
pub(super) fn short_name(id: &str) -> Result<String, ServiceError> {
    let name: String = id.chars().take(12).collect();
    validate_name("docker id", &name)?;
    Ok(name)
}

pub(super) fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(msg.into())
}

/// A CIDR string (dockerd's gateway and address fields) or a bare address.
/// An IPv6 address, bare or in CIDR form (what dockerd sends in `AddressIPv6`, `Gateway`).
pub(super) fn parse_cidr_ip6(s: &str, what: &str) -> Result<Ipv6Addr, ServiceError> {
    let s = s.trim();
    s.parse::<Ipv6Net>()
        .map(|n| n.addr())
        .or_else(|_| s.parse::<Ipv6Addr>())
        .map_err(|_| invalid(format!("invalid {what} {s:?}: expected an IPv6 address")))
}

pub(super) fn parse_cidr_ip(s: &str, what: &str) -> Result<Ipv4Addr, ServiceError> {
    let s = s.trim();
    s.parse::<Ipv4Net>()
        .map(|n| n.addr())
        .or_else(|_| s.parse::<Ipv4Addr>())
        .map_err(|_| invalid(format!("invalid {what} {s:?}: expected an IPv4 address")))
}

/// The IPv6 subnet and gateway of a Docker network, both optional (netdriver picks a
/// unique local /64 when dockerd's IPAM gave none); `None` without `--ipv6`.
#[expect(
    clippy::type_complexity,
    reason = "two optional strings, as CreateNetwork takes them"
)]
fn docker_ipv6(
    req: &CreateNetworkRequest,
) -> Result<Option<(Option<String>, Option<String>)>, ServiceError> {
    let enabled = wire::bool_option(&req.options, wire::OPT_IPV6) == Some(true);
    let data = match (enabled, req.ipv6_data.as_slice()) {
        (false, []) => return Ok(None),
        (false, _) => {
            return Err(invalid(format!(
                "IPv6Data given but {} is not true",
                wire::OPT_IPV6
            )));
        }
        (true, []) => return Ok(Some((None, None))),
        (true, [one]) => one,
        (true, _) => return Err(invalid("only one IPv6 subnet per network is supported")),
    };
    if !data.aux_addresses.is_empty() {
        return Err(invalid("auxiliary IPv6 addresses are not supported"));
    }
    let gateway = (!data.gateway.is_empty())
        .then(|| parse_cidr_ip6(&data.gateway, "IPv6 gateway").map(|g| g.to_string()))
        .transpose()?;
    let pool = (!data.pool.is_empty()).then(|| data.pool.clone());
    Ok(Some((pool, gateway)))
}

impl State {
    /// Loads the plugin's records after the networks and endpoints; drops records whose
    /// netdriver object is gone (removed by the CLI, or a crash between two writes).
    pub(super) fn restore_docker(&mut self) -> Result<(), ServiceError> {
        for n in self
            .store
            .docker_records::<DockerNetwork>(DockerTable::Networks)?
        {
            if let Some(ns) = self.networks.get_mut(&n.name) {
                for a in &n.aux_addresses {
                    ns.pool.reserve(*a);
                }
                self.docker.networks.insert(n.network_id.clone(), n);
            } else {
                self.store
                    .delete_docker(DockerTable::Networks, &n.network_id)?;
            }
        }
        for e in self
            .store
            .docker_records::<DockerEndpoint>(DockerTable::Endpoints)?
        {
            if self.endpoints.contains_key(&e.name) {
                self.docker.endpoints.insert(e.endpoint_id.clone(), e);
            } else {
                self.store
                    .delete_docker(DockerTable::Endpoints, &e.endpoint_id)?;
            }
        }
        self.restore_ipam()
    }

    pub(super) fn docker_network(&self, id: &str) -> Result<&DockerNetwork, ServiceError> {
        self.docker
            .networks
            .get(id)
            .ok_or_else(|| ServiceError::NotFound(format!("no network with id {id:?}")))
    }

    pub(super) fn docker_endpoint(&self, id: &str) -> Result<DockerEndpoint, ServiceError> {
        self.docker
            .endpoints
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound(format!("no endpoint with id {id:?}")))
    }

    pub(super) fn endpoint_of(&self, de: &DockerEndpoint) -> Result<Endpoint, ServiceError> {
        self.endpoints.get(&de.name).cloned().ok_or_else(|| {
            ServiceError::NotFound(format!("endpoint {} was removed outside Docker", de.name))
        })
    }

    pub(super) async fn docker_create_network(
        &mut self,
        req: CreateNetworkRequest,
    ) -> Result<(), ServiceError> {
        let (create, record) = self.validate_docker_network(&req)?;
        self.create_network(create).await?;
        let name = record.name.clone();
        if let Err(e) = self.reserve_aux(&record).and_then(|()| {
            self.store
                .put_docker(DockerTable::Networks, &record.network_id, &record)
                .map_err(ServiceError::from)
        }) {
            if let Err(undo) = self.remove_network(&name).await {
                tracing::warn!(network = %name, "undo: {undo}");
            }
            return Err(e);
        }
        self.docker
            .networks
            .insert(record.network_id.clone(), record);
        Ok(())
    }

    fn validate_docker_network(
        &self,
        req: &CreateNetworkRequest,
    ) -> Result<(CreateNetwork, DockerNetwork), ServiceError> {
        if self.docker.networks.contains_key(&req.network_id) {
            return Err(ServiceError::Conflict(format!(
                "network {:?} already exists",
                req.network_id
            )));
        }
        let name = short_name(&req.network_id)?;
        let ipv6 = docker_ipv6(req)?;
        if wire::bool_option(&req.options, wire::OPT_IPV4) == Some(false) {
            return Err(invalid("networks without IPv4 are not supported"));
        }
        let data = match req.ipv4_data.as_slice() {
            [one] => one,
            [] => return Err(invalid("no IPv4 pool given (IPv4Data is empty)")),
            _ => return Err(invalid("only one IPv4 subnet per network is supported")),
        };
        let generic = wire::generic_options(&req.options).map_err(invalid)?;
        let mtu = generic
            .get(OPT_MTU)
            .map(|m| {
                m.parse::<u32>()
                    .map_err(|_| invalid(format!("invalid {OPT_MTU} {m:?}")))
            })
            .transpose()?;
        let host_binding_ipv4 = generic
            .get(OPT_HOST_BINDING)
            .map(|ip| {
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| invalid(format!("invalid {OPT_HOST_BINDING} {ip:?}")))
            })
            .transpose()?
            .filter(|ip| !ip.is_unspecified());
        let gateway = (!data.gateway.is_empty())
            .then(|| parse_cidr_ip(&data.gateway, "gateway").map(|g| g.to_string()))
            .transpose()?;
        let aux_addresses = data
            .aux_addresses
            .values()
            .map(|a| parse_cidr_ip(a, "aux address"))
            .collect::<Result<Vec<_>, _>>()?;
        // Built field by field so fields added to CreateNetwork later keep their defaults.
        let mut create = CreateNetwork {
            name: name.clone(),
            subnet: Some(data.pool.clone()),
            ..CreateNetwork::default()
        };
        create.gateway = gateway;
        if let Some((subnet_v6, gateway_v6)) = ipv6 {
            create.ipv6 = Some(true);
            create.subnet_v6 = subnet_v6;
            create.gateway_v6 = gateway_v6;
        }
        create.bridge = generic.get(OPT_BRIDGE_NAME).cloned();
        create.mtu = mtu;
        let internal = wire::bool_option(&req.options, wire::OPT_INTERNAL).unwrap_or(false);
        create.internal = internal.then_some(true);
        // The rest of `-o` (ICC, masquerade, gateway mode, SNAT address, ...) means what it
        // means to Docker's bridge driver; the network options resolve and check it.
        create.options = generic
            .iter()
            .filter(|(k, _)| ![OPT_BRIDGE_NAME, OPT_MTU, OPT_HOST_BINDING].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let record = DockerNetwork {
            network_id: req.network_id.clone(),
            name,
            internal,
            host_binding_ipv4,
            aux_addresses,
            generic,
        };
        Ok((create, record))
    }

    /// Aux addresses are taken out of the network's pool (all or none).
    fn reserve_aux(&mut self, record: &DockerNetwork) -> Result<(), ServiceError> {
        let pool = &mut self
            .networks
            .get_mut(&record.name)
            .expect("network just created")
            .pool;
        for (i, a) in record.aux_addresses.iter().enumerate() {
            if let Err(e) = pool.allocate(Some(*a)) {
                for done in &record.aux_addresses[..i] {
                    pool.release(*done);
                }
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Unknown ids succeed: dockerd retries cleanup after crashes.
    pub(super) async fn docker_delete_network(&mut self, id: &str) -> Result<(), ServiceError> {
        let Some(record) = self.docker.networks.get(id).cloned() else {
            return Ok(());
        };
        match self.remove_network(&record.name).await {
            Ok(()) | Err(ServiceError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.store.delete_docker(DockerTable::Networks, id)?;
        self.docker.networks.remove(id);
        Ok(())
    }
}

impl super::Service {
    /// Runs one Docker plugin call; the answer is the JSON body of the reply.
    pub async fn docker(&self, call: wire::Call) -> Result<Value, ServiceError> {
        use wire::Call as C;
        let mut state = self.state.lock().await;
        let empty = || Ok(json!({}));
        match call {
            C::CreateNetwork(r) => state.docker_create_network(r).await.and_then(|()| empty()),
            C::DeleteNetwork(r) => state
                .docker_delete_network(&r.network_id)
                .await
                .and_then(|()| empty()),
            C::CreateEndpoint(r) => state
                .docker_create_endpoint(&r)
                .map(|reply| serde_json::to_value(reply).expect("serializable")),
            C::EndpointOperInfo(r) => state.docker_endpoint_info(&r.endpoint_id),
            C::DeleteEndpoint(r) => {
                let deleted = state.docker_delete_endpoint(&r.endpoint_id).await;
                state.sync_reservations_or_warn();
                deleted.and_then(|()| empty())
            }
            C::Join(r) => state
                .docker_join(r)
                .await
                .map(|reply| serde_json::to_value(reply).expect("serializable")),
            C::Leave(r) => {
                let left = state.docker_leave(&r.endpoint_id);
                state.sync_reservations_or_warn();
                left.and_then(|()| empty())
            }
            C::ProgramExternalConnectivity(r) => {
                let programmed = state.docker_program(r).await;
                state.sync_reservations_or_warn();
                programmed.and_then(|()| empty())
            }
            C::RevokeExternalConnectivity(r) => {
                let revoked = state.docker_revoke(&r.endpoint_id);
                state.sync_reservations_or_warn();
                revoked.and_then(|()| empty())
            }
            C::RequestPool(r) => state
                .ipam_request_pool(r)
                .await
                .map(|reply| serde_json::to_value(reply).expect("serializable")),
            C::ReleasePool(r) => state.ipam_release_pool(&r.pool_id).and_then(|()| empty()),
            C::RequestAddress(r) => state
                .ipam_request_address(&r)
                .map(|reply| serde_json::to_value(reply).expect("serializable")),
            C::ReleaseAddress(r) => state.ipam_release_address(&r).and_then(|()| empty()),
        }
    }
}
