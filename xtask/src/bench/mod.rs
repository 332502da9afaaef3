//! `cargo xtask bench`: netdriver side by side with Docker's iptables path and with a bare
//! veth pair, in namespaces of its own (see world.rs), alternating between the contenders
//! inside every run so that machine drift hits all alike.
//!
//! Phases: the base scenarios (1-4, 7), scenario 6's endpoint create latency, scenario 6's
//! large-range publish (which leaves the range in place), then the scale scenarios (5).

pub mod agent;
mod control;
mod docker;
mod measure;
mod report;
mod sys;
mod world;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};

use self::{
    measure::{Durations, Scenario},
    report::{Cell, ScenarioResult},
    world::{CONTENDERS, Worlds},
};

#[derive(Args)]
pub struct BenchArgs {
    /// A short version: 3 runs of 1 s per measurement.
    #[arg(long)]
    pub quick: bool,
    /// Tiny durations and counts: checks that the command works, measures nothing useful.
    #[arg(long)]
    pub smoke: bool,
    /// Where the JSON and the SVG chart are written.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Use this netdriver binary and skip setup and build.
    #[arg(long)]
    pub netdriver_bin: Option<PathBuf>,
    /// The measuring agent (default: this binary when --netdriver-bin is given, else a
    /// release build of xtask).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Measure only these scenarios (keys such as `masq_crr`, comma-separated); the control
    /// measurements (endpoint latency, publishing a range) are skipped then.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

struct Params {
    mode: &'static str,
    only: Vec<String>,
    runs: usize,
    d: Durations,
    sizes: control::Sizes,
}

impl Params {
    fn of(args: &BenchArgs) -> Self {
        let (mode, runs, secs, tput_secs) = if args.smoke {
            ("smoke", 1, 0.2, 1)
        } else if args.quick {
            ("quick", 3, 1.0, 1)
        } else {
            ("full", 5, 2.0, 2)
        };
        let sizes = control::Sizes {
            runs: if args.smoke { 1 } else { 3 },
            range_ports: if args.smoke { 200 } else { 10_000 },
            endpoints: match mode {
                "smoke" => 3,
                "quick" => 30,
                _ => 100,
            },
            endpoint_ports: if args.smoke { 5 } else { 50 },
            docker_endpoints: match mode {
                "smoke" => 1,
                "quick" => 3,
                _ => 5,
            },
        };
        Self {
            mode,
            only: args.only.clone(),
            runs,
            d: Durations { secs, tput_secs },
            sizes,
        }
    }
}

pub fn run(args: &BenchArgs, netdriver: &Path, agent: &Path) -> Result<()> {
    if !sys::is_root() {
        anyhow::bail!("cargo xtask bench needs root (network namespaces, BPF, iptables)");
    }
    docker::docker_proxy()?;
    let p = Params::of(args);
    let tag = format!("{}", std::process::id() % 10000);
    eprintln!("bench: {} mode, building the worlds (tag {tag})", p.mode);
    let worlds = Worlds {
        limit: world::Limit::new(&tag, agent)?,
        docker: world::Docker::new(&tag, agent)?,
        netdriver: world::Netdriver::new(&tag, agent, netdriver)?,
    };
    let mut results = scenarios(&worlds, agent, measure::BASE, &p);
    // The published range stays in place (`_bulk_ns`) for the scale scenarios.
    let (control, _bulk_ns) = if p.only.is_empty() {
        controls(&worlds, &tag, &p)
    } else {
        (json!({}), None)
    };
    results.extend(scenarios(&worlds, agent, measure::SCALE, &p));
    output(args, &p, &results, &control)
}

/// The control-plane measurements: endpoint create latency and publishing a port range.
fn controls(worlds: &Worlds, tag: &str, p: &Params) -> (Value, Option<sys::Ns>) {
    eprintln!("bench: endpoint create latency");
    // A failure here is reported, and the rest still runs.
    let latency = control::endpoint_latency(worlds, tag, &p.sizes).unwrap_or_else(|e| {
        eprintln!("bench: endpoint create latency failed: {e:#}");
        json!({ "error": format!("{e:#}") })
    });
    eprintln!("bench: publishing {} ports", p.sizes.range_ports);
    let (range, bulk_ns) = match control::publish_range(worlds, tag, &p.sizes) {
        Ok((range, ns)) => (range, Some(ns)),
        Err(e) => {
            eprintln!("bench: publishing the range failed: {e:#}");
            (json!({ "error": format!("{e:#}") }), None)
        }
    };
    let control = json!({ "publish_range": range, "endpoint_create": latency });
    (control, bulk_ns)
}

/// Every scenario `runs` times (those of `--only`, if given); inside a run each scenario visits the contenders in an
/// order that rotates from run to run.
fn scenarios(
    w: &Worlds,
    agent: &Path,
    list: &'static [Scenario],
    p: &Params,
) -> Vec<ScenarioResult> {
    let mut results: Vec<ScenarioResult> = list
        .iter()
        .filter(|s| p.only.is_empty() || p.only.iter().any(|k| k == s.key))
        .map(|scenario| ScenarioResult {
            scenario,
            cells: Default::default(),
        })
        .collect();
    for r in &mut results {
        for (i, who) in CONTENDERS.iter().enumerate() {
            let target = w.target(*who, r.scenario.route);
            if let Err(e) = measure::probe(agent, &target, r.scenario.kind) {
                eprintln!("bench: {} cannot do {}: {e:#}", who.name(), r.scenario.key);
                r.cells[i].unsupported = Some(format!("{e:#}"));
            }
        }
    }
    for run in 0..p.runs {
        eprintln!("bench: run {}/{}", run + 1, p.runs);
        for r in &mut results {
            for k in 0..CONTENDERS.len() {
                let i = (k + run) % CONTENDERS.len();
                measure_one(w, agent, r, i, p.d);
            }
        }
    }
    results
}

fn measure_one(w: &Worlds, agent: &Path, res: &mut ScenarioResult, idx: usize, d: Durations) {
    let cell: &mut Cell = &mut res.cells[idx];
    if cell.unsupported.is_some() {
        return;
    }
    let who = CONTENDERS[idx];
    let target = w.target(who, res.scenario.route);
    match measure::measure(agent, &target, res.scenario.kind, d) {
        Ok(sample) => cell.runs.push(sample),
        Err(err) => {
            eprintln!("bench: {} {} failed: {err:#}", who.name(), res.scenario.key);
            cell.errors.push(format!("{err:#}"));
        }
    }
}

fn output(args: &BenchArgs, p: &Params, results: &[ScenarioResult], control: &Value) -> Result<()> {
    let machine = machine();
    let table = report::table(results);
    let scale = report::scale_table(results, p.sizes.range_ports);
    // `--only` measures no controls.
    let control_md = if control.as_object().is_some_and(serde_json::Map::is_empty) {
        String::new()
    } else {
        control_table(control)
    };
    println!(
        "## netdriver bench ({} mode, median of {} runs)\n",
        p.mode, p.runs
    );
    println!("Machine: {}\n", machine["summary"].as_str().unwrap_or(""));
    println!("{table}\n{scale}\n{control_md}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let stamp = machine["unix_time"].as_u64().unwrap_or(0);
    let base = args.out.join(format!("bench-{}-{stamp}", p.mode));
    let json = json!({
        "mode": p.mode,
        "runs": p.runs,
        "measurement_secs": p.d.secs,
        "iperf_secs": p.d.tput_secs,
        "machine": machine,
        "scenarios": report::to_json(results),
        "control": control,
    });
    let json_path = base.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    let svg_path = base.with_extension("svg");
    let title = format!(
        "netdriver bench, {} mode, median of {} runs",
        p.mode, p.runs
    );
    std::fs::write(&svg_path, report::svg(results, &title))?;
    eprintln!(
        "bench: wrote {} and {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}

fn control_table(c: &Value) -> String {
    let mut failed = String::new();
    for (what, v) in [
        ("publishing the range", &c["publish_range"]),
        ("endpoint create latency", &c["endpoint_create"]),
    ] {
        if let Some(e) = v["error"].as_str() {
            let _ = writeln!(failed, "6. {what} FAILED: {e}\n");
        }
    }
    failed + &control_rows(c)
}

fn control_rows(c: &Value) -> String {
    let r = &c["publish_range"];
    let nd = &r["netdriver"];
    let dk = &r["docker-iptables"];
    let secs = |v: &Value| {
        let xs: Vec<f64> = v
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        report::median(&xs)
    };
    let mem = &nd["memory"][0];
    let mut s = format!(
        "| 6. publish a {}-port range on one endpoint | time (median) | daemon memory |\n| --- | ---: | ---: |\n",
        r["ports"]
    );
    let _ = writeln!(
        s,
        "| netdriver (`endpoint create -p A-B:A-B`, {} ports as one range) | {:.3} s | peak +{:.1} MiB, after +{:.1} MiB |",
        nd["stored_port_entries"],
        secs(&nd["secs"]),
        kib_mib(&mem["peak_extra_kib"]),
        kib_mib(&mem["rss_extra_kib"]),
    );
    let _ = write!(
        s,
        "| docker-iptables (`iptables-restore` of {} rules; {} docker-proxy processes not started) | {:.3} s | – |\n\n",
        dk["rules"],
        dk["proxies_needed"],
        secs(&dk["restore_secs"]),
    );
    s.push_str("| 6. endpoint create latency | n | p50 | p99 | max |\n| --- | ---: | ---: | ---: | ---: |\n");
    let lat = &c["endpoint_create"];
    if let Some(obj) = lat.as_object() {
        for v in obj.values() {
            for who in ["netdriver", "docker-iptables"] {
                let l = &v[who];
                let _ = writeln!(
                    s,
                    "| {who}, {} ports | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
                    v["ports"],
                    l["n"],
                    l["p50_ms"].as_f64().unwrap_or(f64::NAN),
                    l["p99_ms"].as_f64().unwrap_or(f64::NAN),
                    l["max_ms"].as_f64().unwrap_or(f64::NAN),
                );
            }
            if let Some(rss) = v["docker_proxy_mean_rss_kib"].as_f64().filter(|r| *r > 0.0) {
                let _ = writeln!(
                    s,
                    "| (each docker-proxy: {:.1} MiB RSS) | | | | |",
                    rss / 1024.0
                );
            }
        }
    }
    s
}

#[expect(clippy::cast_precision_loss, reason = "KiB counts far below 2^52")]
fn kib_mib(v: &Value) -> f64 {
    v.as_u64().map_or(f64::NAN, |k| k as f64 / 1024.0)
}

fn machine() -> Value {
    let sh = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(str::trim)
                    .map(String::from)
            })
        })
        .unwrap_or_default();
    let kernel = sh("uname", &["-r"]);
    let nproc = sh("nproc", &[]);
    let iptables = sh("iptables", &["-V"]);
    let iperf = sh("iperf3", &["--version"]);
    let iperf = iperf.lines().next().unwrap_or("").to_string();
    let unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "summary": format!("{nproc} × {cpu}, Linux {kernel}, {iptables}, {iperf}"),
        "cpu": cpu,
        "nproc": nproc,
        "kernel": kernel,
        "iptables": iptables,
        "iperf3": iperf,
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "unix_time": unix_time,
    })
}
