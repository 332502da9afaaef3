//! The network configuration on stdin and what it becomes in the daemon's API.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    env::Attachment,
    output::{CniError, INVALID_CONFIG},
};

/// Labels that mark an endpoint as a CNI attachment (GC acts only on these).
pub const LABEL_CONTAINER: &str = "cni.container-id";
pub const LABEL_IFNAME: &str = "cni.ifname";

/// The keys this plugin reads; every other key is ignored, as CNI plugins do.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetConf {
    pub cni_version: String,
    /// The netdriver network, created on the first ADD if missing.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The daemon's API socket.
    pub socket: Option<PathBuf>,
    pub bridge: Option<String>,
    pub mtu: Option<u32>,
    pub ip_masq: Option<bool>,
    pub icc: Option<bool>,
    pub ipam: Ipam,
    pub runtime_config: RuntimeConfig,
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<GcAttachment>>,
    #[serde(rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<GcAttachment>>,
}

/// `ipam`: netdriver allocates the addresses itself; only the subnets are read (`type` is
/// ignored). Old host-local style `subnet`/`gateway`, or `ranges` (the first range of each
/// family).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Ipam {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ranges: Vec<Vec<Range>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Range {
    pub subnet: String,
    pub gateway: Option<String>,
}

/// `runtimeConfig`: the capabilities `portMappings`, `ips` and `mac`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RuntimeConfig {
    pub port_mappings: Vec<PortMapping>,
    pub ips: Vec<String>,
    pub mac: Option<String>,
}

/// One `portMappings` entry; containerd's go-cni sends the keys capitalised.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PortMapping {
    #[serde(alias = "HostPort")]
    pub host_port: i64,
    #[serde(alias = "ContainerPort")]
    pub container_port: i64,
    #[serde(alias = "Protocol")]
    pub protocol: String,
    #[serde(rename = "hostIP", alias = "HostIP", alias = "hostIp")]
    pub host_ip: String,
}

/// An entry of `cni.dev/valid-attachments`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(default)]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl NetConf {
    /// `POST /v1/networks` for this configuration.
    pub fn network_request(&self) -> Result<Value, CniError> {
        let mut req = Map::new();
        req.insert("name".into(), self.name.clone().into());
        let put = |req: &mut Map<String, Value>, k: &str, v: Option<Value>| {
            if let Some(v) = v {
                req.insert(k.into(), v);
            }
        };
        put(&mut req, "bridge", self.bridge.clone().map(Into::into));
        put(&mut req, "mtu", self.mtu.map(Into::into));
        put(&mut req, "masquerade", self.ip_masq.map(Into::into));
        put(&mut req, "icc", self.icc.map(Into::into));
        let (v4, v6) = self.ipam.subnets()?;
        if let Some((subnet, gateway)) = v4 {
            put(&mut req, "subnet", Some(subnet.into()));
            put(&mut req, "gateway", gateway.map(Into::into));
        }
        if let Some((subnet, gateway)) = v6 {
            put(&mut req, "ipv6", Some(true.into()));
            put(&mut req, "subnet_v6", Some(subnet.into()));
            put(&mut req, "gateway_v6", gateway.map(Into::into));
        }
        Ok(Value::Object(req))
    }

    /// `POST /v1/endpoints` for this configuration and attachment.
    pub fn endpoint_request(&self, att: &Attachment) -> Result<Value, CniError> {
        let ports = self
            .runtime_config
            .port_mappings
            .iter()
            .map(PortMapping::spec)
            .collect::<Result<Vec<_>, _>>()?;
        let (ip, ip6) = self.runtime_config.wanted_ips()?;
        let labels = BTreeMap::from([
            (LABEL_CONTAINER, att.container_id.as_str()),
            (LABEL_IFNAME, att.ifname.as_str()),
        ]);
        Ok(serde_json::json!({
            "network": self.name, "netns": att.netns, "name": endpoint_name(att),
            "ifname": att.ifname, "ports": ports, "ip": ip, "ip6": ip6,
            "mac": self.runtime_config.mac, "labels": labels,
        }))
    }

    /// The attachments GC must keep; `None` when the runtime sent no list (every
    /// attachment is stale then).
    pub fn valid(&self) -> Option<&[GcAttachment]> {
        self.valid_attachments
            .as_deref()
            .or(self.attachments.as_deref())
    }
}

