//! Scenario 6, the control plane: publishing a large port range on one endpoint (time and
//! daemon memory), and endpoint create latency with 0 and with N ports.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    docker::{self, Binding},
    report::percentile,
    sys::{Ns, Proc, proc_kib},
    world::{ND_NETWORK, Worlds},
};

pub struct Sizes {
    pub runs: usize,
    /// Ports in the large range (10,000 in the issue).
    pub range_ports: u16,
    /// Endpoints created per latency measurement (100 in the issue).
    pub endpoints: usize,
    /// Ports per endpoint in the second latency measurement (50 in the issue).
    pub endpoint_ports: u16,
    /// Endpoints for Docker's emulated create with ports (each one starts that many proxies).
    pub docker_endpoints: usize,
}

pub const RANGE_BASE: u16 = docker::BULK_BASE_PORT;
/// Below the ephemeral range (32768-60999): the host's own client sockets and docker-proxy's
/// connections to containers hold ephemeral ports, and Docker's proxy could not bind them.
const EP_BASE_PORT: u16 = 10000;

/// Publishes the large range on a netdriver endpoint `runs` times (removing it in between)
/// and leaves the last one in place for the scale scenarios. Memory: the daemon's `VmRSS`
/// before and after, and its peak (`VmHWM`, reset through `clear_refs` right before).
pub fn publish_range(w: &Worlds, tag: &str, s: &Sizes) -> Result<(Value, Ns)> {
    let nd = &w.netdriver;
    let ns = Ns::new(format!("ndb{tag}nb"))?;
    let netns = ns.path().to_string_lossy().into_owned();
    let spec = format!(
        "{RANGE_BASE}-{end}:{RANGE_BASE}-{end}",
        end = RANGE_BASE + s.range_ports - 1
    );
    let pid = nd.daemon_pid();
    let mut secs = Vec::new();
    let mut mem = Vec::new();
    for run in 0..s.runs {
        if run > 0 {
            nd.cli(&["endpoint", "rm", "bulk"])?;
        }
        let rss0 = proc_kib(pid, "VmRSS")?;
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        let t = Instant::now();
        nd.cli(&[
            "endpoint",
            "create",
            ND_NETWORK,
            "--netns",
            &netns,
            "--name",
            "bulk",
            "--ip",
            docker::BULK_IP,
            "-p",
            &spec,
        ])?;
        secs.push(t.elapsed().as_secs_f64());
        let rss1 = proc_kib(pid, "VmRSS")?;
        let hwm = proc_kib(pid, "VmHWM")?;
        mem.push(json!({
            "rss_before_kib": rss0,
            "rss_after_kib": rss1,
            "peak_extra_kib": hwm.saturating_sub(rss0),
            "rss_extra_kib": rss1.saturating_sub(rss0),
        }));
    }
    let ports: Value = serde_json::from_str(&nd.cli(&["port", "ls"])?)?;
    let entries = ports
        .as_array()
        .map_or(0, |a| a.iter().filter(|p| p["endpoint"] == "bulk").count());
    let host = &w.docker.base.host;
    let mut restore = Vec::new();
    for _ in 0..s.runs {
        restore.push(docker::Network::set_bulk(host, s.range_ports)?.as_secs_f64());
    }
    let out = json!({
        "ports": s.range_ports,
        "netdriver": {
            "secs": secs,
            "memory": mem,
            "stored_port_entries": entries,
            "note": "one endpoint create call through the CLI; the range is stored and programmed port by port",
        },
        "docker-iptables": {
            "restore_secs": restore,
            "rules": u32::from(s.range_ports) * 3,
            "proxies_needed": s.range_ports,
            "note": "iptables-restore of the whole ruleset (dockerd 20.10 runs two iptables execs per rule, so this is a lower bound); the per-port docker-proxy processes are not started",
        },
    });
    Ok((out, ns))
}

