//! Hairpin: containers reaching published ports through host addresses, with real packets.

mod common;

use common::{
    Daemon, HOST_IP, TIMEOUT, TcpServer, UdpServer, World, endpoint, tcp_request, udp_request,
};

const GATEWAY: &str = "10.91.0.1";

/// Network "front" (10.91.0.0/24) with "web" publishing 8080:80 and 5353:53/udp, servers
/// running; returns them.
fn web(world: &mut World, daemon: &Daemon) -> (TcpServer, UdpServer) {
    daemon.json(&["network", "create", "front", "--subnet", "10.91.0.0/24"]);
    endpoint(
        world,
        daemon,
        "front",
        "web",
        &["-p", "8080:80", "-p", "5353:53/udp"],
    );
    let c = world.container_ns("web");
    (
        TcpServer::start(c, "0.0.0.0:80", "web"),
        UdpServer::start(c, "0.0.0.0:53", "dns"),
    )
}

#[test]
fn a_container_reaches_its_own_published_port_from_the_gateway() {
    let mut world = World::new();
    let daemon = world.daemon();
    let _servers = web(&mut world, &daemon);
    let c = world.container_ns("web");
    for host_addr in [HOST_IP, GATEWAY] {
        // Its own address would be a martian inside the container: Docker's gateway it is.
        let answer = tcp_request(c, &format!("{host_addr}:8080"), TIMEOUT)
            .unwrap_or_else(|e| panic!("{host_addr}:8080: {e}"));
        assert_eq!(answer, format!("web saw {GATEWAY} said hello"));
        let answer = udp_request(c, &format!("{host_addr}:5353"), TIMEOUT)
            .unwrap_or_else(|e| panic!("{host_addr}:5353: {e}"));
        assert_eq!(answer, format!("dns saw {GATEWAY}"));
    }
    // Repeated connections reuse nothing stale.
    for _ in 0..5 {
        tcp_request(c, &format!("{HOST_IP}:8080"), TIMEOUT).expect("again");
    }
}

#[test]
fn a_neighbour_reaches_the_published_port_with_its_own_address() {
    let mut world = World::new();
    let daemon = world.daemon();
    let _servers = web(&mut world, &daemon);
    let ip = endpoint(&mut world, &daemon, "front", "client", &[]);
    let c = world.container_ns("client");
    for host_addr in [HOST_IP, GATEWAY] {
        let answer = tcp_request(c, &format!("{host_addr}:8080"), TIMEOUT)
            .unwrap_or_else(|e| panic!("{host_addr}:8080: {e}"));
        assert_eq!(answer, format!("web saw {ip} said hello"));
        let answer = udp_request(c, &format!("{host_addr}:5353"), TIMEOUT)
            .unwrap_or_else(|e| panic!("{host_addr}:5353: {e}"));
        assert_eq!(answer, format!("dns saw {ip}"));
    }
    // An unpublished port on the host address is not carried anywhere.
    assert!(tcp_request(c, &format!("{HOST_IP}:8081"), TIMEOUT).is_err());
}

#[test]
fn a_container_on_another_network_reaches_the_published_port() {
    let mut world = World::new();
    let daemon = world.daemon();
    let _servers = web(&mut world, &daemon);
    daemon.json(&["network", "create", "back", "--subnet", "10.92.0.0/24"]);
    let ip = endpoint(&mut world, &daemon, "back", "client", &[]);
    assert_eq!(ip, "10.92.0.2");
    let c = world.container_ns("client");
    // Through the host's uplink address and through its own network's gateway.
    for host_addr in [HOST_IP, "10.92.0.1"] {
        let answer = tcp_request(c, &format!("{host_addr}:8080"), TIMEOUT)
            .unwrap_or_else(|e| panic!("{host_addr}:8080: {e}"));
        assert_eq!(answer, format!("web saw {ip} said hello"));
        let answer = udp_request(c, &format!("{host_addr}:5353"), TIMEOUT)
            .unwrap_or_else(|e| panic!("{host_addr}:5353: {e}"));
        assert_eq!(answer, format!("dns saw {ip}"));
    }
    // Removing the target forgets its hairpin flows.
    daemon.json(&["endpoint", "rm", "web"]);
    assert!(tcp_request(c, &format!("{HOST_IP}:8080"), TIMEOUT).is_err());
}