type Subnet = (String, Option<String>);

impl Ipam {
    /// The IPv4 and IPv6 subnets (with gateways) the configuration asks for.
    fn subnets(&self) -> Result<(Option<Subnet>, Option<Subnet>), CniError> {
        let mut all: Vec<Subnet> = self
            .subnet
            .iter()
            .map(|s| (s.clone(), self.gateway.clone()))
            .collect();
        all.extend(
            self.ranges
                .iter()
                .filter_map(|set| set.first())
                .map(|r| (r.subnet.clone(), r.gateway.clone())),
        );
        let (mut v4, mut v6) = (None, None);
        for (subnet, gateway) in all {
            let slot = if subnet.contains(':') {
                &mut v6
            } else {
                &mut v4
            };
            if slot.is_some() {
                return Err(CniError::new(INVALID_CONFIG, "invalid network config").details(
                    format!("ipam: one subnet per address family (netdriver networks have one), got another: {subnet}"),
                ));
            }
            *slot = Some((subnet, gateway));
        }
        Ok((v4, v6))
    }
}

impl PortMapping {
    /// The mapping in `-p` syntax: `[HOSTIP:]HOSTPORT:CPORT/PROTO`.
    fn spec(&self) -> Result<String, CniError> {
        let bad =
            |why: String| CniError::new(INVALID_CONFIG, "invalid portMappings entry").details(why);
        let port = |p: i64, what: &str| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(format!("{what} {p}: expected 1-65535")))
        };
        let (host, container) = (
            port(self.host_port, "hostPort")?,
            port(self.container_port, "containerPort")?,
        );
        let proto = if self.protocol.is_empty() {
            "tcp".to_string()
        } else {
            self.protocol.to_ascii_lowercase()
        };
        if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
            return Err(bad(format!(
                "protocol {:?}: expected tcp, udp or sctp",
                self.protocol
            )));
        }
        let host_ip = match self.host_ip.parse::<IpAddr>() {
            _ if self.host_ip.is_empty() => String::new(),
            Ok(IpAddr::V4(ip)) => format!("{ip}:"),
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:"),
            Err(_) => {
                return Err(bad(format!(
                    "hostIP {:?} is not an IP address",
                    self.host_ip
                )));
            }
        };
        Ok(format!("{host_ip}{host}:{container}/{proto}"))
    }
}

impl RuntimeConfig {
    /// The addresses asked for with the `ips` capability (CIDR or bare), one per family.
    fn wanted_ips(&self) -> Result<(Option<String>, Option<String>), CniError> {
        let (mut v4, mut v6) = (None, None);
        for text in &self.ips {
            let addr = text.split('/').next().unwrap_or_default();
            let ip = addr.parse::<IpAddr>().map_err(|_| {
                CniError::new(INVALID_CONFIG, "invalid runtimeConfig.ips entry")
                    .details(format!("{text:?} is not an IP address"))
            })?;
            let slot = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
            if slot.replace(ip.to_string()).is_some() {
                return Err(
                    CniError::new(INVALID_CONFIG, "invalid runtimeConfig.ips entry")
                        .details("one address per family"),
                );
            }
        }
        Ok((v4, v6))
    }
}

