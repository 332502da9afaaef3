//! The Docker plugin protocol spoken directly on the plugin socket, without dockerd: every
//! call's success and error shapes, and what each call does to the host. The test plays
//! dockerd's part where dockerd would act (moving the interface into the container).

mod common;

use common::{Daemon, EXT_IP, HOST_IP, Netns, PluginConn, SILENCE, TIMEOUT, TcpServer, World};
use serde_json::{Value, json};

const NET_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const EP_ID: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn create_network_body(id: &str, pool: &str, gateway: &str) -> Value {
    json!({
        "NetworkID": id,
        "Options": {
            "com.docker.network.enable_ipv6": false,
            "com.docker.network.generic": {"com.docker.network.driver.mtu": "1400"}
        },
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": gateway, "Pool": pool,
                      "AuxAddresses": {"router": "10.20.0.254/24"}}],
        "IPv6Data": []
    })
}

fn portmap(host_port: u16, port: u16) -> Value {
    json!({
        "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": port}],
        "com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": port, "HostIP": "", "HostPort": host_port, "HostPortEnd": host_port}
        ]
    })
}

/// `ip_local_reserved_ports` of the host namespace.
fn reserved_ports(world: &World) -> String {
    world
        .host
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap())
        .trim()
        .to_string()
}

fn ids(net: &str, ep: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep})
}

/// Asserts a 200 answer and returns it.
fn ok(conn: &mut PluginConn, call: &str, body: &Value) -> Value {
    let (status, v) = conn.call(call, body);
    assert_eq!(status, 200, "{call}: {v}");
    assert!(v.get("Err").is_none(), "{call}: {v}");
    v
}

/// Asserts a failure with `{"Err": "..."}` mentioning `needle`.
fn fails(conn: &mut PluginConn, call: &str, body: &Value, status: u16, needle: &str) {
    let (got, v) = conn.call(call, body);
    let msg = v["Err"].as_str().unwrap_or_default();
    assert_eq!(got, status, "{call}: {v}");
    assert!(
        msg.contains(needle),
        "{call}: {msg:?} should mention {needle:?}"
    );
}

