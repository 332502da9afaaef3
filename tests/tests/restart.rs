//! Reconciliation when the daemon starts: the store against the kernel.

mod common;

use common::{EXT_IP, HOST_IP, SILENCE, TIMEOUT, TcpServer, World, tcp_request};

fn setup(world: &mut World, daemon: &common::Daemon) {
    daemon.json(&["network", "create", "net", "--subnet", "10.44.0.0/24"]);
    let ns = world.container("a");
    daemon.json(&[
        "endpoint",
        "create",
        "net",
        "--netns",
        ns.to_str().unwrap(),
        "--name",
        "a",
        "-p",
        "8080:80",
    ]);
}

#[test]
fn an_endpoint_whose_namespace_is_gone_is_cleaned_up() {
    let mut world = World::new();
    let mut daemon = world.daemon();
    setup(&mut world, &daemon);
    daemon.stop();
    world.remove_container("a");
    daemon.restart();
    assert!(
        daemon
            .json(&["endpoint", "ls"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(daemon.json(&["port", "ls"]).as_array().unwrap().is_empty());
    // Its address and port are free again.
    let ns = world.container("b");
    let ep = daemon.json(&[
        "endpoint",
        "create",
        "net",
        "--netns",
        ns.to_str().unwrap(),
        "-p",
        "8080:80",
    ]);
    assert_eq!(ep["ip"], "10.44.0.2");
}

#[test]
fn a_veth_deleted_behind_our_back_is_recreated() {
    let mut world = World::new();
    let mut daemon = world.daemon();
    setup(&mut world, &daemon);
    let veth = daemon.json(&["endpoint", "inspect", "a"])["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    world.host.ip(&["link", "del", &veth]);
    assert!(!world.container_ns("a").ip(&["-o", "link"]).contains("eth0"));
    daemon.restart();
    let _server = TcpServer::start(world.container_ns("a"), "0.0.0.0:80", "a");
    let answer = tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    assert_eq!(answer, format!("a saw {EXT_IP} said hello"));
}

#[test]
fn a_reboot_recreates_bridges_and_veths() {
    let mut world = World::new();
    let mut daemon = world.daemon();
    setup(&mut world, &daemon);
    let bridge = daemon.json(&["network", "inspect", "net"])["bridge"]
        .as_str()
        .unwrap()
        .to_string();
    let veth = daemon.json(&["endpoint", "inspect", "a"])["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    // A crash leaves pins behind; a reboot takes them, the bridge and the veths away.
    daemon.kill();
    world.host.ip(&["link", "del", &bridge]);
    world.host.ip(&["link", "del", &veth]);
    let _ = std::fs::remove_dir_all(&daemon.bpffs);
    daemon.restart();
    let _server = TcpServer::start(world.container_ns("a"), "0.0.0.0:80", "a");
    tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    assert!(
        world
            .host
            .ip(&["-o", "link", "show", &bridge])
            .contains("UP")
    );
}

#[test]
fn orphan_veths_from_a_crash_are_removed() {
    let world = World::new();
    let mut daemon = world.daemon();
    // What a crash between creating the veth pair and storing the endpoint leaves.
    world.host.ip(&[
        "link",
        "add",
        "nd0123456789",
        "type",
        "veth",
        "peer",
        "name",
        "np0123456789",
    ]);
    daemon.restart();
    let links = world.host.ip(&["-o", "link"]);
    assert!(
        !links.contains("nd0123456789") && !links.contains("np0123456789"),
        "{links}"
    );
    // Interfaces that only look a bit like ours are left alone.
    world
        .host
        .ip(&["link", "add", "ndx", "type", "veth", "peer", "name", "ndy"]);
    daemon.restart();
    assert!(world.host.ip(&["-o", "link"]).contains("ndx"));
    assert!(tcp_request(&world.ext, &format!("{HOST_IP}:8080"), SILENCE).is_err());
}
