//! dockerd (Debian's docker.io) using netdriver as its network and IPAM plugin: the commands
//! a Docker user types, and what a client outside the host then sees.

mod common;

use std::time::Duration;

use common::{
    Daemon, HOST_IP, SILENCE, World,
    dockerd::{Dockerd, IMAGE, http_get, http_get_eventually},
};
use serde_json::Value;

/// `docker run` arguments for a busybox web server answering with `name`.
fn web(name: &str) -> String {
    format!("echo {name} > /www/index.html; exec httpd -f -p 80 -h /www")
}

/// Starts a detached web server container.
fn run_web(dk: &Dockerd, name: &str, extra: &[&str]) -> String {
    let script = web(name);
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sh", "-c", &script]);
    dk.ok(&args)
}

/// The netdriver endpoint (short Docker endpoint id) of a container on a network; waits up
/// to 30 s for it (a restart policy starts containers in the background).
fn endpoint_of(dk: &Dockerd, container: &str, network: &str) -> String {
    let template = format!("{{{{(index .NetworkSettings.Networks \"{network}\").EndpointID}}}}");
    for _ in 0..60 {
        let id = dk.inspect(container, &template);
        if id.len() >= 12 {
            return id[..12].to_string();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "{container} has no endpoint on {network} after 30s\n{}",
        dk.logs()
    );
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn host_ports(d: &Daemon) -> Vec<(u64, String)> {
    d.json(&["port", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["host_port"].as_u64().unwrap(),
                p["endpoint"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
#[expect(clippy::too_many_lines, reason = "one user session, in order")]
fn docker_run_publish_stop_start_connect_rm() {
    let world = World::new();
    let d = world.daemon();
    let dk = Dockerd::start(&world, &d);
    dk.import_busybox();

    let net_id = dk.ok(&[
        "network",
        "create",
        "-d",
        "netdriver",
        "--subnet",
        "10.20.0.0/24",
        "web",
    ]);
    let nets = d.json(&["network", "ls"]);
    assert_eq!(nets[0]["name"], net_id[..12]);
    assert_eq!(nets[0]["subnet"], "10.20.0.0/24");
    assert_eq!(nets[0]["gateway"], "10.20.0.1");

    run_web(&dk, "web1", &["--network", "web", "-p", "8080:80"]);
    let ep1 = endpoint_of(&dk, "web1", "web");
    assert_eq!(
        dk.inspect("web1", "{{.NetworkSettings.Networks.web.IPAddress}}"),
        "10.20.0.2"
    );
    assert_eq!(host_ports(&d), [(8080, ep1.clone())]);
    assert_eq!(
        http_get_eventually(&world.ext, &format!("{HOST_IP}:8080")),
        "web1"
    );

    // A second container: ephemeral host port, and container to container on the network.
    run_web(&dk, "web2", &["--network", "web", "-p", "80"]);
    let ep2 = endpoint_of(&dk, "web2", "web");
    let ports = host_ports(&d);
    let (eph, _) = ports.iter().find(|(_, e)| *e == ep2).expect("web2 port");
    assert!(*eph >= 1024, "ephemeral port {eph}");
    assert_eq!(
        http_get_eventually(&world.ext, &format!("{HOST_IP}:{eph}")),
        "web2"
    );
    // (busybox-static's wget crashes on Debian 12; nc speaks the HTTP here.)
    let fetched = dk.ok(&[
        "exec",
        "web2",
        "sh",
        "-c",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 10.20.0.2 80",
    ]);
    assert!(fetched.ends_with("\r\n\r\nweb1"), "{fetched:?}");
    // By name, through dockerd's embedded DNS (127.0.0.11) on the user-defined network.
    let fetched = dk.ok(&[
        "exec",
        "web2",
        "sh",
        "-c",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 web1 80",
    ]);
    assert!(fetched.ends_with("\r\n\r\nweb1"), "{fetched:?}");

    // docker stop: the port and the veth go; docker start: a new endpoint, the port again.
    dk.ok(&["stop", "-t", "1", "web1"]);
    assert!(!host_ports(&d).iter().any(|(p, _)| *p == 8080));
    assert!(!names(&d.json(&["endpoint", "ls"])).contains(&ep1));
    assert!(
        !world
            .host
            .ip(&["-o", "link"])
            .contains(&format!("nd{}", &ep1[..10]))
    );
    assert!(http_get(&world.ext, &format!("{HOST_IP}:8080"), SILENCE).is_err());
    dk.ok(&["start", "web1"]);
    let ep1b = endpoint_of(&dk, "web1", "web");
    assert_ne!(ep1b, ep1);
    assert_eq!(
        http_get_eventually(&world.ext, &format!("{HOST_IP}:8080")),
        "web1"
    );

    // A port another container holds is refused, and nothing of that container stays.
    let err = dk.fails(&[
        "run",
        "-d",
        "--name",
        "clash",
        "--network",
        "web",
        "-p",
        "8080:80",
        IMAGE,
        "sleep",
        "60",
    ]);
    assert!(err.contains("8080"), "{err}");
    assert_eq!(d.json(&["endpoint", "ls"]).as_array().unwrap().len(), 2);

    // network connect / disconnect: a second endpoint in the container, then gone.
    dk.ok(&[
        "network",
        "create",
        "-d",
        "netdriver",
        "--subnet",
        "10.21.0.0/24",
        "back",
    ]);
    dk.ok(&["network", "connect", "back", "web2"]);
    let back_ep = endpoint_of(&dk, "web2", "back");
    let ep = d.json(&["endpoint", "inspect", &back_ep]);
    assert_eq!(ep["ip"], "10.21.0.2");
    let addrs = dk.ok(&["exec", "web2", "ip", "-o", "addr"]);
    assert!(addrs.contains("10.21.0.2/24"), "{addrs}");
    dk.ok(&["network", "disconnect", "back", "web2"]);
    assert!(!names(&d.json(&["endpoint", "ls"])).contains(&back_ep));
    let addrs = dk.ok(&["exec", "web2", "ip", "-o", "addr"]);
    assert!(!addrs.contains("10.21.0.2"), "{addrs}");
    // web2 still serves after its second network left. While connected, "back" sorted first
    // and became the gateway endpoint, so dockerd moved the ports there and back: the
    // ephemeral port was allocated again.
    let ports = host_ports(&d);
    let (eph, _) = ports.iter().find(|(_, e)| *e == ep2).expect("web2 port");
    assert_eq!(
        http_get_eventually(&world.ext, &format!("{HOST_IP}:{eph}")),
        "web2"
    );

    // docker rm, network rm: nothing left in netdriver or on the host.
    dk.ok(&["rm", "-f", "web1", "web2"]);
    assert_eq!(d.json(&["endpoint", "ls"]), Value::Array(vec![]));
    assert_eq!(d.json(&["port", "ls"]), Value::Array(vec![]));
    dk.ok(&["network", "rm", "web", "back"]);
    assert_eq!(d.json(&["network", "ls"]), Value::Array(vec![]));
    let links: Vec<String> = world
        .host
        .ip(&["-o", "link"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect();
    assert_eq!(links, ["lo", "up0"]);
}

#[test]
fn docker_ipam_plugin_and_restarts() {
    let world = World::new();
    let mut d = world.daemon();
    let mut dk = Dockerd::start(&world, &d);
    dk.import_busybox();
    dk.ok(&[
        "network",
        "create",
        "-d",
        "netdriver",
        "--ipam-driver",
        "netdriver",
        "--subnet",
        "10.30.0.0/24",
        "--ip-range",
        "10.30.0.128/25",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "pool",
    ]);
    assert_eq!(d.json(&["network", "ls"])[0]["mtu"], 1400);
    run_web(
        &dk,
        "svc",
        &["--network", "pool", "--restart", "always", "-p", "8090:80"],
    );
    assert_eq!(
        dk.inspect("svc", "{{.NetworkSettings.Networks.pool.IPAddress}}"),
        "10.30.0.128"
    );
    assert_eq!(
        dk.inspect("svc", "{{.NetworkSettings.Networks.pool.Gateway}}"),
        "10.30.0.1"
    );
    assert_eq!(
        http_get_eventually(&world.ext, &format!("{HOST_IP}:8090")),
        "svc"
    );

    // dockerd restart: the container comes back with a new endpoint; the old one is gone.
    let before = endpoint_of(&dk, "svc", "pool");
    dk.restart();
    let after = endpoint_of(&dk, "svc", "pool");
    assert_ne!(before, after);
    assert_eq!(
        names(&d.json(&["endpoint", "ls"])),
        std::slice::from_ref(&after)
    );
    assert_eq!(
        http_get_eventually(&world.ext, &format!("{HOST_IP}:8090")),
        "svc"
    );

    // dockerd crash: nothing is released; the restarted dockerd cleans the stale sandbox
    // (Leave, DeleteEndpoint) before it restarts the container.
    dk.crash_and_restart();
    let after_crash = endpoint_of(&dk, "svc", "pool");
    assert_ne!(after_crash, after);
    assert_eq!(
        names(&d.json(&["endpoint", "ls"])),
        std::slice::from_ref(&after_crash)
    );
    assert_eq!(
        http_get_eventually(&world.ext, &format!("{HOST_IP}:8090")),
        "svc"
    );

    // netdriver restart: dockerd never replays CreateNetwork, the plugin's store has it.
    d.restart();
    assert_eq!(
        http_get_eventually(&world.ext, &format!("{HOST_IP}:8090")),
        "svc"
    );
    run_web(&dk, "svc2", &["--network", "pool", "-p", "8091:80"]);
    assert_eq!(
        dk.inspect("svc2", "{{.NetworkSettings.Networks.pool.IPAddress}}"),
        "10.30.0.129"
    );
    assert_eq!(
        http_get_eventually(&world.ext, &format!("{HOST_IP}:8091")),
        "svc2"
    );

    // --internal: no gateway (no default route), and published ports are not programmed.
    dk.ok(&[
        "network",
        "create",
        "-d",
        "netdriver",
        "--internal",
        "--subnet",
        "10.31.0.0/24",
        "inner",
    ]);
    run_web(&dk, "hidden", &["--network", "inner", "-p", "8092:80"]);
    let routes = dk.ok(&["exec", "hidden", "ip", "route"]);
    assert!(!routes.contains("default"), "{routes}");
    assert!(!host_ports(&d).iter().any(|(p, _)| *p == 8092));

    dk.ok(&["rm", "-f", "svc", "svc2", "hidden"]);
    dk.ok(&["network", "rm", "pool", "inner"]);
    assert_eq!(d.json(&["network", "ls"]), Value::Array(vec![]));
    assert_eq!(d.json(&["endpoint", "ls"]), Value::Array(vec![]));
}
