//! The embedded store (redb): networks and endpoints, as JSON, keyed by name. Allocations
//! (addresses, host ports) are derived from the endpoints when the daemon starts.

#![expect(
    clippy::result_large_err,
    reason = "redb's own error type; StoreError boxes it"
)]

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

use crate::model::{Endpoint, Network};

const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");

/// The Docker plugin's own records, keyed by Docker id (their types live in the service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerTable {
    Networks,
    Endpoints,
    Pools,
}

impl DockerTable {
    const ALL: [Self; 3] = [Self::Networks, Self::Endpoints, Self::Pools];

    fn name(self) -> &'static str {
        match self {
            Self::Networks => "docker_networks",
            Self::Endpoints => "docker_endpoints",
            Self::Pools => "docker_ipam_pools",
        }
    }

    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("store {op} {table}/{key}: {source}")]
    Io {
        op: &'static str,
        table: &'static str,
        key: String,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("store record {table}/{key} is corrupt: {source}")]
    Corrupt {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) `dir/netdriver.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("netdriver.redb");
        let open_err = |e: redb::Error| StoreError::Open {
            path: path.display().to_string(),
            source: Box::new(e),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        let db = Database::create(&path).map_err(|e| open_err(e.into()))?;
        let store = Self { db };
        // Create both tables so later reads find them.
        store.write("init", "networks", "", |tx| {
            tx.open_table(NETWORKS)?;
            tx.open_table(ENDPOINTS)?;
            for t in DockerTable::ALL {
                tx.open_table(t.def())?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    pub fn put_network(&self, n: &Network) -> Result<(), StoreError> {
        self.put(NETWORKS, "networks", &n.name, n)
    }

    pub fn delete_network(&self, name: &str) -> Result<(), StoreError> {
        self.delete(NETWORKS, "networks", name)
    }

    pub fn put_endpoint(&self, e: &Endpoint) -> Result<(), StoreError> {
        self.put(ENDPOINTS, "endpoints", &e.name, e)
    }

    pub fn delete_endpoint(&self, name: &str) -> Result<(), StoreError> {
        self.delete(ENDPOINTS, "endpoints", name)
    }

    pub fn networks(&self) -> Result<Vec<Network>, StoreError> {
        self.all(NETWORKS, "networks")
    }

    pub fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        self.all(ENDPOINTS, "endpoints")
    }

    pub fn put_docker<T: Serialize>(
        &self,
        table: DockerTable,
        id: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.put(table.def(), table.name(), id, value)
    }

    pub fn delete_docker(&self, table: DockerTable, id: &str) -> Result<(), StoreError> {
        self.delete(table.def(), table.name(), id)
    }

    pub fn docker_records<T: DeserializeOwned>(
        &self,
        table: DockerTable,
    ) -> Result<Vec<T>, StoreError> {
        self.all(table.def(), table.name())
    }

    fn put<T: Serialize>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        table: &'static str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).expect("model types serialize");
        self.write("put", table, key, |tx| {
            tx.open_table(def)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }

    fn delete(
        &self,
        def: TableDefinition<&str, &[u8]>,
        table: &'static str,
        key: &str,
    ) -> Result<(), StoreError> {
        self.write("delete", table, key, |tx| {
            tx.open_table(def)?.remove(key)?;
            Ok(())
        })
    }

    fn write(
        &self,
        op: &'static str,
        table: &'static str,
        key: &str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let run = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            f(&tx)?;
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| StoreError::Io {
            op,
            table,
            key: key.to_string(),
            source: Box::new(e),
        })
    }

    fn all<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        table: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let io = |e: redb::Error| StoreError::Io {
            op: "read",
            table,
            key: "*".into(),
            source: Box::new(e),
        };
        let tx = self.db.begin_read().map_err(|e| io(e.into()))?;
        let t = tx.open_table(def).map_err(|e| io(e.into()))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| io(e.into()))? {
            let (k, v) = row.map_err(|e| io(e.into()))?;
            let value =
                serde_json::from_slice(v.value()).map_err(|source| StoreError::Corrupt {
                    table,
                    key: k.value().to_string(),
                    source,
                })?;
            out.push(value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = std::env::temp_dir().join(format!("nd-store-test-{}", std::process::id()));
        // A record in the original layout: the fields added since take their defaults.
        let net: Network = serde_json::from_str(
            r#"{"id": "abc", "name": "web", "bridge": "nd-abc", "subnet": "10.20.0.0/24",
                "gateway": "10.20.0.1", "mtu": 1400}"#,
        )
        .unwrap();
        assert!(net.icc && net.masquerade && !net.internal);
        assert!(!net.ipv6() && net.gateway6.is_none());
        {
            let s = Store::open(&dir).unwrap();
            s.put_network(&net).unwrap();
            s.put_network(&Network {
                name: "gone".into(),
                ..net.clone()
            })
            .unwrap();
            s.delete_network("gone").unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.networks().unwrap(), vec![net]);
        assert!(s.endpoints().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An endpoint written before IPv6: no IPv6 fields, port bindings with a plain IPv4
    /// host address.
    #[test]
    fn endpoint_records_from_before_ipv6_load() {
        let ep: crate::model::Endpoint = serde_json::from_str(
            r#"{"id": "e", "name": "web", "network": "n", "netns": "/run/netns/x",
                "ifname": "eth0", "host_ifname": "nde", "ip": "10.20.0.2", "prefix_len": 24,
                "gateway": "10.20.0.1", "mac": "02:42:0a:14:00:02", "port_specs": ["8080:80"],
                "ports": [{"proto": "tcp", "host_ip": "0.0.0.0", "host_port": 8080,
                           "container_port": 80}]}"#,
        )
        .unwrap();
        assert_eq!(ep.ip6, None);
        assert_eq!(ep.prefix_len6, 0);
        assert_eq!(ep.ports[0].host_ip, std::net::Ipv4Addr::UNSPECIFIED);
        let again: crate::model::Endpoint =
            serde_json::from_slice(&serde_json::to_vec(&ep).unwrap()).unwrap();
        assert_eq!(again, ep);
    }
}
