//! IPv6: addresses without duplicate address detection, default routes, the host routes
//! and addresses a default IPv6 pool must avoid, and the per-interface IPv6 sysctls (also
//! inside a container's namespace, from a dedicated thread).

use std::{
    net::{IpAddr, Ipv6Addr},
    path::Path,
};

use ipnet::Ipv6Net;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressFlags, AddressMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage},
    },
};

use super::{
    Netlink, NetlinkError, NetnsHandle,
    netns::{in_netns, on_netns_thread},
};

const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

impl Netlink {
    /// Adds `addr/prefix_len` with `nodad`: usable at once, as Docker's bridge does (no
    /// other host may hold it on the network: IPAM hands it out).
    pub async fn add_address6(
        &self,
        index: u32,
        addr: Ipv6Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let mut request = self.handle.address().add(index, addr.into(), prefix_len);
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        request
            .execute()
            .await
            .map_err(|source| NetlinkError::AddAddress {
                index,
                addr: addr.into(),
                prefix_len,
                source: source.into(),
            })
    }

    /// Adds `default via gateway dev <index>` (IPv6) to the main table.
    pub(super) async fn add_default_route6(
        &self,
        index: u32,
        gateway: Ipv6Addr,
    ) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.add_default(route, index, gateway.into()).await
    }

    /// Destinations of every IPv6 route in every table but default routes, link-local and
    /// multicast ones (what a default IPv6 pool must not overlap).
    pub async fn ipv6_routes(&self) -> Result<Vec<Ipv6Net>, NetlinkError> {
        let request = RouteMessageBuilder::<Ipv6Addr>::new().build();
        self.dump_routes(request, route_destination6, NetlinkError::ListRoutes6)
            .await
    }

    /// IPv6 addresses (with their prefix length) of every interface.
    pub async fn ipv6_addresses(&self) -> Result<Vec<Ipv6Net>, NetlinkError> {
        self.dump_addresses(
            AddressFamily::Inet6,
            ipv6_address,
            NetlinkError::ListAddresses6,
        )
        .await
    }
}

impl NetnsHandle {
    /// Gives the container's interface its IPv6 address (no DAD) and a default IPv6 route
    /// via `gateway`; IPv6 is enabled on the interface first (a namespace may start with it
    /// disabled). The interface must be up (`configure_container_link`).
    pub async fn configure_container_ipv6(
        &self,
        ifname: &str,
        addr: Ipv6Addr,
        prefix_len: u8,
        gateway: Ipv6Addr,
    ) -> Result<(), NetlinkError> {
        let configure = async {
            enable_ipv6_in(&self.path, ifname).await?;
            let index = self.netlink.existing_link(ifname).await?.index;
            self.netlink.add_address6(index, addr, prefix_len).await?;
            self.netlink.add_default_route6(index, gateway).await
        };
        configure.await.map_err(|error| self.in_netns(error))
    }
}

/// Writes "1" to `net.ipv6.conf.all.forwarding` (of the calling thread's namespace). Note
/// that this turns off router advertisements on the namespace's interfaces, as on any router.
pub fn enable_ipv6_forwarding() -> Result<(), NetlinkError> {
    std::fs::write(IPV6_FORWARD, "1").map_err(|source| NetlinkError::WriteSysctl {
        path: IPV6_FORWARD,
        source,
    })
}

/// Sets `net.ipv6.conf.<ifname>.disable_ipv6` to 0 in the calling thread's namespace.
pub fn enable_ipv6(ifname: &str) -> Result<(), NetlinkError> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    std::fs::write(&path, "0").map_err(|source| NetlinkError::WriteIfSysctl { path, source })
}

/// [`enable_ipv6`] inside the namespace `netns`, from a dedicated thread (sysctls under
/// /proc/sys/net belong to the namespace of the thread that opens them).
async fn enable_ipv6_in(netns: &Path, ifname: &str) -> Result<(), NetlinkError> {
    let ifname = ifname.to_owned();
    on_netns_thread(netns, "netns-sysctl", move |path| {
        in_netns(path, || enable_ipv6(&ifname))
    })
    .await
}

fn route_destination6(route: &RouteMessage) -> Option<Ipv6Net> {
    let prefix_len = route.header.destination_prefix_length;
    if route.header.address_family != AddressFamily::Inet6 || prefix_len == 0 {
        return None;
    }
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Destination(RouteAddress::Inet6(addr)) => {
                Ipv6Net::new(*addr, prefix_len).ok()
            }
            _ => None,
        })
        .filter(|net| !is_link_scope(net))
}

pub(super) fn ipv6_address(address: &AddressMessage) -> Option<Ipv6Net> {
    address
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            AddressAttribute::Address(IpAddr::V6(addr)) => {
                Ipv6Net::new(*addr, address.header.prefix_len).ok()
            }
            _ => None,
        })
        .filter(|net| !is_link_scope(net))
}

/// Link-local and multicast prefixes are on every interface and never clash with a ULA.
fn is_link_scope(net: &Ipv6Net) -> bool {
    let first = net.addr().segments()[0];
    first & 0xffc0 == 0xfe80 || first & 0xff00 == 0xff00
}
