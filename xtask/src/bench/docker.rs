//! Docker 20.10's bridge driver (Debian's docker.io), reproduced in a host namespace of our
//! own: the bridge `docker0`, a veth per container, the iptables rules it writes for the
//! network and for each published port (as `iptables-save` shows them on a Docker host with
//! the default userland proxy on), and one real `docker-proxy` process per published port
//! and protocol, started with Docker's arguments.

use std::{
    fmt::Write as _,
    io::Write,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    sys::{Ns, Proc, run},
    world::{CONTAINER_IP, ECHO_PORT, GATEWAY, IPERF_PORT, PUB_ECHO_PORT, SUBNET},
};

pub const BRIDGE: &str = "docker0";
/// The container that owns the "other" published ports of the scale scenarios. It needs no
/// namespace: its rules only have to be there, in front of the measured port's.
pub const BULK_IP: &str = "10.88.0.3";
pub const BULK_BASE_PORT: u16 = 20000;

#[derive(Clone)]
pub struct Binding {
    pub proto: &'static str,
    pub host_port: u16,
    pub ip: String,
    pub port: u16,
}

impl Binding {
    /// The three rules Docker writes per binding: (table, chain, rule spec).
    fn rules(&self) -> [(&'static str, &'static str, String); 3] {
        let Self {
            proto,
            host_port,
            ref ip,
            port,
        } = *self;
        [
            (
                "filter",
                "DOCKER",
                format!(
                    "-d {ip}/32 ! -i {BRIDGE} -o {BRIDGE} -p {proto} -m {proto} --dport {port} -j ACCEPT"
                ),
            ),
            (
                "nat",
                "POSTROUTING",
                format!("-s {ip}/32 -d {ip}/32 -p {proto} -m {proto} --dport {port} -j MASQUERADE"),
            ),
            (
                "nat",
                "DOCKER",
                format!(
                    "! -i {BRIDGE} -p {proto} -m {proto} --dport {host_port} -j DNAT --to-destination {ip}:{port}"
                ),
            ),
        ]
    }
}

/// The bindings of the measured container.
pub fn main_bindings() -> Vec<Binding> {
    vec![
        Binding {
            proto: "tcp",
            host_port: PUB_ECHO_PORT,
            ip: CONTAINER_IP.into(),
            port: ECHO_PORT,
        },
        Binding {
            proto: "udp",
            host_port: PUB_ECHO_PORT,
            ip: CONTAINER_IP.into(),
            port: ECHO_PORT,
        },
        Binding {
            proto: "tcp",
            host_port: IPERF_PORT,
            ip: CONTAINER_IP.into(),
            port: IPERF_PORT,
        },
    ]
}

fn bulk_bindings(n: u16) -> Vec<Binding> {
    (0..n)
        .map(|i| Binding {
            proto: "tcp",
            host_port: BULK_BASE_PORT + i,
            ip: BULK_IP.into(),
            port: BULK_BASE_PORT + i,
        })
        .collect()
}

/// The whole ruleset in `iptables-restore` form: Docker's network rules (NAT gateway mode,
/// ICC on, userland proxy on, so the DNAT rules skip traffic from the bridge), then the
/// per-binding rules in publication order.
pub fn ruleset(bindings: &[Binding]) -> String {
    let b = BRIDGE;
    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n",
    );
    let _ = writeln!(nat, "-A POSTROUTING -s {SUBNET} ! -o {b} -j MASQUERADE");
    let mut nat_docker = format!("-A DOCKER -i {b} -j RETURN\n");
    let mut filter = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :DOCKER - [0:0]\n:DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n\
         :DOCKER-USER - [0:0]\n\
         -A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
         -A FORWARD -o {b} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o {b} -j DOCKER\n-A FORWARD -i {b} ! -o {b} -j ACCEPT\n\
         -A FORWARD -i {b} -o {b} -j ACCEPT\n"
    );
    for binding in bindings {
        for (table, chain, spec) in binding.rules() {
            let line = format!("-A {chain} {spec}\n");
            match (table, chain) {
                ("filter", _) => filter.push_str(&line),
                (_, "POSTROUTING") => nat.push_str(&line),
                _ => nat_docker.push_str(&line),
            }
        }
    }
    let _ = write!(
        filter,
        "-A DOCKER-ISOLATION-STAGE-1 -i {b} ! -o {b} -j DOCKER-ISOLATION-STAGE-2\n\
         -A DOCKER-ISOLATION-STAGE-1 -j RETURN\n\
         -A DOCKER-ISOLATION-STAGE-2 -o {b} -j DROP\n\
         -A DOCKER-ISOLATION-STAGE-2 -j RETURN\n-A DOCKER-USER -j RETURN\nCOMMIT\n"
    );
    format!("{nat}{nat_docker}COMMIT\n{filter}")
}

/// The bridge network in one host namespace, its rules and its proxies.
pub struct Network {
    proxies: Vec<Proc>,
}

