//! The daemon's state and operations: what the API calls. Every change is validated first,
//! then applied, and rolled back if a step fails, so a failed request leaves nothing behind.

mod cleanup;
mod conntrack;
mod docker;
mod docker_endpoint;
mod docker_ipam;
mod endpoint;
mod endpoint_check;
mod error;
mod links;
mod network;
mod network6;
mod options;
mod publish6;
mod reconcile;
mod reservations;
mod timing;
mod uplinks;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

pub use cleanup::cleanup_offline;
pub use conntrack::ConntrackConfig;
pub use docker_ipam::{GLOBAL_SPACE, LOCAL_SPACE};
pub use error::ServiceError;
use tokio::sync::Mutex;

use crate::{
    dataplane::Dataplane,
    ipam::{AddressPool, v6::AddressPool6},
    model::{Endpoint, Network, NetworkInfo, PortRow, Status},
    netlink::Netlink,
    ports::PortAllocator,
    store::Store,
};

/// What the daemon was started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    /// Explicit uplinks; empty means every interface netdriver did not create.
    pub uplinks: Vec<String>,
    /// Where nameservers are read from when picking a default pool.
    pub resolv_conf: PathBuf,
    /// Conntrack/NAT table size, masquerade ports, timeouts.
    pub conntrack: ConntrackConfig,
    /// The cgroup v2 the socket hooks are attached to (published ports from the host
    /// itself); `None`: the root of the unified hierarchy, if the machine has one.
    pub cgroup: Option<PathBuf>,
}

/// A network and what is in use inside it.
struct NetState {
    net: Network,
    pool: AddressPool,
    /// IPv6 addresses in use (on `--ipv6` networks).
    pool6: Option<AddressPool6>,
}

impl NetState {
    /// A network with only its gateways in use.
    fn new(net: Network) -> Self {
        let pool = AddressPool::new(net.subnet, net.gateway);
        let pool6 = net
            .subnet6
            .zip(net.gateway6)
            .map(|(subnet, gateway)| AddressPool6::new(subnet, gateway));
        Self { net, pool, pool6 }
    }
}

struct State {
    config: Config,
    store: Store,
    nl: Netlink,
    dp: Dataplane,
    networks: BTreeMap<String, NetState>,
    endpoints: BTreeMap<String, Endpoint>,
    ports: PortAllocator,
    /// The Docker plugin's records (networks, endpoints, IPAM pools by Docker id).
    docker: docker::DockerState,
    /// `ND_CT` entries after the last sweep.
    ct_entries: usize,
    /// Refused-flow counters at the last sweep (conntrack full, NAT ports exhausted).
    refusals: [u64; 2],
}

/// The daemon's single entry point for every operation; requests are serialised.
pub struct Service {
    state: Mutex<State>,
}

impl Service {
    /// Opens the store, loads the data path and brings the kernel in line with the store.
    pub async fn start(config: Config) -> Result<Self, ServiceError> {
        crate::netlink::enable_ipv4_forwarding()?;
        let store = Store::open(&config.state_dir)?;
        let mut dp = Dataplane::load_with(&config.bpffs, config.conntrack.tuning)?;
        attach_cgroup(&mut dp, config.cgroup.as_deref())?;
        let nl = Netlink::new()?;
        let mut state = State {
            config,
            store,
            nl,
            dp,
            networks: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            ports: PortAllocator::default(),
            docker: docker::DockerState::default(),
            ct_entries: 0,
            refusals: [0; 2],
        };
        state.restore().await?;
        state.sync_reservations()?;
        state.sync_uplinks().await?;
        state.dp.release_stale_links()?;
        state.dp.release_stale_veths()?;
        Ok(Self {
            state: Mutex::new(state),
        })
    }

    pub async fn create_network(
        &self,
        req: crate::model::CreateNetwork,
    ) -> Result<Network, ServiceError> {
        self.state.lock().await.create_network(req).await
    }

    pub async fn remove_network(&self, name: &str) -> Result<(), ServiceError> {
        self.state.lock().await.remove_network(name).await
    }

    pub async fn networks(&self) -> Vec<NetworkInfo> {
        let state = self.state.lock().await;
        state
            .networks
            .values()
            .map(|n| state.network_info(&n.net))
            .collect()
    }

    pub async fn network(&self, name: &str) -> Result<NetworkInfo, ServiceError> {
        let state = self.state.lock().await;
        let n = state.network_state(name)?;
        Ok(state.network_info(&n.net))
    }

    pub async fn create_endpoint(
        &self,
        req: crate::model::CreateEndpoint,
    ) -> Result<Endpoint, ServiceError> {
        let mut state = self.state.lock().await;
        let created = state.create_endpoint(req).await;
        state.sync_reservations_or_warn();
        created
    }