/// Plays dockerd after Join: moves the link into the container, names it eth0, configures it.
fn dockerd_configures(world: &World, src: &str, ns: &Netns, mac: &str, cidr: &str, gw: &str) {
    world.host.ip(&["link", "set", src, "netns", &ns.name]);
    ns.ip(&["link", "set", src, "name", "eth0"]);
    ns.ip(&["link", "set", "eth0", "address", mac]);
    ns.ip(&["addr", "add", cidr, "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["route", "add", "default", "via", gw]);
}

/// Plays dockerd after Leave: moves the link back under its original name.
fn dockerd_releases(world: &World, ns: &Netns, src: &str) {
    ns.ip(&["link", "set", "eth0", "down"]);
    ns.ip(&["link", "set", "eth0", "name", src]);
    ns.ip(&["link", "set", src, "netns", &world.host.name]);
}

/// Everything a client can see, to compare before and after a refused call.
fn snapshot(d: &Daemon, world: &World) -> (Value, Value, Value, String) {
    let links: String = world
        .host
        .ip(&["-o", "link"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string() + "\n")
        .collect();
    (
        d.json(&["network", "ls"]),
        d.json(&["endpoint", "ls"]),
        d.json(&["port", "ls"]),
        links,
    )
}

#[test]
fn handshake_and_transport() {
    let world = World::new();
    let d = world.daemon();
    let mut c = PluginConn::open(&d);
    // Argument-less calls come with an empty body, several on one keep-alive connection.
    let (status, ctype, body) = c.raw("POST", "Plugin.Activate", b"");
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/vnd.docker.plugins.v1.2+json");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({"Implements": ["NetworkDriver", "IpamDriver"]}));
    assert_eq!(
        ok(&mut c, "NetworkDriver.GetCapabilities", &Value::Null),
        json!({"Scope": "local", "ConnectivityScope": "local"})
    );
    assert_eq!(
        ok(&mut c, "IpamDriver.GetCapabilities", &Value::Null),
        json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
    );
    assert_eq!(
        ok(&mut c, "IpamDriver.GetDefaultAddressSpaces", &Value::Null),
        json!({"LocalDefaultAddressSpace": "netdriver-local", "GlobalDefaultAddressSpace": "netdriver-global"})
    );
    // Calls a local driver never gets still answer.
    let discovery = json!({"DiscoveryType": 1, "DiscoveryData": {"Address": "192.0.2.1", "BindAddress": "", "Self": false}});
    assert_eq!(
        ok(&mut c, "NetworkDriver.DiscoverNew", &discovery),
        json!({})
    );
    assert_eq!(
        ok(&mut c, "NetworkDriver.DiscoverDelete", &discovery),
        json!({})
    );
    assert_eq!(
        ok(
            &mut c,
            "NetworkDriver.FreeNetwork",
            &json!({"NetworkID": NET_ID})
        ),
        json!({})
    );
    // Unknown calls and wrong methods: an error with an Err message, connection still usable.
    fails(
        &mut c,
        "NetworkDriver.Bogus",
        &json!({}),
        404,
        "no such plugin call",
    );
    let (status, _, body) = c.raw("GET", "Plugin.Activate", b"");
    assert_eq!(status, 405);
    assert!(body.contains("\"Err\""), "{body}");
    ok(&mut c, "Plugin.Activate", &Value::Null);
}

#[test]
#[expect(clippy::too_many_lines, reason = "one endpoint's whole life, in order")]
fn network_driver_lifecycle_publishes_ports() {
    let mut world = World::new();
    let d = world.daemon();
    let mut c = PluginConn::open(&d);
    ok(&mut c, "Plugin.Activate", &Value::Null);
    let body = create_network_body(NET_ID, "10.20.0.0/24", "10.20.0.1/24");
    assert_eq!(ok(&mut c, "NetworkDriver.CreateNetwork", &body), json!({}));
    let nets = d.json(&["network", "ls"]);
    let net = &nets[0];
    assert_eq!(net["name"], NET_ID[..12]);
    assert_eq!(net["subnet"], "10.20.0.0/24");
    assert_eq!(net["gateway"], "10.20.0.1");
    assert_eq!(net["mtu"], 1400);
    let bridge = net["bridge"].as_str().unwrap().to_string();
    assert!(
        world
            .host
            .ip(&["addr", "show", &bridge])
            .contains("10.20.0.1/24")
    );

    // dockerd's IPAM chose the address: the reply adds only the MAC.
    let reply = ok(
        &mut c,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID,
                "Interface": {"Address": "10.20.0.2/24", "AddressIPv6": "", "MacAddress": ""},
                "Options": portmap(8080, 80)}),
    );
    assert_eq!(
        reply,
        json!({"Interface": {"MacAddress": "02:42:0a:14:00:02"}})
    );
    let sandbox = world.container("a");
    let join = ok(
        &mut c,
        "NetworkDriver.Join",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": sandbox,
                "Options": portmap(8080, 80)}),
    );
    assert_eq!(join["Gateway"], "10.20.0.1");
    assert_eq!(join["InterfaceName"]["DstPrefix"], "eth");
    let src = join["InterfaceName"]["SrcName"]
        .as_str()
        .unwrap()
        .to_string();
    // The container end waits in the host namespace; the host end is on the bridge.
    assert!(world.host.ip(&["link", "show", &src]).contains(&src));
    let ep = d.json(&["endpoint", "inspect", &EP_ID[..12]]);
    assert!(
        world
            .host
            .ip(&["link", "show", ep["host_ifname"].as_str().unwrap()])
            .contains(&format!("master {bridge}"))
    );
    assert_eq!(ep["netns"], sandbox.to_str().unwrap());
    let ns = world.container_ns("a");
    dockerd_configures(
        &world,
        &src,
        ns,
        "02:42:0a:14:00:02",
        "10.20.0.2/24",
        "10.20.0.1",
    );
    let _server = TcpServer::start(ns, "0.0.0.0:80", "web");
    // Joined but not yet the gateway endpoint: nothing is published.
    assert_eq!(d.json(&["port", "ls"]), json!([]));
    assert!(common::tcp_request(&world.ext, &format!("{HOST_IP}:8080"), SILENCE).is_err());

    assert_eq!(
        ok(
            &mut c,
            "NetworkDriver.ProgramExternalConnectivity",
            &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "Options": portmap(8080, 80)}),
        ),
        json!({})
    );
    let ports = d.json(&["port", "ls"]);
    assert_eq!(ports[0]["host_port"], 8080);
    assert_eq!(ports[0]["container_ip"], "10.20.0.2");
    assert_eq!(ports[0]["endpoint"], EP_ID[..12]);
    let answer = common::tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).unwrap();
    assert_eq!(answer, format!("web saw {EXT_IP} said hello"));
    // Reserved against ephemeral use like any published port.
    assert_eq!(reserved_ports(&world), "8080");
    // Sent again when the gateway endpoint changes: nothing changes.
    ok(
        &mut c,
        "NetworkDriver.ProgramExternalConnectivity",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "Options": portmap(8080, 80)}),
    );
    assert_eq!(d.json(&["port", "ls"]), ports);
    let info = ok(
        &mut c,
        "NetworkDriver.EndpointOperInfo",
        &ids(NET_ID, EP_ID),
    );
    assert_eq!(info["Value"]["netdriver.ip"], "10.20.0.2");
    assert_eq!(
        info["Value"]["netdriver.ports"],
        json!(["0.0.0.0:8080->80/tcp"])
    );

    // docker stop: Revoke, Leave, (dockerd moves the link back), DeleteEndpoint.
    ok(
        &mut c,
        "NetworkDriver.RevokeExternalConnectivity",
        &ids(NET_ID, EP_ID),
    );
    assert_eq!(d.json(&["port", "ls"]), json!([]));
    assert!(common::tcp_request(&world.ext, &format!("{HOST_IP}:8080"), SILENCE).is_err());
    assert_eq!(reserved_ports(&world), "");
    ok(&mut c, "NetworkDriver.Leave", &ids(NET_ID, EP_ID));
    dockerd_releases(&world, ns, &src);
    ok(&mut c, "NetworkDriver.DeleteEndpoint", &ids(NET_ID, EP_ID));
    assert_eq!(d.json(&["endpoint", "ls"]), json!([]));
    assert!(!world.host.ip(&["-o", "link"]).contains(&src));
    // Cleanup calls are idempotent: dockerd repeats them after a crash.
    ok(&mut c, "NetworkDriver.Leave", &ids(NET_ID, EP_ID));
    ok(&mut c, "NetworkDriver.DeleteEndpoint", &ids(NET_ID, EP_ID));
    ok(
        &mut c,
        "NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": NET_ID}),
    );
    assert_eq!(d.json(&["network", "ls"]), json!([]));
    assert!(!world.host.ip(&["-o", "link"]).contains(&bridge));
    ok(
        &mut c,
        "NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": NET_ID}),
    );
}

