//! Host-port reservation beyond the exact `bind` check of the socket hooks, derived from the
//! published host ports: the wildcard-bind table of the data path (`ND_BIND_PORTS`) and
//! `net.ipv4.ip_local_reserved_ports`.

use std::collections::{BTreeMap, BTreeSet};

use netdriver_common::{BIND_FAMILY_V4, BIND_FAMILY_V6};

use super::{ServiceError, State};
use crate::{
    dataplane::BindBlock,
    ports::{self, PortBinding, reserved},
};

/// The address family of a binding's host address (`BIND_FAMILY_*`).
fn family(b: &PortBinding) -> u8 {
    if b.host_ip.is_ipv6() {
        BIND_FAMILY_V6
    } else {
        BIND_FAMILY_V4
    }
}

/// The aligned port blocks of every (protocol, family) that has published ports.
fn bind_blocks(bindings: &[PortBinding]) -> BTreeSet<BindBlock> {
    let mut by_kind: BTreeMap<(u8, u8), BTreeSet<u16>> = BTreeMap::new();
    for b in bindings {
        by_kind
            .entry((b.proto.number(), family(b)))
            .or_default()
            .insert(b.host_port);
    }
    let mut out = BTreeSet::new();
    for ((proto, family), set) in by_kind {
        for (lo, hi) in ports::spans(&set) {
            out.extend(
                ports::blocks(lo, hi)
                    .into_iter()
                    .map(|(first, bits)| (proto, family, first, bits)),
            );
        }
    }
    out
}

impl State {
    /// Every published host binding.
    fn published_bindings(&self) -> Vec<PortBinding> {
        self.endpoints
            .values()
            .flat_map(|e| e.ports.iter().copied())
            .collect()
    }

    /// Brings the wildcard-bind table and `ip_local_reserved_ports` in line with the
    /// published ports (after every change, and at start: recomputed from the store).
    pub(super) fn sync_reservations(&mut self) -> Result<(), ServiceError> {
        let bindings = self.published_bindings();
        self.dp.set_bind_ports(&bind_blocks(&bindings))?;
        let host_ports = bindings.iter().map(|b| b.host_port).collect();
        reserved::sync(&self.config.state_dir, &host_ports)?;
        Ok(())
    }

    /// [`State::sync_reservations`] where the request itself already succeeded or failed:
    /// a failure here is logged, not returned.
    pub(super) fn sync_reservations_or_warn(&mut self) {
        if let Err(e) = self.sync_reservations() {
            tracing::warn!("host-port reservation: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use super::*;
    use crate::ports::Proto;

    fn tcp(ip: impl Into<IpAddr>, port: u16) -> PortBinding {
        PortBinding {
            proto: Proto::Tcp,
            host_ip: ip.into(),
            host_port: port,
            container_port: 80,
        }
    }

    #[test]
    fn ports_on_any_address_merge_into_blocks() {
        let blocks = bind_blocks(&[
            tcp([198, 51, 100, 1], 8080),
            tcp([127, 0, 0, 1], 8081),
            tcp([0, 0, 0, 0], 8080),
            tcp(Ipv6Addr::LOCALHOST, 9000),
        ]);
        let tcp = Proto::Tcp.number();
        assert_eq!(
            blocks,
            [
                (tcp, BIND_FAMILY_V4, 8080, 15),
                (tcp, BIND_FAMILY_V6, 9000, 16)
            ]
            .into_iter()
            .collect()
        );
    }
}
