//! Checking an endpoint against the kernel (CNI's CHECK): is what `endpoint create` set up
//! still there?

use std::net::IpAddr;

use ipnet::IpNet;

use super::{ServiceError, State};
use crate::{
    ipam::format_mac,
    model::{Endpoint, EndpointCheck},
    netlink::NetnsHandle,
};

impl State {
    pub(super) async fn check_endpoint(&self, name: &str) -> Result<EndpointCheck, ServiceError> {
        let ep = self
            .endpoints
            .get(name)
            .ok_or_else(|| ServiceError::NotFound(format!("no endpoint named {name:?}")))?;
        let mut problems = self.check_host_end(ep).await?;
        problems.extend(check_container_end(ep).await);
        Ok(EndpointCheck { problems })
    }

    /// The host end of the veth pair exists and is a port of the network's bridge.
    async fn check_host_end(&self, ep: &Endpoint) -> Result<Vec<String>, ServiceError> {
        let Some(host) = self.nl.link_by_name(&ep.host_ifname).await? else {
            return Ok(vec![format!(
                "host interface {} is missing",
                ep.host_ifname
            )]);
        };
        let bridge = self
            .nl
            .link_by_name(&self.networks[&ep.network].net.bridge)
            .await?;
        Ok(match bridge {
            Some(b) if host.master == Some(b.index) => Vec::new(),
            Some(b) => vec![format!(
                "host interface {} is not a port of bridge {}",
                ep.host_ifname, b.name
            )],
            None => vec![format!(
                "bridge {} is missing",
                self.networks[&ep.network].net.bridge
            )],
        })
    }
}

/// The container's interface exists in its namespace, up, with its MAC and addresses.
async fn check_container_end(ep: &Endpoint) -> Vec<String> {
    let netns = match NetnsHandle::open(&ep.netns).await {
        Ok(n) => n,
        Err(e) => return vec![format!("network namespace {}: {e}", ep.netns.display())],
    };
    let link = match netns.link_by_name(&ep.ifname).await {
        Ok(Some(link)) => link,
        Ok(None) => {
            return vec![format!(
                "interface {} is missing in {}",
                ep.ifname,
                ep.netns.display()
            )];
        }
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    if !link.up {
        problems.push(format!("interface {} is down", ep.ifname));
    }
    let mac = link.mac.map(format_mac).unwrap_or_default();
    if mac != ep.mac {
        problems.push(format!(
            "interface {} has MAC {mac}, expected {}",
            ep.ifname, ep.mac
        ));
    }
    match netns.link_addresses(link.index).await {
        Ok(addrs) => problems.extend(missing_addresses(ep, &addrs)),
        Err(e) => problems.push(e.to_string()),
    }
    problems
}

/// The endpoint's addresses that `addrs` lacks, as problems.
fn missing_addresses(ep: &Endpoint, addrs: &[IpNet]) -> Vec<String> {
    let mut wanted = vec![(IpAddr::V4(ep.ip), ep.prefix_len)];
    if let Some(ip6) = ep.ip6 {
        wanted.push((IpAddr::V6(ip6), ep.prefix_len6));
    }
    wanted
        .into_iter()
        .filter(|(ip, len)| {
            !addrs
                .iter()
                .any(|a| a.addr() == *ip && a.prefix_len() == *len)
        })
        .map(|(ip, len)| format!("interface {} lacks address {ip}/{len}", ep.ifname))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_missing_address() {
        let ep: Endpoint = serde_json::from_value(serde_json::json!({
            "id": "x", "name": "x", "network": "n", "netns": "/x", "ifname": "eth0",
            "host_ifname": "ndx", "ip": "10.1.0.2", "prefix_len": 24, "gateway": "10.1.0.1",
            "ip6": "2001:db8::2", "prefix_len6": 64, "mac": "02:42:0a:01:00:02",
            "port_specs": [], "ports": []
        }))
        .unwrap();
        let v4: IpNet = "10.1.0.2/24".parse().unwrap();
        let v6: IpNet = "2001:db8::2/64".parse().unwrap();
        assert!(missing_addresses(&ep, &[v4, v6]).is_empty());
        assert_eq!(
            missing_addresses(&ep, &[v6, "10.1.0.2/16".parse().unwrap()]),
            vec!["interface eth0 lacks address 10.1.0.2/24"]
        );
        assert_eq!(missing_addresses(&ep, &[v4]).len(), 1);
    }
}
