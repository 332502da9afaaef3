//! `ND_BIND_PORTS`: the host ports published on some host address, per protocol and address
//! family, which `bind` on the wildcard address may not take.

use std::collections::BTreeSet;

use aya::maps::lpm_trie::Key;
use netdriver_common::{BIND_PORT_PREFIX_BASE, BindPortKey, MAP_BIND_PORTS};

use super::{Dataplane, DataplaneError, is_not_found, map_err};

/// One aligned block of ports: protocol, family (`BIND_FAMILY_*`), first port, and how many
/// leading bits of the port are fixed.
pub type BindBlock = (u8, u8, u16, u32);

fn key((proto, family, first, bits): BindBlock) -> Key<BindPortKey> {
    Key::new(
        BIND_PORT_PREFIX_BASE + bits,
        BindPortKey {
            proto,
            family,
            port_be: first.to_be_bytes(),
        },
    )
}

fn block(key: Key<BindPortKey>) -> BindBlock {
    let data = key.data();
    (
        data.proto,
        data.family,
        u16::from_be_bytes(data.port_be),
        key.prefix_len().saturating_sub(BIND_PORT_PREFIX_BASE),
    )
}

impl Dataplane {
    /// Makes `ND_BIND_PORTS` hold exactly `wanted`.
    pub fn set_bind_ports(&mut self, wanted: &BTreeSet<BindBlock>) -> Result<(), DataplaneError> {
        let present: BTreeSet<BindBlock> = self
            .bind_ports
            .keys()
            .map(|k| k.map(block))
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", MAP_BIND_PORTS))?;
        for gone in present.difference(wanted) {
            match self.bind_ports.remove(&key(*gone)) {
                Err(err) if !is_not_found(&err) => {
                    return Err(map_err("remove from", MAP_BIND_PORTS)(err));
                }
                _ => {}
            }
        }
        for new in wanted.difference(&present) {
            self.bind_ports
                .insert(&key(*new), 1, 0)
                .map_err(map_err("insert into", MAP_BIND_PORTS))?;
        }
        Ok(())
    }
}
