//! IPv6 networks (`network create --ipv6`): the bridge's IPv6 addresses, container IPv6
//! addresses (MAC-derived, sequential, requested), traffic between containers and to the
//! gateway over IPv6, and the addresses surviving restarts and reboots.

mod common;

use std::{net::UdpSocket, time::Duration};

use common::{
    Daemon, Netns, TIMEOUT, TcpServer, UdpServer, World, create_endpoint, ping, tcp_request,
};
use serde_json::Value;

const SUBNET6: &str = "2001:db8:61::/64";
const GATEWAY6: &str = "2001:db8:61::1";

/// Network `six` (`10.61.0.0/24`, `2001:db8:61::/64`) with endpoints `roles`; their inspects.
fn setup(world: &mut World, daemon: &Daemon, roles: &[&str]) -> Vec<Value> {
    daemon.json(&[
        "network",
        "create",
        "six",
        "--subnet",
        "10.61.0.0/24",
        "--ipv6",
        "--subnet-v6",
        SUBNET6,
    ]);
    roles
        .iter()
        .map(|role| create_endpoint(world, daemon, "six", role, &[]))
        .collect()
}

fn ip6(ep: &Value) -> String {
    ep["ip6"]
        .as_str()
        .unwrap_or_else(|| panic!("no ip6 in {ep}"))
        .to_string()
}

/// The global IPv6 addresses of `eth0` in a container, as `ip` shows them.
fn container_addrs6(world: &World, role: &str) -> String {
    world
        .container_ns(role)
        .ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])
}

/// Docker's MAC-derived address: the /64 prefix with the MAC in the low 48 bits.
fn mac_derived(prefix: &str, mac: &str) -> String {
    let b: Vec<u16> = mac
        .split(':')
        .map(|h| u16::from_str_radix(h, 16).unwrap())
        .collect();
    let addr: std::net::Ipv6Addr = format!(
        "{prefix}:{:x}:{:x}:{:x}",
        (b[0] << 8) | b[1],
        (b[2] << 8) | b[3],
        (b[4] << 8) | b[5]
    )
    .parse()
    .unwrap();
    addr.to_string()
}

/// Sends one datagram from `ns` over IPv6 and waits for one answer.
fn udp6_request(ns: &Netns, addr: &str, wait: Duration) -> Result<String, String> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        let s = UdpSocket::bind("[::]:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(wait)).unwrap();
        s.send_to(b"hello", addr).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 128];
        let (n, _) =
            common::retry_interrupted(|| s.recv_from(&mut buf)).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

#[test]
fn endpoints_exchange_tcp_and_udp_over_ipv6() {
    let mut world = World::new();
    let daemon = world.daemon();
    let eps = setup(&mut world, &daemon, &["a", "b"]);
    let net = daemon.json(&["network", "inspect", "six"]);
    assert_eq!(net["subnet6"], SUBNET6);
    assert_eq!(net["gateway6"], GATEWAY6);
    let bridge = net["bridge"].as_str().unwrap();
    let on_bridge = world.host.ip(&["-6", "-o", "addr", "show", "dev", bridge]);
    assert!(on_bridge.contains(&format!("{GATEWAY6}/64")), "{on_bridge}");
    assert!(on_bridge.contains("fe80::1/64"), "{on_bridge}");

    let (a6, b6) = (ip6(&eps[0]), ip6(&eps[1]));
    // MAC-derived: a /64 leaves room for the MAC.
    assert_eq!(
        a6,
        mac_derived("2001:db8:61:0:0", eps[0]["mac"].as_str().unwrap())
    );
    assert_eq!(eps[0]["mac"], "02:42:0a:3d:00:02");
    assert_eq!(a6, "2001:db8:61::242:a3d:2");
    assert!(container_addrs6(&world, "a").contains(&format!("{a6}/64")));
    let routes = world
        .container_ns("a")
        .ip(&["-6", "route", "show", "default"]);
    assert!(routes.contains(&format!("via {GATEWAY6}")), "{routes}");

    let _tcp = TcpServer::start(world.container_ns("b"), "[::]:80", "b");
    let _udp = UdpServer::start(world.container_ns("b"), "[::]:53", "b");
    let a = world.container_ns("a");
    let answer = tcp_request(a, &format!("[{b6}]:80"), TIMEOUT)
        .unwrap_or_else(|e| panic!("TCP a -> b over IPv6: {e}\n{}", daemon.log()));
    assert_eq!(answer, format!("b saw {a6} said hello"));
    let answer = udp6_request(a, &format!("[{b6}]:53"), TIMEOUT)
        .unwrap_or_else(|e| panic!("UDP a -> b over IPv6: {e}"));
    assert_eq!(answer, format!("b saw {a6}"));
    assert!(ping(a, GATEWAY6), "container a reaches its IPv6 gateway");
    // The host answers on the gateway address too (a TCP server in the host namespace).
    let _host = TcpServer::start(&world.host, &format!("[{GATEWAY6}]:81"), "host");
    let answer = tcp_request(a, &format!("[{GATEWAY6}]:81"), TIMEOUT).unwrap();
    assert_eq!(answer, format!("host saw {a6} said hello"));
    let forwarding = world
        .host
        .exec("cat", &["/proc/sys/net/ipv6/conf/all/forwarding"]);
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "1");
}

