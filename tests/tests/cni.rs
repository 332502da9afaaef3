//! The CNI plugin, run exactly as a container runtime runs it: the real `netdriver`
//! executable with no arguments, `CNI_*` environment variables, the configuration on stdin,
//! from the runtime's (host) namespace; the result and errors read from stdout and the exit
//! code. Real packets prove what ADD set up and DEL/GC took away.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use common::{
    Daemon, EXT_IP, HOST_IP, OUTSIDE_IP, SILENCE, TIMEOUT, TcpServer, UdpServer, World,
    netdriver_bin, tcp_request, udp_request,
};
use serde_json::{Value, json};

/// What one plugin run printed: exit status and stdout (parsed when not empty).
struct Run {
    ok: bool,
    out: Value,
    raw: String,
}

/// Runs the plugin in the host namespace with `CNI_COMMAND=command`, the attachment
/// variables `vars` and `stdin`.
fn plugin(world: &World, command: &str, vars: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", world.host.path().display()))
        .arg(netdriver_bin())
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/opt/cni/bin")
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let parsed = if raw.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {raw}"))
    };
    Run {
        ok: out.status.success(),
        out: parsed,
        raw: raw + &String::from_utf8_lossy(&out.stderr),
    }
}

/// The configuration of network `name` on `subnet` (gateway .1) for `daemon`, plus `extra`
/// keys.
fn conf(daemon: &Daemon, name: &str, subnet: &str, extra: &Value) -> Value {
    let gateway = subnet.replace(".0/24", ".1");
    let mut c = json!({
        "cniVersion": "1.0.0", "name": name, "type": "netdriver",
        "socket": daemon.socket, "ipMasq": true,
        "capabilities": {"portMappings": true},
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet, "gateway": gateway}]]},
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// The variables of an attachment of container `id` in `netns` as `ifname`.
fn vars<'a>(id: &'a str, netns: &'a str, ifname: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
    ]
}

/// Runs ADD for a new container namespace `role` and expects success; returns the result.
fn add(world: &mut World, role: &str, ifname: &str, conf: &Value) -> Value {
    let netns = world.container(role);
    add_in(world, role, netns.to_str().unwrap(), ifname, conf)
}

fn add_in(world: &World, id: &str, netns: &str, ifname: &str, conf: &Value) -> Value {
    let r = plugin(world, "ADD", &vars(id, netns, ifname), &conf.to_string());
    assert!(r.ok, "ADD {id} failed: {}", r.raw);
    r.out
}