    pub async fn remove_endpoint(&self, name: &str) -> Result<(), ServiceError> {
        let mut state = self.state.lock().await;
        let removed = state.remove_endpoint(name).await;
        state.sync_reservations_or_warn();
        removed
    }

    /// Compares endpoint `name` with the kernel: its veth pair, the container interface,
    /// its MAC and addresses.
    pub async fn check_endpoint(
        &self,
        name: &str,
    ) -> Result<crate::model::EndpointCheck, ServiceError> {
        self.state.lock().await.check_endpoint(name).await
    }

    pub async fn endpoints(&self) -> Vec<Endpoint> {
        self.state
            .lock()
            .await
            .endpoints
            .values()
            .cloned()
            .collect()
    }

    pub async fn endpoint(&self, name: &str) -> Result<Endpoint, ServiceError> {
        let state = self.state.lock().await;
        state
            .endpoints
            .get(name)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound(format!("no endpoint named {name:?}")))
    }

    pub async fn ports(&self) -> Vec<PortRow> {
        let state = self.state.lock().await;
        let mut rows: Vec<PortRow> = state
            .endpoints
            .values()
            .flat_map(|e| {
                e.ports.iter().map(|b| PortRow {
                    endpoint: e.name.clone(),
                    network: e.network.clone(),
                    container_ip: e.ip,
                    container_ip6: e.ip6,
                    binding: *b,
                })
            })
            .collect();
        rows.sort_by_key(|r| (r.binding.proto, r.binding.host_port, r.binding.host_ip));
        rows
    }

    pub async fn status(&self) -> Result<Status, ServiceError> {
        let state = self.state.lock().await;
        Ok(Status {
            uplinks: state.dp.uplinks(),
            xdp_uplinks: state.dp.xdp_uplinks(),
            drops: state.dp.drop_counters()?,
            drop_reasons: netdriver_common::DROP_NAMES
                .iter()
                .map(ToString::to_string)
                .collect(),
            conntrack_entries: state.ct_entries,
        })
    }

    /// Deletes expired conntrack entries (the daemon calls this periodically).
    pub async fn sweep_conntrack(&self) -> Result<(), ServiceError> {
        self.state.lock().await.sweep_conntrack()
    }

    /// How often the daemon should call [`Service::sweep_conntrack`].
    pub async fn sweep_interval(&self) -> std::time::Duration {
        self.state.lock().await.config.conntrack.sweep_interval()
    }

    /// Attaches to interfaces that appeared since the last look (and forgets vanished ones).
    pub async fn refresh_uplinks(&self) -> Result<(), ServiceError> {
        self.state.lock().await.sync_uplinks().await
    }

    /// Stops serving. Programs (the socket hooks included) stay attached and maps pinned, so
    /// traffic keeps flowing, and the host keeps reaching published ports, until the next
    /// start adopts them; with `cleanup`, everything netdriver made goes.
    pub async fn shutdown(&self, cleanup: bool) -> Result<(), ServiceError> {
        let mut state = self.state.lock().await;
        if cleanup {
            state.remove_everything().await?;
        }
        Ok(())
    }
}

impl State {
    /// Rebuilds memory from the store and re-programs the kernel (after a daemon restart, or
    /// re-creating bridges after a reboot).
    async fn restore(&mut self) -> Result<(), ServiceError> {
        for net in self.store.networks()? {
            self.ensure_bridge(&net).await?;
            self.networks.insert(net.name.clone(), NetState::new(net));
        }
        for ep in self.store.endpoints()? {
            if let Some(n) = self.networks.get_mut(&ep.network) {
                n.pool.reserve(ep.ip);
                if let (Some(pool6), Some(ip6)) = (n.pool6.as_mut(), ep.ip6) {
                    pool6.reserve(ip6);
                }
            }
            for b in &ep.ports {
                self.ports.insert(b, &ep.name);
            }
            self.endpoints.insert(ep.name.clone(), ep);
        }
        self.restore_docker()?;
        self.reconcile().await?;
        tracing::info!(
            networks = self.networks.len(),
            endpoints = self.endpoints.len(),
            "state restored"
        );
        Ok(())
    }

    fn network_state(&self, name: &str) -> Result<&NetState, ServiceError> {
        self.networks
            .get(name)
            .ok_or_else(|| ServiceError::NotFound(format!("no network named {name:?}")))
    }

    fn network_info(&self, net: &Network) -> NetworkInfo {
        NetworkInfo {
            network: net.clone(),
            endpoints: self
                .endpoints
                .values()
                .filter(|e| e.network == net.name)
                .map(|e| e.name.clone())
                .collect(),
        }
    }
}

