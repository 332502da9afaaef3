//! The command line: `netdriver daemon` and the client subcommands that talk to it.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::client::{call, path_segment as seg};

/// Where the daemon serves its API unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/netdriver/netdriver.sock";

#[derive(Debug, Parser)]
#[command(
    name = "netdriver",
    version,
    about = "eBPF-accelerated container network driver"
)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    Daemon(DaemonArgs),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage endpoints (a container's attachment to a network).
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Published ports.
    #[command(subcommand)]
    Port(PortCmd),
    /// Show where the data path is attached and its drop counters.
    Status,
    /// Remove everything netdriver made (programs, pins, bridges, veths, store entries)
    /// while no daemon runs.
    Cleanup(CleanupArgs),
    /// Act as a CNI plugin: `CNI_*` environment variables, the network configuration on
    /// stdin, the result on stdout (what runtimes run as /opt/cni/bin/netdriver; see the
    /// README).
    Cni,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Where networks, endpoints and port allocations are stored.
    #[arg(long, default_value = "/var/lib/netdriver")]
    pub state_dir: PathBuf,
    /// Directory in bpffs where maps are pinned (bpffs is mounted when needed).
    #[arg(long, default_value = "/sys/fs/bpf/netdriver")]
    pub bpffs: PathBuf,
    /// Interface that carries published ports (repeatable). Default: every interface
    /// netdriver did not create, except lo, including ones that appear later.
    #[arg(long = "uplink")]
    pub uplinks: Vec<String>,
    /// File whose nameservers a default address pool must avoid.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Socket for Docker's remote network and IPAM driver protocol (dockerd looks for
    /// plugin sockets in /run/docker/plugins; the file name is the driver name).
    #[arg(long, default_value = "/run/docker/plugins/netdriver.sock")]
    pub docker_plugin_socket: PathBuf,
    /// Do not serve the Docker plugin protocol.
    #[arg(long)]
    pub no_docker_plugin: bool,
    /// On SIGINT/SIGTERM, remove everything netdriver made instead of leaving the data
    /// path running (the default, so traffic flows while the daemon is down).
    #[arg(long)]
    pub cleanup_on_exit: bool,
    /// Capacity of the conntrack/NAT table (a masqueraded flow takes two entries). When it
    /// is full, new flows are refused (counted and logged); existing ones keep working.
    #[arg(long, default_value_t = netdriver_common::CT_MAX_ENTRIES)]
    pub ct_max_entries: u32,
    /// Source ports masquerade may use, MIN-MAX (keep it clear of the local port range).
    #[arg(long, default_value = "61000-65535", value_parser = parse_port_range)]
    pub nat_port_range: (u16, u16),
    /// Deliver published-port traffic and replies to containers with `bpf_redirect` to the
    /// host end of their veth (one more softirq pass) instead of `bpf_redirect_peer`
    /// straight into the container's end. For comparison and for kernels before 5.10.
    #[arg(long)]
    pub no_redirect_peer: bool,
    /// Where published-port DNAT runs on the uplinks: `tc` (tc ingress) or `xdp` (native
    /// XDP in front of tc, which keeps handling what XDP passes on). XDP needs a driver with
    /// native XDP and frames with complete checksums (a NIC's, not a local veth peer's);
    /// containers' veths get GRO on so that they accept redirected frames. See the README.
    #[arg(long, value_enum, default_value_t = crate::dataplane::UplinkMode::Tc)]
    pub uplink_mode: crate::dataplane::UplinkMode,
    /// Idle timeout of established TCP flows, seconds.
    #[arg(long, default_value_t = 21600)]
    pub ct_timeout_tcp: u64,
    /// Idle timeout of TCP flows before the handshake completes, seconds.
    #[arg(long, default_value_t = 60)]
    pub ct_timeout_tcp_syn: u64,
    /// Idle timeout of TCP flows after a FIN or RST, seconds.
    #[arg(long, default_value_t = 10)]
    pub ct_timeout_tcp_close: u64,
    /// Idle timeout of UDP flows, seconds.
    #[arg(long, default_value_t = 60)]
    pub ct_timeout_udp: u64,
    /// Idle timeout of SCTP flows (tracked like UDP), seconds.
    #[arg(long, default_value_t = crate::dataplane::SCTP_TIMEOUT_DEFAULT_SECS)]
    pub ct_timeout_sctp: u64,
    /// Idle timeout of ICMP echo flows, seconds.
    #[arg(long, default_value_t = 30)]
    pub ct_timeout_icmp: u64,
    /// How often expired conntrack entries are removed, seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub ct_sweep_interval: u64,
    /// cgroup v2 whose processes reach published ports from the host itself (socket hooks;
    /// only sockets of the daemon's network namespace are affected). Default: the root of
    /// the unified hierarchy.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    #[arg(long, default_value = "/var/lib/netdriver")]
    pub state_dir: PathBuf,
    #[arg(long, default_value = "/sys/fs/bpf/netdriver")]
    pub bpffs: PathBuf,
}

