//! The part of [`super`] that works inside a container's network namespace.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};
use rtnetlink::{Handle, LinkUnspec, packet_route::AddressFamily};
use tokio::{runtime, sync::oneshot};

use super::{Connection, LinkInfo, LinkRef, Netlink, NetlinkError, THREAD_NETNS, open_netns};

/// Everything done inside a container's namespace.
pub struct NetnsHandle {
    pub(super) netlink: Netlink,
    pub(super) path: PathBuf,
}

impl NetnsHandle {
    /// Opens a rtnetlink connection inside the network namespace whose file is `netns`. The
    /// socket is created from a dedicated std thread (setns there, create the socket, setns
    /// back); the connection then runs on the current tokio runtime.
    pub async fn open(netns: &Path) -> Result<Self, NetlinkError> {
        let runtime = runtime::Handle::try_current().map_err(NetlinkError::NoRuntime)?;
        let (connection, handle) = on_netns_thread(netns, "netns-open", move |path| {
            connect_in_netns(path, &runtime)
        })
        .await?;
        let netlink = Netlink::from_connection(connection, handle);
        Ok(Self {
            netlink,
            path: netns.to_owned(),
        })
    }

    pub(super) fn in_netns(&self, error: NetlinkError) -> NetlinkError {
        NetlinkError::InNetns {
            path: self.path.clone(),
            source: Box::new(error),
        }
    }

    /// Renames link `current` to `ifname`, sets its MAC, MTU (if given), adds
    /// `addr/prefix_len`, brings it and `lo` up, and adds a default route via `gateway`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the daemon's API: one call per container link"
    )]
    pub async fn configure_container_link(
        &self,
        current: &str,
        ifname: &str,
        mac: [u8; 6],
        addr: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
        mtu: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let configure = async {
            let index = self.rename(current, ifname, mac, mtu).await?;
            let netlink = &self.netlink;
            netlink.add_address(index, addr.into(), prefix_len).await?;
            netlink
                .set_state(index, LinkRef::Name(ifname.to_owned()), true)
                .await?;
            let lo = netlink.existing_link("lo").await?;
            netlink
                .set_state(lo.index, LinkRef::Name(lo.name), true)
                .await?;
            netlink.add_default_route(index, gateway).await
        };
        configure.await.map_err(|error| self.in_netns(error))
    }

    /// Sets link `current` down (the kernel refuses to rename a running link), renames it
    /// and sets its MAC and MTU; returns its index.
    async fn rename(
        &self,
        current: &str,
        ifname: &str,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> Result<u32, NetlinkError> {
        let link = self.netlink.existing_link(current).await?;
        let name = LinkRef::Name(current.to_owned());
        self.netlink.set_state(link.index, name, false).await?;
        let builder = LinkUnspec::new_with_index(link.index)
            .name(ifname)
            .address(mac.to_vec());
        let builder = match mtu {
            Some(mtu) => builder.mtu(mtu),
            None => builder,
        };
        let result = self
            .netlink
            .handle
            .link()
            .set(builder.build())
            .execute()
            .await;
        result.map_err(|source| NetlinkError::ConfigureLink {
            from: current.to_owned(),
            to: ifname.to_owned(),
            source: source.into(),
        })?;
        Ok(link.index)
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        let result = self.netlink.link_by_name(name).await;
        result.map_err(|error| self.in_netns(error))
    }

    /// The IPv4 and IPv6 addresses of link `index`, with their prefix lengths.
    pub async fn link_addresses(&self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        let lookup = async {
            let v4 = (self.netlink)
                .dump_addresses(
                    AddressFamily::Inet,
                    |a| super::ipv4_address(a).map(|n| (a.header.index, IpNet::V4(n))),
                    NetlinkError::ListAddresses,
                )
                .await?;
            let v6 = (self.netlink)
                .dump_addresses(
                    AddressFamily::Inet6,
                    |a| super::v6::ipv6_address(a).map(|n| (a.header.index, IpNet::V6(n))),
                    NetlinkError::ListAddresses6,
                )
                .await?;
            Ok(v4
                .into_iter()
                .chain(v6)
                .filter_map(|(i, n)| (i == index).then_some(n))
                .collect())
        };
        lookup.await.map_err(|error| self.in_netns(error))
    }

    /// Deletes link `name`; succeeds if it is already gone.
    pub async fn delete_link(&self, name: &str) -> Result<(), NetlinkError> {
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(());
        };
        let result = self
            .netlink
            .delete(link.index, LinkRef::Name(link.name))
            .await;
        result.map_err(|error| self.in_netns(error))
    }
}

/// Runs on a dedicated thread: enters `path`, creates a rtnetlink socket there (registered
/// with `runtime`'s reactor) and returns to the thread's original namespace.
fn connect_in_netns(
    path: &Path,
    runtime: &runtime::Handle,
) -> Result<(Connection, Handle), NetlinkError> {
    in_netns(path, || {
        let _entered = runtime.enter();
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::InNetns {
                path: path.to_owned(),
                source: Box::new(NetlinkError::Connect(source)),
            })?;
        Ok((connection, handle))
    })
}

/// Runs `f(netns)` on a dedicated std thread and returns its result: namespace-bound work
/// (setns, sysctls under /proc/sys/net) must not move a tokio worker thread.
pub(super) async fn on_netns_thread<T: Send + 'static>(
    netns: &Path,
    name: &str,
    f: impl FnOnce(&Path) -> Result<T, NetlinkError> + Send + 'static,
) -> Result<T, NetlinkError> {
    let path = netns.to_owned();
    let (sender, receiver) = oneshot::channel();
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // Fails only if the caller was cancelled; the result is then simply dropped
            // (an opened socket closed).
            let _ = sender.send(f(&thread_path));
        })
        .map_err(|source| NetlinkError::SpawnNetnsThread {
            path: path.clone(),
            source,
        })?;
    receiver
        .await
        .map_err(|source| NetlinkError::NetnsThread { path, source })?
}

/// Runs `f` inside `path`'s namespace and returns to the thread's own (whose error, if
/// leaving fails, wins over `f`'s result).
pub(super) fn in_netns<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, NetlinkError>,
) -> Result<T, NetlinkError> {
    let target = open_netns(path)?;
    let original = open_netns(Path::new(THREAD_NETNS))?;
    setns(&target, CloneFlags::CLONE_NEWNET).map_err(|source| NetlinkError::EnterNetns {
        path: path.to_owned(),
        source,
    })?;
    let result = f();
    setns(&original, CloneFlags::CLONE_NEWNET).map_err(|source| NetlinkError::LeaveNetns {
        path: path.to_owned(),
        source,
    })?;
    result
}
