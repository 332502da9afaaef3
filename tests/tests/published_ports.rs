//! Published ports through the real daemon: real packets from an external namespace.

mod common;

use common::{
    EXT_IP, HOST_IP, SILENCE, TIMEOUT, TcpServer, UdpServer, World, run, tcp_request, udp_request,
};

/// A network 10.88.0.0/24 with one endpoint "web" publishing `ports`; returns its address.
fn web(world: &mut World, daemon: &common::Daemon, ports: &[&str]) -> String {
    daemon.json(&["network", "create", "front", "--subnet", "10.88.0.0/24"]);
    let netns = world.container("web");
    let netns = netns.to_str().unwrap();
    let mut args = vec![
        "endpoint", "create", "front", "--netns", netns, "--name", "web",
    ];
    for p in ports {
        args.extend(["-p", p]);
    }
    let ep = daemon.json(&args);
    ep["ip"].as_str().unwrap().to_string()
}

#[test]
fn tcp_and_udp_reach_the_container_with_the_client_address() {
    let mut world = World::new();
    // Docker sets FORWARD to DROP; the data path must not care.
    assert!(
        world
            .host
            .exec("iptables", &["-P", "FORWARD", "DROP"])
            .status
            .success()
    );
    let daemon = world.daemon();
    let ip = web(&mut world, &daemon, &["8080:80", "5353:53/udp"]);
    assert_eq!(ip, "10.88.0.2");
    let c = world.container_ns("web");
    let _tcp = TcpServer::start(c, "0.0.0.0:80", "web");
    let _udp = UdpServer::start(c, "0.0.0.0:53", "dns");

    let answer =
        tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("TCP through 8080");
    assert_eq!(answer, format!("web saw {EXT_IP} said hello"));
    let answer =
        udp_request(&world.ext, &format!("{HOST_IP}:5353"), TIMEOUT).expect("UDP through 5353");
    assert_eq!(answer, format!("dns saw {EXT_IP}"));
    // Several connections in a row (each a new flow, the reverse path included).
    for _ in 0..5 {
        tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("repeat TCP");
    }

    // The MAC is derived from the address, as Docker does.
    let link = c.ip(&["-o", "link", "show", "eth0"]);
    assert!(link.contains("02:42:0a:58:00:02"), "{link}");
    // No iptables or nftables rule anywhere in the host namespace (beyond our own policy).
    let rules = String::from_utf8_lossy(&world.host.exec("iptables-save", &[]).stdout).into_owned();
    assert!(
        !rules.lines().any(|l| l.starts_with("-A")),
        "unexpected rules:\n{rules}"
    );
    let nft =
        String::from_utf8_lossy(&world.host.exec("nft", &["list", "ruleset"]).stdout).into_owned();
    assert!(
        !nft.contains("dnat") && !nft.contains("masquerade"),
        "{nft}"
    );
    // The maps are pinned with BTF: bpftool prints named fields.
    let dump = run(
        "bpftool",
        &[
            "map",
            "dump",
            "pinned",
            daemon.bpffs.join("ND_PORTS").to_str().unwrap(),
        ],
    );
    assert!(
        dump.contains("host_port") && dump.contains("8080"),
        "{dump}"
    );
}

#[test]
fn unpublished_ports_and_container_addresses_stay_closed() {
    let mut world = World::new();
    let daemon = world.daemon();
    let ip = web(&mut world, &daemon, &["8080:80"]);
    let c = world.container_ns("web");
    let _published = TcpServer::start(c, "0.0.0.0:80", "web");
    let _unpublished = TcpServer::start(c, "0.0.0.0:81", "secret");
    // A host service on a port nobody published is untouched.
    let _host = TcpServer::start(&world.host, "0.0.0.0:2222", "host");
    // The outside world even knows a route to the container subnet.
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
    let direct = tcp_request(&world.ext, &format!("{ip}:81"), SILENCE);
    assert!(
        direct.is_err(),
        "container address reached from outside: {direct:?}"
    );
    let direct = tcp_request(&world.ext, &format!("{ip}:80"), SILENCE);
    assert!(
        direct.is_err(),
        "container address reached from outside: {direct:?}"
    );
    let status = daemon.json(&["status"]);
    assert!(
        status["drops"][0].as_u64().unwrap() > 0,
        "drops counted: {status}"
    );
    assert_eq!(status["uplinks"], serde_json::json!(["up0"]));
}

#[test]
fn ephemeral_ports_are_reported_and_work() {
    let mut world = World::new();
    let daemon = world.daemon();
    world.host.exec(
        "sysctl",
        &["-w", "net.ipv4.ip_local_port_range=41000 41010"],
    );
    web(&mut world, &daemon, &["80", "53/udp"]);
    let c = world.container_ns("web");
    let _tcp = TcpServer::start(c, "0.0.0.0:80", "web");
    let _udp = UdpServer::start(c, "0.0.0.0:53", "dns");
    let ports = daemon.json(&["port", "ls"]);
    let rows = ports.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{ports}");
    for row in rows {
        let port = row["host_port"].as_u64().unwrap();
        assert!((41000..=41010).contains(&port), "{row}");
        let addr = format!("{HOST_IP}:{port}");
        match row["proto"].as_str().unwrap() {
            "tcp" => assert!(
                tcp_request(&world.ext, &addr, TIMEOUT)
                    .unwrap()
                    .starts_with("web saw")
            ),
            _ => assert!(
                udp_request(&world.ext, &addr, TIMEOUT)
                    .unwrap()
                    .starts_with("dns saw")
            ),
        }
    }
    let (ok, text, _) = daemon.cli(&["port", "ls"]);
    assert!(
        ok && text.contains("HOST PORT") && text.contains("web"),
        "{text}"
    );
}

