//! Port ranges: one range in the data path, however long, reachable from every side.

mod common;

use common::{
    EXT_IP, EXT_IP6, HOST_IP, HOST_IP6, SILENCE, TIMEOUT, TcpServer, UdpServer, World, endpoint6,
    network6, run, sa6, tcp_request, udp_request,
};
use serde_json::Value;

fn dump(daemon: &common::Daemon, map: &str) -> Vec<Value> {
    let pin = daemon.bpffs.join(map);
    let text = run(
        "bpftool",
        &["-j", "map", "dump", "pinned", pin.to_str().unwrap()],
    );
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_10000_port_range_is_one_range_in_the_data_path() {
    let mut world = World::new();
    let daemon = world.daemon();
    daemon.json(&["network", "create", "front", "--subnet", "10.93.0.0/24"]);
    let netns = world.container("web");
    daemon.json(&[
        "endpoint",
        "create",
        "front",
        "--netns",
        netns.to_str().unwrap(),
        "--name",
        "web",
        "-p",
        "20000-29999:20000-29999",
        "-p",
        "20000-20009:30000-30009/udp",
    ]);
    assert_eq!(
        daemon.json(&["port", "ls"]).as_array().unwrap().len(),
        10_010
    );
    // No per-port entry; a handful of aligned blocks.
    assert!(dump(&daemon, "ND_PORTS").is_empty());
    let blocks = dump(&daemon, "ND_PORT_RANGES").len();
    assert!((2..=60).contains(&blocks), "{blocks} trie entries");

    let c = world.container_ns("web");
    let _first = TcpServer::start(c, "0.0.0.0:20000", "first");
    let _middle = TcpServer::start(c, "0.0.0.0:24567", "middle");
    let _last = TcpServer::start(c, "0.0.0.0:29999", "last");
    let _udp = UdpServer::start(c, "0.0.0.0:30005", "udp");
    for (port, tag) in [(20000, "first"), (24567, "middle"), (29999, "last")] {
        let from_ext = tcp_request(&world.ext, &format!("{HOST_IP}:{port}"), TIMEOUT)
            .unwrap_or_else(|e| panic!("ext → {port}: {e}"));
        assert_eq!(from_ext, format!("{tag} saw {EXT_IP} said hello"));
        let from_host = tcp_request(&world.host, &format!("127.0.0.1:{port}"), TIMEOUT)
            .unwrap_or_else(|e| panic!("host → {port}: {e}"));
        assert_eq!(from_host, format!("{tag} saw 10.93.0.1 said hello"));
        let hairpin = tcp_request(c, &format!("{HOST_IP}:{port}"), TIMEOUT)
            .unwrap_or_else(|e| panic!("container → {port}: {e}"));
        assert_eq!(hairpin, format!("{tag} saw 10.93.0.1 said hello"));
    }
    // UDP host port 20005 is container port 30005.
    assert_eq!(
        udp_request(&world.ext, &format!("{HOST_IP}:20005"), TIMEOUT).unwrap(),
        format!("udp saw {EXT_IP}")
    );
    // Just outside the range nothing is carried.
    for port in [19999, 30000] {
        assert!(tcp_request(&world.ext, &format!("{HOST_IP}:{port}"), SILENCE).is_err());
    }
    // Removing the endpoint removes the whole range.
    daemon.json(&["endpoint", "rm", "web"]);
    assert!(dump(&daemon, "ND_PORT_RANGES").is_empty());
    assert!(tcp_request(&world.ext, &format!("{HOST_IP}:24567"), SILENCE).is_err());
}

#[test]
fn a_host_range_to_one_container_port_picks_one_free_port() {
    let mut world = World::new();
    let daemon = world.daemon();
    // A host process holds the first port of the range: the next one is picked.
    let _host = TcpServer::start(&world.host, "0.0.0.0:8000", "host");
    daemon.json(&["network", "create", "front", "--subnet", "10.93.0.0/24"]);
    let netns = world.container("web");
    let ep = daemon.json(&[
        "endpoint",
        "create",
        "front",
        "--netns",
        netns.to_str().unwrap(),
        "--name",
        "web",
        "-p",
        "8000-8010:80",
    ]);
    let ports = ep["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{ep}");
    assert_eq!(ports[0]["host_port"], 8001);
    let _web = TcpServer::start(world.container_ns("web"), "0.0.0.0:80", "web");
    assert_eq!(
        tcp_request(&world.ext, &format!("{HOST_IP}:8001"), TIMEOUT).unwrap(),
        format!("web saw {EXT_IP} said hello")
    );
    assert!(tcp_request(&world.ext, &format!("{HOST_IP}:8002"), SILENCE).is_err());
}

/// On an `--ipv6` network a range's `[::]` twin is a range too: `ND_PORT_RANGES6` holds a
/// handful of aligned blocks instead of one `ND_PORTS6` entry per port.
#[test]
fn an_ipv6_port_range_is_one_range_in_the_data_path() {
    let mut world = World::new();
    world.ipv6_uplink();
    let daemon = world.daemon();
    network6(&daemon, "front6", "10.94.0.0/24", "2001:db8:94::/64", &[]);
    endpoint6(
        &mut world,
        &daemon,
        "front6",
        "web",
        &["-p", "8000-8999:8000-8999", "-p", "8000-8009:9000-9009/udp"],
    );
    let client6 = endpoint6(&mut world, &daemon, "front6", "client", &[]);
    assert!(
        dump(&daemon, "ND_PORTS6").is_empty(),
        "no per-port IPv6 entry"
    );
    let blocks = dump(&daemon, "ND_PORT_RANGES6").len();
    assert!((2..=40).contains(&blocks), "{blocks} IPv6 trie entries");

    let c = world.container_ns("web");
    let _first = TcpServer::start(c, &sa6("::", 8000), "first");
    let _middle = TcpServer::start(c, &sa6("::", 8517), "middle");
    let _last = TcpServer::start(c, &sa6("::", 8999), "last");
    let _udp = UdpServer::start(c, &sa6("::", 9005), "udp");
    for (port, tag) in [(8000, "first"), (8517, "middle"), (8999, "last")] {
        let from_ext = tcp_request(&world.ext, &sa6(HOST_IP6, port), TIMEOUT)
            .unwrap_or_else(|e| panic!("ext → [{HOST_IP6}]:{port}: {e}"));
        assert_eq!(from_ext, format!("{tag} saw {EXT_IP6} said hello"));
        // Another container through the host's IPv6 address (hairpin) finds the range too.
        let hairpin = tcp_request(world.container_ns("client"), &sa6(HOST_IP6, port), TIMEOUT)
            .unwrap_or_else(|e| panic!("client → [{HOST_IP6}]:{port}: {e}"));
        assert_eq!(hairpin, format!("{tag} saw {client6} said hello"));
    }
    // UDP host port 8005 is container port 9005.
    assert_eq!(
        udp_request(&world.ext, &sa6(HOST_IP6, 8005), TIMEOUT).unwrap(),
        format!("udp saw {EXT_IP6}")
    );
    // Just outside the range nothing is carried.
    for port in [7999, 9000] {
        assert!(tcp_request(&world.ext, &sa6(HOST_IP6, port), SILENCE).is_err());
    }
    // Removing the endpoint removes the whole range.
    daemon.json(&["endpoint", "rm", "web"]);
    assert!(dump(&daemon, "ND_PORT_RANGES6").is_empty());
    assert!(tcp_request(&world.ext, &sa6(HOST_IP6, 8517), SILENCE).is_err());
}