/// Attaches the socket hooks to `explicit`, or to the unified hierarchy's root. Without
/// cgroup v2 the daemon still runs, and the host itself cannot reach published ports.
fn attach_cgroup(dp: &mut Dataplane, explicit: Option<&Path>) -> Result<(), ServiceError> {
    let Some(path) = explicit
        .map(Path::to_path_buf)
        .or_else(crate::dataplane::default_cgroup)
    else {
        tracing::warn!(
            "no cgroup v2 hierarchy mounted: published ports are not reachable from the host itself"
        );
        return Ok(());
    };
    dp.attach_cgroup(&path)?;
    tracing::info!(cgroup = %path.display(), "socket hooks attached");
    Ok(())
}

/// A random 64-hex-digit id, like Docker's.
fn new_id() -> String {
    crate::ipam::random_bytes::<32>()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Names of networks and endpoints: Docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64.
fn validate_name(kind: &str, name: &str) -> Result<(), ServiceError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "invalid {kind} name {name:?}: use letters, digits, '_', '.', '-' (starting with a letter or digit), at most 64"
        )))
    }
}

/// Endpoint labels: at most 32, keys of 1-128 printable characters, values up to 1024.
fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    let printable = |s: &str| !s.chars().any(char::is_control);
    if labels.len() > 32 {
        return Err(ServiceError::Invalid(format!(
            "{} labels: at most 32",
            labels.len()
        )));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 128 || v.len() > 1024 || !printable(k) || !printable(v) {
            return Err(ServiceError::Invalid(format!(
                "invalid label {k:?}: keys 1-128 characters, values up to 1024, no control characters"
            )));
        }
    }
    Ok(())
}

/// Interface names: 1-15 bytes, no '/', ':' or whitespace, not "." or "..".
fn validate_ifname(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "invalid interface name {name:?}: 1-15 characters, no '/', ':' or spaces"
        )))
    }
}

/// Nameserver addresses in a resolv.conf, as /32 networks.
fn nameservers(path: &Path) -> Vec<ipnet::Ipv4Net> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<Ipv4Addr>().ok())
        .map(ipnet::Ipv4Net::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        validate_name("network", "web-1.a_b").unwrap();
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(validate_name("network", bad).is_err(), "{bad}");
        }
        validate_ifname("eth0").unwrap();
        for bad in ["", "a/b", "sixteen-chars-xx", "a b", ".."] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_random_hex() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn resolv_conf_parsing() {
        let p = std::env::temp_dir().join(format!("nd-resolv-{}", std::process::id()));
        std::fs::write(
            &p,
            "# x\nnameserver 172.18.0.53\nnameserver ::1\nsearch example\n",
        )
        .unwrap();
        assert_eq!(nameservers(&p), vec!["172.18.0.53/32".parse().unwrap()]);
        std::fs::remove_file(p).unwrap();
    }
}

/// Property tests: random request fields through every parser a request meets. None
/// panics, and what they accept is well formed.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        ipam,
        model::{CreateEndpoint, CreateNetwork},
        ports,
    };

    const PIECES: &[&str] = &[
        "0",
        "1",
        "10",
        "255",
        "256",
        ".",
        "/",
        ":",
        "-",
        "_",
        "a",
        "Z",
        " ",
        "",
        "\u{0}",
        "é",
        "/24",
        "/33",
        "10.0.0.0",
        "::",
        "fe80",
        "fd00:",
        "/64",
        "ff",
        "02:42",
        "[",
        "]",
        "\"",
        "{",
        "}",
        "9999999999",
    ];

    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(prop::sample::select(PIECES), 0..7).prop_map(|p| p.concat()),
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn random_fields_never_panic(s in field()) {
            if let Ok(net) = ipam::parse_subnet(&s) {
                prop_assert_eq!(net.trunc(), net);
                prop_assert!(net.prefix_len() <= 30);
            }
            if let Ok(net) = ipam::v6::parse_subnet(&s) {
                prop_assert_eq!(net.trunc(), net);
                prop_assert!(net.prefix_len() <= ipam::v6::MAX_PREFIX);
            }
            if let Some(mac) = ipam::parse_mac(&s) {
                prop_assert_eq!(ipam::parse_mac(&ipam::format_mac(mac)), Some(mac));
            }
            if validate_name("network", &s).is_ok() {
                prop_assert!(!s.is_empty() && s.len() <= 64 && s.is_ascii());
            }
            if validate_ifname(&s).is_ok() {
                prop_assert!(!s.is_empty() && s.len() <= 15 && !s.contains('/'));
            }
            let _ = ports::parse(&s);
        }

        #[test]
        fn random_request_bodies_never_panic(body in field()) {
            let _ = serde_json::from_str::<CreateEndpoint>(&body);
            let _ = serde_json::from_str::<CreateNetwork>(&body);
            let wrapped = format!("{{\"name\": {body}, \"network\": \"{body}\", \"netns\": \"x\"}}");
            let _ = serde_json::from_str::<CreateEndpoint>(&wrapped);
            let _ = serde_json::from_str::<CreateNetwork>(&wrapped);
        }
    }
}
