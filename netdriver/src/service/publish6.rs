//! Published ports on IPv6 host addresses (`-p [::]:8080:80`, and the `[::]` twin of a
//! binding without a host address on an `--ipv6` network).
//!
//! The control plane allocates, stores and lists these bindings; the data path for them
//! (`ND_PORTS6`) is the IPv6 data-path work. These two functions are the only place the
//! service hands IPv6 bindings to the data path: the endpoint calls them wherever it
//! publishes or withdraws its IPv4 bindings (create, restart, reconcile, remove).

use super::{ServiceError, State};
use crate::{model::Endpoint, ports::PortBinding};

/// The endpoint's bindings on IPv6 host addresses.
pub(super) fn v6_bindings(ep: &Endpoint) -> impl Iterator<Item = &PortBinding> {
    ep.ports.iter().filter(|b| b.host_ip.is_ipv6())
}

impl State {
    /// Publishes the endpoint's IPv6 bindings towards `ep.ip6`.
    // TODO(v6dp): program ND_PORTS6 (PortKey6 -> PortTarget6) for `v6_bindings(ep)`.
    #[expect(
        clippy::unnecessary_wraps,
        clippy::unused_self,
        reason = "the IPv6 data path fills this in; its callers already handle errors"
    )]
    pub(super) fn publish_v6(&mut self, ep: &Endpoint) -> Result<(), ServiceError> {
        let count = v6_bindings(ep).count();
        if count > 0 {
            tracing::debug!(endpoint = %ep.name, count, "IPv6 bindings stored (no IPv6 data path yet)");
        }
        Ok(())
    }

    /// Withdraws the endpoint's IPv6 bindings; reports every error it meets.
    // TODO(v6dp): remove the ND_PORTS6 entries of `v6_bindings(ep)`.
    #[expect(
        clippy::unused_self,
        reason = "the IPv6 data path fills this in; its callers already collect errors"
    )]
    pub(super) fn unpublish_v6(&mut self, ep: &Endpoint) -> Vec<ServiceError> {
        let _ = v6_bindings(ep);
        Vec::new()
    }
}
