//! Published ports reached from the host itself over IPv6 (`[::1]`, a host IPv6 address)
//! and through IPv4-mapped addresses on dual-stack sockets, by the IPv6 cgroup socket hooks;
//! IPv6 host-port reservation.

mod common;

use common::{
    Daemon, HOST_IP, SILENCE, TIMEOUT, TcpServer, UdpServer, World,
    sockets::{bind, tcp_with_peer, udp_with_source},
    tcp_request,
};

const GATEWAY: &str = "10.89.0.1";
/// The IPv6 gateway (the bridge's address) of the network.
const BRIDGE6: &str = "2001:db8:89::1";
/// An IPv6 address of the host's uplink.
const HOST6: &str = "2001:db8:1::1";

/// An `--ipv6` network with one endpoint "web" publishing `ports`, with IPv4 and IPv6 TCP
/// servers on 80 and UDP servers on 53 in it.
struct Web {
    _servers: (TcpServer, UdpServer, TcpServer, UdpServer),
}

fn web(world: &mut World, daemon: &Daemon, ports: &[&str]) -> Web {
    daemon.json(&[
        "network",
        "create",
        "front",
        "--subnet",
        "10.89.0.0/24",
        "--ipv6",
        "--subnet-v6",
        "2001:db8:89::/64",
        "--gateway-v6",
        BRIDGE6,
    ]);
    let ep = common::create_endpoint(world, daemon, "front", "web", &common::publish_args(ports));
    let ip6 = ep["ip6"].as_str().expect("an IPv6 address").to_string();
    let c = world.container_ns("web");
    Web {
        _servers: (
            TcpServer::start(c, "0.0.0.0:80", "web"),
            UdpServer::start(c, "0.0.0.0:53", "dns"),
            TcpServer::start(c, &format!("[{ip6}]:80"), "web6"),
            UdpServer::start(c, &format!("[{ip6}]:53"), "dns6"),
        ),
    }
}

/// A world whose host has `HOST6` on its uplink (before the daemon starts).
fn world_with_host6() -> World {
    let world = World::new();
    world
        .host
        .ip(&["addr", "add", &format!("{HOST6}/64"), "dev", "up0", "nodad"]);
    world
}

#[test]
fn the_host_reaches_ipv6_published_ports_on_loopback_and_its_own_address() {
    let mut world = world_with_host6();
    let daemon = world.daemon();
    // Published on 0.0.0.0 and [::].
    let _web = web(&mut world, &daemon, &["8080:80", "5353:53/udp"]);
    for host_addr in ["::1", HOST6] {
        let target = format!("[{host_addr}]:8080");
        let (answer, peer) = tcp_with_peer(&world.host, &target);
        // Straight to the container's IPv6 address, over the bridge.
        assert_eq!(answer, format!("web6 saw {BRIDGE6} said hello"), "{target}");
        assert_eq!(
            peer,
            target.parse().unwrap(),
            "getpeername shows what was used"
        );
        let target = format!("[{host_addr}]:5353");
        let (answer, from) = udp_with_source(&world.host, &target);
        assert_eq!(answer, format!("dns6 saw {BRIDGE6}"), "{target}");
        assert_eq!(
            from,
            target.parse().unwrap(),
            "the reply comes from {target}"
        );
    }
    // A connected UDP socket too (connect6, then recvmsg6).
    let (answer, from) = world.host.run(|| {
        let s = std::net::UdpSocket::bind("[::]:0").unwrap();
        s.connect("[::1]:5353").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.send(b"hello").unwrap();
        let mut buf = [0u8; 128];
        let (n, from) = common::retry_interrupted(|| s.recv_from(&mut buf)).expect("answer");
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    });
    assert_eq!(answer, format!("dns6 saw {BRIDGE6}"));
    assert_eq!(from, "[::1]:5353".parse().unwrap());
    // Not published: nothing listens on the host.
    assert!(tcp_request(&world.host, "[::1]:8081", SILENCE).is_err());
    // Another namespace's ::1 is its own.
    let _ext = TcpServer::start(&world.ext, "[::1]:8080", "ext");
    assert_eq!(
        tcp_request(&world.ext, "[::1]:8080", TIMEOUT).unwrap(),
        "ext saw ::1 said hello"
    );
    let c = world.container_ns("web");
    let _own = TcpServer::start(c, "[::1]:8080", "own");
    assert_eq!(
        tcp_request(c, "[::1]:8080", TIMEOUT).unwrap(),
        "own saw ::1 said hello"
    );
}

