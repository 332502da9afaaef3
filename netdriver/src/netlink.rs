//! Bridges, veth pairs, addresses and routes over rtnetlink.
//!
//! [`Netlink`] works in the namespace the daemon runs in. [`NetnsHandle`] works inside a
//! container's namespace: its socket is created there from a dedicated thread (a netlink
//! socket stays bound to the namespace it was created in), and then used from tokio like any
//! other. No tokio worker ever calls `setns`.

use std::{
    fmt,
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, RawFd},
    path::{Path, PathBuf},
};

use futures::{TryStreamExt, future};
use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        address::{AddressAttribute, AddressMessage},
        link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage},
    },
};
use tokio::{runtime, sync::oneshot};

pub use self::{
    ethtool::set_gro,
    netns::NetnsHandle,
    v6::{enable_ipv6, enable_ipv6_forwarding},
};

mod ethtool;
mod netns;
mod v6;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
/// The network namespace of the calling thread (not of the process: `setns` is per thread).
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

type Connection = rtnetlink::proto::Connection<RouteNetlinkMessage>;

/// A link named by index or by name, for error messages.
#[derive(Debug, Clone)]
pub enum LinkRef {
    Index(u32),
    Name(String),
}

impl fmt::Display for LinkRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Index(index) => write!(f, "with index {index}"),
            Self::Name(name) => write!(f, "{name:?}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a rtnetlink connection: not called from within a tokio runtime")]
    NoRuntime(#[source] runtime::TryCurrentError),
    #[error("opening a rtnetlink connection")]
    Connect(#[source] io::Error),
    #[error("listing links")]
    ListLinks(#[source] Box<rtnetlink::Error>),
    #[error("looking up link {link}")]
    GetLink {
        link: LinkRef,
        source: Box<rtnetlink::Error>,
    },
    #[error("link {link} does not exist")]
    LinkNotFound { link: LinkRef },
    #[error("creating bridge {name:?}: an interface with that name already exists")]
    LinkExists {
        name: String,
        source: Box<rtnetlink::Error>,
    },
    #[error("creating bridge {name:?}")]
    CreateBridge {
        name: String,
        source: Box<rtnetlink::Error>,
    },
    #[error("creating veth pair {host:?} (peer {peer:?})")]
    CreateVeth {
        host: String,
        peer: String,
        source: Box<rtnetlink::Error>,
    },
    #[error("adding address {addr}/{prefix_len} to link with index {index}")]
    AddAddress {
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
        source: Box<rtnetlink::Error>,
    },
    #[error("setting link {link} {}", if *up { "up" } else { "down" })]
    SetState {
        link: LinkRef,
        up: bool,
        source: Box<rtnetlink::Error>,
    },
    #[error("attaching link with index {index} to master with index {master}")]
    SetMaster {
        index: u32,
        master: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error("setting the MAC address of link with index {index}")]
    SetMac {
        index: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error("renaming link {from:?} to {to:?} and setting its MAC address and MTU")]
    ConfigureLink {
        from: String,
        to: String,
        source: Box<rtnetlink::Error>,
    },
    #[error("ethtool on {ifname}")]
    Ethtool { ifname: String, source: io::Error },
    #[error("deleting link {link}")]
    DeleteLink {
        link: LinkRef,
        source: Box<rtnetlink::Error>,
    },
    #[error("moving link with index {index} into network namespace {}", path.display())]
    MoveToNetns {
        index: u32,
        path: PathBuf,
        source: Box<rtnetlink::Error>,
    },
    #[error("adding default route via {gateway} on link with index {index}")]
    AddDefaultRoute {
        gateway: IpAddr,
        index: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error("listing IPv4 routes")]
    ListRoutes(#[source] Box<rtnetlink::Error>),
    #[error("listing IPv4 addresses")]
    ListAddresses(#[source] Box<rtnetlink::Error>),
    #[error("listing IPv6 routes")]
    ListRoutes6(#[source] Box<rtnetlink::Error>),
    #[error("listing IPv6 addresses")]
    ListAddresses6(#[source] Box<rtnetlink::Error>),
    #[error("opening network namespace file {}", path.display())]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("entering network namespace {} (is it a network namespace file?)", path.display())]
    EnterNetns { path: PathBuf, source: Errno },
    #[error("returning from network namespace {} to the original one", path.display())]
    LeaveNetns { path: PathBuf, source: Errno },
    #[error("spawning a thread to enter network namespace {}", path.display())]
    SpawnNetnsThread { path: PathBuf, source: io::Error },
    #[error("the thread entering network namespace {} died", path.display())]
    NetnsThread {
        path: PathBuf,
        source: oneshot::error::RecvError,
    },
    #[error("in network namespace {}", path.display())]
    InNetns {
        path: PathBuf,
        source: Box<NetlinkError>,
    },
    #[error("reading {path}")]
    ReadSysctl {
        path: &'static str,
        source: io::Error,
    },
    #[error("writing {path}")]
    WriteSysctl {
        path: &'static str,
        source: io::Error,
    },
    #[error("writing {path} (is IPv6 enabled in this kernel?)")]
    WriteIfSysctl { path: String, source: io::Error },
    #[error("parsing {path}: unexpected content {value:?}")]
    ParseSysctl { path: &'static str, value: String },
}

/// What the daemon needs to know about a link.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: "bridge", "veth", ...; `None` for physical devices and `lo`.
    pub kind: Option<String>,
    pub master: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// The administrative state (`IFF_UP`), not the carrier.
    pub up: bool,
}

impl LinkInfo {
    fn from_message(message: &LinkMessage) -> Self {
        let mut info = Self {
            index: message.header.index,
            name: String::new(),
            kind: None,
            master: None,
            mac: None,
            mtu: None,
            up: message.header.flags.contains(LinkFlags::Up),
        };
        for attribute in &message.attributes {
            info.apply(attribute);
        }
        info
    }

    fn apply(&mut self, attribute: &LinkAttribute) {
        match attribute {
            LinkAttribute::IfName(name) => self.name.clone_from(name),
            LinkAttribute::Controller(master) => self.master = Some(*master),
            LinkAttribute::Address(mac) => self.mac = mac.as_slice().try_into().ok(),
            LinkAttribute::Mtu(mtu) => self.mtu = Some(*mtu),
            LinkAttribute::LinkInfo(infos) => {
                self.kind = infos.iter().find_map(|info| match info {
                    NlLinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
}

/// Whether a netlink request failed with `errno`.
fn is_errno(error: &rtnetlink::Error, errno: Errno) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(message) if message.raw_code() == -(errno as i32))
}

/// A rtnetlink connection to the namespace it was opened in.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a rtnetlink connection in the current namespace; spawns the connection task on the
    /// current tokio runtime.
    pub fn new() -> Result<Self, NetlinkError> {
        let runtime = runtime::Handle::try_current().map_err(NetlinkError::NoRuntime)?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        runtime.spawn(connection);
        Ok(Self { handle })
    }

    fn from_connection(connection: Connection, handle: Handle) -> Self {
        tokio::spawn(connection);
        Self { handle }
    }

    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let messages = self.handle.link().get().execute();
        messages
            .map_ok(|message| LinkInfo::from_message(&message))
            .try_collect()
            .await
            .map_err(|source| NetlinkError::ListLinks(source.into()))
    }

    /// `None` when no link has that name.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        let mut messages = self.handle.link().get().match_name(name).execute();
        match messages.try_next().await {
            Ok(message) => Ok(message.as_ref().map(LinkInfo::from_message)),
            Err(error) if is_errno(&error, Errno::ENODEV) => Ok(None),
            Err(source) => Err(NetlinkError::GetLink {
                link: LinkRef::Name(name.to_owned()),
                source: source.into(),
            }),
        }
    }

    /// Like [`Self::link_by_name`], for a link that must exist.
    async fn existing_link(&self, name: &str) -> Result<LinkInfo, NetlinkError> {
        self.link_by_name(name)
            .await?
            .ok_or_else(|| NetlinkError::LinkNotFound {
                link: LinkRef::Name(name.to_owned()),
            })
    }

    /// Creates a Linux bridge, left down (the caller adds its address, then calls
    /// [`Self::set_up`]). Fails with [`NetlinkError::LinkExists`] if the name is taken.
    /// Its MAC is random and set explicitly, as Docker does: a bridge whose MAC nobody set
    /// takes the lowest MAC of its ports, which changes as containers come and go (and the
    /// data path tells frames to the host by the bridge's MAC).
    pub async fn create_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
    ) -> Result<LinkInfo, NetlinkError> {
        let builder =
            LinkMessageBuilder::<LinkBridge>::new(name).address(crate::ipam::random_mac().to_vec());
        let builder = match mtu {
            Some(mtu) => builder.mtu(mtu),
            None => builder,
        };
        let result = self.handle.link().add(builder.build()).execute().await;
        result.map_err(|source| {
            let name = name.to_owned();
            if is_errno(&source, Errno::EEXIST) {
                NetlinkError::LinkExists {
                    name,
                    source: source.into(),
                }
            } else {
                NetlinkError::CreateBridge {
                    name,
                    source: source.into(),
                }
            }
        })?;
        self.existing_link(name).await
    }

    pub async fn add_address(
        &self,
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let request = self.handle.address().add(index, addr, prefix_len);
        request
            .execute()
            .await
            .map_err(|source| NetlinkError::AddAddress {
                index,
                addr,
                prefix_len,
                source: source.into(),
            })
    }

    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.set_state(index, LinkRef::Index(index), true).await
    }

    async fn set_state(&self, index: u32, link: LinkRef, up: bool) -> Result<(), NetlinkError> {
        let builder = LinkUnspec::new_with_index(index);
        let builder = if up { builder.up() } else { builder.down() };
        let result = self.handle.link().set(builder.build()).execute().await;
        result.map_err(|source| NetlinkError::SetState {
            link,
            up,
            source: source.into(),
        })
    }

    pub async fn set_master(&self, index: u32, master: u32) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index).controller(master).build();
        let result = self.handle.link().set(message).execute().await;
        result.map_err(|source| NetlinkError::SetMaster {
            index,
            master,
            source: source.into(),
        })
    }

    /// Sets a link's MAC address. On a bridge this also pins the MAC (setting the one it
    /// has keeps it from following its ports).
    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        let result = self.handle.link().set(message).execute().await;
        result.map_err(|source| NetlinkError::SetMac {
            index,
            source: source.into(),
        })
    }

    /// Deletes a link; succeeds if it is already gone. Deleting either end of a veth pair
    /// deletes both.
    pub async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.delete(index, LinkRef::Index(index)).await
    }

    async fn delete(&self, index: u32, link: LinkRef) -> Result<(), NetlinkError> {
        match self.handle.link().del(index).execute().await {
            Err(error) if !is_errno(&error, Errno::ENODEV) => Err(NetlinkError::DeleteLink {
                link,
                source: error.into(),
            }),
            _ => Ok(()),
        }
    }

    /// Creates a veth pair in the current namespace with both ends named, MTU set on both if
    /// given; returns (host end, peer end).
    pub async fn create_veth(
        &self,
        host: &str,
        peer: &str,
        mtu: Option<u32>,
    ) -> Result<(LinkInfo, LinkInfo), NetlinkError> {
        self.handle
            .link()
            .add(veth_message(host, peer, mtu))
            .execute()
            .await
            .map_err(|source| NetlinkError::CreateVeth {
                host: host.to_owned(),
                peer: peer.to_owned(),
                source: source.into(),
            })?;
        Ok((
            self.existing_link(host).await?,
            self.existing_link(peer).await?,
        ))
    }

    /// Creates a veth pair whose peer end is born in the network namespace whose file is
    /// `netns` (no later move: moving a link between namespaces costs the kernel an RCU grace
    /// period, about 15 ms); both ends named, MTU set on both if given; returns the host end.
    pub async fn create_veth_into(
        &self,
        host: &str,
        peer: &str,
        mtu: Option<u32>,
        netns: &Path,
    ) -> Result<LinkInfo, NetlinkError> {
        let file = open_netns(netns)?;
        let message = veth_message_into(host, peer, mtu, Some(file.as_raw_fd()));
        // `file` stays open until the kernel has answered.
        let result = self.handle.link().add(message).execute().await;
        drop(file);
        result.map_err(|source| NetlinkError::CreateVeth {
            host: host.to_owned(),
            peer: peer.to_owned(),
            source: source.into(),
        })?;
        self.existing_link(host).await
    }

    /// Moves a link into the network namespace whose file is `netns` (e.g.
    /// /var/run/netns/X), by fd.
    pub async fn move_to_netns(&self, index: u32, netns: &Path) -> Result<(), NetlinkError> {
        let file = open_netns(netns)?;
        let message = LinkUnspec::new_with_index(index)
            .setns_by_fd(file.as_raw_fd())
            .build();
        // `file` stays open until the kernel has answered.
        let result = self.handle.link().set(message).execute().await;
        drop(file);
        result.map_err(|source| NetlinkError::MoveToNetns {
            index,
            path: netns.to_owned(),
            source: source.into(),
        })
    }

    /// Destinations of every IPv4 route in every table, to pick a free address pool. Default
    /// routes (0.0.0.0/0) are left out: they overlap everything (Docker skips them too).
    pub async fn ipv4_routes(&self) -> Result<Vec<Ipv4Net>, NetlinkError> {
        // Without NETLINK_GET_STRICT_CHK the kernel ignores the table in a dump request and
        // dumps all of them, like `ip route show table all`.
        let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
        self.dump_routes(request, route_destination, NetlinkError::ListRoutes)
            .await
    }

    /// Addresses (with their prefix length) of every interface.
    pub async fn ipv4_addresses(&self) -> Result<Vec<Ipv4Net>, NetlinkError> {
        self.dump_addresses(
            AddressFamily::Inet,
            ipv4_address,
            NetlinkError::ListAddresses,
        )
        .await
    }

    /// Adds `default via gateway dev <index>` to the main table.
    async fn add_default_route(&self, index: u32, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.add_default(route, index, gateway.into()).await
    }

    /// Adds `route`, a default route via `gateway` out of `index` (either family). When the
    /// namespace already has one (the container's attachment to another network), that one
    /// stays: one default gateway per container, as Docker gives it.
    async fn add_default(
        &self,
        route: RouteMessage,
        index: u32,
        gateway: IpAddr,
    ) -> Result<(), NetlinkError> {
        let result = self.handle.route().add(route).execute().await;
        if let Err(e) = &result
            && is_errno(e, Errno::EEXIST)
        {
            tracing::info!(%gateway, index, "the namespace has a default route already; keeping it");
            return Ok(());
        }
        result.map_err(|source| NetlinkError::AddDefaultRoute {
            gateway,
            index,
            source: source.into(),
        })
    }

    /// Dumps the routes `request` selects and keeps what `pick` makes of each (either family).
    async fn dump_routes<N>(
        &self,
        request: RouteMessage,
        pick: fn(&RouteMessage) -> Option<N>,
        error: fn(Box<rtnetlink::Error>) -> NetlinkError,
    ) -> Result<Vec<N>, NetlinkError> {
        let routes = self.handle.route().get(request).execute();
        routes
            .try_filter_map(|route| future::ready(Ok(pick(&route))))
            .try_collect()
            .await
            .map_err(|source| error(source.into()))
    }

    /// Dumps the addresses of `family` on every interface and keeps what `pick` makes of each.
    async fn dump_addresses<N>(
        &self,
        family: AddressFamily,
        pick: fn(&AddressMessage) -> Option<N>,
        error: fn(Box<rtnetlink::Error>) -> NetlinkError,
    ) -> Result<Vec<N>, NetlinkError> {
        let mut request = self.handle.address().get();
        request.message_mut().header.family = family;
        request
            .execute()
            .try_filter_map(|address| future::ready(Ok(pick(&address))))
            .try_collect()
            .await
            .map_err(|source| error(source.into()))
    }
}