/// Docker's SCTP bindings (`Proto` 132): published as SCTP, next to a TCP binding of the
/// same number.
#[test]
fn sctp_port_bindings_are_published() {
    let mut world = World::new();
    let d = world.daemon();
    let mut c = PluginConn::open(&d);
    let body = create_network_body(NET_ID, "10.20.0.0/24", "10.20.0.1/24");
    ok(&mut c, "NetworkDriver.CreateNetwork", &body);
    let options = json!({
        "com.docker.network.endpoint.exposedports": [{"Proto": 132, "Port": 9000}, {"Proto": 6, "Port": 80}],
        "com.docker.network.portmap": [
            {"Proto": 132, "IP": "", "Port": 9000, "HostIP": "", "HostPort": 9000, "HostPortEnd": 9000},
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 9000, "HostPortEnd": 9000}
        ]
    });
    ok(
        &mut c,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID,
                "Interface": {"Address": "10.20.0.2/24", "AddressIPv6": "", "MacAddress": ""},
                "Options": options}),
    );
    let sandbox = world.container("a");
    ok(
        &mut c,
        "NetworkDriver.Join",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": sandbox,
                "Options": options}),
    );
    ok(
        &mut c,
        "NetworkDriver.ProgramExternalConnectivity",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "Options": options}),
    );
    let ports = d.json(&["port", "ls"]);
    let mut bound: Vec<(String, u64, u64)> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["proto"].as_str().unwrap().to_string(),
                p["host_port"].as_u64().unwrap(),
                p["container_port"].as_u64().unwrap(),
            )
        })
        .collect();
    bound.sort();
    assert_eq!(
        bound,
        [("sctp".into(), 9000, 9000), ("tcp".into(), 9000, 80)],
        "{ports}"
    );
    let info = ok(
        &mut c,
        "NetworkDriver.EndpointOperInfo",
        &ids(NET_ID, EP_ID),
    );
    let listed = info["Value"]["netdriver.ports"].to_string();
    assert!(listed.contains("0.0.0.0:9000->9000/sctp"), "{listed}");
    // The data path has the SCTP entry (protocol 132) as well as the TCP one.
    let dump = common::map_dump(&d, "ND_PORTS");
    let protos: Vec<u64> = dump
        .iter()
        .filter_map(|e| e["key"]["proto"].as_u64())
        .collect();
    assert!(protos.contains(&132) && protos.contains(&6), "{dump:?}");
}