#[test]
fn a_taken_port_fails_cleanly_and_the_first_keeps_working() {
    let mut world = World::new();
    let daemon = world.daemon();
    web(&mut world, &daemon, &["8080:80"]);
    let c = world.container_ns("web");
    let _tcp = TcpServer::start(c, "0.0.0.0:80", "web");
    let links_before = world.host.ip(&["-o", "link"]).lines().count();

    let other = world.container("other");
    let other = other.to_str().unwrap();
    let err = daemon.fails(&[
        "endpoint", "create", "front", "--netns", other, "--name", "other", "-p", "9090:90", "-p",
        "8080:81",
    ]);
    assert!(err.contains("8080") && err.contains("web"), "{err}");
    // Nothing of the failed request is left: endpoint, address, veth, the 9090 binding.
    assert_eq!(
        daemon.json(&["endpoint", "ls"]).as_array().unwrap().len(),
        1
    );
    assert_eq!(daemon.json(&["port", "ls"]).as_array().unwrap().len(), 1);
    assert_eq!(world.host.ip(&["-o", "link"]).lines().count(), links_before);
    assert!(
        !world
            .container_ns("other")
            .ip(&["-o", "link"])
            .contains("eth0")
    );
    assert_eq!(
        tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).unwrap(),
        format!("web saw {EXT_IP} said hello")
    );
    // The address and port the failed request held are free again.
    let ok = daemon.json(&[
        "endpoint", "create", "front", "--netns", other, "--name", "other", "-p", "9090:90",
    ]);
    assert_eq!(ok["ip"], "10.88.0.3");
}

#[test]
fn removing_the_endpoint_closes_its_port() {
    let mut world = World::new();
    let daemon = world.daemon();
    web(&mut world, &daemon, &["8080:80", "5353:53/udp"]);
    let c = world.container_ns("web");
    let _tcp = TcpServer::start(c, "0.0.0.0:80", "web");
    let _udp = UdpServer::start(c, "0.0.0.0:53", "dns");
    tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("published");
    udp_request(&world.ext, &format!("{HOST_IP}:5353"), TIMEOUT).expect("published");

    daemon.json(&["endpoint", "rm", "web"]);
    assert!(tcp_request(&world.ext, &format!("{HOST_IP}:8080"), SILENCE).is_err());
    assert!(udp_request(&world.ext, &format!("{HOST_IP}:5353"), SILENCE).is_err());
    assert!(daemon.json(&["port", "ls"]).as_array().unwrap().is_empty());
    assert!(
        !c.ip(&["-o", "link"]).contains("eth0"),
        "container interface removed"
    );
    let dump = run(
        "bpftool",
        &[
            "map",
            "dump",
            "pinned",
            daemon.bpffs.join("ND_PORTS").to_str().unwrap(),
        ],
    );
    assert!(!dump.contains("8080"), "{dump}");
    // The network can go now, and its bridge with it.
    daemon.json(&["network", "rm", "front"]);
    assert!(
        !world
            .host
            .ip(&["-o", "link", "show", "type", "bridge"])
            .contains("nd-")
    );
}

#[test]
fn published_ports_keep_working_while_the_daemon_is_down() {
    let mut world = World::new();
    let mut daemon = world.daemon();
    web(&mut world, &daemon, &["8080:80"]);
    let c = world.container_ns("web");
    let _tcp = TcpServer::start(c, "0.0.0.0:80", "web");
    tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("before restart");

    // Stopped: the programs stay attached through pinned links, the maps stay pinned.
    daemon.stop();
    assert!(daemon.bpffs.join("ND_PORTS").exists() && daemon.bpffs.join("links").exists());
    let answer = tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("daemon down");
    assert_eq!(answer, format!("web saw {EXT_IP} said hello"));

    daemon.restart();
    assert_eq!(daemon.json(&["network", "ls"])[0]["name"], "front");
    assert_eq!(daemon.json(&["port", "ls"])[0]["host_port"], 8080);
    let answer =
        tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("after restart");
    assert_eq!(answer, format!("web saw {EXT_IP} said hello"));
    // The restarted daemon adopted the links: one per interface (and hook), not one per
    // start.
    let links: Vec<_> = std::fs::read_dir(daemon.bpffs.join("links"))
        .unwrap()
        .flatten()
        .collect();
    let xdp = usize::from(common::xdp_suite());
    // The uplink's and the container's tc links (and XDP), and the ten socket hooks.
    let hooks = links
        .iter()
        .filter(|l| l.file_name().to_string_lossy().ends_with("@cgroup"))
        .count();
    assert_eq!(hooks, 10, "{links:?}");
    assert_eq!(links.len(), 2 + xdp + hooks, "{links:?}");
    // The next address is still the next one: the first is remembered as taken.
    let other = world.container("b");
    let ep = daemon.json(&[
        "endpoint",
        "create",
        "front",
        "--netns",
        other.to_str().unwrap(),
    ]);
    assert_eq!(ep["ip"], "10.88.0.3");
}
