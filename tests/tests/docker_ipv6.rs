//! dockerd with an IPv6 network on netdriver (`docker network create --ipv6`): containers get
//! IPv6 addresses from dockerd's IPAM, netdriver's endpoints hold the same ones, and two
//! containers reach each other and the gateway over IPv6.

mod common;

use common::{
    World,
    dockerd::{Dockerd, IMAGE},
};

/// `ping6` from inside a container, retried for up to 5 s (the interface comes up as the
/// container starts).
fn ping6(dk: &Dockerd, container: &str, addr: &str) -> bool {
    (0..10).any(|_| {
        let ok = dk
            .docker(&["exec", container, "ping6", "-c", "1", "-W", "1", addr])
            .status
            .success();
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        ok
    })
}

#[test]
fn docker_ipv6_network_containers_ping_each_other() {
    let world = World::new();
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
        "10.63.0.0/24",
        "--subnet",
        "2001:db8:63::/64",
        "six",
    ]);
    let net = &d.json(&["network", "ls"])[0];
    assert_eq!(net["subnet6"], "2001:db8:63::/64");
    for name in ["web-a", "web-b"] {
        dk.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "six",
            IMAGE,
            "sleep",
            "120",
        ]);
    }
    let template = "{{(index .NetworkSettings.Networks \"six\").GlobalIPv6Address}}";
    let (a6, b6) = (dk.inspect("web-a", template), dk.inspect("web-b", template));
    for addr in [&a6, &b6] {
        assert!(addr.starts_with("2001:db8:63::"), "{addr:?}\n{}", dk.logs());
    }
    let gateway = dk.inspect(
        "web-a",
        "{{(index .NetworkSettings.Networks \"six\").IPv6Gateway}}",
    );
    assert_eq!(gateway, "2001:db8:63::1");
    let held: Vec<String> = d
        .json(&["endpoint", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["ip6"].as_str().map(str::to_string))
        .collect();
    assert!(held.contains(&a6) && held.contains(&b6), "{held:?}");
    assert!(ping6(&dk, "web-a", &b6), "a -> b over IPv6\n{}", d.log());
    assert!(ping6(&dk, "web-b", &a6), "b -> a over IPv6");
    assert!(
        ping6(&dk, "web-a", "2001:db8:63::1"),
        "a -> gateway over IPv6"
    );
    for name in ["web-a", "web-b"] {
        dk.ok(&["rm", "-f", name]);
    }
    dk.ok(&["network", "rm", "six"]);
    assert!(d.json(&["network", "ls"]).as_array().unwrap().is_empty());
}