#[test]
fn ipv4_mapped_addresses_behave_like_the_ipv4_address() {
    let mut world = world_with_host6();
    let daemon = world.daemon();
    let _web = web(
        &mut world,
        &daemon,
        &["0.0.0.0:8080:80", "0.0.0.0:5353:53/udp"],
    );
    for v4 in ["127.0.0.1", HOST_IP] {
        let target = format!("[::ffff:{v4}]:8080");
        let (answer, peer) = tcp_with_peer(&world.host, &target);
        assert_eq!(answer, format!("web saw {GATEWAY} said hello"), "{target}");
        assert_eq!(peer, target.parse().unwrap(), "{target}");
        let target = format!("[::ffff:{v4}]:5353");
        let (answer, from) = udp_with_source(&world.host, &target);
        assert_eq!(answer, format!("dns saw {GATEWAY}"), "{target}");
        assert_eq!(from, target.parse().unwrap(), "{target}");
    }
    // The IPv6 address of the same port is not published.
    assert!(tcp_request(&world.host, "[::1]:8080", SILENCE).is_err());
}

#[test]
fn ipv6_binds_of_published_ports_fail() {
    let mut world = world_with_host6();
    let daemon = world.daemon();
    let _web = web(
        &mut world,
        &daemon,
        &[
            &format!("{HOST_IP}:7070:80"),
            "[::]:8080:80",
            &format!("[{HOST6}]:6060:53/udp"),
        ],
    );
    let in_use = Err(std::io::ErrorKind::AddrInUse);
    // Published on every IPv6 address.
    assert_eq!(bind(&world.host, "[::1]:8080", false), in_use);
    assert_eq!(bind(&world.host, &format!("[{HOST6}]:8080"), false), in_use);
    // Published on one IPv6 address.
    assert_eq!(bind(&world.host, &format!("[{HOST6}]:6060"), true), in_use);
    assert_eq!(bind(&world.host, "[::1]:6060", true), Ok(()));
    // `[::]` (dual-stack) conflicts with an IPv4 port on a single address; the mapped form
    // of that address too.
    assert_eq!(bind(&world.host, "[::]:7070", false), in_use);
    assert_eq!(
        bind(&world.host, &format!("[::ffff:{HOST_IP}]:7070"), false),
        in_use
    );
    assert_eq!(bind(&world.host, "[::ffff:127.0.0.1]:7070", false), Ok(()));
    // Free: another port, the other protocol.
    assert_eq!(bind(&world.host, "[::]:7071", false), Ok(()));
    assert_eq!(bind(&world.host, "[::]:7070", true), Ok(()));
    // Other namespaces are not concerned.
    assert_eq!(bind(&world.ext, "[::]:7070", false), Ok(()));
    assert_eq!(bind(&world.ext, "[::1]:8080", false), Ok(()));
}

#[test]
fn ipv6_bindings_reserve_their_ports() {
    let mut world = world_with_host6();
    let daemon = world.daemon();
    daemon.json(&[
        "network",
        "create",
        "front6",
        "--subnet",
        "10.90.0.0/24",
        "--ipv6",
        "--subnet-v6",
        "2001:db8:90::/64",
    ]);
    let netns = world.container("web");
    let spec = format!("[{HOST6}]:6061:53/udp");
    daemon.json(&[
        "endpoint",
        "create",
        "front6",
        "--netns",
        netns.to_str().unwrap(),
        "--name",
        "web",
        "-p",
        &spec,
    ]);
    let in_use = Err(std::io::ErrorKind::AddrInUse);
    // Published on one IPv6 address: `[::]` would clash with a proxy there, the IPv4
    // wildcard and another IPv6 address would not.
    assert_eq!(bind(&world.host, "[::]:6061", true), in_use);
    assert_eq!(bind(&world.host, "0.0.0.0:6061", true), Ok(()));
    assert_eq!(bind(&world.host, "[::1]:6061", true), Ok(()));
    assert_eq!(bind(&world.host, "[::]:6061", false), Ok(()));
    let reserved = || {
        world
            .host
            .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports"))
            .unwrap()
    };
    assert_eq!(reserved().trim(), "6061");
    daemon.json(&["endpoint", "rm", "web"]);
    assert_eq!(bind(&world.host, "[::]:6061", true), Ok(()));
    assert_eq!(reserved().trim(), "");
}
