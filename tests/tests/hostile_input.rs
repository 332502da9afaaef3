//! The API survives malformed, oversized and random requests without panicking or changing
//! state.

mod common;

use std::{io::Write, os::unix::net::UnixStream, time::Duration};

use common::World;

fn request(body: &str) -> String {
    format!(
        "POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn malformed_and_oversized_requests_change_nothing() {
    let mut world = World::new();
    let daemon = world.daemon();
    daemon.json(&["network", "create", "keep", "--subnet", "10.55.0.0/24"]);
    let ns = world.container("k");
    daemon.json(&[
        "endpoint",
        "create",
        "keep",
        "--netns",
        ns.to_str().unwrap(),
        "--name",
        "k",
        "-p",
        "8080:80",
    ]);
    let before = (
        daemon.json(&["network", "ls"]),
        daemon.json(&["endpoint", "ls"]),
        daemon.json(&["port", "ls"]),
    );

    // Oversized: rejected with a 4xx, not buffered forever.
    let huge = format!("{{\"name\": \"{}\"}}", "a".repeat(4 * 1024 * 1024));
    let (status, _) = daemon.http(&request(&huge));
    assert!((400..500).contains(&status), "oversized body: {status}");
    // Deep nesting, wrong types, binary junk, truncated JSON.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut rng = 0x1234_5678_u32;
    let junk: String = (0..4096)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            char::from(u8::try_from(rng % 95 + 32).unwrap())
        })
        .collect();
    for body in [
        deep.as_str(),
        junk.as_str(),
        "{\"name\": [1,2,3]}",
        "{\"name\": \"x\", \"mtu\": -1}",
        "{\"name\": \"x\"",
        "null",
    ] {
        let (status, text) = daemon.http(&request(body));
        assert!(
            (400..500).contains(&status),
            "{status} for {body:.40}: {text}"
        );
    }
    // A lying Content-Length and a connection that stops mid-request.
    let (status, _) = daemon.http("POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{\"name\":\"zzzz\"}");
    assert!((400..500).contains(&status) || status == 0, "{status}");
    for _ in 0..20 {
        let mut s = UnixStream::connect(&daemon.socket).unwrap();
        let _ = s.write_all(b"POST /v1/networks HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"na");
        drop(s);
    }
    // Random bytes as the whole request.
    for i in 0..20u8 {
        let mut s = UnixStream::connect(&daemon.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let bytes: Vec<u8> = (0..512u16)
            .map(|j| (u16::from(i) * 31 + j * 7).to_le_bytes()[0])
            .collect();
        let _ = s.write_all(&bytes);
    }
    let after = (
        daemon.json(&["network", "ls"]),
        daemon.json(&["endpoint", "ls"]),
        daemon.json(&["port", "ls"]),
    );
    assert_eq!(before, after, "state changed");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// The Docker plugin socket gets the same treatment: oversized, junk and truncated requests
/// are refused and change nothing.
#[test]
fn the_docker_plugin_survives_hostile_requests() {
    let world = World::new();
    let daemon = world.daemon();
    let send = |raw: &[u8]| {
        let mut s = UnixStream::connect(&daemon.plugin_socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(raw);
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let call = |path: &str, body: &str| {
        send(format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ).as_bytes())
    };
    let huge = format!("{{\"NetworkID\": \"{}\"}}", "a".repeat(4 * 1024 * 1024));
    for (path, body) in [
        ("/NetworkDriver.CreateNetwork", huge.as_str()),
        ("/NetworkDriver.CreateNetwork", "{\"NetworkID\": "),
        (
            "/NetworkDriver.CreateEndpoint",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        ),
        ("/NetworkDriver.Join", "\u{0}\u{1}binary"),
        ("/IpamDriver.RequestPool", "{\"Pool\": 7}"),
        (
            "/IpamDriver.RequestAddress",
            "{\"PoolID\": \"nope\", \"Address\": \"999.1.1.1\"}",
        ),
    ] {
        let answer = call(path, body);
        let status: u16 = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let ok = (400..600).contains(&status) || answer.contains("\"Err\"");
        assert!(ok, "{path}: {answer:.200}");
    }
    for i in 0..10u8 {
        let bytes: Vec<u8> = (0..300u16)
            .map(|j| (u16::from(i) * 13 + j * 3).to_le_bytes()[0])
            .collect();
        let _ = send(&bytes);
    }
    assert!(
        daemon
            .json(&["network", "ls"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        daemon
            .json(&["endpoint", "ls"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    // Still serving.
    assert!(call("/Plugin.Activate", "").contains("NetworkDriver"));
}
