//! Policy between containers and towards the outside, all in eBPF: ICC, legacy links,
//! isolation between networks, internal networks, gateway modes, Docker's options.

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    thread::JoinHandle,
    time::Duration,
};

use common::{
    Daemon, EXT_IP, HOST_IP, Netns, OUTSIDE_IP, SILENCE, TIMEOUT, TcpServer, UdpServer, World,
    assert_no_firewall_rules, drops, endpoint, network6, ping, tcp_request, udp_request,
};

/// TCP from `from` to `to_ip:port` where `to` listens.
fn connects(world: &World, from: &str, to: &str, to_ip: &str, port: u16) -> bool {
    let _srv = TcpServer::start(world.container_ns(to), &format!("0.0.0.0:{port}"), "srv");
    let wait = SILENCE;
    tcp_request(world.container_ns(from), &format!("{to_ip}:{port}"), wait).is_ok()
}

#[test]
fn icc_off_blocks_containers_of_a_network_both_ways() {
    let mut world = World::new();
    let daemon = world.daemon();
    daemon.json(&["network", "create", "open", "--subnet", "10.70.0.0/24"]);
    daemon.json(&[
        "network",
        "create",
        "closed",
        "--subnet",
        "10.71.0.0/24",
        "--icc",
        "false",
    ]);
    // The same through Docker's option key.
    daemon.json(&[
        "network",
        "create",
        "closed2",
        "--subnet",
        "10.72.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
    ]);
    let oa = endpoint(&mut world, &daemon, "open", "oa", &[]);
    let ob = endpoint(&mut world, &daemon, "open", "ob", &[]);
    let ca = endpoint(&mut world, &daemon, "closed", "ca", &[]);
    let cb = endpoint(&mut world, &daemon, "closed", "cb", &[]);
    let da = endpoint(&mut world, &daemon, "closed2", "da", &[]);
    let db = endpoint(&mut world, &daemon, "closed2", "db", &[]);

    assert!(connects(&world, "oa", "ob", &ob, 80), "ICC on: a -> b");
    assert!(connects(&world, "ob", "oa", &oa, 80), "ICC on: b -> a");
    assert!(ping(world.container_ns("oa"), &ob));
    assert!(!connects(&world, "ca", "cb", &cb, 80), "ICC off: a -> b");
    assert!(!connects(&world, "cb", "ca", &ca, 80), "ICC off: b -> a");
    assert!(!ping(world.container_ns("ca"), &cb));
    assert!(
        !connects(&world, "da", "db", &db, 80),
        "enable_icc=false: a -> b"
    );
    assert!(
        !connects(&world, "db", "da", &da, 80),
        "enable_icc=false: b -> a"
    );
    assert!(drops(&daemon, "icc") > 0);
    assert_eq!(
        daemon.json(&["network", "inspect", "closed2"])["icc"],
        false
    );
    // The gateway (the host) stays reachable with ICC off.
    let _host = TcpServer::start(&world.host, "10.71.0.1:2222", "host");
    let answer = tcp_request(world.container_ns("ca"), "10.71.0.1:2222", TIMEOUT).unwrap();
    assert_eq!(answer, format!("host saw {ca} said hello"));
    assert_no_firewall_rules(&world);
}

