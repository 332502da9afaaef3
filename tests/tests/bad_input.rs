//! Every bad input gets a clear error and leaves existing state untouched; default pools
//! avoid what the namespace already uses.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Daemon, World};
use serde_json::Value;

/// Everything the daemon reports, to compare before and after a failed request.
fn snapshot(d: &Daemon, world: &World) -> (Value, Value, Value, String) {
    let links = world.host.ip(&["-o", "link"]);
    let links: String = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string() + "\n")
        .collect();
    (
        d.json(&["network", "ls"]),
        d.json(&["endpoint", "ls"]),
        d.json(&["port", "ls"]),
        links,
    )
}

/// Each of `cases` (CLI arguments, part of the expected error) must fail with that error
/// and leave the state as `before`.
fn refused_without_change(
    daemon: &Daemon,
    world: &World,
    before: &(Value, Value, Value, String),
    cases: &[(Vec<&str>, &str)],
) {
    for (args, expected) in cases {
        let err = daemon.fails(args);
        assert!(
            err.contains(expected),
            "netdriver {}: expected {expected:?} in {err:?}",
            args.join(" ")
        );
        assert_eq!(
            &snapshot(daemon, world),
            before,
            "state changed after netdriver {}",
            args.join(" ")
        );
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn bad_cli_input_is_refused_and_changes_nothing() {
    let mut world = World::new();
    let daemon = world.daemon();
    daemon.json(&["network", "create", "one", "--subnet", "10.77.0.0/24"]);
    let ns = world.container("a");
    let ns = ns.to_str().unwrap().to_string();
    daemon.json(&[
        "endpoint", "create", "one", "--netns", &ns, "--name", "a", "-p", "8080:80",
    ]);
    let other = world.container("b");
    let other = other.to_str().unwrap().to_string();
    let before = snapshot(&daemon, &world);

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["network", "create", "x", "--subnet", "10.77.0.0/33"],
            "invalid subnet",
        ),
        (
            vec!["network", "create", "x", "--subnet", "banana"],
            "invalid subnet",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.77.1.1/24"],
            "host bits",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.77.0.128/25"],
            "overlaps",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.0.0.0/8"],
            "overlaps",
        ),
        (
            vec!["network", "create", "one", "--subnet", "10.78.0.0/24"],
            "already exists",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.78.0.0/24",
                "--gateway",
                "10.79.0.1",
            ],
            "not a usable",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.78.0.0/24",
                "--mtu",
                "10",
            ],
            "MTU",
        ),
        (
            vec!["network", "create", "bad name", "--subnet", "10.78.0.0/24"],
            "invalid network name",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.78.0.0/24",
                "--bridge",
                "up0",
            ],
            "already exists",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.78.0.0/24",
                "--bridge",
                "much-too-long-name",
            ],
            "interface name",
        ),
        (vec!["network", "inspect", "nope"], "no network named"),
        (vec!["network", "rm", "nope"], "no network named"),
        (vec!["network", "rm", "one"], "endpoint"),
        (
            vec!["endpoint", "create", "nope", "--netns", &other],
            "no network named",
        ),
        (
            vec!["endpoint", "create", "one", "--netns", &ns, "--name", "a"],
            "already exists",
        ),
        (
            vec![
                "endpoint",
                "create",
                "one",
                "--netns",
                "/var/run/netns/does-not-exist",
            ],
            "netns",
        ),
        (
            vec!["endpoint", "create", "one", "--netns", "/etc/hostname"],
            "not a network namespace",
        ),
        (
            vec![
                "endpoint",
                "create",
                "one",
                "--netns",
                &other,
                "-p",
                "80:80:80:80",
            ],
            "invalid port spec",
        ),
        (
            vec![
                "endpoint", "create", "one", "--netns", &other, "-p", "70000:80",
            ],
            "out of range",
        ),
        (
            vec![
                "endpoint",
                "create",
                "one",
                "--netns",
                &other,
                "-p",
                "8080:80/icmp",
            ],
            "protocol",
        ),
        (
            vec![
                "endpoint",
                "create",
                "one",
                "--netns",
                &other,
                "-p",
                "9000:80/sctpx",
            ],
            "tcp, udp or sctp",
        ),
        (
            vec![
                "endpoint", "create", "one", "--netns", &other, "--expose", "80/sctpx",
            ],
            "tcp, udp or sctp",
        ),
        (
            vec![
                "endpoint", "create", "one", "--netns", &other, "-p", "8080:80",
            ],
            "already allocated",
        ),
        (
            vec![
                "endpoint",
                "create",
                "one",
                "--netns",
                &other,
                "--ip",
                "10.77.0.2",
            ],
            "in use",
        ),
        (
            vec![
                "endpoint",
                "create",
                "one",
                "--netns",
                &other,
                "--ip",
                "10.99.0.2",
            ],
            "not a usable",
        ),
        (
            vec![
                "endpoint", "create", "one", "--netns", &other, "--ip", "ten",
            ],
            "invalid IP",
        ),
        (
            vec![
                "endpoint",
                "create",
                "one",
                "--netns",
                &other,
                "--mac",
                "01:00:5e:00:00:01",
            ],
            "MAC",
        ),
        (
            vec![
                "endpoint", "create", "one", "--netns", &other, "--ifname", "a/b",
            ],
            "interface name",
        ),
        (vec!["endpoint", "inspect", "nope"], "no endpoint named"),
        (vec!["endpoint", "rm", "nope"], "no endpoint named"),
    ];
    refused_without_change(&daemon, &world, &before, &cases);
}