/// The endpoint of an attachment: `cni-<container id>-<ifname>`, at most 64 characters
/// (the daemon's limit). A longer container id keeps its first characters and gets a hash of
/// the whole id, so the name stays unique.
#[must_use]
pub fn endpoint_name(att: &Attachment) -> String {
    let ifname: String = att
        .ifname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let id = &att.container_id;
    let full = format!("cni-{id}-{ifname}");
    if full.len() <= 64 {
        return full;
    }
    // FNV-1a: stable across versions and platforms, no dependency.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let keep = 64 - "cni-".len() - ".0123456789abcdef-".len() - ifname.len();
    format!("cni-{}.{hash:016x}-{ifname}", &id[..keep])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conf(v: Value) -> NetConf {
        serde_json::from_value(v).unwrap()
    }

    fn att(id: &str, ifname: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: ifname.into(),
            netns: "/var/run/netns/x".into(),
        }
    }

    #[test]
    fn network_from_config() {
        let c = conf(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "netdriver",
            "ipMasq": false, "mtu": 1400, "bridge": "br9", "unknown": [1],
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/24", "gateway": "10.22.0.9"}],
                [{"subnet": "2001:db8:1::/64"}]]}}),
        );
        assert_eq!(
            c.network_request().unwrap(),
            json!({"name": "n", "bridge": "br9", "mtu": 1400, "masquerade": false,
                "subnet": "10.22.0.0/24", "gateway": "10.22.0.9", "ipv6": true, "subnet_v6": "2001:db8:1::/64"})
        );
        let c = conf(json!({"name": "n", "ipam": {"subnet": "10.1.0.0/16"}}));
        assert_eq!(
            c.network_request().unwrap(),
            json!({"name": "n", "subnet": "10.1.0.0/16"})
        );
        let c = conf(
            json!({"name": "n", "ipam": {"subnet": "10.1.0.0/16", "ranges": [[{"subnet": "10.2.0.0/16"}]]}}),
        );
        assert_eq!(c.network_request().unwrap_err().code, INVALID_CONFIG);
    }

    #[test]
    fn port_mappings_both_spellings() {
        let c = conf(json!({"name": "n", "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"HostPort": 5353, "ContainerPort": 53, "Protocol": "UDP", "HostIP": "127.0.0.1"},
            {"hostPort": 9000, "containerPort": 90, "hostIP": "2001:db8::1"}],
            "ips": ["10.22.0.7/24"], "mac": "02:00:00:00:00:07"}}));
        let req = c.endpoint_request(&att("c1", "eth0")).unwrap();
        assert_eq!(
            req["ports"],
            json!([
                "8080:80/tcp",
                "127.0.0.1:5353:53/udp",
                "[2001:db8::1]:9000:90/tcp"
            ])
        );
        assert_eq!(req["ip"], "10.22.0.7");
        assert_eq!(req["mac"], "02:00:00:00:00:07");
        assert_eq!(req["name"], "cni-c1-eth0");
        assert_eq!(req["labels"][LABEL_CONTAINER], "c1");
        for bad in [
            json!({"hostPort": 0, "containerPort": 80}),
            json!({"hostPort": 70000, "containerPort": 80}),
            json!({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}),
            json!({"hostPort": 80, "containerPort": 80, "hostIP": "nope"}),
        ] {
            let c = conf(json!({"name": "n", "runtimeConfig": {"portMappings": [bad]}}));
            let err = c.endpoint_request(&att("c1", "eth0")).unwrap_err();
            assert_eq!(err.code, INVALID_CONFIG, "{}", err.details);
        }
    }

    #[test]
    fn endpoint_names_fit_and_stay_unique() {
        let long = "f".repeat(64);
        let mut other = long.clone();
        other.push('0');
        let a = endpoint_name(&att(&long, "eth0"));
        let b = endpoint_name(&att(&other, "eth0"));
        assert!(a.len() <= 64 && b.len() <= 64, "{a} {b}");
        assert_ne!(a, b);
        assert_ne!(a, endpoint_name(&att(&long, "net1")));
        assert_eq!(endpoint_name(&att("c1", "eth@0")), "cni-c1-eth_0");
    }

    #[test]
    fn gc_reads_either_key() {
        let c = conf(
            json!({"name": "n", "cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"}]}),
        );
        assert_eq!(c.valid().unwrap().len(), 1);
        let c = conf(json!({"name": "n"}));
        assert!(c.valid().is_none());
    }
}
