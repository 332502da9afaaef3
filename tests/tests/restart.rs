//! Reconciliation when the daemon starts: the store against the kernel.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use common::{
    Daemon, EXT_IP, EchoServer, HOST_IP, SILENCE, TIMEOUT, TcpServer, World, run, tcp_request,
};

/// Network `net` (10.44.0.0/24) with endpoint `a` publishing 8080/tcp and `ports`.
fn setup(world: &mut World, daemon: &common::Daemon, ports: &[&str]) {
    daemon.json(&["network", "create", "net", "--subnet", "10.44.0.0/24"]);
    let ns = world.container("a");
    let mut args = vec![
        "endpoint",
        "create",
        "net",
        "--netns",
        ns.to_str().unwrap(),
        "--name",
        "a",
        "-p",
        "8080:80",
    ];
    args.extend(common::publish_args(ports));
    daemon.json(&args);
}

#[test]
fn an_endpoint_whose_namespace_is_gone_is_cleaned_up() {
    let mut world = World::new();
    let mut daemon = world.daemon();
    setup(&mut world, &daemon, &[]);
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
    setup(&mut world, &daemon, &[]);
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
    setup(&mut world, &daemon, &[]);
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

/// Sends `count` numbered messages, one every 20 ms, over one TCP connection and one UDP
/// socket from `ns` to `addr`; returns (TCP echoes, UDP echoes) received.
fn long_flows(ns: &common::Netns, addr: &str, count: u32) -> std::thread::JoinHandle<(u32, u32)> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    ns.spawn(move || {
        let mut tcp = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        udp.connect(addr).unwrap();
        let (mut tcp_ok, mut udp_ok) = (0, 0);
        for i in 0..count {
            let msg = format!("{i:08}");
            let mut buf = [0u8; 8];
            if tcp.write_all(msg.as_bytes()).is_ok()
                && tcp.read_exact(&mut buf).is_ok()
                && buf == msg.as_bytes()
            {
                tcp_ok += 1;
            }
            let mut ubuf = [0u8; 64];
            if udp.send(msg.as_bytes()).is_ok()
                && common::retry_interrupted(|| udp.recv(&mut ubuf))
                    .is_ok_and(|n| &ubuf[..n] == msg.as_bytes())
            {
                udp_ok += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (tcp_ok, udp_ok)
    })
}

#[test]
fn established_flows_survive_sigkill_and_restart() {
    let mut world = World::new();
    let mut daemon = world.daemon();
    setup(&mut world, &daemon, &["8080:80/udp"]);
    let _echo = EchoServer::start(world.container_ns("a"), "0.0.0.0", 80);
    let count = 150;
    let flows = long_flows(&world.ext, &format!("{HOST_IP}:8080"), count);
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    daemon.kill();
    std::thread::sleep(Duration::from_millis(700));
    daemon.restart();
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill();
    daemon.restart();
    let (tcp_ok, udp_ok) = flows.join().unwrap();
    eprintln!(
        "flows across 2 SIGKILLs and restarts in {:?}: tcp {tcp_ok}/{count}, udp {udp_ok}/{count}",
        start.elapsed()
    );
    assert_eq!(
        (tcp_ok, udp_ok),
        (count, count),
        "messages lost across restarts"
    );
}

fn crash_world(point: &str) -> (World, Daemon) {
    let mut world = World::new();
    let mut daemon = world.daemon();
    daemon.json(&["network", "create", "net", "--subnet", "10.44.0.0/24"]);
    let ns = world.container("a");
    if point.starts_with("endpoint-remove") {
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
    daemon.stop();
    daemon.set_env("NETDRIVER_CRASH_AT", point);
    daemon.restart_expecting_crash();
    let args: Vec<String> = if point.starts_with("endpoint-remove") {
        vec!["endpoint".into(), "rm".into(), "a".into()]
    } else {
        [
            "endpoint",
            "create",
            "net",
            "--netns",
            ns.to_str().unwrap(),
            "--name",
            "a",
            "-p",
            "8080:80",
        ]
        .map(String::from)
        .to_vec()
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, _) = daemon.cli(&args);
    assert!(!ok, "the daemon should have crashed at {point}");
    daemon.wait_crashed();
    daemon.clear_env();
    daemon.restart();
    (world, daemon)
}

/// After a crash at each step and a restart: no leaked veth, address, port or map entry,
/// and the endpoint either fully exists or not at all.
#[test]
fn a_crash_at_any_step_leaves_nothing_half_done() {
    for point in [
        "endpoint-create:veth",
        "endpoint-create:moved",
        "endpoint-create:published",
        "endpoint-create:stored",
        "endpoint-remove:unstored",
        "endpoint-remove:unpublished",
    ] {
        let (mut world, daemon) = crash_world(point);
        let endpoints = daemon.json(&["endpoint", "ls"]);
        let exists = endpoints.as_array().unwrap().len() == 1;
        // Only a crash after the store write keeps the endpoint.
        assert_eq!(
            exists,
            point == "endpoint-create:stored",
            "{point}: {endpoints}"
        );
        let veths = world.host.ip(&["-o", "link", "show", "type", "veth"]);
        let ours = veths
            .lines()
            .filter(|l| l.contains(": nd") || l.contains(": np"))
            .count();
        assert_eq!(ours, usize::from(exists), "{point}: {veths}");
        let dump = run(
            "bpftool",
            &[
                "map",
                "dump",
                "pinned",
                daemon.bpffs.join("ND_PORTS").to_str().unwrap(),
            ],
        );
        assert_eq!(dump.contains("8080"), exists, "{point}: {dump}");
        if exists {
            let _server = TcpServer::start(world.container_ns("a"), "0.0.0.0:80", "a");
            tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT)
                .unwrap_or_else(|e| panic!("{point}: {e}"));
            daemon.json(&["endpoint", "rm", "a"]);
        }
        // The address and the port are free.
        let ns = world.container("again");
        let ep = daemon.json(&[
            "endpoint",
            "create",
            "net",
            "--netns",
            ns.to_str().unwrap(),
            "-p",
            "8080:80",
        ]);
        assert_eq!(ep["ip"], "10.44.0.2", "{point}");
    }
}

#[test]
fn cleanup_on_exit_and_the_cleanup_command_remove_everything() {
    for how in ["on-exit", "command"] {
        let mut world = World::new();
        let extra: &[&str] = if how == "on-exit" {
            &["--cleanup-on-exit"]
        } else {
            &[]
        };
        let mut daemon = Daemon::start(&world, extra);
        setup(&mut world, &daemon, &[]);
        if how == "on-exit" {
            daemon.stop();
        } else {
            daemon.kill();
            daemon.cleanup_offline(&world.host, &["--socket", daemon.socket.to_str().unwrap()]);
        }
        let links = world.host.ip(&["-o", "link"]);
        assert!(!links.contains(": nd"), "{how}: {links}");
        assert!(
            !world.container_ns("a").ip(&["-o", "link"]).contains("eth0"),
            "{how}"
        );
        assert!(
            !daemon.bpffs.exists(),
            "{how}: pins left in {}",
            daemon.bpffs.display()
        );
        assert!(tcp_request(&world.ext, &format!("{HOST_IP}:8080"), SILENCE).is_err());
        daemon.restart();
        assert!(
            daemon
                .json(&["network", "ls"])
                .as_array()
                .unwrap()
                .is_empty(),
            "{how}"
        );
    }
}

#[test]
fn a_pinned_map_with_an_old_layout_is_replaced_and_said_so() {
    let mut world = World::new();
    let mut daemon = world.daemon();
    setup(&mut world, &daemon, &[]);
    daemon.kill();
    // What an older version with another conntrack layout would have left pinned.
    let pin = daemon.bpffs.join("ND_CT");
    std::fs::remove_file(&pin).unwrap();
    run(
        "bpftool",
        &[
            "map",
            "create",
            pin.to_str().unwrap(),
            "type",
            "hash",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "8",
            "name",
            "ND_CT",
        ],
    );
    daemon.restart();
    let log = daemon.log();
    assert!(
        log.contains("replacing pinned map") && log.contains("ND_CT"),
        "{log}"
    );
    let _server = TcpServer::start(world.container_ns("a"), "0.0.0.0:80", "a");
    let answer = tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(answer, format!("a saw {EXT_IP} said hello"));
    let info = run("bpftool", &["map", "show", "pinned", pin.to_str().unwrap()]);
    assert!(!info.contains("key 4B"), "{info}");
}

#[test]
fn masqueraded_flows_survive_sigkill_and_restart() {
    let mut world = World::new();
    world.route_outside();
    let mut daemon = world.daemon();
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
    ]);
    let _echo = EchoServer::start(&world.ext, common::OUTSIDE_IP, 7000);
    let count = 150;
    let flows = long_flows(
        world.container_ns("a"),
        &format!("{}:7000", common::OUTSIDE_IP),
        count,
    );
    std::thread::sleep(Duration::from_millis(500));
    daemon.kill();
    std::thread::sleep(Duration::from_millis(700));
    daemon.restart();
    let (tcp_ok, udp_ok) = flows.join().unwrap();
    eprintln!(
        "masqueraded flows across SIGKILL and restart: tcp {tcp_ok}/{count}, udp {udp_ok}/{count}"
    );
    assert_eq!(
        (tcp_ok, udp_ok),
        (count, count),
        "messages lost across the restart"
    );
}