impl Network {
    pub fn new(host: &Ns) -> Result<Self> {
        host.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        host.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE])?;
        host.ip(&["link", "set", BRIDGE, "up"])?;
        host.sysctl("net.ipv4.ip_forward", "1")?;
        restore(host, &ruleset(&[]))?;
        Ok(Self {
            proxies: Vec::new(),
        })
    }

    /// A container: veth pair, host end on the bridge, Docker's MAC, address, default route.
    pub fn attach(host: &Ns, container: &Ns, host_if: &str, ip: &str) -> Result<()> {
        host.ip(&[
            "link",
            "add",
            host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &container.name,
        ])?;
        host.ip(&["link", "set", host_if, "master", BRIDGE, "up"])?;
        let octets: Vec<u8> = ip.split('.').filter_map(|o| o.parse().ok()).collect();
        let mac = format!(
            "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
            octets[0], octets[1], octets[2], octets[3]
        );
        container.ip(&["link", "set", "eth0", "address", &mac])?;
        container.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        container.ip(&["link", "set", "eth0", "up"])?;
        container.ip(&["route", "add", "default", "via", GATEWAY])?;
        Ok(())
    }

    /// Publishes the measured container's ports: rules, then a proxy per binding.
    pub fn publish_main(&mut self, host: &Ns) -> Result<()> {
        restore(host, &ruleset(&main_bindings()))?;
        for b in main_bindings() {
            self.proxies.push(proxy(host, &b)?);
        }
        Ok(())
    }

    /// Reloads the ruleset with `n` other published TCP ports in front of the measured
    /// container's (as if another container had published them first). Returns how long
    /// `iptables-restore` took. No proxies are started for them (see the README).
    pub fn set_bulk(host: &Ns, n: u16) -> Result<Duration> {
        let mut bindings = bulk_bindings(n);
        bindings.extend(main_bindings());
        let text = ruleset(&bindings);
        let start = Instant::now();
        restore(host, &text)?;
        Ok(start.elapsed())
    }

    /// Publishes `bindings` the way dockerd 20.10 does at container start: for each rule an
    /// `iptables -C` (does it exist?) and an `iptables -A`, then a `docker-proxy` per binding
    /// started and waited for. The proxies are returned so the caller decides their lifetime.
    pub fn publish_exec(host: &Ns, bindings: &[Binding]) -> Result<Vec<Proc>> {
        let mut proxies = Vec::new();
        for b in bindings {
            for (table, chain, spec) in b.rules() {
                let spec: Vec<&str> = spec.split(' ').collect();
                let exists = host
                    .cmd("iptables")
                    .args(["--wait", "-t", table, "-C", chain])
                    .args(&spec)
                    .stderr(Stdio::null())
                    .status()?;
                if !exists.success() {
                    run(host
                        .cmd("iptables")
                        .args(["--wait", "-t", table, "-A", chain])
                        .args(&spec))?;
                }
            }
            proxies.push(proxy(host, b)?);
        }
        Ok(proxies)
    }

    pub fn reset_rules(host: &Ns) -> Result<()> {
        restore(host, &ruleset(&main_bindings()))
    }
}

/// `docker-proxy` with the arguments dockerd 20.10 passes, in the host namespace.
fn proxy(host: &Ns, b: &Binding) -> Result<Proc> {
    Proc::spawn_fd3(
        "docker-proxy",
        host.cmd(docker_proxy()?)
            .args(["-proto", b.proto, "-host-ip", "0.0.0.0", "-host-port"])
            .arg(b.host_port.to_string())
            .args(["-container-ip", &b.ip, "-container-port"])
            .arg(b.port.to_string()),
    )
}

pub fn docker_proxy() -> Result<PathBuf> {
    ["/usr/sbin/docker-proxy", "/usr/bin/docker-proxy"]
        .into_iter()
        .map(PathBuf::from)
        .chain([crate::setup::local_docker_proxy()])
        .find(|p| p.is_file())
        .context(
            "docker-proxy not found: `cargo xtask bench` (without --netdriver-bin) installs it",
        )
}

fn restore(host: &Ns, text: &str) -> Result<()> {
    let mut child = host
        .cmd("iptables-restore")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("iptables-restore")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "iptables-restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_has_docker_shape() {
        let text = ruleset(&main_bindings());
        assert!(text.contains(
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.2:80"
        ));
        assert!(text.contains(
            "-A DOCKER -d 10.88.0.2/32 ! -i docker0 -o docker0 -p udp -m udp --dport 80 -j ACCEPT"
        ));
        assert!(text.contains("-A POSTROUTING -s 10.88.0.0/24 ! -o docker0 -j MASQUERADE"));
        assert!(text.contains(":FORWARD DROP"));
        // The RETURN for bridge traffic comes before every DNAT rule.
        let ret = text.find("-A DOCKER -i docker0 -j RETURN").unwrap();
        assert!(ret < text.find("-j DNAT").unwrap());
    }

    #[test]
    fn bulk_ports_come_first() {
        let mut b = bulk_bindings(2);
        b.extend(main_bindings());
        let text = ruleset(&b);
        assert!(
            text.find("--dport 20001 -j DNAT").unwrap()
                < text.find("--dport 8080 -j DNAT").unwrap()
        );
    }
}
