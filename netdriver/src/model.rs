//! The objects the daemon manages and the API requests that create them.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::ports::{PortBinding, Proto};

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
    /// Containers of the network may talk to each other (Docker's `enable_icc`).
    #[serde(default = "yes")]
    pub icc: bool,
    /// Outbound traffic leaves with the host's address (`enable_ip_masquerade`).
    #[serde(default = "yes")]
    pub masquerade: bool,
    /// Masquerade source address instead of the egress interface's (`host_ipv4`).
    #[serde(default)]
    pub snat_ip: Option<Ipv4Addr>,
    /// No traffic leaves the network in either direction (`com.docker.network.internal`).
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub gateway_mode: GatewayMode,
    /// Host address of bindings that name none (`host_binding_ipv4`).
    #[serde(default)]
    pub host_binding_ipv4: Option<Ipv4Addr>,
    /// IPv6 subnet (`--ipv6`); `None`: the network is IPv4 only.
    #[serde(default)]
    pub subnet6: Option<Ipv6Net>,
    /// IPv6 gateway on the bridge (set exactly when `subnet6` is).
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
}

impl Network {
    /// Whether the network has IPv6 (`--ipv6`).
    #[must_use]
    pub fn ipv6(&self) -> bool {
        self.subnet6.is_some()
    }
}

fn yes() -> bool {
    true
}

/// Docker's `gateway_mode_ipv4`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayMode {
    /// Masquerade outbound (if enabled); from outside only published host ports reach in.
    #[default]
    Nat,
    /// No translation: published ports are reachable on container addresses, nothing else.
    Routed,
}

/// A port a container declares (`--expose`): what linked parents may reach with ICC off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposedPort {
    pub port: u16,
    pub proto: Proto,
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
    /// IPv6 address on an `--ipv6` network.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// Prefix length of `ip6` (the network's IPv6 subnet); 0 without IPv6.
    #[serde(default)]
    pub prefix_len6: u8,
    /// IPv6 default gateway of the container.
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    pub mac: String,
    /// The `-p` specs as given.
    pub port_specs: Vec<String>,
    /// The bindings actually allocated.
    pub ports: Vec<PortBinding>,
    /// Ports declared with `--expose`.
    #[serde(default)]
    pub expose: Vec<ExposedPort>,
    /// Endpoints of the same network this one (the parent) may reach on their exposed ports.
    #[serde(default)]
    pub links: Vec<String>,
    /// Free-form KEY -> VALUE pairs the creator attached (the CNI plugin marks its
    /// endpoints with them); netdriver only stores them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
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
    #[serde(default)]
    pub icc: Option<bool>,
    #[serde(default)]
    pub masquerade: Option<bool>,
    #[serde(default)]
    pub snat_ip: Option<String>,
    #[serde(default)]
    pub internal: Option<bool>,
    /// `nat` or `routed`.
    #[serde(default)]
    pub gateway_mode: Option<String>,
    /// Enable IPv6 (Docker's `--ipv6`); implied by `subnet_v6`.
    #[serde(default)]
    pub ipv6: Option<bool>,
    /// IPv6 subnet in CIDR form; default: a free ULA /64.
    #[serde(default)]
    pub subnet_v6: Option<String>,
    /// IPv6 gateway; default: the first address of the IPv6 subnet.
    #[serde(default)]
    pub gateway_v6: Option<String>,
    /// Docker's `-o key=value` driver options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
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
    /// Requested IPv6 address (on an `--ipv6` network).
    #[serde(default)]
    pub ip6: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub ifname: Option<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    /// `PORT[-END][/tcp|/udp|/sctp]`.
    #[serde(default)]
    pub expose: Vec<String>,
    /// `NAME[:ALIAS]` of endpoints on the same network.
    #[serde(default)]
    pub links: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `GET /v1/endpoints/{name}/check`: what no longer matches the stored endpoint in the
/// kernel (empty: everything is in place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCheck {
    pub problems: Vec<String>,
}

/// One row of `GET /v1/ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRow {
    pub endpoint: String,
    pub network: String,
    pub container_ip: Ipv4Addr,
    /// The container's IPv6 address, if it has one.
    #[serde(default)]
    pub container_ip6: Option<Ipv6Addr>,
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
    /// The uplinks whose XDP hook runs the DNAT too (`--uplink-mode xdp`).
    #[serde(default)]
    pub xdp_uplinks: Vec<String>,
    /// Drop counters indexed by reason (`netdriver_common::DROP_*`).
    pub drops: Vec<u64>,
    /// The name of each drop reason, by index.
    #[serde(default)]
    pub drop_reasons: Vec<String>,
    /// Entries in `ND_CT` at the last sweep.
    #[serde(default)]
    pub conntrack_entries: usize,
}