impl DaemonArgs {
    /// The conntrack settings the flags describe.
    #[must_use]
    pub fn conntrack(&self) -> crate::service::ConntrackConfig {
        use std::time::Duration;
        crate::service::ConntrackConfig {
            tuning: crate::dataplane::Tuning {
                ct_max_entries: self.ct_max_entries,
                nat_ports: self.nat_port_range,
                redirect_peer: !self.no_redirect_peer,
                uplink_mode: self.uplink_mode,
            },
            timeouts: crate::dataplane::CtTimeouts {
                tcp_syn: Duration::from_secs(self.ct_timeout_tcp_syn),
                tcp_established: Duration::from_secs(self.ct_timeout_tcp),
                tcp_closing: Duration::from_secs(self.ct_timeout_tcp_close),
                udp: Duration::from_secs(self.ct_timeout_udp),
                sctp: Duration::from_secs(self.ct_timeout_sctp),
                icmp: Duration::from_secs(self.ct_timeout_icmp),
            },
            sweep_interval: Duration::from_secs(self.ct_sweep_interval),
        }
    }
}

/// `MIN-MAX`, 1 <= MIN <= MAX <= 65535.
fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected MIN-MAX"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{s:?}: ports are 1-65535"))
    };
    let (min, max) = (port(a)?, port(b)?);
    if min > max {
        return Err(format!("{s:?}: MIN is above MAX"));
    }
    Ok((min, max))
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per command; the create flags are the big variant"
)]
pub enum NetworkCmd {
    /// Create a bridge network.
    Create {
        name: String,
        /// IPv4 subnet in CIDR form; default: the first free Docker default pool.
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address (on the bridge); default: the first address of the subnet.
        #[arg(long)]
        gateway: Option<String>,
        /// Enable IPv6: the bridge and every container get an IPv6 address too.
        #[arg(long)]
        ipv6: bool,
        /// IPv6 subnet in CIDR form (needs --ipv6); default: a free unique local /64.
        #[arg(long, value_name = "CIDR")]
        subnet_v6: Option<String>,
        /// IPv6 gateway; default: the first address of the IPv6 subnet.
        #[arg(long, value_name = "ADDR")]
        gateway_v6: Option<String>,
        /// Bridge interface name; default: nd-<id>.
        #[arg(long)]
        bridge: Option<String>,
        #[arg(long)]
        mtu: Option<u32>,
        /// Let containers of the network talk to each other (default true).
        #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
        icc: Option<bool>,
        /// Outbound traffic leaves with the host's address (default true).
        #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
        masquerade: Option<bool>,
        /// Masquerade with this host address instead of the outgoing interface's.
        #[arg(long, value_name = "IP")]
        snat_ip: Option<String>,
        /// No traffic leaves the network or enters it from outside.
        #[arg(long)]
        internal: bool,
        /// nat (default) or routed (no translation; published ports reachable on the
        /// container's own address).
        #[arg(long, value_name = "MODE")]
        gateway_mode: Option<String>,
        /// Docker driver option KEY=VALUE (repeatable), e.g.
        /// `com.docker.network.bridge.enable_icc=false`.
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
        opt: Vec<String>,
    },
    /// List networks.
    Ls,
    /// Show one network as JSON.
    Inspect { name: String },
    /// Remove a network (refused while it has endpoints).
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per command; the create flags are the big variant"
)]
pub enum EndpointCmd {
    /// Attach a network namespace to a network.
    Create {
        network: String,
        /// The container's network namespace file (e.g. /var/run/netns/NAME).
        #[arg(long)]
        netns: PathBuf,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        ip: Option<String>,
        /// IPv6 address (on an --ipv6 network); default: derived from the MAC when the
        /// prefix is /80 or shorter, else the lowest free one.
        #[arg(long)]
        ip6: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        /// Interface name inside the namespace.
        #[arg(long)]
        ifname: Option<String>,
        /// Publish a port: [HOSTIP:][HOSTPORT[-END]:]CPORT[-END][/tcp|/udp|/sctp].
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
        /// Declare a port linked endpoints may reach: PORT[-END][/tcp|/udp|/sctp] (repeatable).
        #[arg(long)]
        expose: Vec<String>,
        /// Link to an endpoint of the same network, NAME[:ALIAS]: this endpoint may open
        /// connections to its exposed ports even with ICC off (repeatable).
        #[arg(long)]
        link: Vec<String>,
    },
    /// List endpoints.
    Ls,
    /// Show one endpoint as JSON.
    Inspect { name: String },
    /// Remove an endpoint: its veth pair, address and ports.
    Rm { name: String },
    /// Compare an endpoint with the kernel (veth pair, container interface, MAC,
    /// addresses); fails listing what is missing.
    Check { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PortCmd {
    /// List every binding with the host port actually allocated.
    Ls,
}

/// Runs a client subcommand.
pub fn run_client(cli: &Cli) -> Result<()> {
    let s = &cli.socket;
    let out = match &cli.command {
        Command::Daemon(_) | Command::Cleanup(_) | Command::Cni => {
            unreachable!("handled by main")
        }
        Command::Network(cmd) => network(cli, cmd)?,
        Command::Endpoint(cmd) => endpoint(cli, cmd)?,
        Command::Port(PortCmd::Ls) => {
            let v = call(s, "GET", "/v1/ports", None)?;
            Output::table(
                v,
                &[
                    "PROTO",
                    "HOST IP",
                    "HOST PORT",
                    "CONTAINER IP",
                    "PORT",
                    "ENDPOINT",
                ],
                |r| {
                    vec![
                        str_of(&r["proto"]),
                        str_of(&r["host_ip"]),
                        str_of(&r["host_port"]),
                        container_ip(r),
                        str_of(&r["container_port"]),
                        str_of(&r["endpoint"]),
                    ]
                },
            )
        }
        Command::Status => Output::json(call(s, "GET", "/v1/status", None)?),
    };
    out.print(cli.json);
    Ok(())
}

fn network(cli: &Cli, cmd: &NetworkCmd) -> Result<Output> {
    let s = &cli.socket;
    Ok(match cmd {
        NetworkCmd::Create {
            name,
            subnet,
            gateway,
            ipv6,
            subnet_v6,
            gateway_v6,
            bridge,
            mtu,
            icc,
            masquerade,
            snat_ip,
            internal,
            gateway_mode,
            opt,
        } => {
            let mut options = serde_json::Map::new();
            for kv in opt {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("invalid option {kv:?}: expected KEY=VALUE"))?;
                options.insert(k.to_string(), Value::String(v.to_string()));
            }
            let body = json!({"name": name, "subnet": subnet, "gateway": gateway,
                "ipv6": ipv6.then_some(true), "subnet_v6": subnet_v6, "gateway_v6": gateway_v6,
                "bridge": bridge, "mtu": mtu,
                "icc": icc, "masquerade": masquerade, "snat_ip": snat_ip,
                "internal": internal.then_some(true), "gateway_mode": gateway_mode, "options": options});
            let v = call(s, "POST", "/v1/networks", Some(&body))?;
            Output::line(v, |v| {
                let subnet6 = v["subnet6"].as_str().map(|s| format!(" {s}"));
                format!(
                    "{} {}{} {}",
                    str_of(&v["name"]),
                    str_of(&v["subnet"]),
                    subnet6.unwrap_or_default(),
                    str_of(&v["bridge"])
                )
            })
        }
        NetworkCmd::Ls => {
            let v = call(s, "GET", "/v1/networks", None)?;
            Output::table(
                v,
                &[
                    "NAME",
                    "SUBNET",
                    "GATEWAY",
                    "SUBNET6",
                    "GATEWAY6",
                    "BRIDGE",
                    "ENDPOINTS",
                ],
                |n| {
                    vec![
                        str_of(&n["name"]),
                        str_of(&n["subnet"]),
                        str_of(&n["gateway"]),
                        str_of(&n["subnet6"]),
                        str_of(&n["gateway6"]),
                        str_of(&n["bridge"]),
                        n["endpoints"].as_array().map_or(0, Vec::len).to_string(),
                    ]
                },
            )
        }
        NetworkCmd::Inspect { name } => Output::json(call(
            s,
            "GET",
            &format!("/v1/networks/{}", seg(name)),
            None,
        )?),
        NetworkCmd::Rm { name } => {
            call(s, "DELETE", &format!("/v1/networks/{}", seg(name)), None)?;
            Output::line(json!({"removed": name}), |_| name.clone())
        }
    })
}

fn endpoint(cli: &Cli, cmd: &EndpointCmd) -> Result<Output> {
    let s = &cli.socket;
    Ok(match cmd {
        EndpointCmd::Create {
            network,
            netns,
            name,
            ip,
            ip6,
            mac,
            ifname,
            publish,
            expose,
            link,
        } => {
            let body = json!({"network": network, "netns": netns, "name": name, "ip": ip, "ip6": ip6, "mac": mac,
                "ifname": ifname, "ports": publish, "expose": expose, "links": link});
            let v = call(s, "POST", "/v1/endpoints", Some(&body))?;
            Output::line(v, |v| {
                let ports: Vec<String> = v["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(binding)
                    .collect();
                let ip6 = v["ip6"].as_str().map(|s| format!(" {s}"));
                format!(
                    "{} {}{} {}",
                    str_of(&v["name"]),
                    str_of(&v["ip"]),
                    ip6.unwrap_or_default(),
                    ports.join(",")
                )
                .trim_end()
                .to_string()
            })
        }
        EndpointCmd::Ls => {
            let v = call(s, "GET", "/v1/endpoints", None)?;
            Output::table(v, &["NAME", "NETWORK", "IP", "IP6", "MAC", "PORTS"], |e| {
                let ports: Vec<String> = e["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(binding)
                    .collect();
                vec![
                    str_of(&e["name"]),
                    str_of(&e["network"]),
                    str_of(&e["ip"]),
                    str_of(&e["ip6"]),
                    str_of(&e["mac"]),
                    ports.join(","),
                ]
            })
        }
        EndpointCmd::Inspect { name } => Output::json(call(
            s,
            "GET",
            &format!("/v1/endpoints/{}", seg(name)),
            None,
        )?),
        EndpointCmd::Rm { name } => {
            call(s, "DELETE", &format!("/v1/endpoints/{}", seg(name)), None)?;
            Output::line(json!({"removed": name}), |_| name.clone())
        }
        EndpointCmd::Check { name } => {
            let v = call(
                s,
                "GET",
                &format!("/v1/endpoints/{}/check", seg(name)),
                None,
            )?;
            let problems: Vec<&str> = v["problems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !problems.is_empty() {
                anyhow::bail!("endpoint {name}: {}", problems.join("; "));
            }
            Output::line(v, |_| "ok".into())
        }
    })
}

/// The container address a `port ls` row goes to: its IPv6 one for an IPv6 binding.
fn container_ip(r: &Value) -> String {
    let v6 = r["host_ip"].as_str().is_some_and(|ip| ip.contains(':'));
    if v6 {
        str_of(&r["container_ip6"])
    } else {
        str_of(&r["container_ip"])
    }
}

/// `0.0.0.0:8080->80/tcp` or `[::]:8080->80/tcp`, as `docker ps` shows it.
fn binding(b: &Value) -> String {
    let ip = str_of(&b["host_ip"]);
    let ip = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    format!(
        "{}:{}->{}/{}",
        ip,
        str_of(&b["host_port"]),
        str_of(&b["container_port"]),
        str_of(&b["proto"])
    )
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// What a subcommand prints: its JSON, plus a human rendering.
struct Output {
    value: Value,
    text: String,
}

impl Output {
    fn json(value: Value) -> Self {
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        Self { value, text }
    }

    fn line(value: Value, f: impl Fn(&Value) -> String) -> Self {
        let text = f(&value);
        Self { value, text }
    }

    fn table(value: Value, headers: &[&str], row: impl Fn(&Value) -> Vec<String>) -> Self {
        let mut rows = vec![headers.iter().map(|h| (*h).to_string()).collect::<Vec<_>>()];
        rows.extend(value.as_array().into_iter().flatten().map(row));
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        let text = rows
            .iter()
            .map(|r| {
                let cells: Vec<String> = r
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                cells.join("  ").trim_end().to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        Self { value, text }
    }

    fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&self.value).unwrap_or_default()
            );
        } else {
            println!("{}", self.text);
        }
    }
}
