//! The objects the daemon manages and the API requests that create them.

use std::{net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::ports::PortBinding;

/// A bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// Name of the Linux bridge.
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: Option<u32>,
}

/// A container's attachment to a network: a veth pair and its published ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub name: String,
    pub network: String,
    /// The container's network namespace file.
    pub netns: PathBuf,
    /// Interface name inside the container.
    pub ifname: String,
    /// Host end of the veth pair (enslaved to the bridge).
    pub host_ifname: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    /// The `-p` specs as given.
    pub port_specs: Vec<String>,
    /// The bindings actually allocated.
    pub ports: Vec<PortBinding>,
}

/// `POST /v1/networks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    pub name: String,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// `POST /v1/endpoints`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    pub network: String,
    pub netns: PathBuf,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub ifname: Option<String>,
    #[serde(default)]
    pub ports: Vec<String>,
}

/// One row of `GET /v1/ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRow {
    pub endpoint: String,
    pub network: String,
    pub container_ip: Ipv4Addr,
    #[serde(flatten)]
    pub binding: PortBinding,
}

/// The JSON body of every API error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// A network with the names of its endpoints (`network inspect`, `network ls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    #[serde(flatten)]
    pub network: Network,
    pub endpoints: Vec<String>,
}

/// `GET /v1/status`: where the data path is attached and why it dropped packets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub uplinks: Vec<String>,
    /// Drop counters indexed by reason (`netdriver_common::DROP_*`).
    pub drops: Vec<u64>,
}