#[test]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn bad_ipv6_input_is_refused_and_changes_nothing() {
    let mut world = World::new();
    let daemon = world.daemon();
    daemon.json(&["network", "create", "four", "--subnet", "10.78.0.0/24"]);
    daemon.json(&[
        "network",
        "create",
        "six",
        "--subnet",
        "10.79.0.0/24",
        "--ipv6",
        "--subnet-v6",
        "2001:db8:79::/64",
    ]);
    let ns = world.container("a");
    daemon.json(&[
        "endpoint",
        "create",
        "six",
        "--netns",
        ns.to_str().unwrap(),
        "--name",
        "a",
        "--ip6",
        "2001:db8:79::10",
    ]);
    let other = world.container("b");
    let other = other.to_str().unwrap().to_string();
    let before = snapshot(&daemon, &world);
    let net = |extra: &[&'static str]| {
        let mut args = vec!["network", "create", "x", "--ipv6"];
        args.extend_from_slice(extra);
        args
    };
    let ep = |network: &'static str, extra: &[&'static str]| {
        let mut args = vec!["endpoint", "create", network, "--netns", other.as_str()];
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (net(&["--subnet-v6", "10.80.0.0/24"]), "not IPv4"),
        (net(&["--subnet-v6", "banana"]), "expected an IPv6 CIDR"),
        (
            net(&["--subnet-v6", "fe80::/64"]),
            "clashes with the Link-Local prefix fe80::/64",
        ),
        (net(&["--subnet-v6", "ff05::/64"]), "multicast"),
        (net(&["--subnet-v6", "2001:db8:80::1/64"]), "host bits"),
        (net(&["--subnet-v6", "2001:db8:80::/127"]), "too small"),
        (
            net(&["--subnet-v6", "2001:db8:79:0:1::/80"]),
            "overlaps 2001:db8:79::/64 of network six",
        ),
        (net(&["--subnet-v6", "2001:db8::/32"]), "overlaps"),
        (
            net(&[
                "--subnet-v6",
                "2001:db8:80::/64",
                "--gateway-v6",
                "2001:db8:81::1",
            ]),
            "not a usable host address",
        ),
        (
            net(&[
                "--subnet-v6",
                "2001:db8:80::/64",
                "--gateway-v6",
                "10.0.0.1",
            ]),
            "invalid IPv6 gateway",
        ),
        (
            net(&["--gateway-v6", "2001:db8:80::1"]),
            "needs the IPv6 subnet",
        ),
        (
            vec!["network", "create", "x", "--subnet-v6", "2001:db8:80::/64"],
            "add --ipv6",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--ipv6",
                "-o",
                "com.docker.network.enable_ipv6=false",
            ],
            "contradictory",
        ),
        (
            ep("six", &["--ip6", "2001:db8:80::10"]),
            "not a usable host address",
        ),
        (
            ep("six", &["--ip6", "2001:db8:79::"]),
            "not a usable host address",
        ),
        (ep("six", &["--ip6", "2001:db8:79::10"]), "already in use"),
        (ep("six", &["--ip6", "2001:db8:79::1"]), "already in use"),
        (ep("six", &["--ip6", "ten"]), "invalid IPv6 address"),
        (ep("four", &["--ip6", "2001:db8:79::11"]), "has no IPv6"),
        (ep("four", &["-p", "[::]:8080:80"]), "has no IPv6"),
        (ep("four", &["-p", "[2001:db8::1]:8080:80"]), "has no IPv6"),
    ];
    refused_without_change(&daemon, &world, &before, &cases);
}

