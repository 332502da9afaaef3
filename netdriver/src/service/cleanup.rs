//! Removing everything netdriver made: programs, pins, bridges, veths and store entries.
//! `netdriver daemon --cleanup-on-exit` does it as the daemon stops, `netdriver cleanup`
//! while no daemon runs.

use super::{Config, ServiceError, State, uplinks::is_our_veth_name};
use crate::{dataplane, netlink::Netlink, ports::reserved, store::Store};

impl State {
    pub(super) async fn remove_everything(&mut self) -> Result<(), ServiceError> {
        let endpoints: Vec<String> = self.endpoints.keys().cloned().collect();
        for name in endpoints {
            self.remove_endpoint(&name).await?;
        }
        let networks: Vec<String> = self.networks.keys().cloned().collect();
        for name in networks {
            self.remove_network(&name).await?;
        }
        self.dp.remove_everything()?;
        reserved::release(&self.config.state_dir)?;
        tracing::info!("removed every network, endpoint, program and pin");
        Ok(())
    }
}

/// What `netdriver cleanup` removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct CleanupReport {
    pub endpoints: usize,
    pub networks: usize,
    pub interfaces: Vec<String>,
}

/// Removes, without a running daemon, what the store at `config.state_dir` says netdriver
/// made in the current namespace, netdriver's own veths, the pins, and the store entries.
pub async fn cleanup_offline(config: &Config) -> Result<CleanupReport, ServiceError> {
    let store = Store::open(&config.state_dir)?;
    let nl = Netlink::new()?;
    let networks = store.networks()?;
    let endpoints = store.endpoints()?;
    let mut report = CleanupReport {
        endpoints: endpoints.len(),
        networks: networks.len(),
        interfaces: Vec::new(),
    };
    let names: Vec<&str> = endpoints
        .iter()
        .map(|e| e.host_ifname.as_str())
        .chain(networks.iter().map(|n| n.bridge.as_str()))
        .collect();
    for link in nl.links().await? {
        if names.contains(&link.name.as_str()) || is_our_veth_name(&link.name) {
            nl.delete_link(link.index).await?;
            report.interfaces.push(link.name);
        }
    }
    dataplane::remove_pins(&config.bpffs)?;
    reserved::release(&config.state_dir)?;
    for e in &endpoints {
        store.delete_endpoint(&e.name)?;
    }
    for n in &networks {
        store.delete_network(&n.name)?;
    }
    Ok(report)
}