#[test]
fn links_let_the_parent_reach_exposed_ports_only() {
    let mut world = World::new();
    let daemon = world.daemon();
    daemon.json(&[
        "network",
        "create",
        "app",
        "--subnet",
        "10.73.0.0/24",
        "--icc",
        "false",
    ]);
    let db = endpoint(
        &mut world,
        &daemon,
        "app",
        "db",
        &["--expose", "5432", "--expose", "53/udp"],
    );
    let web = endpoint(
        &mut world,
        &daemon,
        "app",
        "web",
        &["--link", "db:database"],
    );
    endpoint(&mut world, &daemon, "app", "other", &[]);

    assert!(
        connects(&world, "web", "db", &db, 5432),
        "parent -> exposed TCP"
    );
    let _dns = UdpServer::start(world.container_ns("db"), "0.0.0.0:53", "dns");
    assert_eq!(
        udp_request(world.container_ns("web"), &format!("{db}:53"), TIMEOUT).unwrap(),
        format!("dns saw {web}")
    );
    assert!(!connects(&world, "web", "db", &db, 8080), "not exposed");
    assert!(
        !connects(&world, "db", "web", &web, 80),
        "the child cannot open to the parent"
    );
    assert!(!connects(&world, "other", "db", &db, 5432), "not linked");

    // The child is re-created (same name): the parent's link applies again.
    daemon.json(&["endpoint", "rm", "db"]);
    let db2 = endpoint(&mut world, &daemon, "app", "db2", &["--expose", "5432"]);
    assert!(
        !connects(&world, "web", "db2", &db2, 5432),
        "db2 is not linked"
    );
    daemon.json(&["endpoint", "rm", "db2"]);
    let netns = world.container_ns("db").path();
    let db3 = daemon.json(&[
        "endpoint",
        "create",
        "app",
        "--netns",
        netns.to_str().unwrap(),
        "--name",
        "db",
        "--expose",
        "5432",
    ])["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(connects(&world, "web", "db", &db3, 5432), "link re-applied");

    // Bad links are clear errors and change nothing.
    let before = daemon.json(&["endpoint", "ls"]).as_array().unwrap().len();
    let x = world.container("x");
    let x = x.to_str().unwrap();
    let err = daemon.fails(&[
        "endpoint", "create", "app", "--netns", x, "--link", "nobody",
    ]);
    assert!(err.contains("nobody"), "{err}");
    daemon.json(&["network", "create", "elsewhere", "--subnet", "10.74.0.0/24"]);
    let err = daemon.fails(&[
        "endpoint",
        "create",
        "elsewhere",
        "--netns",
        x,
        "--link",
        "web",
    ]);
    assert!(
        err.contains("across networks") || err.contains("network"),
        "{err}"
    );
    let err = daemon.fails(&["endpoint", "create", "app", "--netns", x, "--expose", "0"]);
    assert!(err.contains("exposed port"), "{err}");
    assert_eq!(
        daemon.json(&["endpoint", "ls"]).as_array().unwrap().len(),
        before
    );
    let (status, body) = daemon.http(&format!(
        "POST /v1/endpoints HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        r#"{"network":"app","netns":"/var/run/netns/none","links":["ghost"]}"#.len(),
        r#"{"network":"app","netns":"/var/run/netns/none","links":["ghost"]}"#
    ));
    assert!((400..500).contains(&status), "{status} {body}");
}

#[test]
fn networks_are_isolated_from_each_other() {
    let mut world = World::new();
    let daemon = world.daemon();
    daemon.json(&["network", "create", "red", "--subnet", "10.75.0.0/24"]);
    daemon.json(&["network", "create", "blue", "--subnet", "10.76.0.0/24"]);
    let r = endpoint(&mut world, &daemon, "red", "r", &[]);
    let b = endpoint(&mut world, &daemon, "blue", "b", &["-p", "8080:80"]);
    assert!(!connects(&world, "r", "b", &b, 80), "red -> blue");
    assert!(!connects(&world, "b", "r", &r, 80), "blue -> red");
    assert!(!ping(world.container_ns("r"), &b));
    assert!(drops(&daemon, "isolated") > 0);
    // The published port stays reachable from outside.
    let _srv = TcpServer::start(world.container_ns("b"), "0.0.0.0:80", "blue");
    assert_eq!(
        tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).unwrap(),
        format!("blue saw {EXT_IP} said hello")
    );
}

