//! The Docker plugin protocol with IPv6 (`docker network create --ipv6`): IPAM pools and
//! addresses for IPv6, `IPv6Data` at `CreateNetwork`, `AddressIPv6` at `CreateEndpoint`,
//! `GatewayIPv6` at `Join`; then two containers configured as dockerd would talk over IPv6.

mod common;

use common::{Netns, PluginConn, TIMEOUT, TcpServer, World, tcp_request};
use serde_json::{Value, json};

const NET_ID: &str = "6666666666abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const EP_A: &str = "aaaaaaaaaa543210fedcba9876543210fedcba9876543210fedcba9876543210";
const EP_B: &str = "bbbbbbbbbb543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn fails(conn: &mut PluginConn, call: &str, body: &Value, needle: &str) {
    let (status, v) = conn.call(call, body);
    let msg = v["Err"].as_str().unwrap_or_default();
    assert!(status >= 400, "{call}: {v}");
    assert!(
        msg.contains(needle),
        "{call}: {msg:?} should mention {needle:?}"
    );
}

#[test]
fn ipam_hands_out_ipv6_pools_and_addresses() {
    let world = World::new();
    let d = world.daemon();
    let mut c = PluginConn::open(&d);
    let picked = c.ok("IpamDriver.RequestPool",
        &json!({"AddressSpace": "netdriver-local", "Pool": "", "SubPool": "", "Options": {}, "V6": true}),
    );
    let pool = picked["Pool"].as_str().unwrap();
    assert!(pool.starts_with("fd") && pool.ends_with("::/64"), "{pool}");
    let given = c.ok("IpamDriver.RequestPool",
        &json!({"AddressSpace": "netdriver-local", "Pool": "2001:db8:5::/64", "SubPool": "", "Options": {}, "V6": true}),
    );
    let id = given["PoolID"].as_str().unwrap().to_string();
    assert_eq!(given["Pool"], "2001:db8:5::/64");
    fails(
        &mut c,
        "IpamDriver.RequestPool",
        &json!({"AddressSpace": "netdriver-local", "Pool": "2001:db8:5:0:1::/80", "V6": true}),
        "overlaps",
    );
    let address = |c: &mut PluginConn, body: Value| {
        c.ok("IpamDriver.RequestAddress", &body)["Address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let gateway = address(
        &mut c,
        json!({"PoolID": id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    );
    assert_eq!(gateway, "2001:db8:5::1/64");
    let first = address(&mut c, json!({"PoolID": id, "Address": "", "Options": {}}));
    assert_eq!(first, "2001:db8:5::2/64");
    let by_mac = address(
        &mut c,
        json!({"PoolID": id, "Address": "", "Options": {"com.docker.network.endpoint.macaddress": "02:42:0a:14:00:07"}}),
    );
    assert_eq!(by_mac, "2001:db8:5::242:a14:7/64");
    let wanted = address(
        &mut c,
        json!({"PoolID": id, "Address": "2001:db8:5::99", "Options": {}}),
    );
    assert_eq!(wanted, "2001:db8:5::99/64");
    fails(
        &mut c,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": id, "Address": "2001:db8:5::99", "Options": {}}),
        "in use",
    );
    fails(
        &mut c,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": id, "Address": "2001:db8:6::9", "Options": {}}),
        "not a usable",
    );
    fails(
        &mut c,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": id, "Address": "10.0.0.9", "Options": {}}),
        "not a usable",
    );
    c.ok(
        "IpamDriver.ReleaseAddress",
        &json!({"PoolID": id, "Address": "2001:db8:5::2"}),
    );
    let again = address(&mut c, json!({"PoolID": id, "Address": "", "Options": {}}));
    assert_eq!(again, "2001:db8:5::2/64");
    c.ok("IpamDriver.ReleasePool", &json!({"PoolID": id}));
    // Pools survive a restart (dockerd does not replay them).
    let picked_id = picked["PoolID"].as_str().unwrap();
    let mut d = d;
    d.restart();
    let mut c = PluginConn::open(&d);
    c.ok("IpamDriver.ReleasePool", &json!({"PoolID": picked_id}));
}

/// What dockerd does after Join, IPv6 included.
fn dockerd_configures(world: &World, src: &str, ns: &Netns, mac: &str, v4: &str, v6: &str) {
    world.host.ip(&["link", "set", src, "netns", &ns.name]);
    ns.ip(&["link", "set", src, "name", "eth0"]);
    ns.ip(&["link", "set", "eth0", "address", mac]);
    ns.ip(&["addr", "add", v4, "dev", "eth0"]);
    ns.ip(&["-6", "addr", "add", v6, "dev", "eth0", "nodad"]);
    ns.ip(&["link", "set", "eth0", "up"]);
}

#[test]
fn ipv6_network_endpoints_and_join() {
    let mut world = World::new();
    let d = world.daemon();
    let mut c = PluginConn::open(&d);
    c.ok("NetworkDriver.CreateNetwork",
        &json!({
            "NetworkID": NET_ID,
            "Options": {"com.docker.network.enable_ipv6": true, "com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.66.0.0/24", "Gateway": "10.66.0.1/24"}],
            "IPv6Data": [{"AddressSpace": "LocalDefault", "Pool": "2001:db8:66::/64", "Gateway": "2001:db8:66::1/64"}]
        }),
    );
    let net = d.json(&["network", "inspect", &NET_ID[..12]]);
    assert_eq!(net["subnet6"], "2001:db8:66::/64");
    assert_eq!(net["gateway6"], "2001:db8:66::1");
    let bridge = net["bridge"].as_str().unwrap();
    let on_bridge = world.host.ip(&["-6", "addr", "show", "dev", bridge]);
    assert!(on_bridge.contains("2001:db8:66::1/64"), "{on_bridge}");

    // dockerd's IPAM chose both addresses: only the MAC comes back.
    let a = c.ok("NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_A,
                "Interface": {"Address": "10.66.0.2/24", "AddressIPv6": "2001:db8:66::a/64", "MacAddress": ""},
                "Options": {}}),
    );
    assert_eq!(a, json!({"Interface": {"MacAddress": "02:42:0a:42:00:02"}}));
    // No IPv6 address from dockerd: netdriver's, derived from the MAC, comes back.
    let b = c.ok(
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_B,
                "Interface": {"Address": "10.66.0.3/24", "AddressIPv6": "", "MacAddress": ""},
                "Options": {}}),
    );
    assert_eq!(
        b,
        json!({"Interface": {"AddressIPv6": "2001:db8:66::242:a42:3/64", "MacAddress": "02:42:0a:42:00:03"}})
    );
    fails(
        &mut c,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": "c".repeat(64),
                "Interface": {"Address": "10.66.0.4/24", "AddressIPv6": "2001:db8:66::a/64"}}),
        "in use",
    );
    let info = c.ok(
        "NetworkDriver.EndpointOperInfo",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_A}),
    );
    assert_eq!(info["Value"]["netdriver.ip6"], "2001:db8:66::a");

    for (ep, role, mac, v4, v6) in [
        (
            EP_A,
            "a",
            "02:42:0a:42:00:02",
            "10.66.0.2/24",
            "2001:db8:66::a/64",
        ),
        (
            EP_B,
            "b",
            "02:42:0a:42:00:03",
            "10.66.0.3/24",
            "2001:db8:66::242:a42:3/64",
        ),
    ] {
        let sandbox = world.container(role);
        let join = c.ok(
            "NetworkDriver.Join",
            &json!({"NetworkID": NET_ID, "EndpointID": ep, "SandboxKey": sandbox, "Options": {}}),
        );
        assert_eq!(join["GatewayIPv6"], "2001:db8:66::1");
        let src = join["InterfaceName"]["SrcName"]
            .as_str()
            .unwrap()
            .to_string();
        dockerd_configures(&world, &src, world.container_ns(role), mac, v4, v6);
    }
    let _server = TcpServer::start(world.container_ns("b"), "[::]:80", "b");
    let answer = tcp_request(
        world.container_ns("a"),
        "[2001:db8:66::242:a42:3]:80",
        TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("a -> b over IPv6: {e}\n{}", d.log()));
    assert_eq!(answer, "b saw 2001:db8:66::a said hello");

    // Deleting the endpoint frees its IPv6 address.
    for ep in [EP_A, EP_B] {
        c.ok(
            "NetworkDriver.Leave",
            &json!({"NetworkID": NET_ID, "EndpointID": ep}),
        );
    }
    c.ok(
        "NetworkDriver.DeleteEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_A}),
    );
    c.ok(
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": "d".repeat(64),
                "Interface": {"Address": "10.66.0.5/24", "AddressIPv6": "2001:db8:66::a/64"}}),
    );
}
