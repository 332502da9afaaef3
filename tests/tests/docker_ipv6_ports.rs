//! dockerd publishing a port of a container on an IPv6 netdriver network: the port answers
//! on the host's IPv6 address (through the IPv6 data path) as on its IPv4 one, and goes
//! away with the container.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use common::{
    EXT_IP, EXT_IP6, HOST_IP, HOST_IP6, Netns, SILENCE, TIMEOUT, World,
    dockerd::{Dockerd, IMAGE},
    sa6,
};

/// An HTTP GET from `ns`; the response body (Err on refusal or timeout).
fn http_get(ns: &Netns, addr: &str, wait: Duration) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, wait).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(wait)).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.trim().to_string())
            .unwrap_or(out))
    })
}

/// httpd needs a moment after `docker run` returns; retry for up to 10 s.
fn http_get_eventually(ns: &Netns, addr: &str) -> String {
    let mut last = String::new();
    for _ in 0..20 {
        match http_get(ns, addr, TIMEOUT) {
            Ok(body) => return body,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("GET {addr}: {last}");
}

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
