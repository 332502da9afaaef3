//! `cargo xtask bench --smoke` works: it builds its namespaces, measures every scenario on
//! every contender (or says why a contender cannot), writes its JSON and SVG, and leaves
//! nothing behind. Durations are tiny and nothing here looks at a measured value's size.

mod common;

use std::{path::PathBuf, process::Command};

use serde_json::Value;

fn xtask_bin() -> PathBuf {
    let bin = std::env::var_os("XTASK_BIN").map(PathBuf::from);
    let bin = bin.expect("XTASK_BIN is not set: run this test through `cargo xtask test`");
    assert!(bin.is_file(), "xtask binary {} missing", bin.display());
    bin
}

fn netns_names() -> Vec<String> {
    let out = common::run("ip", &["netns", "list"]);
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("ndb"))
        .map(String::from)
        .collect()
}

#[test]
fn bench_smoke_run_reports_every_scenario() {
    common::require_root();
    let out_dir = std::env::temp_dir().join(format!("nd-bench-smoke-{}", std::process::id()));
    let before = netns_names();
    let out = Command::new(xtask_bin())
        .args(["bench", "--smoke", "--netdriver-bin"])
        .arg(common::netdriver_bin())
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("run xtask bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("| # | scenario | metric | limit | docker-iptables | netdriver |"));
    assert!(stdout.contains("endpoint create latency"), "{stdout}");

    let files: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let json = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON file");
    let svg = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "svg"))
        .expect("an SVG file");
    assert!(std::fs::read_to_string(svg).unwrap().starts_with("<svg"));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let scenarios = report["scenarios"].as_array().unwrap();
    assert!(scenarios.len() >= 18, "{} scenarios", scenarios.len());
    for s in scenarios {
        for who in ["limit", "docker-iptables", "netdriver"] {
            let c = &s["contenders"][who];
            let measured = c["runs"].as_array().is_some_and(|r| !r.is_empty());
            let unsupported = c["unsupported"].as_str().is_some_and(|r| !r.is_empty());
            assert!(
                measured || unsupported,
                "{who} has neither a number nor a reason for {}: {c}",
                s["key"]
            );
            // The bare veth pair and Docker's path do everything the scenarios ask.
            if who != "netdriver" {
                assert!(measured, "{who} did not measure {}: {c}", s["key"]);
            }
        }
        // The published port from outside is netdriver's core feature.
        if s["key"] == "ext_crr" || s["key"] == "ext_rr_udp" {
            assert!(s["contenders"]["netdriver"]["unsupported"].is_null(), "{s}");
        }
    }
    let control = &report["control"];
    assert_eq!(
        control["publish_range"]["netdriver"]["stored_port_entries"],
        control["publish_range"]["ports"]
    );
    assert!(control["endpoint_create"]["ports_0"]["netdriver"]["n"].as_u64() > Some(0));

    let _ = std::fs::remove_dir_all(&out_dir);
    let after: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert!(after.is_empty(), "bench left namespaces behind: {after:?}");
}
