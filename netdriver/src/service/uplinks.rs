//! Which interfaces carry the published-port program: the ones named with `--uplink`, or
//! every interface netdriver did not create (bridges, their ports, our veths), except `lo`.

use std::collections::HashSet;

use super::{ServiceError, State};
use crate::netlink::LinkInfo;

impl State {
    /// Attaches to uplinks that appeared and forgets those that vanished; refreshes the host
    /// addresses the socket hooks and hairpin consult.
    pub(super) async fn sync_uplinks(&mut self) -> Result<(), ServiceError> {
        self.sync_host_addrs().await?;
        let links = self.nl.links().await?;
        let wanted: HashSet<String> = self.uplink_candidates(&links);
        for name in self.dp.uplinks() {
            if !wanted.contains(&name) {
                tracing::info!(uplink = %name, "uplink gone");
                if let Err(e) = self.dp.detach_uplink(&name) {
                    tracing::warn!(uplink = %name, "detach: {e}");
                }
            }
        }
        let attached: HashSet<String> = self.dp.uplinks().into_iter().collect();
        for name in wanted.difference(&attached) {
            match self.dp.attach_uplink(name) {
                Ok(()) => tracing::info!(uplink = %name, "attached to uplink"),
                Err(e) => tracing::warn!(uplink = %name, "cannot attach: {e}"),
            }
        }
        Ok(())
    }

    /// Copies the namespace's addresses into the data path (`ND_HOST_ADDRS`,
    /// `ND_HOST_ADDRS6`).
    pub(super) async fn sync_host_addrs(&mut self) -> Result<(), ServiceError> {
        let addrs = self.nl.ipv4_addresses().await?;
        self.dp
            .set_host_addrs(&addrs.iter().map(ipnet::Ipv4Net::addr).collect())?;
        let addrs6 = self.nl.ipv6_addresses().await?;
        self.dp
            .set_host_addrs6(&addrs6.iter().map(ipnet::Ipv6Net::addr).collect())?;
        Ok(())
    }

    fn uplink_candidates(&self, links: &[LinkInfo]) -> HashSet<String> {
        if !self.config.uplinks.is_empty() {
            return links
                .iter()
                .filter(|l| self.config.uplinks.contains(&l.name))
                .map(|l| l.name.clone())
                .collect();
        }
        let ours: HashSet<&str> = self
            .networks
            .values()
            .map(|n| n.net.bridge.as_str())
            .chain(self.endpoints.values().map(|e| e.host_ifname.as_str()))
            .collect();
        let our_bridges: HashSet<u32> = links
            .iter()
            .filter(|l| ours.contains(l.name.as_str()))
            .map(|l| l.index)
            .collect();
        links
            .iter()
            .filter(|l| l.name != "lo" && !ours.contains(l.name.as_str()))
            .filter(|l| !l.master.is_some_and(|m| our_bridges.contains(&m)))
            .filter(|l| !is_our_veth_name(&l.name))
            .map(|l| l.name.clone())
            .collect()
    }
}

/// Veth ends netdriver names `nd` + 10 hex digits (host) or `np` + 10 (peer, before it moves):
/// an endpoint being created is not in the endpoint table yet.
pub(super) fn is_our_veth_name(name: &str) -> bool {
    (name.starts_with("nd") || name.starts_with("np"))
        && name.len() == 12
        && name[2..].chars().all(|c| c.is_ascii_hexdigit())
}
