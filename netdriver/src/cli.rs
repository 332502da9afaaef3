//! The command line: `netdriver daemon` and the client subcommands that talk to it.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::client::call;

#[derive(Debug, Parser)]
#[command(
    name = "netdriver",
    version,
    about = "eBPF-accelerated container network driver"
)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, default_value = "/run/netdriver/netdriver.sock")]
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
    /// cgroup v2 whose processes reach published ports from the host itself (socket hooks;
    /// only sockets of the daemon's network namespace are affected). Default: the root of
    /// the unified hierarchy.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
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
        /// Bridge interface name; default: nd-<id>.
        #[arg(long)]
        bridge: Option<String>,
        #[arg(long)]
        mtu: Option<u32>,
    },
    /// List networks.
    Ls,
    /// Show one network as JSON.
    Inspect { name: String },
    /// Remove a network (refused while it has endpoints).
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
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
        #[arg(long)]
        mac: Option<String>,
        /// Interface name inside the namespace.
        #[arg(long)]
        ifname: Option<String>,
        /// Publish a port: [HOSTIP:][HOSTPORT[-END]:]CPORT[-END][/tcp|/udp].
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
    },
    /// List endpoints.
    Ls,
    /// Show one endpoint as JSON.
    Inspect { name: String },
    /// Remove an endpoint: its veth pair, address and ports.
    Rm { name: String },
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
        Command::Daemon(_) => unreachable!("handled by main"),
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
                        str_of(&r["container_ip"]),
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
            bridge,
            mtu,
        } => {
            let body = json!({"name": name, "subnet": subnet, "gateway": gateway, "bridge": bridge, "mtu": mtu});
            let v = call(s, "POST", "/v1/networks", Some(&body))?;
            Output::line(v, |v| {
                format!(
                    "{} {} {}",
                    str_of(&v["name"]),
                    str_of(&v["subnet"]),
                    str_of(&v["bridge"])
                )
            })
        }
        NetworkCmd::Ls => {
            let v = call(s, "GET", "/v1/networks", None)?;
            Output::table(
                v,
                &["NAME", "SUBNET", "GATEWAY", "BRIDGE", "ENDPOINTS"],
                |n| {
                    vec![
                        str_of(&n["name"]),
                        str_of(&n["subnet"]),
                        str_of(&n["gateway"]),
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
            mac,
            ifname,
            publish,
        } => {
            let body = json!({"network": network, "netns": netns, "name": name, "ip": ip, "mac": mac,
                "ifname": ifname, "ports": publish});
            let v = call(s, "POST", "/v1/endpoints", Some(&body))?;
            Output::line(v, |v| {
                let ports: Vec<String> = v["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(binding)
                    .collect();
                format!(
                    "{} {} {}",
                    str_of(&v["name"]),
                    str_of(&v["ip"]),
                    ports.join(",")
                )
                .trim_end()
                .to_string()
            })
        }
        EndpointCmd::Ls => {
            let v = call(s, "GET", "/v1/endpoints", None)?;
            Output::table(v, &["NAME", "NETWORK", "IP", "MAC", "PORTS"], |e| {
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
    })
}

/// `0.0.0.0:8080->80/tcp`, as `docker ps` shows it.
fn binding(b: &Value) -> String {
    format!(
        "{}:{}->{}/{}",
        str_of(&b["host_ip"]),
        str_of(&b["host_port"]),
        str_of(&b["container_port"]),
        str_of(&b["proto"])
    )
}

/// Names go into a URL path: only the characters names may hold pass, others are escaped.
fn seg(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
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