#[test]
fn endpoint_without_address_gets_one() {
    let world = World::new();
    let d = world.daemon();
    let mut c = PluginConn::open(&d);
    ok(
        &mut c,
        "NetworkDriver.CreateNetwork",
        &create_network_body(NET_ID, "10.20.0.0/24", "10.20.0.1/24"),
    );
    // The aux address (.254) and the gateway are reserved; a MAC given is kept.
    let reply = ok(
        &mut c,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID,
                "Interface": {"Address": "", "AddressIPv6": "", "MacAddress": "02:00:00:00:00:09"},
                "Options": {}}),
    );
    assert_eq!(reply, json!({"Interface": {"Address": "10.20.0.2/24"}}));
    let ep = d.json(&["endpoint", "inspect", &EP_ID[..12]]);
    assert_eq!(ep["mac"], "02:00:00:00:00:09");
    fails(
        &mut c,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": "e2e2e2e2e2e2e2",
                "Interface": {"Address": "10.20.0.254/24"}, "Options": null}),
        409,
        "in use",
    );
    // The MAC option is base64 bytes (Go's []byte).
    let reply = ok(
        &mut c,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": "e3e3e3e3e3e3e3",
                "Interface": {"Address": "10.20.0.3/24"},
                "Options": {"com.docker.network.endpoint.macaddress": "AkKsEgAF"}}),
    );
    assert_eq!(reply, json!({}));
    assert_eq!(
        d.json(&["endpoint", "inspect", "e3e3e3e3e3e3"])["mac"],
        "02:42:ac:12:00:05"
    );
}

#[test]
fn bridge_options_apply() {
    let world = World::new();
    let d = world.daemon();
    let mut c = PluginConn::open(&d);
    let generic = json!({
        "com.docker.network.bridge.name": "ndbr-opts",
        "com.docker.network.bridge.host_binding_ipv4": HOST_IP,
        "com.docker.network.bridge.enable_icc": "false",
        "com.docker.network.bridge.enable_ip_masquerade": "false"
    });
    ok(
        &mut c,
        "NetworkDriver.CreateNetwork",
        &json!({"NetworkID": NET_ID, "Options": {"com.docker.network.generic": generic},
                "IPv4Data": [{"Pool": "10.20.0.0/24", "Gateway": "10.20.0.1/24"}]}),
    );
    assert_eq!(d.json(&["network", "ls"])[0]["bridge"], "ndbr-opts");
    // Docker's bridge options reach the data path's policy.
    let net = &d.json(&["network", "ls"])[0];
    assert_eq!(
        (&net["icc"], &net["masquerade"]),
        (&json!(false), &json!(false)),
        "{net}"
    );
    ok(
        &mut c,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {"Address": "10.20.0.2/24"}}),
    );
    ok(
        &mut c,
        "NetworkDriver.Join",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": "", "Options": {}}),
    );
    // A mapping without a host address binds the network's host_binding_ipv4.
    ok(
        &mut c,
        "NetworkDriver.ProgramExternalConnectivity",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "Options": portmap(8080, 80)}),
    );
    assert_eq!(d.json(&["port", "ls"])[0]["host_ip"], HOST_IP);
}

