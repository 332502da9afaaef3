//! The three contenders, each in namespaces of its own, built side by side so that every
//! measurement can alternate between them:
//! - limit: a bare veth pair between two namespaces (no bridge, no NAT, no netfilter);
//! - docker-iptables: host namespace with a bridge, a veth per container, exactly the
//!   iptables rules Docker 20.10's bridge driver writes, and the real `docker-proxy`;
//! - netdriver: the same topology through the real daemon and its CLI.
//!
//! Addresses: the outside is 198.51.100.0/24 (documentation range), container subnets
//! exist only inside each world's host namespace, and nothing routes anywhere else.

use std::{
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use super::{
    docker,
    sys::{Ns, Proc, run, wait_for},
};

pub const HOST_IP: &str = "198.51.100.1";
pub const EXT_IP: &str = "198.51.100.2";
pub const SUBNET: &str = "10.88.0.0/24";
pub const GATEWAY: &str = "10.88.0.1";
pub const CONTAINER_IP: &str = "10.88.0.2";
/// Container-side echo port and the host port it is published on (TCP and UDP).
pub const ECHO_PORT: u16 = 80;
pub const PUB_ECHO_PORT: u16 = 8080;
/// iperf3 listens on this port in the container, published on the same host port.
pub const IPERF_PORT: u16 = 5201;
/// Servers in the external namespace, for the masquerade scenario.
pub const EXT_ECHO_PORT: u16 = 9000;
pub const EXT_IPERF_PORT: u16 = 5202;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Contender {
    Limit,
    Docker,
    Netdriver,
}

pub const CONTENDERS: [Contender; 3] = [Contender::Limit, Contender::Docker, Contender::Netdriver];

impl Contender {
    pub fn name(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Docker => "docker-iptables",
            Self::Netdriver => "netdriver",
        }
    }
}

/// Where a client sits and what it connects to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Route {
    /// External namespace → HOSTIP:published port.
    Ext,
    /// The host namespace itself → 127.0.0.1:published port.
    HostLo,
    /// The host namespace itself → HOSTIP:published port.
    HostIp,
    /// The container → a server in the external namespace.
    Masq,
}

pub struct Target<'a> {
    pub client: &'a Ns,
    pub echo: SocketAddr,
    pub iperf: SocketAddr,
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("valid address")
}

/// Starts the echo server and an iperf3 server in `ns`, and waits until both listen.
fn servers(ns: &Ns, agent: &Path, echo_port: u16, iperf_port: u16) -> Result<Vec<Proc>> {
    let echo = Proc::spawn(
        "echo server",
        ns.cmd(agent)
            .args(["bench-agent", "serve"])
            .arg(format!("0.0.0.0:{echo_port}")),
        None,
    )?;
    let iperf = Proc::spawn(
        "iperf3 server",
        ns.cmd("iperf3")
            .args(["-s", "-p", &iperf_port.to_string()])
            // Gets a server unstuck if a client vanished mid-test.
            .args(["--idle-timeout", "30"]),
        None,
    )?;
    for port in [echo_port, iperf_port] {
        wait_for("server", Duration::from_secs(10), || listening(ns, port))?;
    }
    Ok(vec![echo, iperf])
}

fn listening(ns: &Ns, port: u16) -> bool {
    ns.cmd("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
}

/// The bare veth pair: "client" (`EXT_IP`) and "server" (`HOST_IP`).
pub struct Limit {
    client: Ns,
    server: Ns,
    _procs: Vec<Proc>,
}

impl Limit {
    pub fn new(tag: &str, agent: &Path) -> Result<Self> {
        let client = Ns::new(format!("ndb{tag}lc"))?;
        let server = Ns::new(format!("ndb{tag}ls"))?;
        server.ip(&[
            "link",
            "add",
            "v0",
            "type",
            "veth",
            "peer",
            "name",
            "v1",
            "netns",
            &client.name,
        ])?;
        server.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", "v0"])?;
        server.ip(&["link", "set", "v0", "up"])?;
        client.ip(&["addr", "add", &format!("{EXT_IP}/24"), "dev", "v1"])?;
        client.ip(&["link", "set", "v1", "up"])?;
        let mut procs = servers(&server, agent, ECHO_PORT, IPERF_PORT)?;
        procs.extend(servers(&client, agent, EXT_ECHO_PORT, EXT_IPERF_PORT)?);
        Ok(Self {
            client,
            server,
            _procs: procs,
        })
    }

    pub fn target(&self, route: Route) -> Target<'_> {
        match route {
            Route::Masq => Target {
                client: &self.server,
                echo: addr(EXT_IP, EXT_ECHO_PORT),
                iperf: addr(EXT_IP, EXT_IPERF_PORT),
            },
            _ => Target {
                client: &self.client,
                echo: addr(HOST_IP, ECHO_PORT),
                iperf: addr(HOST_IP, IPERF_PORT),
            },
        }
    }
}

/// Host, external and container namespaces with the uplink veth between host and external,
/// and the servers in the external namespace. The container is wired by the contender.
pub struct Base {
    pub host: Ns,
    pub ext: Ns,
    pub container: Ns,
    procs: Vec<Proc>,
}