#[test]
fn internal_networks_keep_traffic_inside() {
    let mut world = World::new();
    world.route_outside();
    let daemon = world.daemon();
    daemon.json(&[
        "network",
        "create",
        "vault",
        "--subnet",
        "10.77.0.0/24",
        "--internal",
    ]);
    daemon.json(&[
        "network",
        "create",
        "vault2",
        "--subnet",
        "10.78.0.0/24",
        "-o",
        "com.docker.network.internal=true",
    ]);
    let a = endpoint(&mut world, &daemon, "vault", "a", &[]);
    let b = endpoint(&mut world, &daemon, "vault", "b", &[]);
    endpoint(&mut world, &daemon, "vault2", "c", &[]);
    let _out = TcpServer::start(&world.ext, &format!("{OUTSIDE_IP}:80"), "outside");
    let _udp = UdpServer::start(&world.ext, &format!("{OUTSIDE_IP}:53"), "dns");

    assert!(connects(&world, "a", "b", &b, 80), "inside works");
    assert!(connects(&world, "b", "a", &a, 80), "inside works back");
    for role in ["a", "c"] {
        let ns = world.container_ns(role);
        assert!(tcp_request(ns, &format!("{OUTSIDE_IP}:80"), SILENCE).is_err());
        assert!(udp_request(ns, &format!("{OUTSIDE_IP}:53"), SILENCE).is_err());
        assert!(!ping(ns, OUTSIDE_IP));
        assert!(tcp_request(ns, &format!("{EXT_IP}:80"), SILENCE).is_err());
    }
    assert!(drops(&daemon, "internal") > 0);
    // Nothing comes in either, even with a route.
    world
        .ext
        .ip(&["route", "add", "10.77.0.0/24", "via", HOST_IP]);
    let _inside = TcpServer::start(world.container_ns("a"), "0.0.0.0:81", "inside");
    assert!(tcp_request(&world.ext, &format!("{a}:81"), SILENCE).is_err());
    // Publishing on an internal network is refused.
    let x = world.container("x");
    let err = daemon.fails(&[
        "endpoint",
        "create",
        "vault",
        "--netns",
        x.to_str().unwrap(),
        "-p",
        "8080:80",
    ]);
    assert!(err.contains("internal"), "{err}");
}

#[test]
fn routed_mode_opens_published_ports_on_container_addresses_only() {
    let mut world = World::new();
    world.route_outside();
    let daemon = world.daemon();
    daemon.json(&[
        "network",
        "create",
        "direct",
        "--subnet",
        "10.79.0.0/24",
        "--gateway-mode",
        "routed",
    ]);
    let ip = endpoint(
        &mut world,
        &daemon,
        "direct",
        "r",
        &["-p", "8080:80", "-p", "53/udp"],
    );
    world
        .ext
        .ip(&["route", "add", "10.79.0.0/24", "via", HOST_IP]);
    let r = world.container_ns("r");
    let _web = TcpServer::start(r, "0.0.0.0:80", "web");
    let _dns = UdpServer::start(r, "0.0.0.0:53", "dns");
    let _closed = TcpServer::start(r, "0.0.0.0:81", "closed");

    assert_eq!(
        tcp_request(&world.ext, &format!("{ip}:80"), TIMEOUT).unwrap(),
        format!("web saw {EXT_IP} said hello"),
        "published port on the container address, untranslated"
    );
    assert_eq!(
        udp_request(&world.ext, &format!("{ip}:53"), TIMEOUT).unwrap(),
        format!("dns saw {EXT_IP}")
    );
    assert!(tcp_request(&world.ext, &format!("{ip}:81"), SILENCE).is_err());
    assert!(tcp_request(&world.ext, &format!("{ip}:8080"), SILENCE).is_err());
    // Outbound keeps the container address (no masquerade in routed mode).
    let _out = TcpServer::start(&world.ext, &format!("{OUTSIDE_IP}:80"), "outside");
    assert_eq!(
        tcp_request(r, &format!("{OUTSIDE_IP}:80"), TIMEOUT).unwrap(),
        format!("outside saw {ip} said hello")
    );
    let net = daemon.json(&["network", "inspect", "direct"]);
    assert_eq!(
        (net["gateway_mode"].as_str(), net["masquerade"].as_bool()),
        (Some("routed"), Some(false))
    );

    // And in nat mode the container address stays closed, published or not.
    daemon.json(&["network", "create", "nat", "--subnet", "10.80.0.0/24"]);
    let nat = endpoint(&mut world, &daemon, "nat", "n", &["-p", "9090:80"]);
    world
        .ext
        .ip(&["route", "add", "10.80.0.0/24", "via", HOST_IP]);
    let _n = TcpServer::start(world.container_ns("n"), "0.0.0.0:80", "n");
    assert!(tcp_request(&world.ext, &format!("{nat}:80"), SILENCE).is_err());
    assert!(tcp_request(&world.ext, &format!("{HOST_IP}:9090"), TIMEOUT).is_ok());
}

