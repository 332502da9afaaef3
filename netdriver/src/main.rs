//! The `netdriver` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use netdriver::cli::{Cli, Command, DEFAULT_SOCKET};

fn main() -> ExitCode {
    if netdriver::cni::invoked_as_plugin() {
        return netdriver::cni::run(std::path::Path::new(DEFAULT_SOCKET));
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Cni => return netdriver::cni::run(&cli.socket),
        Command::Daemon(args) => run_daemon(&cli, args),
        Command::Cleanup(args) => run_cleanup(&cli, args),
        _ => netdriver::cli::run_client(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netdriver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_daemon(cli: &Cli, args: &netdriver::cli::DaemonArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = netdriver::service::Config {
        state_dir: args.state_dir.clone(),
        bpffs: args.bpffs.clone(),
        uplinks: args.uplinks.clone(),
        resolv_conf: args.resolv_conf.clone(),
        conntrack: args.conntrack(),
        cgroup: args.cgroup.clone(),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(netdriver::daemon::run(
            &cli.socket,
            config,
            netdriver::daemon::Options {
                plugin_socket: (!args.no_docker_plugin)
                    .then_some(args.docker_plugin_socket.as_path()),
                cleanup_on_exit: args.cleanup_on_exit,
            },
        ))
}

fn run_cleanup(cli: &Cli, args: &netdriver::cli::CleanupArgs) -> anyhow::Result<()> {
    netdriver::daemon::refuse_if_serving(&cli.socket)?;
    let config = netdriver::service::Config {
        state_dir: args.state_dir.clone(),
        bpffs: args.bpffs.clone(),
        uplinks: Vec::new(),
        resolv_conf: std::path::PathBuf::new(),
        conntrack: netdriver::service::ConntrackConfig::default(),
        cgroup: None,
    };
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(netdriver::service::cleanup_offline(&config))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "removed {} endpoint(s), {} network(s), interfaces: {}",
            report.endpoints,
            report.networks,
            report.interfaces.join(" ")
        );
    }
    Ok(())
}
