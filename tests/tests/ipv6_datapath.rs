//! The IPv6 data path through the real daemon: real packets between namespaces. The uplink
//! and the external namespace have `2001:db8:ff::/64` addresses ([`World::ipv6_uplink`]).

mod common;

use std::{
    io::{Read, Write},
    net::{Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    time::Duration,
};

use common::{
    Daemon, EXT_IP6, HOST_IP6, Netns, SILENCE, TIMEOUT, TcpServer, UdpServer, World,
    create_endpoint, drops, endpoint6, map_dump, network6, ping, run, sa6,
    sockets::{send_options_header, tcp_request_with_options},
    tcp_request, udp_request,
};
use serde_json::Value;

/// Whether container `from` reaches a TCP server on `[to_ip]:port` of container `to`.
fn connects6(world: &World, from: &str, to: &str, to_ip: &str, port: u16) -> bool {
    let _srv = TcpServer::start(world.container_ns(to), &sa6("::", port), "srv");
    tcp_request(world.container_ns(from), &sa6(to_ip, port), SILENCE).is_ok()
}

#[test]
fn ipv6_published_ports_reach_the_container_with_the_client_address() {
    let mut world = World::new();
    world.ipv6_uplink();
    // A second host address: an exact binding must not answer on it.
    world
        .host
        .ip(&["addr", "add", "2001:db8:ff::3/64", "dev", "up0", "nodad"]);
    let mut daemon = world.daemon();
    network6(&daemon, "front6", "10.90.0.0/24", "2001:db8:90::/64", &[]);
    // No host address: published on 0.0.0.0 and on [::] (the network has IPv6).
    let exact = format!("[{HOST_IP6}]:9090:80");
    let ip6 = endpoint6(
        &mut world,
        &daemon,
        "front6",
        "web",
        &["-p", "8080:80", "-p", "5353:53/udp", "-p", &exact],
    );
    assert!(ip6.starts_with("2001:db8:90::"), "{ip6}");
    let c = world.container_ns("web");
    let _tcp = TcpServer::start(c, &sa6("::", 80), "web");
    let _udp = UdpServer::start(c, &sa6("::", 53), "dns");

    // TCP and UDP over IPv6; the server sees the client's own IPv6 address.
    let answer = tcp_request(&world.ext, &sa6(HOST_IP6, 8080), TIMEOUT).expect("TCP [::]:8080");
    assert_eq!(answer, format!("web saw {EXT_IP6} said hello"));
    let answer = udp_request(&world.ext, &sa6(HOST_IP6, 5353), TIMEOUT).expect("UDP [::]:5353");
    assert_eq!(answer, format!("dns saw {EXT_IP6}"));
    for _ in 0..5 {
        tcp_request(&world.ext, &sa6(HOST_IP6, 8080), TIMEOUT).expect("repeat TCP");
    }
    // The wildcard binding answers on every IPv6 host address.
    let answer =
        tcp_request(&world.ext, &sa6("2001:db8:ff::3", 8080), TIMEOUT).expect("TCP on ::3");
    assert_eq!(answer, format!("web saw {EXT_IP6} said hello"));
    // The exact binding only on its own address.
    let answer = tcp_request(&world.ext, &sa6(HOST_IP6, 9090), TIMEOUT).expect("TCP 9090");
    assert_eq!(answer, format!("web saw {EXT_IP6} said hello"));
    assert!(
        tcp_request(&world.ext, &sa6("2001:db8:ff::3", 9090), SILENCE).is_err(),
        "an exact binding answered on another address"
    );
    // The container's address itself is not reachable from outside.
    assert!(tcp_request(&world.ext, &sa6(&ip6, 80), SILENCE).is_err());

    // A restarted daemon adopts the pinned IPv6 maps and re-publishes from its store.
    daemon.restart();
    let answer = tcp_request(&world.ext, &sa6(HOST_IP6, 8080), TIMEOUT).expect("after restart");
    assert_eq!(answer, format!("web saw {EXT_IP6} said hello"));
    let published = common::map_dump(&daemon, "ND_PORTS6");
    assert_eq!(published.len(), 3, "{published:?}");

    // The endpoint goes: its ports stop, over IPv6 too.
    daemon.json(&["endpoint", "rm", "web"]);
    assert!(
        tcp_request(&world.ext, &sa6(HOST_IP6, 8080), SILENCE).is_err(),
        "published port still answers after endpoint rm"
    );
    assert!(udp_request(&world.ext, &sa6(HOST_IP6, 5353), SILENCE).is_err());
}

/// Packets behind hop-by-hop and destination-options headers, as sockets send them with
/// `IPV6_HOPOPTS`/`IPV6_DSTOPTS`, reach published ports like any other: a TCP connection
/// whose every segment carries destination options, and a UDP exchange with a header both
/// ways (the answer goes back from the published address).
#[test]
fn ipv6_packets_behind_options_headers_reach_published_ports() {
    let mut world = World::new();
    world.ipv6_uplink();
    let daemon = world.daemon();
    network6(&daemon, "opts6", "10.91.0.0/24", "2001:db8:91::/64", &[]);
    let ports = ["-p", "8080:80", "-p", "5353:53/udp"];
    endpoint6(&mut world, &daemon, "opts6", "web", &ports);
    let c = world.container_ns("web");
    let _tcp = TcpServer::start(c, &sa6("::", 80), "web");
    let answer = tcp_request_with_options(&world.ext, &sa6(HOST_IP6, 8080))
        .expect("TCP with destination options to [::]:8080");
    assert_eq!(answer, format!("web saw {EXT_IP6} said hello"));

    let (ready, bound) = mpsc::channel();
    let server = c.spawn(move || {
        let sock = UdpSocket::bind("[::]:53").expect("bind UDP server");
        send_options_header(&sock, libc::IPV6_DSTOPTS);
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        ready.send(()).unwrap();
        let mut buf = [0u8; 64];
        let (n, peer) = sock.recv_from(&mut buf).expect("a datagram");
        let said = String::from_utf8_lossy(&buf[..n]).into_owned();
        sock.send_to(
            format!("dns saw {} said {said}", peer.ip()).as_bytes(),
            peer,
        )
        .unwrap();
    });
    bound.recv_timeout(TIMEOUT).expect("UDP server bound");
    let to: SocketAddr = sa6(HOST_IP6, 5353).parse().unwrap();
    let (answer, from) = world.ext.run(move || {
        let sock = UdpSocket::bind("[::]:0").unwrap();
        send_options_header(&sock, libc::IPV6_HOPOPTS);
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        sock.send_to(b"hello", to).unwrap();
        let mut buf = [0u8; 128];
        let (n, from) = sock.recv_from(&mut buf).expect("UDP answer");
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    });
    server.join().expect("UDP server");
    assert_eq!(answer, format!("dns saw {EXT_IP6} said hello"));
    assert_eq!(from, to, "the answer comes from the published address");
}

#[test]
fn ipv6_flows_out_are_masqueraded_to_the_host_address() {
    let mut world = World::new();
    world.ipv6_uplink();
    let daemon = world.daemon();
    network6(&daemon, "out6", "10.91.0.0/24", "2001:db8:91::/64", &[]);
    let ip6 = endpoint6(&mut world, &daemon, "out6", "c", &[]);
    let _tcp = TcpServer::start(&world.ext, &sa6(EXT_IP6, 7000), "ext");
    let _udp = UdpServer::start(&world.ext, &sa6(EXT_IP6, 7053), "extdns");
    let c = world.container_ns("c");
    for _ in 0..3 {
        let answer = tcp_request(c, &sa6(EXT_IP6, 7000), TIMEOUT).expect("TCP out over IPv6");
        assert_eq!(answer, format!("ext saw {HOST_IP6} said hello"));
    }
    let answer = udp_request(c, &sa6(EXT_IP6, 7053), TIMEOUT).expect("UDP out over IPv6");
    assert_eq!(answer, format!("extdns saw {HOST_IP6}"));
    // ICMPv6 echo, masqueraded by identifier.
    assert!(ping(c, EXT_IP6), "ping6 to the outside");
    // Tracked in ND_CT6 under the container's address; the translated source is the host's.
    let ct = common::map_dump(&daemon, "ND_CT6");
    assert!(!ct.is_empty(), "no IPv6 conntrack entries");
    assert!(
        !ip6.is_empty()
            && world
                .ext
                .exec("ip", &["-6", "neigh", "show", "dev", "ext0"])
                .status
                .success()
    );
    // The outside never learns the container's address: it has no route to it.
    assert!(tcp_request(&world.ext, &sa6(&ip6, 80), SILENCE).is_err());
}

#[test]
fn ipv6_icc_isolation_and_internal_networks() {
    let mut world = World::new();
    world.ipv6_uplink();
    let daemon = world.daemon();
    network6(&daemon, "open6", "10.92.0.0/24", "2001:db8:92::/64", &[]);
    network6(
        &daemon,
        "closed6",
        "10.93.0.0/24",
        "2001:db8:93::/64",
        &["--icc", "false"],
    );
    network6(
        &daemon,
        "vault6",
        "10.94.0.0/24",
        "2001:db8:94::/64",
        &["--internal"],
    );
    let a = endpoint6(&mut world, &daemon, "open6", "a", &[]);
    let b = endpoint6(&mut world, &daemon, "open6", "b", &[]);
    let x = endpoint6(&mut world, &daemon, "closed6", "x", &[]);
    let y = endpoint6(&mut world, &daemon, "closed6", "y", &[]);
    let _v = endpoint6(&mut world, &daemon, "vault6", "v", &[]);

    // ICC on: containers of one network talk over IPv6 (NDP between them works).
    assert!(connects6(&world, "a", "b", &b, 80), "open6: a -> b");
    assert!(ping(world.container_ns("b"), &a), "open6: ping b -> a");
    // ICC off: refused both ways.
    assert!(!connects6(&world, "x", "y", &y, 80), "closed6: x -> y");
    assert!(!connects6(&world, "y", "x", &x, 80), "closed6: y -> x");
    assert!(drops(&daemon, "icc") > 0);
    // Isolation between networks.
    assert!(!connects6(&world, "a", "x", &x, 80), "open6 -> closed6");
    assert!(!ping(world.container_ns("x"), &a), "closed6 -> open6 ping");
    assert!(drops(&daemon, "isolated") > 0);
    // Internal: no IPv6 way out, while an ordinary network has one.
    let _srv = TcpServer::start(&world.ext, &sa6(EXT_IP6, 7000), "ext");
    assert!(tcp_request(world.container_ns("a"), &sa6(EXT_IP6, 7000), TIMEOUT).is_ok());
    assert!(tcp_request(world.container_ns("v"), &sa6(EXT_IP6, 7000), SILENCE).is_err());
    assert!(!ping(world.container_ns("v"), EXT_IP6));
    assert!(drops(&daemon, "internal") > 0);
}

/// `ip -j ARGS` in `ns`, parsed.
fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = ns.ip(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {out}"))
}

/// The link-local address of `eth0` in container `role`, with the interface's index (its
/// scope), once duplicate address detection has let go of it.
fn link_local(world: &World, role: &str) -> (String, u64) {
    let ns = world.container_ns(role);
    let mut link = Value::Null;
    for _ in 0..50 {
        link = ip_json(ns, &["-6", "addr", "show", "dev", "eth0", "scope", "link"])[0].take();
        let usable = (link["addr_info"].as_array()).and_then(|a| {
            (a.iter())
                .filter(|a| a["tentative"].is_null())
                .find_map(|a| a["local"].as_str())
        });
        if let Some(addr) = usable {
            return (addr.to_string(), link["ifindex"].as_u64().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{role}: no usable link-local address on eth0 after 5 s: {link}");
}

/// Creates endpoint `role` on `net`; returns its IPv6 address and its host-side veth as
/// `ip -j link` shows it.
fn endpoint_veth(world: &mut World, daemon: &Daemon, net: &str, role: &str) -> (String, Value) {
    let ep = create_endpoint(world, daemon, net, role, &[]);
    let ifname = ep["host_ifname"].as_str().expect("host_ifname");
    let veth = ip_json(&world.host, &["link", "show", "dev", ifname])[0].clone();
    (ep["ip6"].as_str().expect("ip6").to_string(), veth)
}

/// The `ND_VETHS` entry of a host-side veth (`ip -j link` output), if any.
fn veth_entry(daemon: &Daemon, veth: &Value) -> Option<Value> {
    map_dump(daemon, "ND_VETHS")
        .into_iter()
        .find(|e| e["key"] == veth["ifindex"])
        .map(|e| e["value"].clone())
}

/// Deletes the `ND_VETHS` entry of a host-side veth behind the daemon's back.
fn delete_veth_entry(daemon: &Daemon, veth: &Value) {
    let index = u32::try_from(veth["ifindex"].as_u64().unwrap()).unwrap();
    let key: Vec<String> = index.to_le_bytes().iter().map(u8::to_string).collect();
    let pin = daemon.bpffs.join("ND_VETHS");
    let mut args = vec!["map", "delete", "pinned", pin.to_str().unwrap(), "key"];
    args.extend(key.iter().map(String::as_str));
    run("bpftool", &args);
    assert!(veth_entry(daemon, veth).is_none(), "{veth}");
}

/// The entry of `veth` says its network's ICC and its bridge's MAC.
fn assert_veth_entry(world: &World, daemon: &Daemon, veth: &Value, icc: bool) {
    let entry = veth_entry(daemon, veth).unwrap_or_else(|| panic!("no ND_VETHS entry: {veth}"));
    assert_eq!(entry["flags"].as_u64().unwrap() & 1 == 1, icc, "{entry}");
    let bridge = veth["master"].as_str().expect("veth on a bridge");
    let bridge_mac = &ip_json(&world.host, &["link", "show", "dev", bridge])[0]["address"];
    let mac: Vec<String> = (entry["bridge_mac"].as_array().unwrap().iter())
        .map(|b| format!("{:02x}", b.as_u64().unwrap()))
        .collect();
    assert_eq!(bridge_mac.as_str(), Some(mac.join(":").as_str()), "{entry}");
}

/// TCP from container `from` to `[to_ll%eth0]:port`; a server in container `to` answers.
fn ll_request(
    world: &World,
    from: &str,
    to: &str,
    to_ll: &str,
    port: u16,
) -> Result<String, String> {
    let _srv = TcpServer::start(world.container_ns(to), &sa6("::", port), "ll");
    let (_, scope) = link_local(world, from);
    tcp_request(
        world.container_ns(from),
        &sa6(&format!("{to_ll}%{scope}"), port),
        SILENCE,
    )
}

#[test]
fn ipv6_icc_off_covers_link_local_addresses() {
    let mut world = World::new();
    let mut daemon = world.daemon();
    network6(&daemon, "llopen6", "10.88.0.0/24", "2001:db8:88::/64", &[]);
    network6(
        &daemon,
        "llclosed6",
        "10.89.0.0/24",
        "2001:db8:89::/64",
        &["--icc", "false"],
    );
    let (_, a_veth) = endpoint_veth(&mut world, &daemon, "llopen6", "a");
    endpoint_veth(&mut world, &daemon, "llopen6", "b");
    let (x_ip, x_veth) = endpoint_veth(&mut world, &daemon, "llclosed6", "x");
    let (_, y_veth) = endpoint_veth(&mut world, &daemon, "llclosed6", "y");
    // Every veth has its network's ICC and bridge MAC in ND_VETHS.
    assert_eq!(map_dump(&daemon, "ND_VETHS").len(), 4);
    assert_veth_entry(&world, &daemon, &a_veth, true);
    assert_veth_entry(&world, &daemon, &x_veth, false);
    let [(a_ll, _), (b_ll, _), (x_ll, _), (y_ll, _)] =
        ["a", "b", "x", "y"].map(|role| link_local(&world, role));

    // ICC on: containers talk over their link-local addresses.
    let answer = ll_request(&world, "a", "b", &b_ll, 80).expect("open: a -> b link-local");
    assert_eq!(answer, format!("ll saw {a_ll} said hello"));
    // ICC off: refused both ways, counted as ICC drops.
    let before = drops(&daemon, "icc");
    assert!(
        ll_request(&world, "x", "y", &y_ll, 80).is_err(),
        "closed: x -> y link-local"
    );
    assert!(
        ll_request(&world, "y", "x", &x_ll, 80).is_err(),
        "closed: y -> x link-local"
    );
    assert!(drops(&daemon, "icc") > before);

    // The host stays reachable over link-local (the bridge's fe80::1) and over the gateway's
    // global address, which takes neighbour discovery first.
    let x = world.container_ns("x");
    assert!(
        ping(x, "fe80::1%eth0"),
        "closed: ping the gateway's fe80::1"
    );
    let _gw = TcpServer::start(&world.host, &sa6("::", 8000), "gw");
    let (_, scope) = link_local(&world, "x");
    let answer = tcp_request(x, &sa6(&format!("fe80::1%{scope}"), 8000), TIMEOUT)
        .expect("closed: x -> [fe80::1]:8000");
    assert_eq!(answer, format!("gw saw {x_ll} said hello"));
    x.ip(&["-6", "neigh", "flush", "dev", "eth0"]);
    let answer =
        tcp_request(x, &sa6("2001:db8:89::1", 8000), TIMEOUT).expect("closed: x -> [gateway]:8000");
    assert_eq!(answer, format!("gw saw {x_ip} said hello"));

    // Veths without entries (attached by a version before ND_VETHS) pass as before; a
    // restarted daemon fills the entries back in.
    for veth in [&x_veth, &y_veth] {
        delete_veth_entry(&daemon, veth);
    }
    let answer = ll_request(&world, "x", "y", &y_ll, 80).expect("no entries: x -> y passes");
    assert_eq!(answer, format!("ll saw {x_ll} said hello"));
    daemon.restart();
    assert_veth_entry(&world, &daemon, &x_veth, false);
    assert_veth_entry(&world, &daemon, &y_veth, false);
    assert!(
        ll_request(&world, "x", "y", &y_ll, 80).is_err(),
        "after restart: x -> y"
    );

    // The entry goes with the endpoint.
    daemon.json(&["endpoint", "rm", "y"]);
    assert!(
        veth_entry(&daemon, &y_veth).is_none(),
        "entry left after endpoint rm"
    );
    assert_eq!(map_dump(&daemon, "ND_VETHS").len(), 3);
}

/// A server "far away" at `2001:db8:ee::10`, behind the external namespace acting as a router
/// whose link towards it has an MTU of 1280: full-size packets from the host side get an
/// `ICMPv6` packet too big from the router.
fn far_network(world: &World) -> Netns {
    let far = Netns::new(format!("ndt{}f", world.tag));
    world.ext.ip(&[
        "link", "add", "ext1", "mtu", "1280", "type", "veth", "peer", "name", "far0", "netns",
        &far.name,
    ]);
    world
        .ext
        .ip(&["addr", "add", "2001:db8:ee::1/64", "dev", "ext1", "nodad"]);
    world.ext.ip(&["link", "set", "ext1", "up"]);
    let fwd = world
        .ext
        .exec("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
    assert!(
        fwd.status.success(),
        "IPv6 forwarding in the external namespace"
    );
    far.ip(&["addr", "add", "2001:db8:ee::10/64", "dev", "far0", "nodad"]);
    far.ip(&["link", "set", "far0", "up"]);
    far.ip(&["-6", "route", "add", "default", "via", "2001:db8:ee::1"]);
    world
        .host
        .ip(&["-6", "route", "add", "2001:db8:ee::/64", "via", EXT_IP6]);
    far
}

#[test]
fn ipv6_path_mtu_discovery_works_for_masqueraded_flows() {
    let mut world = World::new();
    world.ipv6_uplink();
    let far = far_network(&world);
    let daemon = world.daemon();
    network6(&daemon, "pmtu6", "10.95.0.0/24", "2001:db8:95::/64", &[]);
    endpoint6(&mut world, &daemon, "pmtu6", "c", &[]);
    // The far server counts what it receives and says so.
    let (tx, rx) = std::sync::mpsc::channel();
    let server = far.spawn(move || {
        let listener = TcpListener::bind("[2001:db8:ee::10]:7100").expect("bind far server");
        listener.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        // Bounded: gives up after 20 s without a connection.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("no connection: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut data = Vec::new();
        let _ = conn.read_to_end(&mut data);
        let _ = conn.write_all(format!("got {}", data.len()).as_bytes());
    });
    rx.recv_timeout(TIMEOUT).expect("far server started");
    // 256 KiB in full-size segments: the first ones are too big for the router's next link.
    let answer = world.container_ns("c").run(|| {
        let addr: SocketAddr = "[2001:db8:ee::10]:7100".parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(&vec![7u8; 256 * 1024])
            .map_err(|e| e.to_string())?;
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok::<_, String>(out)
    });
    let _ = server.join();
    assert_eq!(
        answer.expect("transfer through a 1280-byte link"),
        format!("got {}", 256 * 1024)
    );
    // The container learned the path MTU from the translated packet too big.
    let cache = world
        .container_ns("c")
        .ip(&["-6", "route", "get", "2001:db8:ee::10"]);
    assert!(cache.contains("mtu 1280"), "{cache}");
}

#[test]
fn ipv6_routed_networks_publish_container_addresses_without_translation() {
    let mut world = World::new();
    world.ipv6_uplink();
    let daemon = world.daemon();
    network6(
        &daemon,
        "routed6",
        "10.96.0.0/24",
        "2001:db8:96::/64",
        &["--gateway-mode", "routed"],
    );
    let ip6 = endpoint6(&mut world, &daemon, "routed6", "r", &["-p", "8080:80"]);
    // The outside routes the container subnet through the host.
    world
        .ext
        .ip(&["-6", "route", "add", "2001:db8:96::/64", "via", HOST_IP6]);
    let _srv = TcpServer::start(world.container_ns("r"), &sa6("::", 80), "routed");
    let _srv22 = TcpServer::start(world.container_ns("r"), &sa6("::", 22), "ssh");
    // The container's own address and published port, untranslated.
    let answer = tcp_request(&world.ext, &sa6(&ip6, 80), TIMEOUT).expect("routed [c]:80");
    assert_eq!(answer, format!("routed saw {EXT_IP6} said hello"));
    // The host's address still works too.
    let answer = tcp_request(&world.ext, &sa6(HOST_IP6, 8080), TIMEOUT).expect("[host]:8080");
    assert_eq!(answer, format!("routed saw {EXT_IP6} said hello"));
    // Unpublished ports stay closed.
    assert!(tcp_request(&world.ext, &sa6(&ip6, 22), SILENCE).is_err());
    // No masquerade: the outside sees the container's own address.
    let _ext = TcpServer::start(&world.ext, &sa6(EXT_IP6, 7000), "ext");
    let answer =
        tcp_request(world.container_ns("r"), &sa6(EXT_IP6, 7000), TIMEOUT).expect("routed out");
    assert_eq!(answer, format!("ext saw {ip6} said hello"));
    // The endpoint goes: so does its routed port.
    daemon.json(&["endpoint", "rm", "r"]);
    assert!(common::map_dump(&daemon, "ND_PORTS6").is_empty());
}

#[test]
fn ipv6_legacy_links_open_one_port_with_icc_off() {
    let mut world = World::new();
    world.ipv6_uplink();
    let daemon = world.daemon();
    network6(
        &daemon,
        "app6",
        "10.97.0.0/24",
        "2001:db8:97::/64",
        &["--icc", "false"],
    );
    let db = endpoint6(&mut world, &daemon, "app6", "db", &["--expose", "5432"]);
    endpoint6(
        &mut world,
        &daemon,
        "app6",
        "web",
        &["--link", "db:database"],
    );
    endpoint6(&mut world, &daemon, "app6", "other", &[]);
    // The link opens the exposed port, one way, replies included.
    assert!(connects6(&world, "web", "db", &db, 5432), "web -> db:5432");
    assert!(!connects6(&world, "web", "db", &db, 80), "web -> db:80");
    assert!(!connects6(&world, "other", "db", &db, 5432), "other -> db");
    assert!(!ping(world.container_ns("web"), &db));
    // Both ends' links go with an endpoint.
    daemon.json(&["endpoint", "rm", "db"]);
    assert!(common::map_dump(&daemon, "ND_LINKS6").is_empty());
}

#[test]
fn ipv6_containers_reach_published_ports_through_the_host_address() {
    let mut world = World::new();
    world.ipv6_uplink();
    let daemon = world.daemon();
    network6(&daemon, "hpa", "10.98.0.0/24", "2001:db8:98::/64", &[]);
    network6(&daemon, "hpb", "10.99.0.0/24", "2001:db8:99::/64", &[]);
    let web = endpoint6(
        &mut world,
        &daemon,
        "hpa",
        "web",
        &["-p", "8080:80", "-p", "5353:53/udp"],
    );
    let near = endpoint6(&mut world, &daemon, "hpa", "near", &[]);
    let far = endpoint6(&mut world, &daemon, "hpb", "far", &[]);
    let _tcp = TcpServer::start(world.container_ns("web"), &sa6("::", 80), "web");
    let _udp = UdpServer::start(world.container_ns("web"), &sa6("::", 53), "dns");
    // From the same network and from another one, the server sees the client's address;
    // from "web" itself, its gateway (its own address would be a martian inside it), as with
    // Docker.
    // The same through the network's gateway address, another of the host's addresses.
    let gateway = HPA_GATEWAY6.to_string();
    for (role, ip) in [("near", &near), ("far", &far), ("web", &gateway)] {
        let c = world.container_ns(role);
        for host in [HOST_IP6, HPA_GATEWAY6] {
            for _ in 0..5 {
                let answer = tcp_request(c, &sa6(host, 8080), TIMEOUT)
                    .unwrap_or_else(|e| panic!("{role} -> {host}: hairpin TCP: {e}"));
                assert_eq!(
                    answer,
                    format!("web saw {ip} said hello"),
                    "{role} -> {host}"
                );
            }
            let answer = udp_request(c, &sa6(host, 5353), TIMEOUT)
                .unwrap_or_else(|e| panic!("{role} -> {host}: hairpin UDP: {e}"));
            assert_eq!(answer, format!("dns saw {ip}"), "{role} -> {host}");
        }
    }
    // A port nobody published on a host address stays the host's: refused, or answered by
    // the host's own server.
    assert!(tcp_request(world.container_ns("near"), &sa6(HOST_IP6, 8081), SILENCE).is_err());
    let _host = TcpServer::start(&world.host, &sa6("::", 8081), "host");
    let answer = tcp_request(
        world.container_ns("near"),
        &sa6(HPA_GATEWAY6, 8081),
        TIMEOUT,
    );
    assert_eq!(
        answer.as_deref(),
        Ok(format!("host saw {near} said hello").as_str())
    );
    // "web"'s flows to its own port are tracked as both directions: its packets to the host
    // address, its replies to the gateway. They go with the endpoint, like all its flows.
    let web: Ipv6Addr = web.parse().unwrap();
    let ct = ct6_flows(&daemon);
    for (to, what) in [
        (HOST_IP6, "to the host address"),
        (HPA_GATEWAY6, "to the gateway"),
    ] {
        let to: Ipv6Addr = to.parse().unwrap();
        assert!(
            ct.iter().any(|f| f[0] == web && f[1] == to),
            "no ND_CT6 entry of web {what}: {ct:?}"
        );
    }
    daemon.json(&["endpoint", "rm", "web"]);
    let ct = ct6_flows(&daemon);
    assert!(
        !ct.iter().any(|f| f.contains(&web)),
        "web's flows left: {ct:?}"
    );
}

/// The gateway of network "hpa" (`2001:db8:98::/64`): its first address.
const HPA_GATEWAY6: &str = "2001:db8:98::1";

/// The `ND_CT6` entries as [source, destination, owner] addresses.
fn ct6_flows(daemon: &Daemon) -> Vec<[Ipv6Addr; 3]> {
    let addr = |v: &serde_json::Value| {
        let bytes: Vec<u8> = serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("an IPv6 address in ND_CT6: {e}: {v}"));
        let octets: [u8; 16] = bytes.try_into().expect("16 bytes");
        Ipv6Addr::from(octets)
    };
    common::map_dump(daemon, "ND_CT6")
        .iter()
        .map(|e| {
            [
                addr(&e["key"]["saddr"]),
                addr(&e["key"]["daddr"]),
                addr(&e["value"]["owner_addr"]),
            ]
        })
        .collect()
}
