//! The Docker plugin protocol's JSON bodies (libnetwork's remote driver and remote IPAM), with
//! dockerd's exact key spelling (Go field names, no json tags). Requests tolerate unknown
//! keys and `null` where dockerd may send it; see ../shared/docs/protocols.md, part 1.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::ports::{PortRequest, Proto};

/// Sandbox option keys dockerd sends in `CreateEndpoint`, `Join` and
/// `ProgramExternalConnectivity`.
pub const OPT_PORTMAP: &str = "com.docker.network.portmap";
pub const OPT_EXPOSED: &str = "com.docker.network.endpoint.exposedports";
pub const OPT_MAC: &str = "com.docker.network.endpoint.macaddress";
/// `CreateNetwork` option keys.
pub const OPT_GENERIC: &str = "com.docker.network.generic";
pub const OPT_IPV6: &str = "com.docker.network.enable_ipv6";
pub const OPT_IPV4: &str = "com.docker.network.enable_ipv4";
pub const OPT_INTERNAL: &str = "com.docker.network.internal";
/// IPAM `RequestAddress` option marking the network's gateway.
pub const OPT_REQUEST_TYPE: &str = "RequestAddressType";
pub const REQUEST_GATEWAY: &str = "com.docker.network.gateway";

/// `null` (or a missing key, with `#[serde(default)]`) reads as the type's default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub type Options = Map<String, Value>;

/// One entry of `IPv4Data` / `IPv6Data`: CIDR strings.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamData {
    #[serde(rename = "AddressSpace", default, deserialize_with = "nullable")]
    pub address_space: String,
    #[serde(rename = "Pool", default, deserialize_with = "nullable")]
    pub pool: String,
    #[serde(rename = "Gateway", default, deserialize_with = "nullable")]
    pub gateway: String,
    #[serde(rename = "AuxAddresses", default, deserialize_with = "nullable")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// `NetworkDriver.CreateNetwork` (and `AllocateNetwork`, whose Options are flat strings).
#[derive(Debug, Clone, Deserialize)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Options,
    #[serde(rename = "IPv4Data", default, deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default, deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
}

/// `DeleteNetwork`, `FreeNetwork`.
#[derive(Debug, Clone, Deserialize)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// `EndpointOperInfo`, `DeleteEndpoint`, `Leave`, `RevokeExternalConnectivity`.
#[derive(Debug, Clone, Deserialize)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// The addresses of an endpoint: CIDR strings, empty when not set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInterface {
    #[serde(
        rename = "Address",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(
        rename = "MacAddress",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default, deserialize_with = "nullable")]
    pub interface: EndpointInterface,
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Options,
}

/// The reply: only the fields dockerd left empty and the driver filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CreateEndpointResponse {
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// `NetworkDriver.Join`.
#[derive(Debug, Clone, Deserialize)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey", default, deserialize_with = "nullable")]
    pub sandbox_key: String,
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Options,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceName {
    #[serde(rename = "SrcName")]
    pub src_name: String,
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

/// The Join reply: the link dockerd moves into the container and the bare gateway address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JoinResponse {
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
    #[serde(rename = "Gateway", skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    #[serde(rename = "DisableGatewayService")]
    pub disable_gateway_service: bool,
}

/// `NetworkDriver.ProgramExternalConnectivity`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProgramRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Options,
}