#[test]
fn requested_and_sequential_addresses_and_release() {
    let mut world = World::new();
    let daemon = world.daemon();
    // A /120 leaves no room for a MAC: addresses are handed out lowest first.
    daemon.json(&[
        "network",
        "create",
        "seq",
        "--ipv6",
        "--subnet-v6",
        "2001:db8:62::/120",
        "--gateway-v6",
        "2001:db8:62::fe",
    ]);
    let a = create_endpoint(&mut world, &daemon, "seq", "a", &[]);
    assert_eq!(ip6(&a), "2001:db8:62::1");
    let b = create_endpoint(
        &mut world,
        &daemon,
        "seq",
        "b",
        &["--ip6", "2001:db8:62::50"],
    );
    assert_eq!(ip6(&b), "2001:db8:62::50");
    assert!(container_addrs6(&world, "b").contains("2001:db8:62::50/120"));
    let routes = world
        .container_ns("b")
        .ip(&["-6", "route", "show", "default"]);
    assert!(routes.contains("via 2001:db8:62::fe"), "{routes}");
    assert!(ping(world.container_ns("b"), "2001:db8:62::1"));
    let err = daemon.fails(&[
        "endpoint",
        "create",
        "seq",
        "--netns",
        world.container("c").to_str().unwrap(),
        "--ip6",
        "2001:db8:62::50",
    ]);
    assert!(err.contains("already in use"), "{err}");
    daemon.json(&["endpoint", "rm", "a"]);
    let c = create_endpoint(&mut world, &daemon, "seq", "d", &[]);
    assert_eq!(ip6(&c), "2001:db8:62::1", "the address of a is free again");
    // A namespace that starts with IPv6 disabled on new interfaces still gets its address.
    let netns = world.container("e");
    let e = world.container_ns("e");
    let off = e.exec("sysctl", &["-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    assert!(off.status.success(), "{off:?}");
    let ep = daemon.json(&[
        "endpoint",
        "create",
        "seq",
        "--netns",
        netns.to_str().unwrap(),
        "--name",
        "e",
    ]);
    assert_eq!(ip6(&ep), "2001:db8:62::2");
    assert!(ping(e, "2001:db8:62::fe"), "{}", daemon.log());
    daemon.json(&["endpoint", "rm", "e"]);
    let ls = daemon.json(&["endpoint", "ls"]);
    let listed: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["ip6"].as_str())
        .collect();
    assert_eq!(listed, vec!["2001:db8:62::50", "2001:db8:62::1"]);
}

#[test]
fn default_ipv6_subnets_are_distinct_unique_local_64s() {
    let world = World::new();
    let daemon = world.daemon();
    let one = daemon.json(&["network", "create", "one", "--ipv6"]);
    let two = daemon.json(&["network", "create", "two", "--ipv6"]);
    let plain = daemon.json(&["network", "create", "three"]);
    let (s1, s2) = (
        one["subnet6"].as_str().unwrap(),
        two["subnet6"].as_str().unwrap(),
    );
    for s in [s1, s2] {
        assert!(s.starts_with("fd") && s.ends_with("::/64"), "{s}");
    }
    assert_ne!(s1, s2);
    assert_eq!(plain["subnet6"], Value::Null);
    let ls = daemon.json(&["network", "ls"]);
    assert_eq!(ls[0]["subnet6"], one["subnet6"]);
}

#[test]
fn ipv6_addresses_survive_restart_and_reboot() {
    let mut world = World::new();
    let mut daemon = world.daemon();
    let eps = setup(&mut world, &daemon, &["a", "b"]);
    let (a6, b6) = (ip6(&eps[0]), ip6(&eps[1]));
    daemon.restart();
    let after = daemon.json(&["endpoint", "inspect", "a"]);
    assert_eq!(ip6(&after), a6);
    assert!(
        ping(world.container_ns("a"), &b6),
        "a reaches b after a restart"
    );
    // A restart does not hand b's address to a new endpoint.
    let err = daemon.fails(&[
        "endpoint",
        "create",
        "six",
        "--netns",
        world.container("c").to_str().unwrap(),
        "--ip6",
        &b6,
    ]);
    assert!(err.contains("already in use"), "{err}");

    // Reboot-style: the bridge, the veths and the pins are gone.
    let bridge = daemon.json(&["network", "inspect", "six"])["bridge"]
        .as_str()
        .unwrap()
        .to_string();
    daemon.kill();
    for ep in &eps {
        world
            .host
            .ip(&["link", "del", ep["host_ifname"].as_str().unwrap()]);
    }
    world.host.ip(&["link", "del", &bridge]);
    world
        .host
        .exec("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=0"]);
    let _ = std::fs::remove_dir_all(&daemon.bpffs);
    daemon.restart();
    assert!(
        container_addrs6(&world, "a").contains(&format!("{a6}/64")),
        "a's IPv6 address is back\n{}",
        daemon.log()
    );
    let _tcp = TcpServer::start(world.container_ns("a"), "[::]:80", "a");
    let answer = tcp_request(world.container_ns("b"), &format!("[{a6}]:80"), TIMEOUT)
        .unwrap_or_else(|e| panic!("b -> a after reboot: {e}\n{}", daemon.log()));
    assert_eq!(answer, format!("a saw {b6} said hello"));
    assert!(ping(world.container_ns("a"), GATEWAY6));
}

