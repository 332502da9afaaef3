//! Published ports reached from the host itself (the daemon's namespace) through the cgroup
//! socket hooks: no proxy process, no packet NAT, and no effect on any other namespace.

mod common;

use std::{
    net::{TcpStream, UdpSocket},
    os::unix::fs::MetadataExt,
    time::Duration,
};

use common::{
    Daemon, HOST_IP, Netns, SILENCE, TIMEOUT, TcpServer, UdpServer, World, run,
    sockets::{bind, tcp_with_peer, udp_with_source},
    tcp_request,
};
use serde_json::Value;

const GATEWAY: &str = "10.89.0.1";

/// A network 10.89.0.0/24 with one endpoint "web" publishing `ports`, with a TCP server on
/// 80 and a UDP server on 53 in it.
fn web(world: &mut World, daemon: &Daemon, ports: &[&str]) -> (TcpServer, UdpServer) {
    daemon.json(&["network", "create", "front", "--subnet", "10.89.0.0/24"]);
    common::create_endpoint(world, daemon, "front", "web", &common::publish_args(ports));
    let c = world.container_ns("web");
    (
        TcpServer::start(c, "0.0.0.0:80", "web"),
        UdpServer::start(c, "0.0.0.0:53", "dns"),
    )
}

#[test]
fn the_host_reaches_published_ports_on_loopback_and_its_own_address() {
    let mut world = World::new();
    let daemon = world.daemon();
    let _servers = web(&mut world, &daemon, &["8080:80", "5353:53/udp"]);
    for host_addr in ["127.0.0.1", HOST_IP, GATEWAY] {
        let target = format!("{host_addr}:8080");
        let (answer, peer) = tcp_with_peer(&world.host, &target);
        // The host reaches the container over the bridge, from the gateway address.
        assert_eq!(answer, format!("web saw {GATEWAY} said hello"), "{target}");
        assert_eq!(
            peer,
            target.parse().unwrap(),
            "getpeername shows what was used"
        );
        let target = format!("{host_addr}:5353");
        let (answer, from) = udp_with_source(&world.host, &target);
        assert_eq!(answer, format!("dns saw {GATEWAY}"), "{target}");
        assert_eq!(
            from,
            target.parse().unwrap(),
            "the reply comes from {target}"
        );
    }
    // A connected UDP socket too.
    let (answer, from) = world.host.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect("127.0.0.1:5353").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.send(b"hello").unwrap();
        let mut buf = [0u8; 128];
        let (n, from) = common::retry_interrupted(|| s.recv_from(&mut buf)).expect("answer");
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    });
    assert_eq!(answer, format!("dns saw {GATEWAY}"));
    assert_eq!(from, "127.0.0.1:5353".parse().unwrap());
    // An unpublished port on loopback is the host's business: nothing listens there.
    assert!(tcp_request(&world.host, "127.0.0.1:8081", TIMEOUT).is_err());
}

#[test]
fn a_port_published_on_loopback_only_is_reached_from_the_host() {
    let mut world = World::new();
    let daemon = world.daemon();
    let _servers = web(&mut world, &daemon, &["127.0.0.1:8080:80"]);
    let (answer, _) = tcp_with_peer(&world.host, "127.0.0.1:8080");
    assert_eq!(answer, format!("web saw {GATEWAY} said hello"));
    // Bound to loopback only: the host's other addresses do not carry it.
    assert!(tcp_request(&world.host, &format!("{HOST_IP}:8080"), TIMEOUT).is_err());
    assert!(tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).is_err());
}

