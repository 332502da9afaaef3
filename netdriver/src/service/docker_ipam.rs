//! Docker's remote IPAM driver (`docker network create --ipam-driver netdriver`): address
//! pools and the addresses handed out from them, kept in the store (dockerd does not replay
//! them when the daemon restarts).

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{ServiceError, State};
use crate::{
    ipam::{self, IpamError},
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
    pub pool: Ipv4Net,
    /// `--ip-range`: where container addresses come from.
    pub sub_pool: Option<Ipv4Net>,
    /// How many `RequestPool` calls for this pool are not released yet.
    pub refs: u32,
    pub used: BTreeSet<Ipv4Addr>,
}

impl IpamPool {
    /// The lowest free host address of `range` that is a host address of the pool.
    fn first_free(&self, range: Ipv4Net) -> Option<Ipv4Addr> {
        (u32::from(range.network())..=u32::from(range.broadcast()))
            .map(Ipv4Addr::from)
            .find(|a| ipam::is_host_addr(&self.pool, *a) && !self.used.contains(a))
    }
}

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(msg.into())
}

fn parse_net(s: &str, what: &str) -> Result<Ipv4Net, ServiceError> {
    let net: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| invalid(format!("invalid {what} {s:?}: expected an IPv4 CIDR")))?;
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
        if req.v6 {
            return Err(invalid("IPv6 pools are not supported yet (IPv4 only)"));
        }
        if req.pool.is_empty() && !req.sub_pool.is_empty() {
            return Err(invalid("a sub-pool (--ip-range) needs a pool (--subnet)"));
        }
        let space = if req.address_space.is_empty() {
            LOCAL_SPACE.to_string()
        } else {
            req.address_space.clone()
        };
        let pool = if req.pool.is_empty() {
            self.pick_ipam_pool().await?
        } else {
            ipam::parse_subnet(&req.pool)?
        };
        let sub_pool = (!req.sub_pool.is_empty())
            .then(|| parse_net(&req.sub_pool, "sub-pool"))
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

    fn check_pool_overlap(&self, space: &str, pool: Ipv4Net) -> Result<(), ServiceError> {
        match self
            .docker
            .pools
            .values()
            .find(|p| p.address_space == space && ipam::overlaps(&p.pool, &pool))
        {
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
        taken.extend(self.docker.pools.values().map(|p| p.pool));
        Ok(ipam::pick_pool(&taken)?)
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
            pool.first_free(range)
                .ok_or(IpamError::Exhausted(range.into()))?
        } else {
            let addr = parse_address(&req.address)?;
            if !ipam::is_host_addr(&pool.pool, addr) {
                return Err(IpamError::OutOfSubnet {
                    addr: addr.into(),
                    subnet: pool.pool.into(),
                }
                .into());
            }
            if pool.used.contains(&addr) {
                return Err(IpamError::InUse {
                    addr: addr.into(),
                    subnet: pool.pool.into(),
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
fn parse_address(s: &str) -> Result<Ipv4Addr, ServiceError> {
    let s = s.trim();
    s.parse::<Ipv4Addr>()
        .or_else(|_| s.parse::<Ipv4Net>().map(|n| n.addr()))
        .map_err(|_| invalid(format!("invalid address {s:?}: expected an IPv4 address")))
}
