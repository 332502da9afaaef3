//! Docker's remote IPAM driver (`docker network create --ipam-driver netdriver`): address
//! pools and the addresses handed out from them, kept in the store (dockerd does not replay
//! them when the daemon restarts).

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::{ServiceError, State};
use crate::{
    ipam::{self, IpamError, v6},
    plugin::wire::{
        self, AddressRequest, RequestAddressResponse, RequestPoolRequest, RequestPoolResponse,
    },
    store::DockerTable,
};

/// The address spaces `GetDefaultAddressSpaces` announces.
pub const LOCAL_SPACE: &str = "netdriver-local";
pub const GLOBAL_SPACE: &str = "netdriver-global";

/// A pool handed to dockerd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamPool {
    pub pool_id: String,
    pub address_space: String,
    /// IPv4 or IPv6 (records from before IPv6 hold an IPv4 CIDR string, which still loads).
    pub pool: IpNet,
    /// `--ip-range`: where container addresses come from.
    pub sub_pool: Option<IpNet>,
    /// How many `RequestPool` calls for this pool are not released yet.
    pub refs: u32,
    pub used: BTreeSet<IpAddr>,
}

/// How many IPv6 addresses a search for a free one looks at.
const SCAN6: u128 = 1 << 16;

impl IpamPool {
    /// The lowest free host address of `range` that is a host address of the pool.
    fn first_free(&self, range: IpNet) -> Option<IpAddr> {
        let free = |a: &IpAddr| self.is_host(*a) && !self.used.contains(a);
        match range {
            IpNet::V4(r) => (u32::from(r.network())..=u32::from(r.broadcast()))
                .map(|a| IpAddr::from(Ipv4Addr::from(a)))
                .find(free),
            IpNet::V6(r) => {
                let start = u128::from(r.network());
                let end = u128::from(r.broadcast()).min(start + SCAN6);
                (start..=end)
                    .map(|a| IpAddr::from(Ipv6Addr::from(a)))
                    .find(free)
            }
        }
    }

    fn is_host(&self, addr: IpAddr) -> bool {
        match (self.pool, addr) {
            (IpNet::V4(p), IpAddr::V4(a)) => ipam::is_host_addr(&p, a),
            (IpNet::V6(p), IpAddr::V6(a)) => v6::is_host_addr(&p, a),
            _ => false,
        }
    }
}

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(msg.into())
}

fn parse_net(s: &str, what: &str, v6: bool) -> Result<IpNet, ServiceError> {
    let family = if v6 { "IPv6" } else { "IPv4" };
    let net: IpNet = s
        .trim()
        .parse()
        .ok()
        .filter(|n: &IpNet| matches!(n, IpNet::V6(_)) == v6)
        .ok_or_else(|| invalid(format!("invalid {what} {s:?}: expected an {family} CIDR")))?;
    if net.trunc() != net {
        return Err(invalid(format!(
            "invalid {what} {s:?}: host bits set (did you mean {}?)",
            net.trunc()
        )));
    }
    Ok(net)
}

impl State {
    pub(super) fn restore_ipam(&mut self) -> Result<(), ServiceError> {
        for p in self.store.docker_records::<IpamPool>(DockerTable::Pools)? {
            self.docker.pools.insert(p.pool_id.clone(), p);
        }
        Ok(())
    }

    fn save_pool(&mut self, pool: IpamPool) -> Result<(), ServiceError> {
        self.store
            .put_docker(DockerTable::Pools, &pool.pool_id, &pool)?;
        self.docker.pools.insert(pool.pool_id.clone(), pool);
        Ok(())
    }