#[test]
fn other_namespaces_keep_their_own_loopback() {
    let mut world = World::new();
    let daemon = world.daemon();
    let port = free_port_in_root_namespace();
    let spec = format!("{port}:80");
    let _servers = web(&mut world, &daemon, &[&spec]);
    let target = format!("127.0.0.1:{port}");
    assert!(tcp_with_peer(&world.host, &target).0.starts_with("web saw"));
    // The external namespace and the container have their own 127.0.0.1:PORT.
    let _ext = TcpServer::start(&world.ext, &format!("127.0.0.1:{port}"), "ext");
    assert_eq!(
        tcp_request(&world.ext, &target, TIMEOUT).unwrap(),
        "ext saw 127.0.0.1 said hello"
    );
    let c = world.container_ns("web");
    let _own = TcpServer::start(c, &format!("127.0.0.1:{port}"), "own");
    assert_eq!(
        tcp_request(c, &target, TIMEOUT).unwrap(),
        "own saw 127.0.0.1 said hello"
    );
    // The machine's root namespace: nothing listens there, so the connection is refused
    // (it is not carried to the container). Only a connect; nothing is changed there.
    let err = TcpStream::connect_timeout(&target.parse().unwrap(), TIMEOUT).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

/// A port no TCP socket of the root namespace listens on (this process runs there).
fn free_port_in_root_namespace() -> u16 {
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap()
        + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    (18080..19000)
        .find(|p| !listening.contains(&format!(":{p:04X} ")))
        .expect("a free port")
}

/// The socket programs, one attachment each.
const HOOKS: usize = 10;

/// The host reaches the published port on loopback (the hooks act).
fn host_reaches_8080(world: &World) {
    let (answer, peer) = tcp_with_peer(&world.host, "127.0.0.1:8080");
    assert_eq!(answer, format!("web saw {GATEWAY} said hello"));
    assert_eq!(peer, "127.0.0.1:8080".parse().unwrap());
}

#[test]
fn the_socket_hooks_outlive_the_daemon_until_cleanup() {
    let mut world = World::new();
    let mut daemon = world.daemon();
    let _servers = web(&mut world, &daemon, &["8080:80"]);
    let ours = attached_hooks(&daemon);
    assert_eq!(ours.len(), HOOKS, "one attachment per hook: {ours:?}");
    // SIGKILL: the pinned links keep the hooks attached, and they keep working.
    daemon.kill();
    assert_eq!(still_attached(&ours), ours, "detached by SIGKILL");
    host_reaches_8080(&world);
    // The next start replaces them: still one attachment per hook, and no gap.
    daemon.restart();
    let after_kill = attached_hooks(&daemon);
    assert_eq!(after_kill.len(), HOOKS, "{after_kill:?}");
    assert!(
        still_attached(&ours).is_empty(),
        "old programs left: {ours:?}"
    );
    host_reaches_8080(&world);
    // SIGTERM without --cleanup-on-exit: the same.
    daemon.stop();
    assert_eq!(
        still_attached(&after_kill),
        after_kill,
        "detached by SIGTERM"
    );
    host_reaches_8080(&world);
    daemon.restart();
    let ours = attached_hooks(&daemon);
    assert_eq!(ours.len(), HOOKS, "{ours:?}");
    host_reaches_8080(&world);
    // `netdriver cleanup` (no daemon running) detaches them.
    daemon.kill();
    daemon.cleanup_offline(&world.host, &[]);
    let left = still_attached(&ours);
    assert!(left.is_empty(), "still attached after cleanup: {left:?}");
}

#[test]
fn cleanup_on_exit_detaches_the_socket_hooks() {
    let mut world = World::new();
    let mut daemon = Daemon::start(&world, &["--cleanup-on-exit"]);
    let _servers = web(&mut world, &daemon, &["8080:80"]);
    let ours = attached_hooks(&daemon);
    assert_eq!(ours.len(), HOOKS, "{ours:?}");
    daemon.stop();
    let left = still_attached(&ours);
    assert!(
        left.is_empty(),
        "still attached after --cleanup-on-exit: {left:?}"
    );
    assert!(tcp_request(&world.host, "127.0.0.1:8080", SILENCE).is_err());
}

#[test]
fn no_process_per_published_port() {
    let mut world = World::new();
    let daemon = world.daemon();
    let specs: Vec<String> = (0..50)
        .flat_map(|i| [format!("{}:80", 9000 + i), format!("{}:53/udp", 9000 + i)])
        .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let _servers = web(&mut world, &daemon, &specs);
    assert_eq!(daemon.json(&["port", "ls"]).as_array().unwrap().len(), 100);
    assert!(
        tcp_with_peer(&world.host, "127.0.0.1:9049")
            .0
            .starts_with("web saw")
    );
    let pid = daemon.pid().unwrap();
    let children = processes().filter(|(_, ppid, _)| *ppid == pid).count();
    assert_eq!(children, 0, "the daemon started no process");
    // Nothing but the daemon lives in the host namespace: no proxy per port.
    let host_ns = std::fs::metadata(world.host.path()).unwrap().ino();
    let in_host: Vec<_> = processes()
        .filter(|(p, _, _)| {
            std::fs::metadata(format!("/proc/{p}/ns/net")).is_ok_and(|m| m.ino() == host_ns)
        })
        .collect();
    assert_eq!(in_host.len(), 1, "{in_host:?}");
    assert_eq!(in_host[0].0, pid);
}

/// (pid, ppid, comm) of every process.
fn processes() -> impl Iterator<Item = (u32, u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (left, right) = stat.rsplit_once(") ")?;
            let comm = left.split_once(" (")?.1.to_string();
            let parent = right.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, parent, comm))
        })
}

