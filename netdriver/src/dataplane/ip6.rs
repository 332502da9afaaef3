//! The IPv6 maps from the daemon's side: published ports (`ND_PORTS6`) and container
//! subnets (`ND_NETS6`). Conntrack is in `ct` with the IPv4 table.

use std::net::Ipv6Addr;

use aya::maps::lpm_trie::Key;
use ipnet::Ipv6Net;
use netdriver_common::{
    LinkKey6, MAP_LINKS6, MAP_NETS6, MAP_PORTS6, NetInfo6, PROTO_TCP, PROTO_UDP, PortKey6,
    PortTarget6,
};

use super::{Dataplane, DataplaneError, is_not_found, map_err, validate_proto};

impl Dataplane {
    /// Publishes (or re-targets) a port on an IPv6 host address (`[0; 16]`: every IPv6 host
    /// address). Ports are in host order, addresses as their 16 bytes (`Ipv6Addr::octets`).
    pub fn publish6(&mut self, key: PortKey6, target: PortTarget6) -> Result<(), DataplaneError> {
        // The IPv6 data path translates no SCTP (its CRC32C update is IPv4 only).
        validate_proto(key.proto, &[PROTO_TCP, PROTO_UDP], "TCP or UDP (IPv6)")?;
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

impl Dataplane {
    /// Lets `key.parent_addr` open connections to `key.port` of `key.child_addr` over IPv6.
    pub fn add_link6(&mut self, key: LinkKey6) -> Result<(), DataplaneError> {
        let key = LinkKey6 { _pad: 0, ..key };
        self.links6
            .insert(key, 1, 0)
            .map_err(map_err("insert into", MAP_LINKS6))
    }

    /// Removes every IPv6 link entry that names `addr` as parent or child.
    pub fn remove_links_of6(&mut self, addr: Ipv6Addr) -> Result<usize, DataplaneError> {
        let a = addr.octets();
        let keys: Vec<LinkKey6> = self
            .links6
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", MAP_LINKS6))?;
        let mut removed = 0;
        for key in keys
            .iter()
            .filter(|k| k.parent_addr == a || k.child_addr == a)
        {
            match self.links6.remove(key) {
                Ok(()) => removed += 1,
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(map_err("remove from", MAP_LINKS6)(err)),
            }
        }
        Ok(removed)
    }
}

fn net6_key(subnet: Ipv6Net) -> Key<[u8; 16]> {
    let subnet = subnet.trunc();
    Key::new(u32::from(subnet.prefix_len()), subnet.network().octets())
}
