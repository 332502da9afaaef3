//! Outbound traffic from containers: masquerade (TCP, UDP, ICMP echo) in eBPF, its options,
//! NAT port allocation, the conntrack table's limits and sweeper, and stale flows.

mod common;

use std::time::{Duration, Instant};

use common::{
    Daemon, EXT_IP, HOST_IP, OUTSIDE_IP, SILENCE, TIMEOUT, TcpServer, UdpServer, World,
    assert_no_firewall_rules, drops, endpoint, map_dump, ping, retry_interrupted, tcp_request,
    tcp_request_reset, udp_ask, udp_peer_server, udp_request, udp_socket,
};
use serde_json::Value;

/// A network `net` on `subnet` (extra `network create` flags in `flags`) with one endpoint
/// `role`; returns the endpoint's address.
fn container(
    world: &mut World,
    daemon: &Daemon,
    net: &str,
    subnet: &str,
    flags: &[&str],
    role: &str,
) -> String {
    let mut args = vec!["network", "create", net, "--subnet", subnet];
    args.extend_from_slice(flags);
    daemon.json(&args);
    endpoint(world, daemon, net, role, &[])
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn containers_reach_outside_with_the_host_address() {
    let mut world = World::new();
    world.route_outside();
    // Docker sets FORWARD to DROP; masqueraded flows do not go through netfilter at all.
    assert!(
        world
            .host
            .exec("iptables", &["-P", "FORWARD", "DROP"])
            .status
            .success()
    );
    let daemon = world.daemon();
    container(&mut world, &daemon, "out", "10.89.0.0/24", &[], "c");
    let c = world.container_ns("c");
    let _tcp = TcpServer::start(&world.ext, &format!("{OUTSIDE_IP}:80"), "outside");
    let _udp = UdpServer::start(&world.ext, &format!("{OUTSIDE_IP}:53"), "dns");

    // The outside has no route to 10.89.0.0/24: an answer proves the translation both ways.
    for _ in 0..3 {
        let answer = tcp_request(c, &format!("{OUTSIDE_IP}:80"), TIMEOUT).expect("TCP out");
        assert_eq!(answer, format!("outside saw {HOST_IP} said hello"));
    }
    let answer = udp_request(c, &format!("{OUTSIDE_IP}:53"), TIMEOUT).expect("UDP out");
    assert_eq!(answer, format!("dns saw {HOST_IP}"));
    assert!(ping(c, OUTSIDE_IP), "ICMP echo out and back");
    // Redirects are router hops: the reply's TTL went down by one on the way in, and a
    // packet with no hop left gets the kernel's "time exceeded" from the gateway.
    let out = c.exec("ping", &["-c", "1", "-W", "2", OUTSIDE_IP]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ttl=63"), "{text}");
    let out = c.exec("ping", &["-c", "1", "-W", "2", "-t", "1", OUTSIDE_IP]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Time to live exceeded"), "{text}");
    // A neighbour on the uplink's own link, too.
    let _near = TcpServer::start(&world.ext, &format!("{EXT_IP}:81"), "near");
    let answer = tcp_request(c, &format!("{EXT_IP}:81"), TIMEOUT).expect("TCP to the link");
    assert_eq!(answer, format!("near saw {HOST_IP} said hello"));

    // The flows are in ND_CT with named fields; finished TCP flows are closing.
    let ct = map_dump(&daemon, "ND_CT");
    let masq: Vec<&Value> = ct.iter().filter(|e| e["value"]["kind"] == 2).collect();
    assert!(masq.len() >= 2 * 5, "both directions of each flow: {ct:?}");
    assert!(
        masq.iter()
            .any(|e| e["key"]["proto"] == 6 && e["value"]["state"] == 2),
        "{masq:?}"
    );
    for e in &masq {
        if e["key"]["dir"] == 0 {
            let port = e["value"]["xlate_port"].as_u64().unwrap();
            assert!((61000..=65535).contains(&port), "NAT port {port}");
        }
    }
    assert_no_firewall_rules(&world);
}

#[test]
fn masquerade_off_and_snat_ip() {
    let mut world = World::new();
    world.route_outside();
    // A second host address to masquerade with.
    world
        .host
        .ip(&["addr", "add", "198.51.100.3/24", "dev", "up0"]);
    let daemon = world.daemon();
    let plain = container(
        &mut world,
        &daemon,
        "plain",
        "10.90.0.0/24",
        &["--masquerade", "false"],
        "p",
    );
    container(
        &mut world,
        &daemon,
        "picked",
        "10.91.0.0/24",
        &["--snat-ip", "198.51.100.3"],
        "s",
    );
    container(
        &mut world,
        &daemon,
        "docker",
        "10.92.0.0/24",
        &["-o", "com.docker.network.host_ipv4=198.51.100.3"],
        "d",
    );
    let _tcp = TcpServer::start(&world.ext, &format!("{OUTSIDE_IP}:80"), "outside");
    let _udp = UdpServer::start(&world.ext, &format!("{OUTSIDE_IP}:53"), "dns");

    // Without masquerade the container's address leaves as is; it needs a route back.
    let p = world.container_ns("p");
    assert!(tcp_request(p, &format!("{OUTSIDE_IP}:80"), SILENCE).is_err());
    world
        .ext
        .ip(&["route", "add", "10.90.0.0/24", "via", HOST_IP]);
    let answer = tcp_request(p, &format!("{OUTSIDE_IP}:80"), TIMEOUT).expect("routed back");
    assert_eq!(answer, format!("outside saw {plain} said hello"));
    let answer = udp_request(p, &format!("{OUTSIDE_IP}:53"), TIMEOUT).expect("UDP");
    assert_eq!(answer, format!("dns saw {plain}"));
    // Replies come in; nothing else does (gateway mode nat).
    let _inside = TcpServer::start(p, "0.0.0.0:8080", "inside");
    assert!(tcp_request(&world.ext, &format!("{plain}:8080"), SILENCE).is_err());

    for role in ["s", "d"] {
        let c = world.container_ns(role);
        let answer = tcp_request(c, &format!("{OUTSIDE_IP}:80"), TIMEOUT).expect("snat ip");
        assert_eq!(answer, "outside saw 198.51.100.3 said hello");
        assert_eq!(
            udp_request(c, &format!("{OUTSIDE_IP}:53"), TIMEOUT).unwrap(),
            "dns saw 198.51.100.3"
        );
    }
    let net = daemon.json(&["network", "inspect", "picked"]);
    assert_eq!(net["snat_ip"], "198.51.100.3");
    assert_eq!(
        daemon.json(&["network", "inspect", "plain"])["masquerade"],
        false
    );
    // Not a host address: refused.
    let err = daemon.fails(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.93.0.0/24",
        "--snat-ip",
        "192.0.2.77",
    ]);
    assert!(err.contains("192.0.2.77"), "{err}");
}

#[test]
fn nat_ports_avoid_published_ports_and_exhaustion_is_visible() {
    let mut world = World::new();
    world.route_outside();
    let daemon = Daemon::start(
        &world,
        &[
            "--nat-port-range",
            "61000-61001",
            "--ct-sweep-interval",
            "1",
        ],
    );
    container(&mut world, &daemon, "out", "10.89.0.0/24", &[], "c");
    // Host port 61000/udp is published: masquerade must never hand it out.
    endpoint(&mut world, &daemon, "out", "pub", &["-p", "61000:53/udp"]);
    let _srv = udp_peer_server(&world.ext, &format!("{OUTSIDE_IP}:53"));
    let c = world.container_ns("c");
    let target = format!("{OUTSIDE_IP}:53");

    let first = udp_socket(c, TIMEOUT);
    assert_eq!(
        udp_ask(&first, &target).unwrap(),
        format!("{HOST_IP}:61001")
    );
    // The only other port is published: a second flow to the same server has none left.
    let second = udp_socket(c, SILENCE);
    assert!(udp_ask(&second, &target).is_err(), "no NAT port left");
    assert!(drops(&daemon, "nat_ports_exhausted") > 0);
    // The first flow keeps working, and a flow to another server port can reuse 61001.
    assert_eq!(
        udp_ask(&first, &target).unwrap(),
        format!("{HOST_IP}:61001")
    );
    let _other = udp_peer_server(&world.ext, &format!("{OUTSIDE_IP}:54"));
    assert_eq!(
        udp_ask(&second, &format!("{OUTSIDE_IP}:54")).unwrap(),
        format!("{HOST_IP}:61001")
    );
    wait_for("the refusal in the log", Duration::from_secs(5), || {
        daemon.log().contains("new flows refused")
    });
}

/// A container "c" masqueraded through one NAT port, which neither the closing timeout nor
/// the sweeper would free in time, and an external TCP server; the world, the daemon and
/// the server's address.
fn one_nat_port() -> (World, Daemon, TcpServer, String) {
    let mut world = World::new();
    world.route_outside();
    let daemon = Daemon::start(
        &world,
        &[
            "--nat-port-range",
            "61000-61000",
            "--ct-timeout-tcp-close",
            "600",
            "--ct-sweep-interval",
            "600",
        ],
    );
    container(&mut world, &daemon, "out", "10.89.0.0/24", &[], "c");
    let target = format!("{OUTSIDE_IP}:7100");
    let srv = TcpServer::start(&world.ext, &target, "out");
    (world, daemon, srv, target)
}

#[test]
fn a_new_connection_takes_over_the_nat_port_of_a_closed_idle_flow() {
    let (world, _daemon, _srv, target) = one_nat_port();
    let c = world.container_ns("c");
    let first = tcp_request(c, &target, TIMEOUT).expect("first connection");
    assert_eq!(first, format!("out saw {HOST_IP} said hello"));
    // Closed (FIN both ways) and idle for longer than the reclaim delay.
    std::thread::sleep(Duration::from_millis(2500));
    let second = tcp_request(c, &target, TIMEOUT).expect("the closed flow's port is reused");
    assert_eq!(second, format!("out saw {HOST_IP} said hello"));
}

#[test]
fn a_reset_flow_gives_its_nat_port_to_the_next_connection_at_once() {
    let (world, daemon, _srv, target) = one_nat_port();
    let c = world.container_ns("c");
    // Each connection ends with the client's RST; the next one, a moment later, needs the
    // only NAT port (a closed flow that was not reset would keep it for 2 s).
    for round in 0..10 {
        let answer =
            tcp_request_reset(c, &target, TIMEOUT).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(answer, format!("out saw {HOST_IP} said hello"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        drops(&daemon, "nat_ports_exhausted"),
        0,
        "no SYN waited for the port"
    );
}

#[test]
fn a_full_conntrack_table_refuses_new_flows_only() {
    let mut world = World::new();
    world.route_outside();
    // Two masqueraded flows fill four entries.
    let daemon = Daemon::start(
        &world,
        &["--ct-max-entries", "4", "--ct-sweep-interval", "1"],
    );
    container(&mut world, &daemon, "out", "10.89.0.0/24", &[], "c");
    let _srv = udp_peer_server(&world.ext, &format!("{OUTSIDE_IP}:53"));
    let c = world.container_ns("c");
    let target = format!("{OUTSIDE_IP}:53");
    let a = udp_socket(c, TIMEOUT);
    let b = udp_socket(c, TIMEOUT);
    udp_ask(&a, &target).expect("first flow");
    udp_ask(&b, &target).expect("second flow");
    let third = udp_socket(c, SILENCE);
    assert!(udp_ask(&third, &target).is_err(), "table full");
    assert!(drops(&daemon, "conntrack_full") > 0);
    for _ in 0..3 {
        udp_ask(&a, &target).expect("existing flow a");
        udp_ask(&b, &target).expect("existing flow b");
    }
    wait_for("the refusal in the log", Duration::from_secs(5), || {
        daemon.log().contains("new flows refused")
    });
}

#[test]
fn the_sweeper_removes_idle_flows() {
    let mut world = World::new();
    world.route_outside();
    let daemon = Daemon::start(
        &world,
        &[
            "--ct-timeout-udp",
            "1",
            "--ct-timeout-icmp",
            "1",
            "--ct-sweep-interval",
            "1",
        ],
    );
    container(&mut world, &daemon, "out", "10.89.0.0/24", &[], "c");
    let _srv = udp_peer_server(&world.ext, &format!("{OUTSIDE_IP}:53"));
    let c = world.container_ns("c");
    let sock = udp_socket(c, TIMEOUT);
    let before = udp_ask(&sock, &format!("{OUTSIDE_IP}:53")).unwrap();
    assert!(!map_dump(&daemon, "ND_CT").is_empty());
    wait_for("idle entries to go", Duration::from_secs(10), || {
        map_dump(&daemon, "ND_CT").is_empty()
    });
    // A new packet is a new flow, and works (with a fresh port).
    let after = udp_ask(&sock, &format!("{OUTSIDE_IP}:53")).unwrap();
    assert!(after.starts_with(HOST_IP), "{before} then {after}");
}

/// moby#53384: after a UDP server's endpoint is re-created on the same host port (host port
/// != container port), a client that keeps its source port reaches the new one.
#[test]
fn a_restarted_udp_endpoint_gets_the_traffic() {
    let mut world = World::new();
    let daemon = world.daemon();
    daemon.json(&["network", "create", "front", "--subnet", "10.88.0.0/24"]);
    let client = udp_socket(&world.ext, TIMEOUT);
    let target = format!("{HOST_IP}:5353");

    let ip = endpoint(&mut world, &daemon, "front", "old", &["-p", "5353:53/udp"]);
    let old = UdpServer::start(world.container_ns("old"), "0.0.0.0:53", "old");
    assert_eq!(
        udp_ask(&client, &target).unwrap(),
        format!("old saw {EXT_IP}")
    );
    drop(old);
    daemon.json(&["endpoint", "rm", "old"]);
    // Same address again.
    let again = endpoint(&mut world, &daemon, "front", "new", &["-p", "5353:53/udp"]);
    assert_eq!(again, ip);
    let new = UdpServer::start(world.container_ns("new"), "0.0.0.0:53", "new");
    assert_eq!(
        udp_ask(&client, &target).unwrap(),
        format!("new saw {EXT_IP}")
    );
    drop(new);
    daemon.json(&["endpoint", "rm", "new"]);
    // And a different address: a filler takes the old one.
    endpoint(&mut world, &daemon, "front", "filler", &[]);
    let other = endpoint(
        &mut world,
        &daemon,
        "front",
        "newer",
        &["-p", "5353:53/udp"],
    );
    assert_ne!(other, ip);
    let _newer = UdpServer::start(world.container_ns("newer"), "0.0.0.0:53", "newer");
    assert_eq!(
        udp_ask(&client, &target).unwrap(),
        format!("newer saw {EXT_IP}")
    );
    // No entry of the removed endpoints is left.
    let ct = map_dump(&daemon, "ND_CT");
    let ip_be = u32::from_ne_bytes(ip.parse::<std::net::Ipv4Addr>().unwrap().octets());
    assert!(
        !ct.iter().any(|e| e["value"]["owner_addr_be"] == ip_be),
        "stale entries: {ct:?}"
    );
}

/// TCP state drives expiry: with 1-second SYN and closing timeouts, a closed connection's
/// entries are swept while an idle established one stays and keeps working.
#[test]
fn closed_tcp_flows_go_established_ones_stay() {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
    };

    let mut world = World::new();
    world.route_outside();
    let daemon = Daemon::start(
        &world,
        &[
            "--ct-timeout-tcp-syn",
            "1",
            "--ct-timeout-tcp-close",
            "1",
            "--ct-sweep-interval",
            "1",
        ],
    );
    container(&mut world, &daemon, "out", "10.89.0.0/24", &[], "c");
    // An echo server that keeps its connections open (bounded: 30 s).
    let listener = world
        .ext
        .run(|| TcpListener::bind(format!("{OUTSIDE_IP}:7")).unwrap());
    let server = std::thread::spawn(move || {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut accepted = 0;
        while Instant::now() < deadline && accepted < 2 {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            accepted += 1;
            std::thread::spawn(move || {
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut buf = [0u8; 64];
                while let Ok(n) = retry_interrupted(|| conn.read(&mut buf)) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let c = world.container_ns("c");
    let connect = || {
        let mut s = c.run(|| {
            TcpStream::connect_timeout(&format!("{OUTSIDE_IP}:7").parse().unwrap(), TIMEOUT)
                .expect("connect out")
        });
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 4];
        s.write_all(b"ping").unwrap();
        s.read_exact(&mut buf).expect("echo");
        s
    };
    let mut kept = connect();
    let closed = connect();
    let port_of = |s: &TcpStream| s.local_addr().unwrap().port();
    let (kept_port, closed_port) = (port_of(&kept), port_of(&closed));
    drop(closed);
    let tcp_ports = || -> Vec<u64> {
        map_dump(&daemon, "ND_CT")
            .iter()
            .filter(|e| e["key"]["proto"] == 6 && e["key"]["dir"] == 0)
            .map(|e| e["key"]["sport"].as_u64().unwrap())
            .collect()
    };
    wait_for(
        "the closed flow to be swept",
        Duration::from_secs(10),
        || !tcp_ports().contains(&u64::from(closed_port)),
    );
    // Idle for longer than the SYN and closing timeouts: established is what keeps it.
    std::thread::sleep(Duration::from_secs(3));
    assert!(tcp_ports().contains(&u64::from(kept_port)));
    let mut buf = [0u8; 5];
    kept.write_all(b"again").unwrap();
    kept.read_exact(&mut buf)
        .expect("the established flow still works");
    assert_eq!(&buf, b"again");
    drop(kept);
    server.join().unwrap();
}

/// ICMP errors about a masqueraded flow reach the container: a connected UDP socket learns
/// that nothing listens on the other side (the same path carries PMTU's "frag needed").
#[test]
fn icmp_errors_reach_the_container() {
    let mut world = World::new();
    world.route_outside();
    let daemon = world.daemon();
    container(&mut world, &daemon, "out", "10.89.0.0/24", &[], "c");
    let sock = udp_socket(world.container_ns("c"), TIMEOUT);
    sock.connect(format!("{OUTSIDE_IP}:9")).unwrap();
    sock.send(b"anyone?").unwrap();
    let mut buf = [0u8; 16];
    let err = retry_interrupted(|| sock.recv(&mut buf)).expect_err("nothing listens on port 9");
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the port-unreachable error came back translated: {err}"
    );
}
