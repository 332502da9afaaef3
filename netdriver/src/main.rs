//! The `netdriver` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use netdriver::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Daemon(args) => run_daemon(&cli, args),
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
        cgroup: args.cgroup.clone(),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(netdriver::daemon::run(&cli.socket, config))
}
