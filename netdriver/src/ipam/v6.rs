//! IPv6 address management: validating a network's IPv6 subnet, picking a unique local /64
//! when none is given, and handing out container addresses (MAC-derived where the prefix
//! leaves 48 bits for the MAC, as Docker's bridge driver did, else the lowest free one).

use std::{collections::BTreeSet, net::Ipv6Addr};

use ipnet::Ipv6Net;

use super::IpamError;

/// The longest prefix that leaves room for a gateway and a container.
pub const MAX_PREFIX: u8 = 126;
/// Prefixes up to this length hold a container's MAC in their low 48 bits.
pub const MAC_PREFIX: u8 = 80;
/// How many random unique local /64s are tried before giving up.
const POOL_ATTEMPTS: usize = 64;
/// How many addresses a sequential allocation looks at before calling the subnet full.
const SCAN_LIMIT: u128 = 1 << 16;

fn link_local() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 64).expect("valid")
}

fn multicast() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8).expect("valid")
}

#[must_use]
pub fn overlaps(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Parses a user-given IPv6 subnet: strict CIDR, host bits cleared, room for a gateway and
/// a container, clear of the link-local prefix (Docker's rule), multicast, IPv4-mapped
/// addresses and `::`/`::1`.
pub fn parse_subnet(s: &str) -> Result<Ipv6Net, IpamError> {
    let bad = |why: String| IpamError::BadSubnet6(why);
    let t = s.trim();
    let net: Ipv6Net = t.parse().map_err(|_| {
        if t.parse::<ipnet::Ipv4Net>().is_ok() {
            bad(format!(
                "{s:?}: expected an IPv6 CIDR such as 2001:db8:1::/64, not IPv4"
            ))
        } else {
            bad(format!(
                "{s:?}: expected an IPv6 CIDR such as 2001:db8:1::/64"
            ))
        }
    })?;
    if net.trunc() != net {
        return Err(bad(format!(
            "{s} (host bits set; did you mean {}?)",
            net.trunc()
        )));
    }
    if net.prefix_len() > MAX_PREFIX {
        return Err(bad(format!(
            "{net} is too small: it needs room for a gateway and a container (/{MAX_PREFIX} or larger)"
        )));
    }
    if overlaps(&net, &link_local()) {
        return Err(bad(format!(
            "{net} clashes with the Link-Local prefix fe80::/64"
        )));
    }
    if overlaps(&net, &multicast()) {
        return Err(bad(format!("{net} overlaps the multicast range ff00::/8")));
    }
    if net.contains(&Ipv6Addr::UNSPECIFIED) {
        return Err(bad(format!(
            "{net} contains the unspecified and loopback addresses (::, ::1)"
        )));
    }
    let mapped = Ipv6Net::new(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96).expect("valid");
    if overlaps(&net, &mapped) {
        return Err(bad(format!(
            "{net} overlaps the IPv4-mapped range ::ffff:0:0/96"
        )));
    }
    Ok(net)
}

/// Whether `addr` can be a host's address in `subnet` (not the subnet-router anycast
/// address, which is the subnet's first).
#[must_use]
pub fn is_host_addr(subnet: &Ipv6Net, addr: Ipv6Addr) -> bool {
    subnet.contains(&addr) && addr != subnet.network()
}

/// The default gateway of a subnet: its first host address.
#[must_use]
pub fn first_host(subnet: &Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(subnet.network()) + 1)
}

/// A unique local /64 (RFC 4193: `fd` + a random 40-bit global id, subnet 0) that overlaps
/// none of `taken`. `random` gives the 40-bit id.
pub fn pick_pool(
    taken: &[Ipv6Net],
    random: &mut dyn FnMut() -> [u8; 5],
) -> Result<Ipv6Net, IpamError> {
    for _ in 0..POOL_ATTEMPTS {
        let id = random();
        let mut bytes = [0u8; 16];
        bytes[0] = 0xfd;
        bytes[1..6].copy_from_slice(&id);
        let candidate = Ipv6Net::new(Ipv6Addr::from(bytes), 64).expect("valid /64");
        if !taken.iter().any(|t| overlaps(&candidate, t)) {
            return Ok(candidate);
        }
    }
    Err(IpamError::Pools6Exhausted)
}

/// Docker's MAC-derived address: the subnet's prefix with the MAC in the low 48 bits, when
/// the prefix is /80 or shorter.
#[must_use]
pub fn mac_derived(subnet: &Ipv6Net, mac: [u8; 6]) -> Option<Ipv6Addr> {
    if subnet.prefix_len() > MAC_PREFIX {
        return None;
    }
    let mut bytes = subnet.network().octets();
    bytes[10..].copy_from_slice(&mac);
    Some(Ipv6Addr::from(bytes))
}

/// IPv6 addresses in use inside one network's IPv6 subnet.
#[derive(Debug, Clone)]
pub struct AddressPool6 {
    subnet: Ipv6Net,
    used: BTreeSet<Ipv6Addr>,
}

impl AddressPool6 {
    /// A pool with the gateway already reserved.
    #[must_use]
    pub fn new(subnet: Ipv6Net, gateway: Ipv6Addr) -> Self {
        Self {
            subnet,
            used: BTreeSet::from([gateway]),
        }
    }