/// Endpoint create latency over `s.endpoints` endpoints with 0 and with
/// `s.endpoint_ports` ports, for netdriver (the CLI) and Docker (emulated).
pub fn endpoint_latency(w: &Worlds, tag: &str, s: &Sizes) -> Result<Value> {
    let mut out = json!({});
    for ports in [0, s.endpoint_ports] {
        let nd = nd_creates(w, tag, s.endpoints, ports)?;
        let n_docker = if ports == 0 {
            s.endpoints
        } else {
            s.docker_endpoints
        };
        let (dk, proxy_rss) = docker_creates(w, tag, n_docker, ports)?;
        out[format!("ports_{ports}")] = json!({
            "ports": ports,
            "netdriver": lat_summary(&nd),
            "docker-iptables": lat_summary(&dk),
            "docker_proxy_mean_rss_kib": proxy_rss,
        });
    }
    Ok(out)
}

fn lat_summary(secs: &[f64]) -> Value {
    let mut ms: Vec<f64> = secs.iter().map(|s| s * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    json!({
        "n": ms.len(),
        "p50_ms": percentile(&ms, 0.50),
        "p99_ms": percentile(&ms, 0.99),
        "max_ms": ms.last().copied().unwrap_or(0.0),
    })
}

fn ports_spec(i: usize, ports: u16) -> Option<String> {
    if ports == 0 {
        return None;
    }
    let base = EP_BASE_PORT + u16::try_from(i).expect("few endpoints") * ports;
    let end = base + ports - 1;
    Some(format!("{base}-{end}:{base}-{end}"))
}

fn ep_ip(i: usize) -> String {
    format!("10.88.0.{}", 10 + i)
}

fn nd_creates(w: &Worlds, tag: &str, n: usize, ports: u16) -> Result<Vec<f64>> {
    let nd = &w.netdriver;
    let spaces: Vec<Ns> = (0..n)
        .map(|i| Ns::new(format!("ndb{tag}x{i}")))
        .collect::<Result<_>>()?;
    let mut secs = Vec::new();
    for (i, ns) in spaces.iter().enumerate() {
        let netns = ns.path().to_string_lossy().into_owned();
        let name = format!("e{i}");
        let ip = ep_ip(i);
        let mut args = vec![
            "endpoint", "create", ND_NETWORK, "--netns", &netns, "--name", &name, "--ip", &ip,
        ];
        let spec = ports_spec(i, ports);
        if let Some(spec) = &spec {
            args.extend(["-p", spec]);
        }
        let t = Instant::now();
        nd.cli(&args)?;
        secs.push(t.elapsed().as_secs_f64());
    }
    for i in 0..n {
        nd.cli(&["endpoint", "rm", &format!("e{i}")])?;
    }
    Ok(secs)
}

/// What dockerd does per container on a bridge network, as commands: veth, bridge port,
/// address and route (dockerd uses netlink directly, so this part is slower here than in
/// dockerd), then the rules and one docker-proxy per published port.
fn docker_creates(w: &Worlds, tag: &str, n: usize, ports: u16) -> Result<(Vec<f64>, f64)> {
    let dk = &w.docker;
    let host = &dk.base.host;
    let spaces: Vec<Ns> = (0..n)
        .map(|i| Ns::new(format!("ndb{tag}y{i}")))
        .collect::<Result<_>>()?;
    let mut proxies: Vec<Proc> = Vec::new();
    let mut secs = Vec::new();
    for (i, ns) in spaces.iter().enumerate() {
        let ip = ep_ip(i);
        let base = EP_BASE_PORT + u16::try_from(i).expect("few endpoints") * ports;
        let bindings: Vec<Binding> = (0..ports)
            .map(|p| Binding {
                proto: "tcp",
                host_port: base + p,
                ip: ip.clone(),
                port: base + p,
            })
            .collect();
        let t = Instant::now();
        docker::Network::attach(host, ns, &format!("vb{i}"), &ip)?;
        proxies.extend(docker::Network::publish_exec(host, &bindings)?);
        secs.push(t.elapsed().as_secs_f64());
    }
    let rss: Vec<u64> = proxies
        .iter()
        .filter_map(|p| proc_kib(p.pid(), "VmRSS").ok())
        .collect();
    #[expect(clippy::cast_precision_loss, reason = "small numbers")]
    let mean = if rss.is_empty() {
        0.0
    } else {
        rss.iter().sum::<u64>() as f64 / rss.len() as f64
    };
    drop(proxies);
    docker::Network::reset_rules(host)?;
    drop(spaces);
    // Give the kernel a moment to tear the veths down before the next pass reuses names.
    std::thread::sleep(Duration::from_millis(200));
    Ok((secs, mean))
}