#[test]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn bad_calls_are_refused_and_change_nothing() {
    let mut world = World::new();
    let d = world.daemon();
    let mut c = PluginConn::open(&d);
    ok(
        &mut c,
        "NetworkDriver.CreateNetwork",
        &create_network_body(NET_ID, "10.20.0.0/24", "10.20.0.1/24"),
    );
    ok(
        &mut c,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID,
                "Interface": {"Address": "10.20.0.2/24"}, "Options": {}}),
    );
    let sandbox = world.container("a");
    ok(
        &mut c,
        "NetworkDriver.Join",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": sandbox, "Options": {}}),
    );
    ok(
        &mut c,
        "NetworkDriver.ProgramExternalConnectivity",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "Options": portmap(8080, 80)}),
    );
    // A second endpoint, joined, to try conflicting ports on.
    let other = "abababababababababab";
    ok(
        &mut c,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": other,
                "Interface": {"Address": "10.20.0.3/24"}, "Options": {}}),
    );
    ok(
        &mut c,
        "NetworkDriver.Join",
        &json!({"NetworkID": NET_ID, "EndpointID": other, "SandboxKey": "/nonexistent", "Options": {}}),
    );
    let before = snapshot(&d, &world);

    let stateful = [
        "NetworkDriver.CreateNetwork",
        "NetworkDriver.DeleteNetwork",
        "NetworkDriver.CreateEndpoint",
        "NetworkDriver.EndpointOperInfo",
        "NetworkDriver.DeleteEndpoint",
        "NetworkDriver.Join",
        "NetworkDriver.Leave",
        "NetworkDriver.ProgramExternalConnectivity",
        "NetworkDriver.RevokeExternalConnectivity",
        "NetworkDriver.AllocateNetwork",
        "IpamDriver.RequestPool",
        "IpamDriver.ReleasePool",
        "IpamDriver.RequestAddress",
        "IpamDriver.ReleaseAddress",
    ];
    for call in stateful {
        // `{}` is a complete RequestPool (every field may be left out).
        let empty: &[u8] = if call == "IpamDriver.RequestPool" {
            b"[]"
        } else {
            b"{}"
        };
        for body in [&b"{\"NetworkID\": "[..], b"", b"[1, 2]", b"\"x\"", empty] {
            let (status, _, text) = c.raw("POST", call, body);
            assert_eq!(
                status,
                400,
                "{call} {:?}: {text}",
                String::from_utf8_lossy(body)
            );
            let v: Value = serde_json::from_str(&text).unwrap();
            assert!(
                v["Err"].as_str().unwrap().contains("malformed request"),
                "{call}: {v}"
            );
        }
    }

    let unknown = "99999999999999999999";
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "NetworkDriver.CreateNetwork",
            create_network_body(NET_ID, "10.21.0.0/24", "10.21.0.1/24"),
            409,
            "already exists",
        ),
        (
            "NetworkDriver.CreateNetwork",
            create_network_body(unknown, "10.20.0.0/25", "10.20.0.1/25"),
            409,
            "overlaps",
        ),
        (
            "NetworkDriver.CreateNetwork",
            create_network_body(unknown, "10.21.0.1/24", "10.21.0.1/24"),
            400,
            "host bits",
        ),
        (
            "NetworkDriver.CreateNetwork",
            create_network_body(unknown, "10.21.0.0/24", "10.22.0.1/24"),
            400,
            "not a usable",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": unknown, "Options": {"com.docker.network.enable_ipv6": true},
            "IPv4Data": [{"Pool": "10.21.0.0/24", "Gateway": "10.21.0.1/24"}],
            "IPv6Data": [{"Pool": "fe80::/64", "Gateway": "fe80::1/64"}]}),
            400,
            "Link-Local",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": unknown, "Options": {"com.docker.network.enable_ipv6": false},
            "IPv4Data": [{"Pool": "10.21.0.0/24", "Gateway": "10.21.0.1/24"}],
            "IPv6Data": [{"Pool": "2001:db8:21::/64", "Gateway": "2001:db8:21::1/64"}]}),
            400,
            "IPv6Data",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": unknown, "Options": {}, "IPv4Data": [], "IPv6Data": []}),
            400,
            "IPv4",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": unknown, "Options": {"com.docker.network.generic": {"com.docker.network.driver.mtu": "big"}},
            "IPv4Data": [{"Pool": "10.21.0.0/24", "Gateway": "10.21.0.1/24"}]}),
            400,
            "mtu",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": unknown, "Options": {},
            "IPv4Data": [{"Pool": "10.21.0.0/24", "Gateway": "10.21.0.1/24", "AuxAddresses": {"a": "10.21.0.1/24"}}]}),
            409,
            "in use",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": unknown, "EndpointID": unknown, "Interface": {"Address": "10.20.0.9/24"}}),
            404,
            "no network",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {"Address": "10.20.0.9/24"}}),
            409,
            "already exists",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET_ID, "EndpointID": unknown, "Interface": {"Address": "10.20.0.2/24"}}),
            409,
            "in use",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET_ID, "EndpointID": unknown, "Interface": {"Address": "10.99.0.2/24"}}),
            400,
            "not a usable",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET_ID, "EndpointID": unknown, "Interface": {"Address": "bogus"}}),
            400,
            "invalid Address",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET_ID, "EndpointID": unknown, "Interface": {"Address": "10.20.0.9/24", "AddressIPv6": "2001:db8::2/64"}}),
            400,
            "IPv6",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NET_ID, "EndpointID": unknown, "Interface": {"Address": "10.20.0.9/24", "MacAddress": "01:00:5e:00:00:01"}}),
            400,
            "MacAddress",
        ),
        (
            "NetworkDriver.EndpointOperInfo",
            ids(NET_ID, unknown),
            404,
            "no endpoint",
        ),
        (
            "NetworkDriver.Join",
            json!({"NetworkID": NET_ID, "EndpointID": unknown, "SandboxKey": "/x", "Options": {}}),
            404,
            "no endpoint",
        ),
        (
            "NetworkDriver.Join",
            json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": "/x", "Options": {}}),
            409,
            "already joined",
        ),
        (
            "NetworkDriver.Join",
            json!({"NetworkID": unknown, "EndpointID": EP_ID, "SandboxKey": "/x", "Options": {}}),
            400,
            "not on network",
        ),
        (
            "NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": NET_ID, "EndpointID": unknown, "Options": portmap(8081, 80)}),
            404,
            "no endpoint",
        ),
        (
            "NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": NET_ID, "EndpointID": other, "Options": portmap(8080, 80)}),
            409,
            "already allocated",
        ),
        (
            "NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": NET_ID, "EndpointID": other, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "Port": 80, "HostIP": "", "HostPort": 8081, "HostPortEnd": 8081},
            {"Proto": 33, "Port": 80, "HostIP": "", "HostPort": 8082, "HostPortEnd": 8082}]}}),
            400,
            "unknown IP protocol number 33",
        ),
        (
            "NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": NET_ID, "EndpointID": other, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "Port": 80, "HostIP": "::1", "HostPort": 8081, "HostPortEnd": 8081}]}}),
            400,
            "IPv6",
        ),
        (
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "netdriver-local", "Pool": "10.9.0.0/24", "SubPool": "", "Options": {}, "V6": true}),
            400,
            "IPv6",
        ),
        (
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "netdriver-local", "Pool": "", "SubPool": "10.9.0.0/24", "Options": {}, "V6": false}),
            400,
            "needs a pool",
        ),
        (
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "netdriver-local", "Pool": "10.9.0.0/24", "SubPool": "10.8.0.0/25", "V6": false}),
            400,
            "not inside",
        ),
        (
            "IpamDriver.ReleasePool",
            json!({"PoolID": unknown}),
            404,
            "no address pool",
        ),
        (
            "IpamDriver.RequestAddress",
            json!({"PoolID": unknown, "Address": "", "Options": {}}),
            404,
            "no address pool",
        ),
        (
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": unknown, "Address": "10.9.0.2"}),
            404,
            "no address pool",
        ),
    ];
    for (call, body, status, needle) in &cases {
        fails(&mut c, call, body, *status, needle);
        assert_eq!(snapshot(&d, &world), before, "{call} {body} changed state");
    }
    // Cleanup calls for unknown ids succeed and change nothing.
    for call in [
        "NetworkDriver.Leave",
        "NetworkDriver.RevokeExternalConnectivity",
        "NetworkDriver.DeleteEndpoint",
    ] {
        assert_eq!(ok(&mut c, call, &ids(NET_ID, unknown)), json!({}));
    }
    ok(
        &mut c,
        "NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": unknown}),
    );
    // A network with endpoints is not removed.
    fails(
        &mut c,
        "NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": NET_ID}),
        409,
        "still has",
    );
    assert_eq!(snapshot(&d, &world), before);
}