/// `IpamDriver.RequestPool`.
#[derive(Debug, Clone, Deserialize)]
pub struct RequestPoolRequest {
    #[serde(rename = "AddressSpace", default, deserialize_with = "nullable")]
    pub address_space: String,
    #[serde(rename = "Pool", default, deserialize_with = "nullable")]
    pub pool: String,
    #[serde(rename = "SubPool", default, deserialize_with = "nullable")]
    pub sub_pool: String,
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Options,
    #[serde(rename = "V6", default, deserialize_with = "nullable")]
    pub v6: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestPoolResponse {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Pool")]
    pub pool: String,
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleasePool`.
#[derive(Debug, Clone, Deserialize)]
pub struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress` and `ReleaseAddress` (bare IP, or empty for "any").
#[derive(Debug, Clone, Deserialize)]
pub struct AddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Address", default, deserialize_with = "nullable")]
    pub address: String,
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Options,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestAddressResponse {
    /// CIDR.
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// A parsed request for a call that needs the daemon's state.
#[derive(Debug, Clone)]
pub enum Call {
    CreateNetwork(CreateNetworkRequest),
    DeleteNetwork(NetworkRequest),
    CreateEndpoint(CreateEndpointRequest),
    EndpointOperInfo(EndpointRequest),
    DeleteEndpoint(EndpointRequest),
    Join(JoinRequest),
    Leave(EndpointRequest),
    ProgramExternalConnectivity(ProgramRequest),
    RevokeExternalConnectivity(EndpointRequest),
    RequestPool(RequestPoolRequest),
    ReleasePool(ReleasePoolRequest),
    RequestAddress(AddressRequest),
    ReleaseAddress(AddressRequest),
}

/// `{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}`.
#[derive(Debug, Clone, Default, Deserialize)]
struct WirePortBinding {
    #[serde(rename = "Proto", default)]
    proto: u8,
    #[serde(rename = "Port", default)]
    port: u16,
    #[serde(rename = "HostIP", default, deserialize_with = "nullable")]
    host_ip: String,
    #[serde(rename = "HostPort", default)]
    host_port: u16,
    #[serde(rename = "HostPortEnd", default)]
    host_port_end: u16,
}

/// `{"Proto": 6, "Port": 80}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposedPort {
    pub proto: Proto,
    pub port: u16,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct WireTransportPort {
    #[serde(rename = "Proto", default)]
    proto: u8,
    #[serde(rename = "Port", default)]
    port: u16,
}

fn proto(number: u8) -> Result<Proto, String> {
    match number {
        6 => Ok(Proto::Tcp),
        17 => Ok(Proto::Udp),
        132 => Ok(Proto::Sctp),
        n => Err(format!("unknown IP protocol number {n} in a port mapping")),
    }
}

fn option_list<T: for<'de> Deserialize<'de>>(
    options: &Options,
    key: &str,
) -> Result<Vec<T>, String> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("option {key}: {e}")),
    }
}

/// The port mappings of a sandbox's options as port requests. A binding without a host
/// address uses `default_host_ip` (the network's `host_binding_ipv4`), or every address.
pub fn port_requests(
    options: &Options,
    default_host_ip: Option<Ipv4Addr>,
) -> Result<Vec<PortRequest>, String> {
    let bindings: Vec<WirePortBinding> = option_list(options, OPT_PORTMAP)?;
    bindings
        .into_iter()
        .map(|b| {
            if b.port == 0 {
                return Err("a port mapping has container port 0".to_string());
            }
            let host_ip = if b.host_ip.is_empty() {
                default_host_ip.map(IpAddr::V4)
            } else {
                Some(
                    b.host_ip
                        .parse::<IpAddr>()
                        .map_err(|_| format!("invalid HostIP {:?} in a port mapping", b.host_ip))?,
                )
            };
            if b.host_port_end != 0 && b.host_port_end < b.host_port {
                return Err(format!(
                    "invalid host port range {}-{}",
                    b.host_port, b.host_port_end
                ));
            }
            Ok(PortRequest {
                proto: proto(b.proto)?,
                host_ip: host_ip.filter(|ip| !ip.is_unspecified() || ip.is_ipv6()),
                host_port: b.host_port,
                host_port_end: b.host_port_end,
                container_port: b.port,
            })
        })
        .collect()
}

/// The exposed ports of a sandbox's options.
pub fn exposed_ports(options: &Options) -> Result<Vec<ExposedPort>, String> {
    let ports: Vec<WireTransportPort> = option_list(options, OPT_EXPOSED)?;
    ports
        .into_iter()
        .map(|p| {
            Ok(ExposedPort {
                proto: proto(p.proto)?,
                port: p.port,
            })
        })
        .collect()
}

/// A request as docker's `-p` shows it: `[HOSTIP:]HOSTPORT[-END]:PORT/PROTO`.
#[must_use]
pub fn request_spec(r: &PortRequest) -> String {
    let ip = match r.host_ip {
        None => String::new(),
        Some(IpAddr::V4(ip)) => format!("{ip}:"),
        Some(IpAddr::V6(ip)) => format!("[{ip}]:"),
    };
    let host = match (r.host_port, r.host_port_end) {
        (0, _) => String::new(),
        (p, e) if e == 0 || e == p => p.to_string(),
        (p, e) => format!("{p}-{e}"),
    };
    format!("{ip}{host}:{}/{}", r.container_port, r.proto)
}

/// Decodes standard base64 (Go's `[]byte` JSON encoding, used for the MAC option).
#[must_use]
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// The MAC dockerd asked for: `Interface.MacAddress`, else the base64 endpoint option.
pub fn requested_mac(req: &CreateEndpointRequest) -> Result<Option<[u8; 6]>, String> {
    if !req.interface.mac_address.is_empty() {
        return crate::ipam::parse_mac(&req.interface.mac_address)
            .map(Some)
            .ok_or_else(|| format!("invalid MacAddress {:?}", req.interface.mac_address));
    }
    match req.options.get(OPT_MAC) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => base64_decode(s)
            .and_then(|b| <[u8; 6]>::try_from(b.as_slice()).ok())
            .filter(|m| m[0] & 1 == 0 && m != &[0; 6])
            .map(Some)
            .ok_or_else(|| format!("invalid option {OPT_MAC} {s:?}")),
        Some(other) => Err(format!("invalid option {OPT_MAC} {other}")),
    }
}