fn veth_message(host: &str, peer: &str, mtu: Option<u32>) -> LinkMessage {
    veth_message_into(host, peer, mtu, None)
}

/// The veth message; with `netns_fd`, the peer is created in that namespace.
fn veth_message_into(
    host: &str,
    peer: &str,
    mtu: Option<u32>,
    netns_fd: Option<RawFd>,
) -> LinkMessage {
    // `LinkVeth::new` names the peer but gives it no attributes, and the kernel does not
    // copy the MTU to the peer: build the peer message ourselves.
    let peer_builder = LinkUnspec::new_with_name(peer);
    let peer_builder = match netns_fd {
        Some(fd) => peer_builder.setns_by_fd(fd),
        None => peer_builder,
    };
    let builder = LinkVeth::new(host, peer);
    let (peer_builder, builder) = match mtu {
        Some(mtu) => (peer_builder.mtu(mtu), builder.mtu(mtu)),
        None => (peer_builder, builder),
    };
    let peer = InfoData::Veth(InfoVeth::Peer(peer_builder.build()));
    builder.set_info_data(peer).build()
}

fn route_destination(route: &RouteMessage) -> Option<Ipv4Net> {
    let prefix_len = route.header.destination_prefix_length;
    if route.header.address_family != AddressFamily::Inet || prefix_len == 0 {
        return None;
    }
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(addr)) => {
                Ipv4Net::new(*addr, prefix_len).ok()
            }
            _ => None,
        })
}