/// The cgroup v2 root the daemon attaches to by default.
fn cgroup_root() -> String {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split_whitespace().nth(4).unwrap().to_string())
        })
        .expect("a cgroup v2 hierarchy is mounted")
}

/// Ids of the daemon's socket programs (they use its pinned maps) attached to the cgroup root.
fn attached_hooks(daemon: &Daemon) -> Vec<u64> {
    let map_ids: Vec<u64> = ["ND_SOCK_RNAT", "ND_PORTS"]
        .iter()
        .map(|name| {
            let pin = daemon.bpffs.join(name);
            let map: Value = serde_json::from_str(&run(
                "bpftool",
                &["-j", "map", "show", "pinned", pin.to_str().unwrap()],
            ))
            .unwrap();
            map["id"].as_u64().unwrap()
        })
        .collect();
    let progs: Value = serde_json::from_str(&run("bpftool", &["-j", "prog", "show"])).unwrap();
    let ours: Vec<u64> = progs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("nd_sock_"))
        })
        .filter(|p| {
            p["map_ids"].as_array().is_some_and(|ids| {
                ids.iter()
                    .any(|x| x.as_u64().is_some_and(|id| map_ids.contains(&id)))
            })
        })
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    let attached = cgroup_prog_ids();
    ours.into_iter()
        .filter(|id| attached.contains(id))
        .collect()
}

fn still_attached(ids: &[u64]) -> Vec<u64> {
    // Link release is synchronous with the last fd's close, but give the kernel a moment.
    std::thread::sleep(Duration::from_millis(200));
    let attached = cgroup_prog_ids();
    ids.iter()
        .copied()
        .filter(|id| attached.contains(id))
        .collect()
}

