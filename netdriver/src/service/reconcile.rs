//! Start-up reconciliation: the store says what should exist, the kernel says what does.
//! Endpoints whose namespace is gone are removed and their address and ports released;
//! endpoints whose veth pair vanished (deleted behind our back, or a reboot) are re-created;
//! veths netdriver made but no endpoint owns (a crash mid-create or mid-remove) are deleted.

use super::{
    ServiceError, State,
    endpoint::{check_netns, port_key},
    uplinks::is_our_veth_name,
};

impl State {
    pub(super) async fn reconcile(&mut self) -> Result<(), ServiceError> {
        let endpoints: Vec<_> = self.endpoints.values().cloned().collect();
        for ep in endpoints {
            if self.is_docker_endpoint(&ep.name) {
                // dockerd owns its sandboxes (often in its own mount namespace) and replays
                // Join/Leave itself: re-program what is there, leave the rest to it.
                if self.nl.link_by_name(&ep.host_ifname).await?.is_some() {
                    if let Err(e) = self.program_endpoint(&ep).await {
                        tracing::error!(endpoint = %ep.name, "cannot restore endpoint: {e}");
                    }
                }
                continue;
            }
            if let Err(e) = check_netns(&ep.netns) {
                tracing::warn!(endpoint = %ep.name, "namespace gone ({e}); removing the endpoint");
                self.remove_endpoint(&ep.name).await?;
                continue;
            }
            let result = if self.nl.link_by_name(&ep.host_ifname).await?.is_some() {
                self.program_endpoint(&ep).await
            } else {
                tracing::warn!(endpoint = %ep.name, veth = %ep.host_ifname, "veth missing; re-creating it");
                self.recreate_endpoint(&ep).await
            };
            if let Err(e) = result {
                tracing::error!(endpoint = %ep.name, "cannot restore endpoint: {e}");
            }
        }
        self.delete_orphan_veths().await?;
        self.delete_stray_ports()
    }

    /// Published ports no endpoint owns (a crash between forgetting an endpoint and
    /// unpublishing its ports) are unpublished.
    fn delete_stray_ports(&mut self) -> Result<(), ServiceError> {
        let owned: Vec<_> = self
            .endpoints
            .values()
            .flat_map(|e| {
                e.ports
                    .iter()
                    .filter_map(port_key)
                    .chain(self.routed_ports(e))
            })
            .collect();
        for (key, _) in self.dp.published()? {
            if !owned.contains(&key) {
                tracing::warn!(port = key.host_port, "unpublishing a port no endpoint owns");
                self.dp.unpublish(&key)?;
            }
        }
        self.delete_stray_ports6()
    }

    /// Re-creates the veth pair of a stored endpoint, the container side included.
    async fn recreate_endpoint(&mut self, ep: &crate::model::Endpoint) -> Result<(), ServiceError> {
        if let Err(e) = self.apply_endpoint(ep).await {
            self.teardown_endpoint(ep).await;
            return Err(e);
        }
        Ok(())
    }

    fn is_docker_endpoint(&self, name: &str) -> bool {
        self.docker.endpoints.values().any(|r| r.name == name)
    }

    async fn delete_orphan_veths(&mut self) -> Result<(), ServiceError> {
        for link in self.nl.links().await? {
            // Both ends share the suffix: `nd…` on the bridge, `np…` before it moves.
            let owned = self
                .endpoints
                .values()
                .any(|e| e.host_ifname.get(2..) == link.name.get(2..));
            if is_our_veth_name(&link.name) && !owned {
                tracing::warn!(veth = %link.name, "deleting a veth no endpoint owns");
                self.nl.delete_link(link.index).await?;
            }
        }
        Ok(())
    }
}