#[test]
fn ipam_driver_pools_and_addresses() {
    let world = World::new();
    let d = world.daemon();
    let mut c = PluginConn::open(&d);
    let pool = json!({"AddressSpace": "netdriver-local", "Pool": "10.30.0.0/24", "SubPool": "", "Options": {}, "V6": false});
    let reply = ok(&mut c, "IpamDriver.RequestPool", &pool);
    assert_eq!(
        reply,
        json!({"PoolID": "netdriver-local/10.30.0.0/24", "Pool": "10.30.0.0/24", "Data": {}})
    );
    // The same request again is the same pool (counted); an overlapping one is refused.
    assert_eq!(ok(&mut c, "IpamDriver.RequestPool", &pool), reply);
    fails(
        &mut c,
        "IpamDriver.RequestPool",
        &json!({"AddressSpace": "netdriver-local", "Pool": "10.30.0.0/16", "V6": false}),
        409,
        "overlaps",
    );
    let id = "netdriver-local/10.30.0.0/24";
    let gw = json!({"PoolID": id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}});
    assert_eq!(
        ok(&mut c, "IpamDriver.RequestAddress", &gw)["Address"],
        "10.30.0.1/24"
    );
    let any = json!({"PoolID": id, "Address": "", "Options": null});
    assert_eq!(
        ok(&mut c, "IpamDriver.RequestAddress", &any)["Address"],
        "10.30.0.2/24"
    );
    let fifty = json!({"PoolID": id, "Address": "10.30.0.50", "Options": {}});
    assert_eq!(
        ok(&mut c, "IpamDriver.RequestAddress", &fifty)["Address"],
        "10.30.0.50/24"
    );
    fails(&mut c, "IpamDriver.RequestAddress", &fifty, 409, "in use");
    for bad in ["10.30.0.0", "10.30.0.255", "10.31.0.5"] {
        let req = json!({"PoolID": id, "Address": bad, "Options": {}});
        fails(
            &mut c,
            "IpamDriver.RequestAddress",
            &req,
            400,
            "not a usable",
        );
    }
    fails(
        &mut c,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": id, "Address": "nope"}),
        400,
        "invalid address",
    );
    ok(
        &mut c,
        "IpamDriver.ReleaseAddress",
        &json!({"PoolID": id, "Address": "10.30.0.50"}),
    );
    ok(
        &mut c,
        "IpamDriver.ReleaseAddress",
        &json!({"PoolID": id, "Address": "10.30.0.50"}),
    );
    assert_eq!(
        ok(&mut c, "IpamDriver.RequestAddress", &fifty)["Address"],
        "10.30.0.50/24"
    );

    // Released as often as requested, then gone.
    let release = json!({"PoolID": id});
    ok(&mut c, "IpamDriver.ReleasePool", &release);
    ok(&mut c, "IpamDriver.ReleasePool", &release);
    fails(
        &mut c,
        "IpamDriver.ReleasePool",
        &release,
        404,
        "no address pool",
    );
    fails(
        &mut c,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": id, "Address": ""}),
        404,
        "no address pool",
    );
}