fn cgroup_prog_ids() -> Vec<u64> {
    let text = run("bpftool", &["-j", "cgroup", "show", &cgroup_root()]);
    // bpftool prints nothing at all when no program is attached.
    if text.trim().is_empty() {
        return Vec::new();
    }
    let shown: Value = serde_json::from_str(&text).unwrap();
    shown
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

#[test]
fn a_host_process_cannot_bind_a_published_port() {
    let mut world = World::new();
    let daemon = world.daemon();
    let _servers = web(
        &mut world,
        &daemon,
        &["8080:80", "5353:53/udp", "127.0.0.1:9090:80"],
    );
    let in_use = Err(std::io::ErrorKind::AddrInUse);
    for addr in ["0.0.0.0:8080", "127.0.0.1:8080", &format!("{HOST_IP}:8080")] {
        assert_eq!(bind(&world.host, addr, false), in_use, "{addr}");
    }
    assert_eq!(bind(&world.host, "0.0.0.0:5353", true), in_use);
    assert_eq!(bind(&world.host, "127.0.0.1:9090", false), in_use);
    // Not published: another port, the other protocol, another address.
    assert_eq!(bind(&world.host, "0.0.0.0:8081", false), Ok(()));
    assert_eq!(bind(&world.host, "0.0.0.0:8080", true), Ok(()));
    assert_eq!(bind(&world.host, &format!("{HOST_IP}:9090"), false), Ok(()));
    // Other namespaces are not concerned.
    assert_eq!(bind(&world.ext, "0.0.0.0:8080", false), Ok(()));
    // Unpublished, the port is the host's again.
    daemon.json(&["endpoint", "rm", "web"]);
    assert_eq!(bind(&world.host, "0.0.0.0:8080", false), Ok(()));
}

#[test]
fn a_port_a_host_process_holds_is_never_published() {
    let mut world = World::new();
    let daemon = world.daemon();
    let _host = TcpServer::start(&world.host, &format!("{HOST_IP}:7070"), "host");
    daemon.json(&["network", "create", "front", "--subnet", "10.89.0.0/24"]);
    let netns = world.container("web");
    let netns = netns.to_str().unwrap();
    let create = |spec: &str| {
        vec![
            "endpoint", "create", "front", "--netns", netns, "--name", "web", "-p", spec,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    for spec in ["7070:80", "198.51.100.1:7070:80"] {
        let args = create(spec);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = daemon.fails(&args);
        assert!(
            err.contains("7070") && err.contains("in use by a process on the host"),
            "{spec}: {err}"
        );
    }
    // Exact per address: loopback is not held by that socket.
    let args = create("127.0.0.1:7070:80");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    daemon.json(&args);
    // The host's own service still answers on its address.
    assert_eq!(
        tcp_request(&world.ext, &format!("{HOST_IP}:7070"), TIMEOUT).unwrap(),
        format!("host saw {} said hello", common::EXT_IP)
    );
}

#[test]
fn a_wildcard_bind_conflicts_with_a_port_published_on_one_address() {
    let mut world = World::new();
    let daemon = world.daemon();
    let _servers = web(
        &mut world,
        &daemon,
        &[
            &format!("{HOST_IP}:8080:80"),
            &format!("{HOST_IP}:7000-7003:80-83/udp"),
        ],
    );
    let in_use = Err(std::io::ErrorKind::AddrInUse);
    // A proxy holding 198.51.100.1:8080 would make these fail too.
    assert_eq!(bind(&world.host, "0.0.0.0:8080", false), in_use);
    assert_eq!(bind(&world.host, "0.0.0.0:7002", true), in_use);
    assert_eq!(bind(&world.host, &format!("{HOST_IP}:8080"), false), in_use);
    // Another port, the other protocol, another single address: free.
    assert_eq!(bind(&world.host, "0.0.0.0:8081", false), Ok(()));
    assert_eq!(bind(&world.host, "0.0.0.0:7004", true), Ok(()));
    assert_eq!(bind(&world.host, "0.0.0.0:8080", true), Ok(()));
    assert_eq!(bind(&world.host, "0.0.0.0:7002", false), Ok(()));
    assert_eq!(bind(&world.host, "127.0.0.1:8080", false), Ok(()));
    // Other namespaces are not concerned.
    assert_eq!(bind(&world.ext, "0.0.0.0:8080", false), Ok(()));
    daemon.json(&["endpoint", "rm", "web"]);
    assert_eq!(bind(&world.host, "0.0.0.0:8080", false), Ok(()));
    assert_eq!(bind(&world.host, "0.0.0.0:7002", true), Ok(()));
}

const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// `ip_local_reserved_ports` of `ns`.
fn reserved_ports(ns: &Netns) -> String {
    ns.run(|| std::fs::read_to_string(RESERVED_PORTS).unwrap())
        .trim()
        .to_string()
}

#[test]
fn published_ports_are_reserved_against_ephemeral_use() {
    let mut world = World::new();
    // The administrator's own entries (7001 is also published below).
    world
        .host
        .run(|| std::fs::write(RESERVED_PORTS, "22,7001").unwrap());
    let mut daemon = world.daemon();
    let _servers = web(&mut world, &daemon, &["8080:80", "7000-7003:80-83/udp"]);
    assert_eq!(reserved_ports(&world.host), "22,7000-7003,8080");
    // Only the daemon's namespace.
    assert_eq!(reserved_ports(&world.ext), "");
    daemon.json(&["endpoint", "rm", "web"]);
    assert_eq!(
        reserved_ports(&world.host),
        "22,7001",
        "the admin's entries stay"
    );

    // Recomputed from the store after a restart: our entries are still known as ours.
    let netns = world.container("web2");
    let netns = netns.to_str().unwrap().to_string();
    let create = [
        "endpoint", "create", "front", "--netns", &netns, "--name", "web2",
    ];
    let mut args = create.to_vec();
    args.extend(["-p", "9090:80"]);
    daemon.json(&args);
    assert_eq!(reserved_ports(&world.host), "22,7001,9090");
    daemon.kill();
    daemon.restart();
    assert_eq!(reserved_ports(&world.host), "22,7001,9090");
    daemon.json(&["endpoint", "rm", "web2"]);
    assert_eq!(reserved_ports(&world.host), "22,7001");

    // `netdriver cleanup` takes ours back.
    daemon.json(&args);
    assert_eq!(reserved_ports(&world.host), "22,7001,9090");
    daemon.kill();
    daemon.cleanup_offline(&world.host, &[]);
    assert_eq!(reserved_ports(&world.host), "22,7001");
}
