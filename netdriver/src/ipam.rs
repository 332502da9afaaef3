//! Address management: picking a network's subnet from Docker's default pools, and handing
//! out container addresses inside it. IPv6 is in [`v6`].

pub mod v6;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
};

use ipnet::{IpNet, Ipv4Net};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid subnet {0:?}: expected an IPv4 CIDR such as 10.20.0.0/24")]
    BadSubnet(String),
    #[error(
        "subnet {subnet} is too small: it needs room for a gateway and a container (/30 or larger)"
    )]
    TooSmall { subnet: Ipv4Net },
    #[error("invalid IPv6 subnet {0}")]
    BadSubnet6(String),
    #[error("subnet {subnet} overlaps {other} of network {network}")]
    Overlap {
        subnet: IpNet,
        other: IpNet,
        network: String,
    },
    #[error("address {addr} is not a usable host address in {subnet}")]
    OutOfSubnet { addr: IpAddr, subnet: IpNet },
    #[error("address {addr} is already in use in {subnet}{}", owner.as_ref().map(|o| format!(" by {o}")).unwrap_or_default())]
    InUse {
        addr: IpAddr,
        subnet: IpNet,
        owner: Option<String>,
    },
    #[error("no free address left in {0}")]
    Exhausted(IpNet),
    #[error("no free IPv6 subnet found in fd00::/8: every candidate overlapped a route or network")]
    Pools6Exhausted,
    #[error(
        "no free subnet in the default address pools: all overlap existing networks, routes or nameservers"
    )]
    PoolsExhausted,
}

/// Docker's default address pools: 172.17-31.0.0/16, then 192.168.0.0/16 in /20 blocks.
#[must_use]
pub fn default_pool_subnets() -> Vec<Ipv4Net> {
    let sixteens =
        (17..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid /16"));
    let twenties =
        (0..16u8).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("valid /20"));
    sixteens.chain(twenties).collect()
}

/// Parses a user-given subnet: strict CIDR, host bits cleared, room for gateway + container.
pub fn parse_subnet(s: &str) -> Result<Ipv4Net, IpamError> {
    let net: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| IpamError::BadSubnet(s.to_string()))?;
    if net.trunc() != net {
        return Err(IpamError::BadSubnet(format!(
            "{s} (host bits set; did you mean {}?)",
            net.trunc()
        )));
    }
    if net.prefix_len() > 30 {
        return Err(IpamError::TooSmall { subnet: net });
    }
    Ok(net)
}

/// The first default pool that overlaps none of `taken` (routes, nameservers as /32, networks).
pub fn pick_pool(taken: &[Ipv4Net]) -> Result<Ipv4Net, IpamError> {
    default_pool_subnets()
        .into_iter()
        .find(|pool| !taken.iter().any(|t| overlaps(pool, t)))
        .ok_or(IpamError::PoolsExhausted)
}

#[must_use]
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Whether `addr` is a host address of `subnet` (not its network or broadcast address).
#[must_use]
pub fn is_host_addr(subnet: &Ipv4Net, addr: Ipv4Addr) -> bool {
    subnet.contains(&addr) && addr != subnet.network() && addr != subnet.broadcast()
}

/// Addresses in use inside one network's subnet.
#[derive(Debug, Clone)]
pub struct AddressPool {
    subnet: Ipv4Net,
    used: BTreeSet<Ipv4Addr>,
}

impl AddressPool {
    /// A pool with the gateway already reserved.
    #[must_use]
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr) -> Self {
        Self {
            subnet,
            used: BTreeSet::from([gateway]),
        }
    }

    /// Reserves a requested address, or the lowest free one.
    pub fn allocate(&mut self, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        let addr = match wanted {
            Some(addr) => self.check_free(addr)?,
            None => self.first_free()?,
        };
        self.used.insert(addr);
        Ok(addr)
    }

    /// Marks `addr` used (loading from the store).
    pub fn reserve(&mut self, addr: Ipv4Addr) {
        self.used.insert(addr);
    }

    pub fn release(&mut self, addr: Ipv4Addr) {
        self.used.remove(&addr);
    }

    fn check_free(&self, addr: Ipv4Addr) -> Result<Ipv4Addr, IpamError> {
        check_free(self.subnet, &self.used, addr, is_host_addr)
    }

    fn first_free(&self) -> Result<Ipv4Addr, IpamError> {
        self.subnet
            .hosts()
            .find(|a| !self.used.contains(a))
            .ok_or(IpamError::Exhausted(self.subnet.into()))
    }
}

/// Docker's MAC for a container address: 02:42 followed by the four address bytes.
#[must_use]
pub fn mac_from_ip(addr: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = addr.octets();
    [0x02, 0x42, a, b, c, d]
}