impl Base {
    fn new(prefix: &str, agent: &Path) -> Result<Self> {
        let host = Ns::new(format!("{prefix}h"))?;
        let ext = Ns::new(format!("{prefix}e"))?;
        let container = Ns::new(format!("{prefix}c"))?;
        host.ip(&[
            "link", "add", "up0", "type", "veth", "peer", "name", "ext0", "netns", &ext.name,
        ])?;
        host.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", "up0"])?;
        host.ip(&["link", "set", "up0", "up"])?;
        ext.ip(&["addr", "add", &format!("{EXT_IP}/24"), "dev", "ext0"])?;
        ext.ip(&["link", "set", "ext0", "up"])?;
        let procs = servers(&ext, agent, EXT_ECHO_PORT, EXT_IPERF_PORT)?;
        Ok(Self {
            host,
            ext,
            container,
            procs,
        })
    }

    fn start_container_servers(&mut self, agent: &Path) -> Result<()> {
        let procs = servers(&self.container, agent, ECHO_PORT, IPERF_PORT)?;
        self.procs.extend(procs);
        Ok(())
    }

    fn target(&self, route: Route) -> Target<'_> {
        let (client, ip) = match route {
            Route::Ext => (&self.ext, HOST_IP),
            Route::HostLo => (&self.host, "127.0.0.1"),
            Route::HostIp => (&self.host, HOST_IP),
            Route::Masq => {
                return Target {
                    client: &self.container,
                    echo: addr(EXT_IP, EXT_ECHO_PORT),
                    iperf: addr(EXT_IP, EXT_IPERF_PORT),
                };
            }
        };
        Target {
            client,
            echo: addr(ip, PUB_ECHO_PORT),
            iperf: addr(ip, IPERF_PORT),
        }
    }
}

/// Docker's bridge driver, reproduced: see `docker.rs` for the rules and the proxies.
pub struct Docker {
    pub base: Base,
    pub net: docker::Network,
}

impl Docker {
    pub fn new(tag: &str, agent: &Path) -> Result<Self> {
        let mut base = Base::new(&format!("ndb{tag}d"), agent)?;
        let net = docker::Network::new(&base.host)?;
        docker::Network::attach(&base.host, &base.container, "veth0", CONTAINER_IP)?;
        base.start_container_servers(agent)?;
        let mut docker = Self { base, net };
        docker.net.publish_main(&docker.base.host)?;
        Ok(docker)
    }

    pub fn target(&self, route: Route) -> Target<'_> {
        self.base.target(route)
    }
}

/// The real netdriver daemon in the host namespace, driven through its CLI.
pub struct Netdriver {
    pub base: Base,
    daemon: Option<Proc>,
    bin: PathBuf,
    dir: PathBuf,
    bpffs: PathBuf,
    socket: PathBuf,
}

pub const ND_NETWORK: &str = "bench";

impl Netdriver {
    pub fn new(tag: &str, agent: &Path, bin: &Path) -> Result<Self> {
        let base = Base::new(&format!("ndb{tag}n"), agent)?;
        let dir = std::env::temp_dir().join(format!("ndb{tag}"));
        std::fs::create_dir_all(&dir)?;
        let mut nd = Self {
            base,
            daemon: None,
            bin: bin.to_path_buf(),
            socket: dir.join("nd.sock"),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/ndb{tag}")),
            dir,
        };
        nd.start_daemon()?;
        nd.cli(&["network", "create", ND_NETWORK, "--subnet", SUBNET])?;
        let netns = nd.base.container.path();
        nd.cli(&[
            "endpoint",
            "create",
            ND_NETWORK,
            "--netns",
            &netns.to_string_lossy(),
            "--name",
            "web",
            "--ip",
            CONTAINER_IP,
            "-p",
            &format!("{PUB_ECHO_PORT}:{ECHO_PORT}"),
            "-p",
            &format!("{PUB_ECHO_PORT}:{ECHO_PORT}/udp"),
            "-p",
            &format!("{IPERF_PORT}:{IPERF_PORT}"),
        ])?;
        nd.base.start_container_servers(agent)?;
        Ok(nd)
    }

    fn start_daemon(&mut self) -> Result<()> {
        let resolv = self.dir.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 203.0.113.53\n")?;
        let daemon = Proc::spawn(
            "netdriver daemon",
            self.base
                .host
                .cmd(&self.bin)
                .arg("--socket")
                .arg(&self.socket)
                .arg("daemon")
                .arg("--state-dir")
                .arg(self.dir.join("state"))
                .arg("--bpffs")
                .arg(&self.bpffs)
                .arg("--resolv-conf")
                .arg(&resolv)
                // No plugin socket in the machine's /run/docker/plugins, and nothing left
                // attached or pinned when the bench stops the daemon.
                .args(["--no-docker-plugin", "--cleanup-on-exit"]),
            Some(&self.dir.join("daemon.log")),
        )?;
        self.daemon = Some(daemon);
        let socket = self.socket.clone();
        wait_for("netdriver daemon", Duration::from_secs(20), || {
            UnixStream::connect(&socket).is_ok()
        })
        .with_context(|| self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon runs").pid()
    }

    /// Runs the CLI (with `--json`) against this world's daemon; returns stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        run(Command::new(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--json")
            .args(args))
    }

    pub fn target(&self, route: Route) -> Target<'_> {
        self.base.target(route)
    }
}

impl Drop for Netdriver {
    fn drop(&mut self) {
        drop(self.daemon.take());
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// All three, built once per bench run.
pub struct Worlds {
    pub limit: Limit,
    pub docker: Docker,
    pub netdriver: Netdriver,
}

impl Worlds {
    pub fn target(&self, who: Contender, route: Route) -> Target<'_> {
        match who {
            Contender::Limit => self.limit.target(route),
            Contender::Docker => self.docker.target(route),
            Contender::Netdriver => self.netdriver.target(route),
        }
    }
}
