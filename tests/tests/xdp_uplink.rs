//! `--uplink-mode xdp`: published ports through `nd_xdp_uplink` on the uplink's XDP hook,
//! with real packets from the external namespace.
//!
//! The uplink here is a veth, standing in for a NIC. A NIC hands XDP frames whose checksums
//! are complete; a local sender behind a veth leaves them partial (`CHECKSUM_PARTIAL`), and
//! an XDP redirect drops that state, so the container would see bad checksums. The external
//! end therefore computes its checksums itself (tx checksum offload off), as a wire does.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
};

use common::{
    EXT_IP, EchoServer, HOST_IP, SILENCE, TIMEOUT, TcpServer, UdpServer, World, tcp_request,
    tx_checksum_off, udp_request,
};

/// A world whose daemon runs the uplink in XDP mode, and a network 10.88.0.0/24 with one
/// endpoint "web" publishing `ports`.
fn xdp_world(ports: &[&str]) -> (World, common::Daemon, String) {
    let mut world = World::new();
    tx_checksum_off(&world.ext, "ext0");
    let daemon = common::Daemon::start(&world, &["--uplink-mode", "xdp"]);
    daemon.json(&["network", "create", "front", "--subnet", "10.88.0.0/24"]);
    let ip = common::endpoint(
        &mut world,
        &daemon,
        "front",
        "web",
        &common::publish_args(ports),
    );
    (world, daemon, ip)
}

#[test]
fn xdp_mode_carries_tcp_and_udp_with_the_client_address() {
    let (world, daemon, _ip) = xdp_world(&["8080:80", "5353:53/udp", "9000:7"]);
    let status = daemon.json(&["status"]);
    assert_eq!(
        status["xdp_uplinks"],
        serde_json::json!(["up0"]),
        "{status}"
    );
    let link = world.host.ip(&["-d", "link", "show", "up0"]);
    assert!(link.contains("xdp"), "no XDP program on the uplink: {link}");
    let c = world.container_ns("web");
    let _tcp = TcpServer::start(c, "0.0.0.0:80", "web");
    let _udp = UdpServer::start(c, "0.0.0.0:53", "dns");
    let _echo = EchoServer::start(c, "0.0.0.0", 7);

    for _ in 0..5 {
        let answer =
            tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("TCP via XDP");
        assert_eq!(answer, format!("web saw {EXT_IP} said hello"));
        let answer =
            udp_request(&world.ext, &format!("{HOST_IP}:5353"), TIMEOUT).expect("UDP via XDP");
        assert_eq!(answer, format!("dns saw {EXT_IP}"));
    }
    // A longer exchange on one connection: many segments each way, replies through
    // `nd_from_container` and the conntrack entry XDP made.
    let mut conn = world.ext.run(|| {
        TcpStream::connect_timeout(&format!("{HOST_IP}:9000").parse().unwrap(), TIMEOUT)
            .expect("connect through XDP")
    });
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let chunk: Vec<u8> = (0..1400u32).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; chunk.len()];
    for _ in 0..200 {
        conn.write_all(&chunk).unwrap();
        conn.read_exact(&mut back).expect("echo through XDP");
        assert_eq!(back, chunk);
    }
}

#[test]
fn xdp_mode_keeps_unpublished_ports_and_container_addresses_closed() {
    let (world, daemon, ip) = xdp_world(&["8080:80"]);
    let c = world.container_ns("web");
    let _published = TcpServer::start(c, "0.0.0.0:80", "web");
    let _unpublished = TcpServer::start(c, "0.0.0.0:81", "secret");
    let _host = TcpServer::start(&world.host, "0.0.0.0:2222", "host");
    world
        .ext
        .ip(&["route", "add", "10.88.0.0/24", "via", HOST_IP]);

    tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("published port works");
    let host =
        tcp_request(&world.ext, &format!("{HOST_IP}:2222"), TIMEOUT).expect("host service works");
    assert_eq!(host, format!("host saw {EXT_IP} said hello"));
    assert!(
        tcp_request(&world.ext, &format!("{HOST_IP}:81"), SILENCE).is_err(),
        "81 was never published"
    );
    for port in [80, 81] {
        let direct = tcp_request(&world.ext, &format!("{ip}:{port}"), SILENCE);
        assert!(
            direct.is_err(),
            "container reached from outside: {direct:?}"
        );
    }
    let status = daemon.json(&["status"]);
    assert!(
        status["drops"][0].as_u64().unwrap() > 0,
        "drops counted: {status}"
    );
}

#[test]
fn xdp_mode_survives_a_restart_and_cleanup_removes_it() {
    let (world, mut daemon, _ip) = xdp_world(&["8080:80"]);
    let c = world.container_ns("web");
    let _tcp = TcpServer::start(c, "0.0.0.0:80", "web");
    tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("before restart");
    let before = world.host.ip(&["-d", "link", "show", "up0"]);
    daemon.kill();
    // The pinned XDP link keeps working while the daemon is down.
    tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("daemon down");
    daemon.restart();
    tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("after restart");
    let after = world.host.ip(&["-d", "link", "show", "up0"]);
    assert!(before.contains("xdp") && after.contains("xdp"), "{after}");
    let (ok, _, err) = daemon.cli(&["status"]);
    assert!(ok, "{err}");
    daemon.stop();
    daemon.cleanup_offline(&world.host, &[]);
    let link = world.host.ip(&["-d", "link", "show", "up0"]);
    assert!(!link.contains("prog/xdp"), "XDP left behind: {link}");
}
