//! Hairpin state: forgetting an endpoint's hairpin flows.

use std::net::Ipv4Addr;

use netdriver_common::{HairpinKey, MAP_HAIRPIN};

use super::{Dataplane, DataplaneError, is_not_found, map_err};

impl Dataplane {
    /// Deletes the hairpin flows `addr` takes part in, as client or as target.
    pub fn flush_hairpin(&mut self, addr: Ipv4Addr) -> Result<usize, DataplaneError> {
        let addr_be = u32::from_ne_bytes(addr.octets());
        let flows: Vec<(HairpinKey, u32)> = self
            .hairpin
            .iter()
            .map(|kv| kv.map(|(k, v)| (k, v.daddr_be)))
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", MAP_HAIRPIN))?;
        let mut removed = 0;
        for (key, _) in flows.iter().filter(|(k, client)| {
            k.saddr_be == addr_be || k.daddr_be == addr_be || *client == addr_be
        }) {
            match self.hairpin.remove(key) {
                Ok(()) => removed += 1,
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(map_err("remove from", MAP_HAIRPIN)(err)),
            }
        }
        Ok(removed)
    }
}