    /// Reserves a requested address; else the one derived from `mac` (if the prefix allows
    /// it and it is free); else the lowest free one.
    pub fn allocate(
        &mut self,
        wanted: Option<Ipv6Addr>,
        mac: [u8; 6],
    ) -> Result<Ipv6Addr, IpamError> {
        let addr = match wanted {
            Some(addr) => self.check_free(addr)?,
            None => match mac_derived(&self.subnet, mac).filter(|a| self.is_free(*a)) {
                Some(addr) => addr,
                None => self.first_free()?,
            },
        };
        self.used.insert(addr);
        Ok(addr)
    }

    /// Marks `addr` used (loading from the store).
    pub fn reserve(&mut self, addr: Ipv6Addr) {
        self.used.insert(addr);
    }

    pub fn release(&mut self, addr: Ipv6Addr) {
        self.used.remove(&addr);
    }

    fn is_free(&self, addr: Ipv6Addr) -> bool {
        is_host_addr(&self.subnet, addr) && !self.used.contains(&addr)
    }

    fn check_free(&self, addr: Ipv6Addr) -> Result<Ipv6Addr, IpamError> {
        super::check_free(self.subnet, &self.used, addr, is_host_addr)
    }

    fn first_free(&self) -> Result<Ipv6Addr, IpamError> {
        let start = u128::from(self.subnet.network()) + 1;
        let last = u128::from(self.subnet.broadcast());
        (start..=last.min(start + SCAN_LIMIT))
            .map(Ipv6Addr::from)
            .find(|a| !self.used.contains(a))
            .ok_or(IpamError::Exhausted(self.subnet.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    #[test]
    fn subnet_parsing() {
        assert_eq!(
            parse_subnet("2001:db8:1::/64").unwrap(),
            net("2001:db8:1::/64")
        );
        assert_eq!(parse_subnet(" fd00:1::/126 ").unwrap(), net("fd00:1::/126"));
        for (bad, why) in [
            ("10.20.0.0/24", "not IPv4"),
            ("fe80::/64", "Link-Local prefix fe80::/64"),
            ("fe80::/10", "Link-Local"),
            ("fe80::/80", "Link-Local"),
            ("ff02::/64", "multicast"),
            ("2001:db8::1/64", "host bits"),
            ("2001:db8::/127", "too small"),
            ("::/0", "Link-Local"),
            ("::/64", "unspecified"),
            ("::ffff:0:0/96", "IPv4-mapped"),
            ("::ffff:10.0.0.0/120", "IPv4-mapped"),
            ("2001:db8::", "expected an IPv6 CIDR"),
            ("nonsense", "expected an IPv6 CIDR"),
        ] {
            let err = parse_subnet(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn default_pool_is_a_free_unique_local_64() {
        let mut ids = [[1, 2, 3, 4, 5], [9, 9, 9, 9, 9]].into_iter().cycle();
        let mut random = || ids.next().unwrap();
        let first = pick_pool(&[], &mut random).unwrap();
        assert_eq!(first, net("fd01:203:405::/64"));
        // A route covering the first candidate: the next one is taken.
        let second = pick_pool(&[net("fd01:203::/32")], &mut random).unwrap();
        assert_eq!(second, net("fd09:909:909::/64"));
        let everything = [net("fd00::/8")];
        assert!(matches!(
            pick_pool(&everything, &mut random),
            Err(IpamError::Pools6Exhausted)
        ));
    }

    #[test]
    fn mac_derived_where_the_prefix_allows() {
        let subnet = net("2001:db8:1::/64");
        let mut pool = AddressPool6::new(subnet, first_host(&subnet));
        assert_eq!(first_host(&subnet), addr("2001:db8:1::1"));
        assert_eq!(
            pool.allocate(None, MAC).unwrap(),
            addr("2001:db8:1::242:ac11:2")
        );
        // The same MAC again (a user-set MAC): the lowest free address instead.
        assert_eq!(pool.allocate(None, MAC).unwrap(), addr("2001:db8:1::2"));
        assert_eq!(
            mac_derived(&net("2001:db8::/80"), MAC),
            Some(addr("2001:db8::242:ac11:2"))
        );
        assert_eq!(mac_derived(&net("2001:db8::/96"), MAC), None);
    }

    #[test]
    fn sequential_beyond_80_requested_and_released() {
        let subnet = net("2001:db8::/126");
        let mut pool = AddressPool6::new(subnet, first_host(&subnet));
        assert_eq!(pool.allocate(None, MAC).unwrap(), addr("2001:db8::2"));
        assert!(matches!(
            pool.allocate(Some(addr("2001:db8::2")), MAC),
            Err(IpamError::InUse { .. })
        ));
        assert!(matches!(
            pool.allocate(Some(addr("2001:db8::1")), MAC),
            Err(IpamError::InUse { .. })
        ));
        for outside in ["2001:db8::", "2001:db8::4", "2001:db9::2"] {
            assert!(
                matches!(
                    pool.allocate(Some(addr(outside)), MAC),
                    Err(IpamError::OutOfSubnet { .. })
                ),
                "{outside}"
            );
        }
        assert_eq!(
            pool.allocate(Some(addr("2001:db8::3")), MAC).unwrap(),
            addr("2001:db8::3")
        );
        assert!(matches!(
            pool.allocate(None, MAC),
            Err(IpamError::Exhausted(_))
        ));
        pool.release(addr("2001:db8::2"));
        assert_eq!(pool.allocate(None, MAC).unwrap(), addr("2001:db8::2"));
        pool.reserve(addr("2001:db8::2"));
        pool.release(addr("2001:db8::3"));
        assert_eq!(pool.allocate(None, MAC).unwrap(), addr("2001:db8::3"));
    }
}
