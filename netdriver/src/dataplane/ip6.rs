//! The IPv6 maps from the daemon's side: published ports (`ND_PORTS6`) and container
//! subnets (`ND_NETS6`). Conntrack is in `ct` with the IPv4 table.

use aya::maps::lpm_trie::Key;
use ipnet::Ipv6Net;
use netdriver_common::{MAP_NETS6, MAP_PORTS6, NetInfo6, PortKey6, PortTarget6};

use super::{Dataplane, DataplaneError, is_not_found, map_err, validate_proto};

impl Dataplane {
    /// Publishes (or re-targets) a port on an IPv6 host address (`[0; 16]`: every IPv6 host
    /// address). Ports are in host order, addresses as their 16 bytes (`Ipv6Addr::octets`).
    pub fn publish6(&mut self, key: PortKey6, target: PortTarget6) -> Result<(), DataplaneError> {
        validate_proto(key.proto)?;
        let key = PortKey6 { _pad: 0, ..key };
        let target = PortTarget6 { _pad0: 0, ..target };
        self.ports6
            .insert(key, target, 0)
            .map_err(map_err("insert into", MAP_PORTS6))
    }

    /// Removes a published IPv6 port; succeeds if it was not published.
    pub fn unpublish6(&mut self, key: &PortKey6) -> Result<(), DataplaneError> {
        let key = PortKey6 { _pad: 0, ..*key };
        match self.ports6.remove(&key) {
            Err(err) if !is_not_found(&err) => Err(map_err("remove from", MAP_PORTS6)(err)),
            _ => Ok(()),
        }
    }

    /// The published IPv6 ports, as stored in `ND_PORTS6`.
    pub fn published6(&self) -> Result<Vec<(PortKey6, PortTarget6)>, DataplaneError> {
        self.ports6
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", MAP_PORTS6))
    }

    /// Declares an IPv6 container subnet (policy, and outsiders reach its addresses only
    /// through published ports).
    pub fn add_network6(&mut self, subnet: Ipv6Net, info: NetInfo6) -> Result<(), DataplaneError> {
        self.nets6
            .insert(&net6_key(subnet), info, 0)
            .map_err(map_err("insert into", MAP_NETS6))
    }

    /// Removes an IPv6 container subnet; succeeds if it was not there.
    pub fn remove_network6(&mut self, subnet: Ipv6Net) -> Result<(), DataplaneError> {
        match self.nets6.remove(&net6_key(subnet)) {
            Err(err) if !is_not_found(&err) => Err(map_err("remove from", MAP_NETS6)(err)),
            _ => Ok(()),
        }
    }
}

fn net6_key(subnet: Ipv6Net) -> Key<[u8; 16]> {
    let subnet = subnet.trunc();
    Key::new(u32::from(subnet.prefix_len()), subnet.network().octets())
}