#[test]
fn ipam_driver_sub_pools_and_default_pools() {
    let world = World::new();
    let d = world.daemon();
    let mut c = PluginConn::open(&d);
    // --ip-range: container addresses come from the sub-pool, the gateway from the pool.
    let sub = json!({"AddressSpace": "netdriver-local", "Pool": "10.31.0.0/24", "SubPool": "10.31.0.128/25", "V6": false});
    let sub_id = ok(&mut c, "IpamDriver.RequestPool", &sub)["PoolID"].clone();
    assert_eq!(sub_id, "netdriver-local/10.31.0.0/24/10.31.0.128/25");
    let gw = json!({"PoolID": sub_id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}});
    assert_eq!(
        ok(&mut c, "IpamDriver.RequestAddress", &gw)["Address"],
        "10.31.0.1/24"
    );
    let any = json!({"PoolID": sub_id, "Address": ""});
    assert_eq!(
        ok(&mut c, "IpamDriver.RequestAddress", &any)["Address"],
        "10.31.0.128/24"
    );

    // No pool asked for: the first default pool the host namespace does not use.
    let auto = json!({"AddressSpace": "netdriver-local", "Pool": "", "SubPool": "", "V6": false});
    assert_eq!(
        ok(&mut c, "IpamDriver.RequestPool", &auto)["Pool"],
        "172.17.0.0/16"
    );
    assert_eq!(
        ok(&mut c, "IpamDriver.RequestPool", &auto)["Pool"],
        "172.18.0.0/16"
    );
}