/// Expects the plugin to fail with the CNI error `code`; returns the error JSON.
fn fails(r: &Run, code: u64) -> Value {
    assert!(!r.ok, "should have failed, printed {}", r.raw);
    assert_eq!(r.out["code"], code, "{}", r.raw);
    assert!(
        r.out["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.raw
    );
    r.out.clone()
}

/// The endpoint names `netdriver endpoint ls` shows.
fn endpoint_names(daemon: &Daemon) -> Vec<String> {
    let mut names: Vec<String> = daemon
        .json(&["endpoint", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn version_lists_the_supported_versions() {
    let world = World::new();
    let r = plugin(
        &world,
        "VERSION",
        &[("CNI_NETNS", "dummy"), ("CNI_IFNAME", "dummy")],
        r#"{"cniVersion":"1.1.0"}"#,
    );
    assert!(r.ok, "{}", r.raw);
    assert_eq!(
        r.out,
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn add_gives_a_spec_result_and_connectivity() {
    let mut world = World::new();
    world.route_outside();
    let daemon = world.daemon();
    let c = conf(&daemon, "cninet", "10.77.0.0/24", &json!({}));
    let a = add(&mut world, "a", "eth0", &c);
    let netns_a = world.container_ns("a").path();
    let mac = world.container_ns("a").ip(&["-j", "link", "show", "eth0"]);
    let mac: Value = serde_json::from_str(&mac).unwrap();
    let host_ifname = daemon.json(&["endpoint", "inspect", "cni-a-eth0"])["host_ifname"].clone();
    let bridge = daemon.json(&["network", "inspect", "cninet"])["bridge"].clone();
    assert_eq!(
        a,
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": bridge},
                {"name": host_ifname},
                {"name": "eth0", "mac": mac[0]["address"], "sandbox": netns_a},
            ],
            "ips": [{"address": "10.77.0.2/24", "gateway": "10.77.0.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}],
            "dns": {},
        })
    );
    // The same container on a second network, as a second interface.
    let c2 = conf(
        &daemon,
        "cnitwo",
        "10.78.0.0/24",
        &json!({"cniVersion": "0.4.0"}),
    );
    let second = add_in(&world, "a", netns_a.to_str().unwrap(), "net1", &c2);
    assert_eq!(second["cniVersion"], "0.4.0");
    assert_eq!(
        second["ips"],
        json!([{"address": "10.78.0.2/24", "version": "4", "gateway": "10.78.0.1", "interface": 2}])
    );
    // The first attachment keeps the container's default route.
    assert_eq!(second["routes"], json!([]));
    let routes = world.container_ns("a").ip(&["route", "show", "default"]);
    assert!(
        routes.starts_with("default via 10.77.0.1 dev eth0") && routes.lines().count() == 1,
        "{routes}"
    );
    let addrs = world.container_ns("a").ip(&["-o", "addr", "show"]);
    assert!(
        addrs.contains("eth0    inet 10.77.0.2/24") && addrs.contains("net1    inet 10.78.0.2/24"),
        "{addrs}"
    );

    // Outside, with the host's address (masquerade).
    let _out = TcpServer::start(&world.ext, &format!("{OUTSIDE_IP}:80"), "outside");
    let answer = tcp_request(
        world.container_ns("a"),
        &format!("{OUTSIDE_IP}:80"),
        TIMEOUT,
    )
    .expect("a reaches the outside");
    assert_eq!(answer, format!("outside saw {HOST_IP} said hello"));
    // Another CNI container of the network, with a's own address.
    let b = add(&mut world, "b", "eth0", &c);
    assert_eq!(b["ips"][0]["address"], "10.77.0.3/24");
    let _srv = TcpServer::start(world.container_ns("b"), "10.77.0.3:80", "b");
    let answer =
        tcp_request(world.container_ns("a"), "10.77.0.3:80", TIMEOUT).expect("a reaches b");
    assert_eq!(answer, "b saw 10.77.0.2 said hello");
}

#[test]
fn port_mappings_publish_until_del() {
    let mut world = World::new();
    let daemon = world.daemon();
    // go-cni (containerd) spells the keys with capitals; CRI-O in camelCase.
    let ports = json!({"runtimeConfig": {"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp", "HostIP": ""},
    ]}});
    let c = conf(&daemon, "cniports", "10.79.0.0/24", &ports);
    add(&mut world, "web", "eth0", &c);
    let _tcp = TcpServer::start(world.container_ns("web"), "0.0.0.0:80", "web");
    let _udp = UdpServer::start(world.container_ns("web"), "0.0.0.0:53", "dns");
    let answer = tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("TCP 8080");
    assert_eq!(answer, format!("web saw {EXT_IP} said hello"));
    let answer = udp_request(&world.ext, &format!("{HOST_IP}:5353"), TIMEOUT).expect("UDP 5353");
    assert_eq!(answer, format!("dns saw {EXT_IP}"));

    // A second container asking for the same host port: the daemon's refusal, nothing changed.
    let other = conf(
        &daemon,
        "cniports",
        "10.79.0.0/24",
        &json!({"runtimeConfig":
        {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}),
    );
    let netns = world.container("other");
    let vars_other = vars("other", netns.to_str().unwrap(), "eth0");
    let r = plugin(&world, "ADD", &vars_other, &other.to_string());
    let err = fails(&r, 100);
    assert_eq!(err["cniVersion"], "1.0.0");
    assert!(err["details"].as_str().unwrap().contains("8080"), "{err}");
    assert_eq!(endpoint_names(&daemon), ["cni-web-eth0"]);
    let links = world.container_ns("other").ip(&["-o", "link", "show"]);
    assert!(!links.contains("eth0"), "{links}");
    assert_eq!(daemon.json(&["port", "ls"]).as_array().unwrap().len(), 2);
    tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("web still published");

    // DEL twice: both succeed, print nothing; the ports are free again.
    let web_netns = world.container_ns("web").path();
    let vars_web = vars("web", web_netns.to_str().unwrap(), "eth0");
    for _ in 0..2 {
        let r = plugin(&world, "DEL", &vars_web, &c.to_string());
        assert!(r.ok && r.out.is_null(), "DEL: {}", r.raw);
    }
    assert!(endpoint_names(&daemon).is_empty());
    assert!(daemon.json(&["port", "ls"]).as_array().unwrap().is_empty());
    tcp_request(&world.ext, &format!("{HOST_IP}:8080"), SILENCE).expect_err("8080 unpublished");
    // The port now goes to the other container.
    add_in(&world, "other", netns.to_str().unwrap(), "eth0", &other);
    let _srv = TcpServer::start(world.container_ns("other"), "0.0.0.0:80", "other");
    let answer = tcp_request(&world.ext, &format!("{HOST_IP}:8080"), TIMEOUT).expect("to other");
    assert_eq!(answer, format!("other saw {EXT_IP} said hello"));
}

#[test]
fn check_fails_once_the_interface_is_gone_and_del_still_succeeds() {
    let mut world = World::new();
    let daemon = world.daemon();
    let c = conf(&daemon, "cnicheck", "10.80.0.0/24", &json!({}));
    let result = add(&mut world, "a", "eth0", &c);
    let netns = world.container_ns("a").path();
    let v = vars("a", netns.to_str().unwrap(), "eth0");
    let mut with_prev = c.clone();
    with_prev["prevResult"] = result;
    let r = plugin(&world, "CHECK", &v, &with_prev.to_string());
    assert!(r.ok && r.out.is_null(), "CHECK: {}", r.raw);

    world.container_ns("a").ip(&["link", "del", "eth0"]);
    let r = plugin(&world, "CHECK", &v, &with_prev.to_string());
    let err = fails(&r, 102);
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains("interface eth0 is missing"),
        "{err}"
    );
    let r = plugin(&world, "DEL", &v, &c.to_string());
    assert!(r.ok, "DEL: {}", r.raw);
    let r = plugin(&world, "CHECK", &v, &with_prev.to_string());
    fails(&r, 3);

    // DEL after the namespace is gone (CNI_NETNS naming a missing file, or empty).
    add(&mut world, "b", "eth0", &c);
    let netns_b = world.container_ns("b").path();
    world.remove_container("b");
    let r = plugin(
        &world,
        "DEL",
        &vars("b", netns_b.to_str().unwrap(), "eth0"),
        &c.to_string(),
    );
    assert!(r.ok, "DEL without netns: {}", r.raw);
    let r = plugin(&world, "DEL", &vars("b", "", "eth0"), &c.to_string());
    assert!(r.ok, "DEL with empty CNI_NETNS: {}", r.raw);
    assert!(endpoint_names(&daemon).is_empty());
}

#[test]
fn bad_requests_get_cni_errors_and_change_nothing() {
    let mut world = World::new();
    let daemon = world.daemon();
    let netns = world.container("a");
    let v = vars("a", netns.to_str().unwrap(), "eth0");
    let good = conf(&daemon, "cnibad", "10.81.0.0/24", &json!({}));

    let err = fails(
        &plugin(&world, "ADD", &v, "{\"cniVersion\": \"1.0.0\", "),
        6,
    );
    assert_eq!(err["msg"], "failed to decode content");
    let mut old = good.clone();
    old["cniVersion"] = "0.2.0".into();
    let err = fails(&plugin(&world, "ADD", &v, &old.to_string()), 1);
    assert_eq!(err["msg"], "incompatible CNI version");
    let err = fails(&plugin(&world, "ADD", &v[1..], &good.to_string()), 4);
    assert!(
        err["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{err}"
    );
    // The daemon's own refusal, passed through: host bits set in the subnet.
    let bad = conf(
        &daemon,
        "cnibad",
        "10.81.0.0/24",
        &json!({"ipam": {"type": "host-local", "subnet": "10.81.0.5/24"}}),
    );
    let err = fails(&plugin(&world, "ADD", &v, &bad.to_string()), 7);
    assert!(
        err["details"].as_str().unwrap().contains("10.81.0.5/24"),
        "{err}"
    );
    // The network made for this ADD goes again when the endpoint is refused.
    let outside = conf(
        &daemon,
        "cnibad",
        "10.81.0.0/24",
        &json!({"runtimeConfig": {"ips": ["10.99.0.5/24"]}}),
    );
    let err = fails(&plugin(&world, "ADD", &v, &outside.to_string()), 7);
    assert!(
        err["details"].as_str().unwrap().contains("10.99.0.5"),
        "{err}"
    );
    // A network that exists with another subnet is not silently reused.
    daemon.json(&["network", "create", "cniother", "--subnet", "10.82.0.0/24"]);
    let clash = conf(&daemon, "cniother", "10.83.0.0/24", &json!({}));
    let err = fails(&plugin(&world, "ADD", &v, &clash.to_string()), 7);
    assert!(
        err["details"].as_str().unwrap().contains("10.82.0.0/24"),
        "{err}"
    );
    let networks = daemon.json(&["network", "ls"]);
    assert_eq!(networks.as_array().unwrap().len(), 1, "{networks}");
    assert!(endpoint_names(&daemon).is_empty());
    let links = world.container_ns("a").ip(&["-o", "link", "show"]);
    assert!(!links.contains("eth0"), "{links}");

    // STATUS: fine with the daemon, code 50 without.
    let mut status = good.clone();
    status["cniVersion"] = "1.1.0".into();
    let r = plugin(&world, "STATUS", &[], &status.to_string());
    assert!(r.ok && r.out.is_null(), "{}", r.raw);
    status["socket"] = daemon.dir.join("absent.sock").to_str().unwrap().into();
    fails(&plugin(&world, "STATUS", &[], &status.to_string()), 50);
}

#[test]
fn gc_removes_only_stale_attachments() {
    let mut world = World::new();
    let daemon = world.daemon();
    let mut c = conf(&daemon, "cnigc", "10.84.0.0/24", &json!({}));
    c["cniVersion"] = "1.1.0".into();
    for role in ["a", "b", "c"] {
        add(&mut world, role, "eth0", &c);
    }
    // Not a CNI attachment: GC must leave it alone.
    let manual = world.container("m");
    daemon.json(&[
        "endpoint",
        "create",
        "cnigc",
        "--netns",
        manual.to_str().unwrap(),
        "--name",
        "manual",
    ]);
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "a", "ifname": "eth0"},
        {"containerID": "c", "ifname": "eth0"},
    ]);
    let r = plugin(&world, "GC", &[], &gc.to_string());
    assert!(r.ok && r.out.is_null(), "GC: {}", r.raw);
    assert_eq!(
        endpoint_names(&daemon),
        ["cni-a-eth0", "cni-c-eth0", "manual"]
    );
    let links = world.container_ns("b").ip(&["-o", "link", "show"]);
    assert!(!links.contains("eth0"), "{links}");
    // The kept ones still talk; b's address is free for the next container.
    let _srv = TcpServer::start(world.container_ns("c"), "10.84.0.4:80", "c");
    let answer = tcp_request(world.container_ns("a"), "10.84.0.4:80", TIMEOUT).expect("a to c");
    assert_eq!(answer, "c saw 10.84.0.2 said hello");
    let d = add(&mut world, "d", "eth0", &c);
    assert_eq!(d["ips"][0]["address"], "10.84.0.3/24");
}
