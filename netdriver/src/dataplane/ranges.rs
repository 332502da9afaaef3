//! Published port ranges: `ND_PORT_RANGES` (IPv4) and `ND_PORT_RANGES6` (IPv6), LPM tries
//! of aligned port blocks.

use aya::maps::lpm_trie::Key;
use netdriver_common::{
    MAP_PORT_RANGES, MAP_PORT_RANGES6, PORT_RANGE_PREFIX_BASE, PORT_RANGE6_PREFIX_BASE, PortKey,
    PortKey6, PortRangeKey, PortRangeKey6, PortRangeTarget, PortRangeTarget6, PortTarget,
    PortTarget6,
};

use super::{Dataplane, DataplaneError, is_not_found, map_err, validate_port_key};

fn range_key6(start: PortKey6, first: u16, bits: u32) -> Key<PortRangeKey6> {
    Key::new(
        PORT_RANGE6_PREFIX_BASE + bits,
        PortRangeKey6 {
            proto: start.proto,
            host_addr: start.host_addr,
            port_be: first.to_be_bytes(),
            _pad: 0,
        },
    )
}

fn range_key(start: PortKey, first: u16, bits: u32) -> Key<PortRangeKey> {
    Key::new(
        PORT_RANGE_PREFIX_BASE + bits,
        PortRangeKey {
            proto: start.proto,
            host_addr: start.host_addr_be.to_ne_bytes(),
            port_be: first.to_be_bytes(),
            _pad: 0,
        },
    )
}

impl Dataplane {
    /// Publishes a range that starts at `start` (its first host port) and is made of
    /// `blocks` (first port, fixed leading bits); `target.port` is the container port of the
    /// first host port.
    pub fn publish_range(
        &mut self,
        start: PortKey,
        blocks: &[(u16, u32)],
        target: PortTarget,
    ) -> Result<(), DataplaneError> {
        let start = validate_port_key(start)?;
        let value = PortRangeTarget {
            target: PortTarget { _pad0: 0, ..target },
            host_start: start.host_port,
            _pad: [0; 3],
        };
        for &(first, bits) in blocks {
            self.port_ranges
                .insert(&range_key(start, first, bits), value, 0)
                .map_err(map_err("insert into", MAP_PORT_RANGES))?;
        }
        Ok(())
    }

    /// Removes a published range; succeeds for blocks that were not there.
    pub fn unpublish_range(
        &mut self,
        start: &PortKey,
        blocks: &[(u16, u32)],
    ) -> Result<(), DataplaneError> {
        for &(first, bits) in blocks {
            match self.port_ranges.remove(&range_key(*start, first, bits)) {
                Err(err) if !is_not_found(&err) => {
                    return Err(map_err("remove from", MAP_PORT_RANGES)(err));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Publishes an IPv6 range, as [`Dataplane::publish_range`] does for IPv4.
    pub fn publish_range6(
        &mut self,
        start: PortKey6,
        blocks: &[(u16, u32)],
        target: PortTarget6,
    ) -> Result<(), DataplaneError> {
        super::ip6::validate_port_key6(&start)?;
        let value = PortRangeTarget6 {
            target: PortTarget6 { _pad0: 0, ..target },
            host_start: start.host_port,
            _pad: 0,
        };
        for &(first, bits) in blocks {
            self.port_ranges6
                .insert(&range_key6(start, first, bits), value, 0)
                .map_err(map_err("insert into", MAP_PORT_RANGES6))?;
        }
        Ok(())
    }

    /// Removes a published IPv6 range; succeeds for blocks that were not there.
    pub fn unpublish_range6(
        &mut self,
        start: &PortKey6,
        blocks: &[(u16, u32)],
    ) -> Result<(), DataplaneError> {
        for &(first, bits) in blocks {
            match self.port_ranges6.remove(&range_key6(*start, first, bits)) {
                Err(err) if !is_not_found(&err) => {
                    return Err(map_err("remove from", MAP_PORT_RANGES6)(err));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