#[test]
fn plugin_state_survives_a_daemon_restart() {
    let mut world = World::new();
    let mut d = world.daemon();
    let mut c = PluginConn::open(&d);
    let pool = json!({"AddressSpace": "netdriver-local", "Pool": "10.20.0.0/24", "V6": false});
    let pool_id = ok(&mut c, "IpamDriver.RequestPool", &pool)["PoolID"].clone();
    let gw = json!({"PoolID": pool_id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}});
    ok(&mut c, "IpamDriver.RequestAddress", &gw);
    ok(
        &mut c,
        "NetworkDriver.CreateNetwork",
        &create_network_body(NET_ID, "10.20.0.0/24", "10.20.0.1/24"),
    );
    let addr = ok(
        &mut c,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": pool_id, "Address": ""}),
    )["Address"]
        .clone();
    assert_eq!(addr, "10.20.0.2/24");
    ok(
        &mut c,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {"Address": addr}, "Options": {}}),
    );
    let sandbox = world.container("a");
    let join = ok(
        &mut c,
        "NetworkDriver.Join",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": sandbox, "Options": {}}),
    );
    let src = join["InterfaceName"]["SrcName"]
        .as_str()
        .unwrap()
        .to_string();
    let ns = world.container_ns("a");
    dockerd_configures(
        &world,
        &src,
        ns,
        "02:42:0a:14:00:02",
        "10.20.0.2/24",
        "10.20.0.1",
    );
    ok(
        &mut c,
        "NetworkDriver.ProgramExternalConnectivity",
        &json!({"NetworkID": NET_ID, "EndpointID": EP_ID, "Options": portmap(8080, 80)}),
    );
    let _server = TcpServer::start(ns, "0.0.0.0:80", "web");
    let answer = common::tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT)
        .expect("before restart");
    assert_eq!(answer, format!("web saw {EXT_IP} said hello"));
    drop(c);

    d.restart();
    let mut c = PluginConn::open(&d);
    // Answered once the daemon has restored its state (the socket listens before that).
    ok(&mut c, "Plugin.Activate", &Value::Null);
    // Ports are published again; the IPAM pool still knows what it handed out.
    let answer = common::tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT)
        .unwrap_or_else(|e| panic!("after restart: {e}\n{}", d.log()));
    assert_eq!(answer, format!("web saw {EXT_IP} said hello"));
    assert_eq!(
        ok(
            &mut c,
            "IpamDriver.RequestAddress",
            &json!({"PoolID": pool_id, "Address": ""})
        )["Address"],
        "10.20.0.3/24"
    );
    assert_eq!(
        ok(
            &mut c,
            "NetworkDriver.EndpointOperInfo",
            &ids(NET_ID, EP_ID)
        )["Value"]["netdriver.ip"],
        "10.20.0.2"
    );
    // Docker ids still work for the whole teardown.
    ok(
        &mut c,
        "NetworkDriver.RevokeExternalConnectivity",
        &ids(NET_ID, EP_ID),
    );
    ok(&mut c, "NetworkDriver.Leave", &ids(NET_ID, EP_ID));
    dockerd_releases(&world, ns, &src);
    ok(&mut c, "NetworkDriver.DeleteEndpoint", &ids(NET_ID, EP_ID));
    ok(
        &mut c,
        "NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": NET_ID}),
    );
    assert_eq!(d.json(&["network", "ls"]), json!([]));
    assert_eq!(d.json(&["endpoint", "ls"]), json!([]));
}

#[test]
fn plugin_can_be_turned_off() {
    let world = World::new();
    let d = Daemon::start(&world, &["--no-docker-plugin"]);
    assert!(!d.plugin_socket.exists());
    d.json(&["network", "ls"]);
}