/// A boolean option that dockerd may send as a JSON bool or a string.
#[must_use]
pub fn bool_option(options: &Options, key: &str) -> Option<bool> {
    match options.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `com.docker.network.generic`: the `-o key=value` options, values as strings.
pub fn generic_options(options: &Options) -> Result<BTreeMap<String, String>, String> {
    match options.get(OPT_GENERIC) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => Ok(m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect()),
        Some(other) => Err(format!(
            "option {OPT_GENERIC} must be an object, got {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn opts(v: &Value) -> Options {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn base64_mac() {
        assert_eq!(
            base64_decode("AkKsEgAF").unwrap(),
            vec![0x02, 0x42, 0xac, 0x12, 0x00, 0x05]
        );
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("A").is_none());
        assert!(base64_decode("A!!A").is_none());
    }

    #[test]
    fn portmap_parsing() {
        let o = opts(&json!({OPT_PORTMAP: [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 0, "HostPortEnd": 0},
            {"Proto": 6, "Port": 81, "HostIP": "0.0.0.0", "HostPort": 9000, "HostPortEnd": 9010},
            {"Proto": 132, "Port": 80, "HostPort": 9000, "HostPortEnd": 9000}
        ]}));
        let r = port_requests(&o, None).unwrap();
        let specs: Vec<String> = r.iter().map(request_spec).collect();
        assert_eq!(
            specs,
            [
                "8080:80/tcp",
                "127.0.0.1::53/udp",
                "9000-9010:81/tcp",
                "9000:80/sctp"
            ]
        );
        let r = port_requests(&o, Some(Ipv4Addr::new(198, 51, 100, 1))).unwrap();
        assert_eq!(request_spec(&r[0]), "198.51.100.1:8080:80/tcp");
        assert!(port_requests(&opts(&json!({})), None).unwrap().is_empty());
        for bad in [
            json!({OPT_PORTMAP: [{"Proto": 33, "Port": 80}]}),
            json!({OPT_PORTMAP: [{"Proto": 6, "Port": 0}]}),
            json!({OPT_PORTMAP: [{"Proto": 6, "Port": 80, "HostIP": "nope"}]}),
            json!({OPT_PORTMAP: [{"Proto": 6, "Port": 80, "HostPort": 9, "HostPortEnd": 8}]}),
            json!({OPT_PORTMAP: [{"Proto": "tcp", "Port": 80}]}),
            json!({OPT_PORTMAP: {"Proto": 6}}),
        ] {
            assert!(port_requests(&opts(&bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn exposed_and_generic() {
        let o = opts(&json!({
            OPT_EXPOSED: [{"Proto": 6, "Port": 80}, {"Proto": 17, "Port": 53}, {"Proto": 132, "Port": 9000}],
            OPT_GENERIC: {"com.docker.network.driver.mtu": "1400", "x": 1}
        }));
        assert_eq!(
            exposed_ports(&o).unwrap(),
            [
                ExposedPort {
                    proto: Proto::Tcp,
                    port: 80
                },
                ExposedPort {
                    proto: Proto::Udp,
                    port: 53
                },
                ExposedPort {
                    proto: Proto::Sctp,
                    port: 9000
                }
            ]
        );
        let g = generic_options(&o).unwrap();
        assert_eq!(g["com.docker.network.driver.mtu"], "1400");
        assert_eq!(g["x"], "1");
    }

    #[test]
    fn requests_tolerate_nulls_and_unknown_keys() {
        let r: CreateEndpointRequest = serde_json::from_value(json!({
            "NetworkID": "n", "EndpointID": "e", "Interface": null, "Options": null, "New": 1
        }))
        .unwrap();
        assert_eq!(r.interface, EndpointInterface::default());
        let r: CreateNetworkRequest = serde_json::from_value(json!({
            "NetworkID": "n", "IPv4Data": [{"Pool": "10.0.0.0/24", "AuxAddresses": null}], "IPv6Data": null
        }))
        .unwrap();
        assert_eq!(r.ipv4_data[0].pool, "10.0.0.0/24");
        assert!(r.ipv6_data.is_empty());
        let mac = |v: Value| requested_mac(&serde_json::from_value(v).unwrap());
        assert_eq!(
            mac(json!({"NetworkID": "n", "EndpointID": "e", "Options": {OPT_MAC: "AkKsEgAF"}}))
                .unwrap(),
            Some([0x02, 0x42, 0xac, 0x12, 0x00, 0x05])
        );
        assert!(
            mac(json!({"NetworkID": "n", "EndpointID": "e", "Options": {OPT_MAC: "AQ=="}}))
                .is_err()
        );
    }
}
