//! dockerd publishing a port of a container on an IPv6 netdriver network: the port answers
//! on the host's IPv6 address (through the IPv6 data path) as on its IPv4 one, and goes
//! away with the container.

mod common;

use common::{
    EXT_IP, EXT_IP6, HOST_IP, HOST_IP6, SILENCE, World,
    dockerd::{Dockerd, IMAGE, http_get, http_get_eventually},
    sa6,
};

#[test]
fn docker_published_port_answers_over_ipv6() {
    let world = World::new();
    world.ipv6_uplink();
    let d = world.daemon();
    let dk = Dockerd::start(&world, &d);
    dk.import_busybox();
    dk.ok(&[
        "network",
        "create",
        "-d",
        "netdriver",
        "--ipv6",
        "--subnet",
        "10.64.0.0/24",
        "--subnet",
        "2001:db8:64::/64",
        "six",
    ]);
    // httpd logs each client's address: the container sees the client's own one.
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "web6",
        "--network",
        "six",
        "-p",
        "8080:80",
        IMAGE,
        "sh",
        "-c",
        "echo web6 > /www/index.html; exec httpd -f -vv -p 80 -h /www",
    ]);
    assert_eq!(
        http_get_eventually(&world.ext, &sa6(HOST_IP6, 8080)),
        "web6",
        "{}",
        d.log()
    );
    assert_eq!(
        http_get_eventually(&world.ext, &format!("{HOST_IP}:8080")),
        "web6"
    );
    // httpd -vv logs to stderr.
    let out = dk.docker(&["logs", "web6"]);
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        logs.contains(EXT_IP6) && logs.contains(EXT_IP),
        "httpd saw: {logs}"
    );
    dk.ok(&["rm", "-f", "web6"]);
    assert!(http_get(&world.ext, &sa6(HOST_IP6, 8080), SILENCE).is_err());
    dk.ok(&["network", "rm", "six"]);
}