#[test]
fn bindings_on_an_ipv6_network_cover_both_families() {
    let mut world = World::new();
    let daemon = world.daemon();
    setup(&mut world, &daemon, &[]);
    let ep = create_endpoint(
        &mut world,
        &daemon,
        "six",
        "a",
        &[
            "-p",
            "8080:80",
            "-p",
            "[2001:db8:61::99]::90/udp",
            "-p",
            "[::1]:7070:70",
        ],
    );
    let a6 = ip6(&ep);
    let rows = daemon.json(&["port", "ls"]);
    let got: Vec<(String, u64, u64, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let v6 = r["host_ip"].as_str().unwrap().contains(':');
            let target = if v6 {
                &r["container_ip6"]
            } else {
                &r["container_ip"]
            };
            (
                r["host_ip"].as_str().unwrap().to_string(),
                r["host_port"].as_u64().unwrap(),
                r["container_port"].as_u64().unwrap(),
                target.as_str().unwrap().to_string(),
            )
        })
        .collect();
    let eph = got.iter().find(|r| r.2 == 90).expect("the udp binding").1;
    let a4 = ep["ip"].as_str().unwrap().to_string();
    let row = |ip: &str, hp, cp, to: &str| (ip.to_string(), hp, cp, to.to_string());
    let mut want = vec![
        row("::1", 7070, 70, &a6),
        row("0.0.0.0", 8080, 80, &a4),
        row("::", 8080, 80, &a6),
        row("2001:db8:61::99", eph, 90, &a6),
    ];
    want.sort_by_key(|r| (r.1, r.0.clone()));
    let mut got = got;
    got.sort_by_key(|r| (r.1, r.0.clone()));
    assert_eq!(got, want);
    let (_, text, _) = daemon.cli(&["endpoint", "ls"]);
    assert!(text.contains("[::]:8080->80/tcp"), "{text}");
    // `[::]:8080` is held: another endpoint cannot take it, 0.0.0.0 and :: alike.
    let other = world.container("b");
    for spec in ["8080:80", "[::]:8080:80", "[2001:db8:61::5]:8080:80"] {
        let err = daemon.fails(&[
            "endpoint",
            "create",
            "six",
            "--netns",
            other.to_str().unwrap(),
            "-p",
            spec,
        ]);
        assert!(err.contains("already allocated"), "{spec}: {err}");
    }
    daemon.json(&["endpoint", "rm", "a"]);
    assert!(daemon.json(&["port", "ls"]).as_array().unwrap().is_empty());
}

#[test]
fn a_port_a_host_process_holds_on_ipv6_is_never_published() {
    let mut world = World::new();
    let daemon = world.daemon();
    setup(&mut world, &daemon, &[]);
    daemon.json(&["network", "create", "four", "--subnet", "10.64.0.0/24"]);
    // A host service on the IPv6 gateway address only.
    let _host = TcpServer::start(&world.host, &format!("[{GATEWAY6}]:7072"), "host");
    let netns = world.container("web");
    let netns = netns.to_str().unwrap().to_string();
    let create = |net: &str, spec: &str| {
        let args = [
            "endpoint", "create", net, "--netns", &netns, "--name", "web", "-p", spec,
        ];
        args.map(String::from)
    };
    // The `[::]` twin of `7072:80` needs every IPv6 address, the gateway's included.
    for spec in ["7072:80", "[::]:7072:80", "[2001:db8:61::1]:7072:80"] {
        let args = create("six", spec);
        let err = daemon.fails(&args.each_ref().map(String::as_str));
        assert!(
            err.contains("[2001:db8:61::1]:7072") || err.contains("[::]:7072"),
            "{spec}: {err}"
        );
        assert!(
            err.contains("in use by a process on the host"),
            "{spec}: {err}"
        );
    }
    // IPv4 alone is free: on the IPv4-only network, and on IPv4 of the IPv6 one.
    let args = create("six", "0.0.0.0:7072:80");
    let ep = daemon.json(&args.each_ref().map(String::as_str));
    assert_eq!(ep["ports"].as_array().unwrap().len(), 1);
    daemon.json(&["endpoint", "rm", "web"]);
    let args = create("four", "7072:80");
    daemon.json(&args.each_ref().map(String::as_str));
    // A host process on the IPv6 wildcard (dual-stack) holds IPv4 too.
    let _any = TcpServer::start(&world.host, "[::]:7073", "host");
    let netns2 = world.container("web2");
    let err = daemon.fails(&[
        "endpoint",
        "create",
        "four",
        "--netns",
        netns2.to_str().unwrap(),
        "-p",
        "7073:80",
    ]);
    assert!(err.contains("in use by a process on the host"), "{err}");
}
