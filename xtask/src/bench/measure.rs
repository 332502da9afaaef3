//! The data-path scenarios and one measurement of one scenario on one contender.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{
    sys::run,
    world::{Route, Target},
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// iperf3, one TCP stream: Gbit/s.
    Tput,
    /// Request/response over one TCP connection: round-trip µs.
    RrTcp,
    /// Request/response over UDP: round-trip µs.
    RrUdp,
    /// New TCP connections per second.
    Crr,
}

impl Kind {
    pub fn probe_proto(self) -> &'static str {
        if self == Self::RrUdp { "udp" } else { "tcp" }
    }
}

pub struct Scenario {
    /// The scenario number.
    pub group: u8,
    pub key: &'static str,
    pub label: &'static str,
    pub route: Route,
    pub kind: Kind,
}

const fn sc(
    group: u8,
    key: &'static str,
    label: &'static str,
    route: Route,
    kind: Kind,
) -> Scenario {
    Scenario {
        group,
        key,
        label,
        route,
        kind,
    }
}

/// Scenarios 1-4 and 7: measured with only the measured container's ports published.
pub const BASE: &[Scenario] = &[
    sc(
        1,
        "ext_tput",
        "ext → published port, TCP throughput",
        Route::Ext,
        Kind::Tput,
    ),
    sc(
        2,
        "ext_rr_tcp",
        "ext → published port, TCP RR",
        Route::Ext,
        Kind::RrTcp,
    ),
    sc(
        2,
        "ext_rr_udp",
        "ext → published port, UDP RR",
        Route::Ext,
        Kind::RrUdp,
    ),
    sc(
        3,
        "ext_crr",
        "ext → published port, new conns",
        Route::Ext,
        Kind::Crr,
    ),
    sc(
        4,
        "lo_tput",
        "host → 127.0.0.1:port, TCP throughput",
        Route::HostLo,
        Kind::Tput,
    ),
    sc(
        4,
        "lo_rr_tcp",
        "host → 127.0.0.1:port, TCP RR",
        Route::HostLo,
        Kind::RrTcp,
    ),
    sc(
        4,
        "lo_rr_udp",
        "host → 127.0.0.1:port, UDP RR",
        Route::HostLo,
        Kind::RrUdp,
    ),
    sc(
        4,
        "lo_crr",
        "host → 127.0.0.1:port, new conns",
        Route::HostLo,
        Kind::Crr,
    ),
    sc(
        4,
        "hostip_tput",
        "host → HOSTIP:port, TCP throughput",
        Route::HostIp,
        Kind::Tput,
    ),
    sc(
        4,
        "hostip_rr_tcp",
        "host → HOSTIP:port, TCP RR",
        Route::HostIp,
        Kind::RrTcp,
    ),
    sc(
        4,
        "hostip_rr_udp",
        "host → HOSTIP:port, UDP RR",
        Route::HostIp,
        Kind::RrUdp,
    ),
    sc(
        4,
        "hostip_crr",
        "host → HOSTIP:port, new conns",
        Route::HostIp,
        Kind::Crr,
    ),
    sc(
        7,
        "masq_tput",
        "container → ext server (masquerade), TCP throughput",
        Route::Masq,
        Kind::Tput,
    ),
    sc(
        7,
        "masq_crr",
        "container → ext server (masquerade), new conns",
        Route::Masq,
        Kind::Crr,
    ),
];

/// Scenario 5: measured again with many other ports published.
pub const SCALE: &[Scenario] = &[
    sc(
        5,
        "scale_ext_crr",
        "ext → published port, new conns",
        Route::Ext,
        Kind::Crr,
    ),
    sc(
        5,
        "scale_ext_rr_tcp",
        "ext → published port, TCP RR",
        Route::Ext,
        Kind::RrTcp,
    ),
    sc(
        5,
        "scale_lo_crr",
        "host → 127.0.0.1:port, new conns",
        Route::HostLo,
        Kind::Crr,
    ),
    sc(
        5,
        "scale_hostip_crr",
        "host → HOSTIP:port, new conns",
        Route::HostIp,
        Kind::Crr,
    ),
];

/// How long each measurement lasts.
#[derive(Clone, Copy)]
pub struct Durations {
    pub secs: f64,
    pub tput_secs: u32,
}

/// One echo exchange through the path: does this contender support it at all?
pub fn probe(agent: &Path, target: &Target<'_>, kind: Kind) -> Result<()> {
    let out = target
        .client
        .cmd("timeout")
        .arg("10")
        .arg(agent)
        .args(["bench-agent", "probe", kind.probe_proto()])
        .arg(target.echo.to_string())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

pub fn measure(agent: &Path, target: &Target<'_>, kind: Kind, d: Durations) -> Result<Value> {
    match kind {
        Kind::Tput => iperf(target, d.tput_secs),
        Kind::RrTcp => agent_run(agent, target, &["rr", "tcp"], d.secs),
        Kind::RrUdp => agent_run(agent, target, &["rr", "udp"], d.secs),
        Kind::Crr => agent_run(agent, target, &["crr"], d.secs),
    }
}

fn agent_run(agent: &Path, target: &Target<'_>, mode: &[&str], secs: f64) -> Result<Value> {
    let out = run(target
        .client
        .cmd("timeout")
        .arg(format!("{}", secs.ceil() + 15.0))
        .arg(agent)
        .arg("bench-agent")
        .args(mode)
        .arg(target.echo.to_string())
        .arg("--secs")
        .arg(secs.to_string()))?;
    serde_json::from_str(&out).with_context(|| format!("agent printed {out:?}"))
}

fn iperf(target: &Target<'_>, secs: u32) -> Result<Value> {
    let cmd: &mut Command = &mut target.client.cmd("timeout");
    cmd.arg((secs + 20).to_string())
        .arg("iperf3")
        .args(["-c", &target.iperf.ip().to_string()])
        .args(["-p", &target.iperf.port().to_string()])
        .args(["-t", &secs.to_string(), "-J", "--connect-timeout", "2000"]);
    let out = cmd.output()?;
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = report.get("error") {
        bail!("iperf3: {err}");
    }
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON has no end.sum_received.bits_per_second")?;
    let retransmits = report["end"]["sum_sent"]["retransmits"]
        .as_u64()
        .unwrap_or(0);
    Ok(json!({ "gbps": bps / 1e9, "retransmits": retransmits }))
}
