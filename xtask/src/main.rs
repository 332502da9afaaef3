//! `cargo xtask`: fresh-machine setup, build-and-run, the test suite and the benchmarks.
//!
//! Setup is idempotent: every step first checks whether its result is already there.

mod bench;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "netdriver build orchestration")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (nightly rust-src, bpf-linker, Debian packages) and nothing else.
    Setup,
    /// Set up, build in release mode, and run the daemon in the foreground with its defaults.
    BuildAndRun {
        /// Extra arguments for `netdriver daemon`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test: unit tests and the namespace integration tests.
    Test {
        /// Extra arguments for the test harness (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and measure netdriver against Docker's iptables path and a bare veth
    /// pair (Markdown on stdout, JSON and SVG into results/).
    Bench(bench::BenchArgs),
    /// The bench's measuring agent, run inside the bench's namespaces.
    #[command(hide = true, subcommand)]
    BenchAgent(bench::agent::AgentCmd),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.command {
        Cmd::Setup => setup::run().map(|_| ()),
        Cmd::BuildAndRun { args } => {
            let env = setup::run()?;
            build(&env)?;
            let bin = root.join("target/release/netdriver");
            let status = Command::new(bin).arg("daemon").args(args).status()?;
            check(status.success(), "netdriver daemon")
        }
        Cmd::Test { args } => {
            let env = setup::run()?;
            // The bench smoke test needs iperf3 and docker-proxy.
            setup::ensure_bench_packages()?;
            build(&env)?;
            test(&env, &root, &args)
        }
        Cmd::Bench(args) => bench_cmd(&args, &root),
        Cmd::BenchAgent(cmd) => bench::agent::run(&cmd),
    }
}

/// Without `--netdriver-bin`: set up (bench packages too), build netdriver and a release
/// xtask for the agent (a debug agent would measure itself), then run.
fn bench_cmd(args: &bench::BenchArgs, root: &Path) -> Result<()> {
    let (netdriver, agent) = if let Some(bin) = &args.netdriver_bin {
        (
            bin.clone(),
            args.agent_bin.clone().unwrap_or(std::env::current_exe()?),
        )
    } else {
        let env = setup::run()?;
        setup::ensure_bench_packages()?;
        build(&env)?;
        eprintln!("xtask: building the bench agent (release)");
        let status = cargo(&env)
            .args(["build", "--locked", "--release", "-p", "xtask"])
            .status()?;
        check(status.success(), "cargo build -p xtask")?;
        (
            root.join("target/release/netdriver"),
            args.agent_bin
                .clone()
                .unwrap_or_else(|| root.join("target/release/xtask")),
        )
    };
    bench::run(args, &netdriver, &agent)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo(env: &setup::Env) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    env.apply(&mut cmd);
    cmd
}

fn build(env: &setup::Env) -> Result<()> {
    eprintln!("xtask: building netdriver (release)");
    let status = cargo(env)
        .args(["build", "--locked", "--release", "-p", "netdriver"])
        .status()?;
    check(status.success(), "cargo build")
}

/// Unit tests of every host crate and the integration tests, which need root: the ones
/// marked `#[ignore]` (they need root and namespaces) run here too.
fn test(env: &setup::Env, root: &Path, args: &[String]) -> Result<()> {
    if !nix_is_root() {
        bail!("cargo xtask test needs root (network namespaces, BPF); run it as root");
    }
    let bin = root.join("target/release/netdriver");
    let status = cargo(env)
        .args([
            "test",
            "--locked",
            "--release",
            "-p",
            "netdriver-common",
            "-p",
            "netdriver",
            "-p",
            "netdriver-tests",
            "-p",
            "xtask",
        ])
        .env("NETDRIVER_BIN", &bin)
        // The bench smoke test runs `xtask bench --smoke` with this very binary.
        .env("XTASK_BIN", std::env::current_exe()?)
        .args(["--", "--include-ignored"])
        .args(args)
        .status()
        .context("running cargo test")?;
    check(status.success(), "tests")
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn check(ok: bool, what: &str) -> Result<()> {
    if ok { Ok(()) } else { bail!("{what} failed") }
}
