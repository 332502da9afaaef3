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
    // Refuse before touching anything when the sockets cannot be protected or are taken.
    for path in std::iter::once(socket).chain(options.plugin_socket) {
        refuse_if_serving(path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            check_private_dir(dir)?;
        }
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

/// Binds the socket with mode 0660 (root and the socket's group only), created under a
/// restrictive umask so it is never more open, in a directory nobody else can write to.
fn bind(socket: &Path) -> Result<UnixListener> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        check_private_dir(dir)?;
    }
    if socket.exists() {
        refuse_if_serving(socket)?;
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale {}", socket.display()))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
    let listener = UnixListener::bind(socket);
    nix::sys::stat::umask(old);
    let listener = listener.with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", socket.display()))?;
    let mode = std::fs::metadata(socket)?.permissions().mode() & 0o7777;
    if mode != 0o660 {
        bail!(
            "refusing to serve: {} has mode {mode:o}, not 660",
            socket.display()
        );
    }
    Ok(listener)
}

/// Refuses a socket directory that someone other than root (or us) owns, or that group or
/// others may write to without the sticky bit: they could replace the socket.
fn check_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        bail!(
            "refusing to serve: {} is owned by uid {}, not root",
            dir.display(),
            meta.uid()
        );
    }
    let mode = meta.mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        bail!(
            "refusing to serve: {} (mode {:o}) is writable by group or others, who could replace the socket",
            dir.display(),
            mode & 0o7777
        );
    }
    Ok(())
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