/// A random locally administered unicast MAC (a bridge's, fixed at creation).
#[must_use]
pub fn random_mac() -> [u8; 6] {
    let mut mac = random_bytes::<6>();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// `N` random bytes from getrandom(2).
#[must_use]
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // SAFETY: the buffer is `N` writable bytes. getrandom(2) never returns short for
    // requests up to 256 bytes.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), N, 0) };
    assert_eq!(usize::try_from(n).ok(), Some(N), "getrandom failed");
    bytes
}

#[must_use]
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`; refuses multicast and all-zero addresses.
#[must_use]
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    (mac[0] & 1 == 0 && mac != [0; 6]).then_some(mac)
}

/// `addr` if `is_host` accepts it in `subnet` and `used` lacks it; otherwise the error the user
/// sees (shared by the IPv4 and IPv6 pools).
fn check_free<A, N>(
    subnet: N,
    used: &BTreeSet<A>,
    addr: A,
    is_host: fn(&N, A) -> bool,
) -> Result<A, IpamError>
where
    A: Ord + Copy + Into<IpAddr>,
    N: Copy + Into<IpNet>,
{
    if !is_host(&subnet, addr) {
        return Err(IpamError::OutOfSubnet {
            addr: addr.into(),
            subnet: subnet.into(),
        });
    }
    if used.contains(&addr) {
        return Err(IpamError::InUse {
            addr: addr.into(),
            subnet: subnet.into(),
            owner: None,
        });
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn pool_skips_routes_and_nameservers() {
        assert_eq!(pick_pool(&[]).unwrap(), net("172.17.0.0/16"));
        let taken = [
            net("172.17.5.0/24"),
            net("172.18.0.53/32"),
            net("172.16.0.0/12"),
        ];
        // 172.16.0.0/12 covers every 172.x pool: the first /20 of 192.168 is next.
        assert_eq!(pick_pool(&taken).unwrap(), net("192.168.0.0/20"));
        assert_eq!(pick_pool(&taken[..2]).unwrap(), net("172.19.0.0/16"));
        let all: Vec<Ipv4Net> = default_pool_subnets();
        assert!(matches!(pick_pool(&all), Err(IpamError::PoolsExhausted)));
    }

    #[test]
    fn subnet_parsing() {
        assert_eq!(parse_subnet("10.20.0.0/24").unwrap(), net("10.20.0.0/24"));
        for bad in [
            "10.20.0.1/24",
            "10.20.0.0",
            "10.20.0.0/33",
            "nonsense",
            "10.20.0.0/31",
            "2001:db8::/64",
        ] {
            assert!(parse_subnet(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_are_handed_out_lowest_first() {
        let subnet = net("10.20.0.0/29");
        let mut pool = AddressPool::new(subnet, "10.20.0.1".parse().unwrap());
        assert_eq!(pool.allocate(None).unwrap(), Ipv4Addr::new(10, 20, 0, 2));
        assert_eq!(
            pool.allocate(Some(Ipv4Addr::new(10, 20, 0, 5))).unwrap(),
            Ipv4Addr::new(10, 20, 0, 5)
        );
        assert!(matches!(
            pool.allocate(Some(Ipv4Addr::new(10, 20, 0, 5))),
            Err(IpamError::InUse { .. })
        ));
        assert!(matches!(
            pool.allocate(Some(Ipv4Addr::new(10, 20, 0, 1))),
            Err(IpamError::InUse { .. })
        ));
        assert!(matches!(
            pool.allocate(Some(Ipv4Addr::new(10, 20, 0, 7))),
            Err(IpamError::OutOfSubnet { .. })
        ));
        assert!(matches!(
            pool.allocate(Some(Ipv4Addr::new(10, 20, 1, 2))),
            Err(IpamError::OutOfSubnet { .. })
        ));
        for _ in 0..3 {
            pool.allocate(None).unwrap();
        }
        assert!(matches!(pool.allocate(None), Err(IpamError::Exhausted(_))));
        pool.release(Ipv4Addr::new(10, 20, 0, 3));
        assert_eq!(pool.allocate(None).unwrap(), Ipv4Addr::new(10, 20, 0, 3));
    }

    #[test]
    fn mac_derivation_and_parsing() {
        assert_eq!(
            format_mac(mac_from_ip(Ipv4Addr::new(172, 17, 0, 2))),
            "02:42:ac:11:00:02"
        );
        assert_eq!(
            parse_mac("02:42:ac:11:00:02"),
            Some([2, 0x42, 0xac, 0x11, 0, 2])
        );
        for bad in [
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "02:42:ac:11:00",
            "zz:42:ac:11:00:02",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