#[test]
fn malformed_api_requests_get_json_errors() {
    let world = World::new();
    let daemon = world.daemon();
    let post = |path: &str, body: &str| {
        daemon.http(&format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    };
    for (path, body, status) in [
        ("/v1/networks", "{not json", 400),
        ("/v1/networks", "{\"subnet\": \"10.1.0.0/24\"}", 400),
        ("/v1/networks", "{\"name\": 7}", 400),
        ("/v1/networks", "{\"name\": \"x\", \"bogus\": 1}", 400),
        ("/v1/networks", "[]", 400),
        ("/v1/endpoints", "{\"network\": \"x\"}", 400),
        (
            "/v1/endpoints",
            "{\"network\": \"x\", \"netns\": \"/nope\"}",
            404,
        ),
        ("/v1/nothing", "{}", 404),
    ] {
        let (got, body_text) = post(path, body);
        assert_eq!(got, status, "POST {path} {body}: {body_text}");
        let v: Value = serde_json::from_str(body_text.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {body_text}"));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let (got, body) = daemon.http(
        "PUT /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(got, 405, "{body}");
    let (got, _) = daemon.http("GARBAGE\r\n\r\n");
    assert!((400..500).contains(&got), "garbage request: {got}");
    assert!(
        daemon
            .json(&["network", "ls"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn default_pool_avoids_routes_and_nameservers() {
    let world = World::new();
    // 172.17.0.0/16 is routed here, and the nameserver lives in 172.18.0.0/16.
    world.host.ip(&[
        "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1",
    ]);
    world
        .host
        .ip(&["addr", "add", "172.17.5.1/24", "dev", "dummy0"]);
    world.host.ip(&["link", "set", "dummy0", "up"]);
    let dir = std::env::temp_dir().join(format!("ndt{}", world.tag));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("resolv.conf"), "nameserver 172.18.0.53\n").unwrap();
    let daemon = Daemon::start(&world, &["--uplink", "up0"]);
    let net = daemon.json(&["network", "create", "auto"]);
    assert_eq!(net["subnet"], "172.19.0.0/16");
    assert_eq!(net["gateway"], "172.19.0.1");
    let net2 = daemon.json(&["network", "create", "auto2"]);
    assert_eq!(net2["subnet"], "172.20.0.0/16");
    let bridge = net["bridge"].as_str().unwrap();
    let addr = world.host.ip(&["-o", "addr", "show", "dev", bridge]);
    assert!(addr.contains("172.19.0.1/16"), "{addr}");
    // The explicit uplink is the only one, the dummy is left alone.
    assert_eq!(
        daemon.json(&["status"])["uplinks"],
        serde_json::json!(["up0"])
    );
    let inspect = daemon.json(&["network", "inspect", "auto"]);
    assert_eq!(inspect["name"], "auto");
}

#[test]
fn socket_is_private_and_mtu_applies() {
    let mut world = World::new();
    let daemon = world.daemon();
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    let net = daemon.json(&[
        "network",
        "create",
        "small",
        "--subnet",
        "10.66.0.0/24",
        "--mtu",
        "1400",
        "--bridge",
        "ndbr-small",
    ]);
    assert_eq!(net["bridge"], "ndbr-small");
    let ns = world.container("m");
    let ep = daemon.json(&[
        "endpoint",
        "create",
        "small",
        "--netns",
        ns.to_str().unwrap(),
        "--ip",
        "10.66.0.9",
        "--ifname",
        "net0",
        "--mac",
        "02:00:00:00:00:09",
    ]);
    assert_eq!(ep["ip"], "10.66.0.9");
    let link = world.container_ns("m").ip(&["-o", "link", "show", "net0"]);
    assert!(
        link.contains("mtu 1400") && link.contains("02:00:00:00:00:09"),
        "{link}"
    );
    let route = world.container_ns("m").ip(&["route"]);
    assert!(route.contains("default via 10.66.0.1"), "{route}");
}

#[test]
fn the_daemon_refuses_a_socket_it_cannot_protect() {
    let world = World::new();
    let dir = std::env::temp_dir().join(format!("ndt{}open", world.tag));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = world.host.exec(
        common::netdriver_bin().to_str().unwrap(),
        &[
            "--socket",
            dir.join("nd.sock").to_str().unwrap(),
            "daemon",
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--bpffs",
            &format!("/sys/fs/bpf/ndt{}open", world.tag),
            "--no-docker-plugin",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("writable by group or others"),
        "{err}"
    );
    assert!(!dir.join("nd.sock").exists() && !dir.join("state").exists());
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/ndt{}open", world.tag)).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