fn ipv4_address(address: &AddressMessage) -> Option<Ipv4Net> {
    let find = |local: bool| {
        address
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                AddressAttribute::Local(IpAddr::V4(addr)) if local => Some(*addr),
                AddressAttribute::Address(IpAddr::V4(addr)) if !local => Some(*addr),
                _ => None,
            })
    };
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only on
    // point-to-point links, where it is the peer's.
    let addr = find(true).or_else(|| find(false))?;
    Ipv4Net::new(addr, address.header.prefix_len).ok()
}

fn open_netns(path: &Path) -> Result<File, NetlinkError> {
    File::open(path).map_err(|source| NetlinkError::OpenNetns {
        path: path.to_owned(),
        source,
    })
}

/// Writes "1" to `/proc/sys/net/ipv4/ip_forward` (of the calling thread's namespace).
pub fn enable_ipv4_forwarding() -> Result<(), NetlinkError> {
    std::fs::write(IP_FORWARD, "1").map_err(|source| NetlinkError::WriteSysctl {
        path: IP_FORWARD,
        source,
    })
}

/// Reads `net.ipv4.ip_local_port_range` of the calling thread's namespace.
pub fn ip_local_port_range() -> Result<(u16, u16), NetlinkError> {
    let text = std::fs::read_to_string(PORT_RANGE).map_err(|source| NetlinkError::ReadSysctl {
        path: PORT_RANGE,
        source,
    })?;
    parse_port_range(&text).ok_or(NetlinkError::ParseSysctl {
        path: PORT_RANGE,
        value: text,
    })
}

fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut ports = text.split_whitespace().map(str::parse::<u16>);
    match (ports.next(), ports.next(), ports.next()) {
        (Some(Ok(low)), Some(Ok(high)), None) if low <= high => Some((low, high)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