#[test]
fn contradictory_network_options_are_refused_and_change_nothing() {
    let world = World::new();
    let daemon = world.daemon();
    let cases: [&[&str]; 8] = [
        &["--internal", "--gateway-mode", "routed"],
        &["--gateway-mode", "routed", "--masquerade", "true"],
        &["--masquerade", "false", "--snat-ip", HOST_IP],
        &["--internal", "--masquerade", "true"],
        &[
            "--icc",
            "false",
            "-o",
            "com.docker.network.bridge.enable_icc=true",
        ],
        &["--gateway-mode", "isolated"],
        &["-o", "com.docker.network.bridge.no_such_option=1"],
        &["-o", "com.docker.network.driver.mtu=big"],
    ];
    for flags in cases {
        let mut args = vec!["network", "create", "n", "--subnet", "10.81.0.0/24"];
        args.extend_from_slice(flags);
        let err = daemon.fails(&args);
        assert!(!err.is_empty(), "{flags:?}");
    }
    assert!(
        daemon
            .json(&["network", "ls"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        !world
            .host
            .ip(&["-o", "link", "show", "type", "bridge"])
            .contains("nd-"),
        "no bridge left behind"
    );
    // The Docker keys that are honoured show up in inspect.
    let net = daemon.json(&[
        "network",
        "create",
        "n",
        "--subnet",
        "10.81.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "-o",
        "com.docker.network.bridge.host_binding_ipv4=198.51.100.1",
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv4=nat",
    ]);
    assert_eq!(net["masquerade"], false);
    assert_eq!(net["mtu"], 1400);
    assert_eq!(net["host_binding_ipv4"], HOST_IP);
}

#[test]
fn policy_survives_a_daemon_restart() {
    let mut world = World::new();
    world.route_outside();
    let mut daemon = world.daemon();
    daemon.json(&[
        "network",
        "create",
        "app",
        "--subnet",
        "10.82.0.0/24",
        "--icc",
        "false",
    ]);
    let db = endpoint(&mut world, &daemon, "app", "db", &["--expose", "5432"]);
    let web = endpoint(&mut world, &daemon, "app", "web", &["--link", "db"]);
    daemon.restart();
    let net = daemon.json(&["network", "inspect", "app"]);
    assert_eq!(
        (net["icc"].as_bool(), net["masquerade"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(
        daemon.json(&["endpoint", "inspect", "web"])["links"][0],
        "db"
    );
    assert!(connects(&world, "web", "db", &db, 5432), "link restored");
    assert!(!connects(&world, "db", "web", &web, 80), "ICC off restored");
    let _out = TcpServer::start(&world.ext, &format!("{OUTSIDE_IP}:80"), "outside");
    assert_eq!(
        tcp_request(
            world.container_ns("web"),
            &format!("{OUTSIDE_IP}:80"),
            TIMEOUT
        )
        .unwrap(),
        format!("outside saw {HOST_IP} said hello")
    );
}

/// A UDP socket bound to `bind` in a namespace, waiting a bounded time for one datagram.
struct Catch(JoinHandle<Option<(String, SocketAddr)>>);

impl Catch {
    /// Binds (before it returns) and waits at most `wait`.
    fn start(ns: &Netns, bind: &str, wait: Duration) -> Self {
        let bind: SocketAddr = bind.parse().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = ns.spawn(move || {
            let sock = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
            sock.set_read_timeout(Some(wait)).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 64];
            let (n, peer) = common::retry_interrupted(|| sock.recv_from(&mut buf)).ok()?;
            Some((String::from_utf8_lossy(&buf[..n]).into_owned(), peer))
        });
        rx.recv_timeout(TIMEOUT).expect("listener bound");
        Self(handle)
    }

    /// The datagram (payload, sender), or `None` if none came in time.
    fn caught(self) -> Option<(String, SocketAddr)> {
        self.0.join().expect("listener thread")
    }
}

/// The index of `ifname` in `ns`.
fn ifindex(ns: &Netns, ifname: &str) -> u32 {
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: a valid C string; the call only reads it.
    let index = ns.run(move || unsafe { libc::if_nametoindex(name.as_ptr()) });
    assert_ne!(index, 0, "no interface {ifname} in {}", ns.name);
    index
}

/// Sends one datagram (`SO_BROADCAST` set) from container `role` to the group address `to`;
/// returns the address it came from (the source the kernel chose for it).
fn send_to_group(world: &World, role: &str, to: SocketAddr) -> SocketAddr {
    world.container_ns(role).run(move || {
        let any = if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
        let sock = UdpSocket::bind(any).unwrap();
        sock.set_broadcast(true).unwrap();
        sock.connect(to)
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        sock.send(b"to the group")
            .unwrap_or_else(|e| panic!("send {to}: {e}"));
        sock.local_addr().unwrap()
    })
}

/// A datagram from container `from` to the group address `to`: whether container `peer`,
/// listening on the wildcard address, got it. The host, listening on `host_bind` (an address
/// of the bridge's link only), must get it in any case, from `from`'s address.
fn group_reaches(world: &World, [from, peer]: [&str; 2], to: &str, host_bind: &str) -> bool {
    let to: SocketAddr = to.parse().unwrap();
    let wild = if to.is_ipv6() { "[::]" } else { "0.0.0.0" };
    let listen = Catch::start(
        world.container_ns(peer),
        &format!("{wild}:{}", to.port()),
        SILENCE,
    );
    let host = Catch::start(&world.host, host_bind, TIMEOUT);
    let sender = send_to_group(world, from, to);
    // Compared without the scope: each side names the link by its own interface.
    let plain = |a: SocketAddr| (a.ip(), a.port());
    let (payload, seen) = host
        .caught()
        .unwrap_or_else(|| panic!("the host got nothing sent to {to}"));
    assert_eq!(
        (payload.as_str(), plain(seen)),
        ("to the group", plain(sender)),
        "host, {to}"
    );
    let got = listen.caught();
    if let Some((payload, seen)) = &got {
        assert_eq!(
            (payload.as_str(), plain(*seen)),
            ("to the group", plain(sender)),
            "{peer}, {to}"
        );
    }
    got.is_some()
}

/// Multicast and broadcast from container `from` on network `net` (subnet `10.N.0.0/24`):
/// whether container `peer` gets a datagram to `ff02::1`, to the subnet's broadcast address
/// and to `255.255.255.255`. The host gets every one (`group_reaches` asserts it).
fn groups_reach(world: &World, daemon: &Daemon, net: &str, n: u8, roles: [&str; 2]) -> [bool; 3] {
    let inspect = daemon.json(&["network", "inspect", net]);
    let bridge = ifindex(
        &world.host,
        inspect["bridge"].as_str().expect("bridge name"),
    );
    let eth0 = ifindex(world.container_ns(roles[0]), "eth0");
    let port = 7000 + u16::from(n) * 10;
    let bcast = format!("10.{n}.0.255:{}", port + 1);
    let lbcast = format!("255.255.255.255:{}", port + 2);
    [
        group_reaches(
            world,
            roles,
            &format!("[ff02::1%{eth0}]:{port}"),
            &format!("[ff02::1%{bridge}]:{port}"),
        ),
        group_reaches(world, roles, &bcast, &bcast),
        group_reaches(world, roles, &lbcast, &lbcast),
    ]
}

#[test]
fn icc_off_keeps_multicast_and_broadcast_between_containers_but_not_from_the_host() {
    let mut world = World::new();
    let daemon = world.daemon();
    network6(&daemon, "mcopen", "10.86.0.0/24", "2001:db8:86::/64", &[]);
    network6(
        &daemon,
        "mcclosed",
        "10.87.0.0/24",
        "2001:db8:87::/64",
        &["--icc", "false"],
    );
    for (net, role) in [
        ("mcopen", "a"),
        ("mcopen", "b"),
        ("mcclosed", "x"),
        ("mcclosed", "y"),
    ] {
        endpoint(&mut world, &daemon, net, role, &[]);
    }

    // ICC on: the bridge floods them to the other container and to the host.
    assert_eq!(
        groups_reach(&world, &daemon, "mcopen", 86, ["a", "b"]),
        [true; 3]
    );
    assert_eq!(drops(&daemon, "icc"), 0);
    // ICC off: only the host gets them (a copy enters the bridge), counted as ICC drops.
    assert_eq!(
        groups_reach(&world, &daemon, "mcclosed", 87, ["x", "y"]),
        [false; 3]
    );
    assert_eq!(
        groups_reach(&world, &daemon, "mcclosed", 87, ["y", "x"]),
        [false; 3]
    );
    assert!(drops(&daemon, "icc") >= 6);
}