    fn ipam_pool(&self, id: &str) -> Result<IpamPool, ServiceError> {
        self.docker
            .pools
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound(format!("no address pool with id {id:?}")))
    }

    pub(super) async fn ipam_request_pool(
        &mut self,
        req: RequestPoolRequest,
    ) -> Result<RequestPoolResponse, ServiceError> {
        if req.pool.is_empty() && !req.sub_pool.is_empty() {
            return Err(invalid("a sub-pool (--ip-range) needs a pool (--subnet)"));
        }
        let space = if req.address_space.is_empty() {
            LOCAL_SPACE.to_string()
        } else {
            req.address_space.clone()
        };
        let pool: IpNet = match (req.v6, req.pool.is_empty()) {
            (false, true) => self.pick_ipam_pool().await?.into(),
            (false, false) => ipam::parse_subnet(&req.pool)?.into(),
            (true, true) => self.pick_ipam_pool6().await?.into(),
            (true, false) => v6::parse_subnet(&req.pool)?.into(),
        };
        let sub_pool = (!req.sub_pool.is_empty())
            .then(|| parse_net(&req.sub_pool, "sub-pool", req.v6))
            .transpose()?;
        if let Some(sub) = sub_pool.filter(|s| !pool.contains(s)) {
            return Err(invalid(format!("sub-pool {sub} is not inside pool {pool}")));
        }
        let pool_id = match sub_pool {
            Some(sub) => format!("{space}/{pool}/{sub}"),
            None => format!("{space}/{pool}"),
        };
        let record = if let Some(p) = self.docker.pools.get(&pool_id) {
            IpamPool {
                refs: p.refs + 1,
                ..p.clone()
            }
        } else {
            self.check_pool_overlap(&space, pool)?;
            IpamPool {
                pool_id: pool_id.clone(),
                address_space: space,
                pool,
                sub_pool,
                refs: 1,
                used: BTreeSet::new(),
            }
        };
        self.save_pool(record)?;
        tracing::info!(pool = %pool_id, "ipam pool requested");
        Ok(RequestPoolResponse {
            pool_id,
            pool: pool.to_string(),
            data: std::collections::BTreeMap::new(),
        })
    }

    fn check_pool_overlap(&self, space: &str, pool: IpNet) -> Result<(), ServiceError> {
        match self.docker.pools.values().find(|p| {
            p.address_space == space && (p.pool.contains(&pool) || pool.contains(&p.pool))
        }) {
            Some(p) => Err(ServiceError::Conflict(format!(
                "pool {pool} overlaps pool {} ({})",
                p.pool, p.pool_id
            ))),
            None => Ok(()),
        }
    }

    /// The first default pool clear of routes, addresses, nameservers, networks and pools.
    async fn pick_ipam_pool(&self) -> Result<Ipv4Net, ServiceError> {
        let mut taken = self.taken_subnets().await?;
        taken.extend(self.docker.pools.values().filter_map(|p| match p.pool {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        }));
        Ok(ipam::pick_pool(&taken)?)
    }

    /// A random unique local /64 clear of routes, addresses, networks and pools.
    async fn pick_ipam_pool6(&self) -> Result<Ipv6Net, ServiceError> {
        let mut taken = self.taken_subnets6().await?;
        taken.extend(self.docker.pools.values().filter_map(|p| match p.pool {
            IpNet::V6(n) => Some(n),
            IpNet::V4(_) => None,
        }));
        Ok(v6::pick_pool(&taken, &mut super::network6::random_id)?)
    }

    pub(super) fn ipam_release_pool(&mut self, id: &str) -> Result<(), ServiceError> {
        let mut pool = self.ipam_pool(id)?;
        pool.refs = pool.refs.saturating_sub(1);
        if pool.refs > 0 {
            return self.save_pool(pool);
        }
        self.store.delete_docker(DockerTable::Pools, id)?;
        self.docker.pools.remove(id);
        tracing::info!(pool = %id, "ipam pool released");
        Ok(())
    }

    pub(super) fn ipam_request_address(
        &mut self,
        req: &AddressRequest,
    ) -> Result<RequestAddressResponse, ServiceError> {
        let mut pool = self.ipam_pool(&req.pool_id)?;
        let gateway = req
            .options
            .get(wire::OPT_REQUEST_TYPE)
            .and_then(|v| v.as_str())
            == Some(wire::REQUEST_GATEWAY);
        let addr = if req.address.is_empty() {
            let range = if gateway {
                pool.pool
            } else {
                pool.sub_pool.unwrap_or(pool.pool)
            };
            let derived = (!gateway).then(|| mac_derived(&pool, range, req)).flatten();
            derived
                .or_else(|| pool.first_free(range))
                .ok_or(IpamError::Exhausted(range))?
        } else {
            let addr = parse_address(&req.address)?;
            if !pool.is_host(addr) {
                return Err(IpamError::OutOfSubnet {
                    addr,
                    subnet: pool.pool,
                }
                .into());
            }
            if pool.used.contains(&addr) {
                return Err(IpamError::InUse {
                    addr,
                    subnet: pool.pool,
                    owner: None,
                }
                .into());
            }
            addr
        };
        pool.used.insert(addr);
        let prefix = pool.pool.prefix_len();
        self.save_pool(pool)?;
        Ok(RequestAddressResponse {
            address: format!("{addr}/{prefix}"),
            data: std::collections::BTreeMap::new(),
        })
    }

    /// Releasing an address that is not allocated succeeds; an unknown pool does not.
    pub(super) fn ipam_release_address(
        &mut self,
        req: &AddressRequest,
    ) -> Result<(), ServiceError> {
        let mut pool = self.ipam_pool(&req.pool_id)?;
        let addr = parse_address(&req.address)?;
        if pool.used.remove(&addr) {
            self.save_pool(pool)?;
        }
        Ok(())
    }
}

/// A bare address (what dockerd sends), or CIDR.
fn parse_address(s: &str) -> Result<IpAddr, ServiceError> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<IpNet>().map(|n| n.addr()))
        .map_err(|_| invalid(format!("invalid address {s:?}: expected an IP address")))
}

/// For an IPv6 pool of /80 or shorter, the address derived from the MAC dockerd passes
/// (`com.docker.network.endpoint.macaddress`), when it is in `range` and free.
fn mac_derived(pool: &IpamPool, range: IpNet, req: &AddressRequest) -> Option<IpAddr> {
    let IpNet::V6(net) = pool.pool else {
        return None;
    };
    let mac = req.options.get(wire::OPT_MAC)?.as_str()?;
    let addr = IpAddr::V6(v6::mac_derived(&net, ipam::parse_mac(mac)?)?);
    (range.contains(&addr) && pool.is_host(addr) && !pool.used.contains(&addr)).then_some(addr)
}
