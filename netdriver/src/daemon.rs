//! `netdriver daemon`: serves the API on a unix socket until SIGINT or SIGTERM.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::{net::UnixListener, signal::unix::SignalKind};

use crate::service::{Config, Service};

/// How often new interfaces are looked for (uplinks that appear later).
const UPLINK_POLL: Duration = Duration::from_secs(2);

/// Options of the daemon beyond the service's own configuration.
#[derive(Debug, Clone, Default)]
pub struct Options<'a> {
    /// Also serve Docker's plugin protocol on this socket.
    pub plugin_socket: Option<&'a Path>,
    /// Remove everything netdriver made when stopping.
    pub cleanup_on_exit: bool,
}

pub async fn run(socket: &Path, config: Config, options: Options<'_>) -> Result<()> {
    refuse_if_serving(socket)?;
    if let Some(path) = options.plugin_socket {
        refuse_if_serving(path)?;
    }
    let service = Arc::new(
        Service::start(config)
            .await
            .context("starting the daemon")?,
    );
    // The sockets appear only once the state is restored: a client that can connect is served.
    let listener = bind(socket)?;
    let plugin_listener = options.plugin_socket.map(bind).transpose()?;
    tracing::info!(socket = %socket.display(), "netdriver daemon ready");
    let poller = tokio::spawn(poll_uplinks(Arc::clone(&service)));
    let plugin = plugin_listener.map(|l| {
        tracing::info!(socket = %options.plugin_socket.unwrap_or(socket).display(), "docker plugin ready");
        tokio::spawn(serve_plugin(l, Arc::clone(&service)))
    });
    let sweeper = tokio::spawn(sweep_conntrack(Arc::clone(&service)));
    let served = axum::serve(listener, crate::api::router(Arc::clone(&service)))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    poller.abort();
    sweeper.abort();
    let _ = std::fs::remove_file(socket);
    if let (Some(task), Some(path)) = (plugin, options.plugin_socket) {
        task.abort();
        let _ = std::fs::remove_file(path);
    }
    service
        .shutdown(options.cleanup_on_exit)
        .await
        .context("shutting down")?;
    tracing::info!("netdriver daemon stopped");
    served.context("serving the API")
}

/// Binds the socket with mode 0660 (root and the socket's group only).
fn bind(socket: &Path) -> Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if socket.exists() {
        refuse_if_serving(socket)?;
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale {}", socket.display()))?;
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", socket.display()))?;
    Ok(listener)
}

/// Refuses when a daemon answers on `socket`.
pub fn refuse_if_serving(socket: &Path) -> Result<()> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        bail!("another daemon is serving {}", socket.display());
    }
    Ok(())
}

async fn serve_plugin(listener: UnixListener, service: Arc<Service>) {
    if let Err(e) = axum::serve(listener, crate::plugin::router(service)).await {
        tracing::error!("serving the docker plugin: {e}");
    }
}

async fn poll_uplinks(service: Arc<Service>) {
    let mut tick = tokio::time::interval(UPLINK_POLL);
    loop {
        tick.tick().await;
        if let Err(e) = service.refresh_uplinks().await {
            tracing::warn!("refreshing uplinks: {e}");
        }
    }
}

/// Removes expired conntrack entries and reports refused flows.
async fn sweep_conntrack(service: Arc<Service>) {
    let mut tick = tokio::time::interval(service.sweep_interval().await);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = service.sweep_conntrack().await {
            tracing::warn!("sweeping conntrack: {e}");
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown requested");
}

/// Default paths.
#[must_use]
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/netdriver/netdriver.sock")
}
