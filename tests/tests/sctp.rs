//! SCTP published ports through the real daemon. The kernel here has no SCTP sockets
//! (`CONFIG_IP_SCTP` is off), so both ends are raw IP sockets (protocol 132) exchanging real,
//! crafted SCTP packets: an INIT from the external namespace to a published host port, an
//! INIT-ACK from the container back. Each end checks the addresses, ports, chunks and the
//! CRC32C it received.

mod common;

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::{
    EXT_IP, HOST_IP, OUTSIDE_IP, SILENCE, TIMEOUT, World, endpoint,
    sctp::{CHUNK_INIT, CHUNK_INIT_ACK, crc_ok, init_ack, init_body, packet},
    tcp_request,
};

/// The INIT-ACK the container answers an INIT with (so the client knows what to expect).
fn init_ack_for(init: &Seen) -> Vec<u8> {
    let cookie: Vec<u8> = (0..37u8).map(|i| i ^ 0x5a).collect();
    init_ack(init.sport, init.dport, init.initiate_tag, &cookie)
}

/// Raw IPv4 SCTP sockets: packets come with their IPv4 header.
type RawSctp = common::sctp::RawSctp<Ipv4Addr>;

/// What one end received: one SCTP packet, parsed.
#[derive(Debug, Clone)]
struct Seen {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    chunk_type: u8,
    initiate_tag: u32,
    crc_ok: bool,
    /// The SCTP packet (without the IPv4 header).
    sctp: Vec<u8>,
}

fn parse(ip: &[u8]) -> Option<Seen> {
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let sctp = ip.get(ihl..)?;
    if ip[9] != 132 || sctp.len() < 20 {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let be16 = |at: usize| u16::from_be_bytes([sctp[at], sctp[at + 1]]);
    Some(Seen {
        src: addr(12),
        dst: addr(16),
        sport: be16(0),
        dport: be16(2),
        chunk_type: sctp[12],
        initiate_tag: u32::from_be_bytes(sctp[16..20].try_into().unwrap()),
        crc_ok: crc_ok(sctp),
        sctp: sctp.to_vec(),
    })
}

/// The container's SCTP "stack": answers every INIT whose CRC32C is valid with an INIT-ACK
/// and reports every packet it received. Stops on drop; serves at most 60 s.
struct Responder {
    stop: Arc<AtomicBool>,
    seen: mpsc::Receiver<Seen>,
    handle: Option<JoinHandle<()>>,
}

impl Responder {
    fn start(ns: &common::Netns) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ready_tx, ready) = mpsc::channel();
        let (tx, seen) = mpsc::channel();
        let handle = ns.spawn(move || {
            let sock = RawSctp::open();
            ready_tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Some(p) = sock.recv().and_then(|(_, p)| parse(&p)) else {
                    continue;
                };
                if p.chunk_type == CHUNK_INIT && p.crc_ok {
                    // From the address the INIT went to, as an SCTP stack answers.
                    RawSctp::bound(p.dst).send(p.src, &init_ack_for(&p));
                }
                let _ = tx.send(p);
            }
        });
        ready.recv_timeout(TIMEOUT).expect("responder started");
        Self {
            stop,
            seen,
            handle: Some(handle),
        }
    }

    /// The next packet the container received, if one comes within `wait`.
    fn next(&self, wait: Duration) -> Option<Seen> {
        self.seen.recv_timeout(wait).ok()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sends an INIT from the external namespace to `HOST_IP:port` from `sport`; returns the
/// INIT that was sent and the first SCTP packet back to `sport` (if any within `wait`).
fn associate(world: &World, sport: u16, port: u16, wait: Duration) -> (Vec<u8>, Option<Seen>) {
    associate_from(&world.ext, HOST_IP, sport, port, wait)
}

/// [`associate`] from namespace `ns` to `to:port`.
fn associate_from(
    ns: &common::Netns,
    to: &str,
    sport: u16,
    port: u16,
    wait: Duration,
) -> (Vec<u8>, Option<Seen>) {
    let to: Ipv4Addr = to.parse().unwrap();
    let tag = 0x1000_0000 | u32::from(sport);
    let init = packet(
        sport,
        port,
        0,
        CHUNK_INIT,
        &init_body(tag, b"client payload"),
    );
    let sent = init.clone();
    let answer = ns.run(move || {
        let sock = RawSctp::open();
        sock.send(to, &init);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(p) = sock.recv().and_then(|(_, p)| parse(&p))
                && p.dport == sport
            {
                return Some(p);
            }
        }
        None
    });
    (sent, answer)
}

/// One association through a published SCTP port: what the container and the client saw.
fn check_mapping(
    world: &World,
    responder: &Responder,
    c_ip: Ipv4Addr,
    sport: u16,
    ports: (u16, u16),
) {
    let (host_port, container_port) = ports;
    let (init, answer) = associate(world, sport, host_port, TIMEOUT);
    // The container saw the INIT translated: its own address and port, the client's
    // address and port kept, chunks intact, CRC32C valid.
    let got = responder
        .next(TIMEOUT)
        .unwrap_or_else(|| panic!("no INIT reached the container through {host_port}"));
    assert_eq!(got.chunk_type, CHUNK_INIT);
    assert_eq!((got.dst, got.dport), (c_ip, container_port), "destination");
    assert_eq!(
        (got.src, got.sport),
        (EXT_IP.parse().unwrap(), sport),
        "source (the client's)"
    );
    assert!(got.crc_ok, "CRC32C of the INIT the container received");
    assert_eq!(&got.sctp[4..8], &init[4..8], "verification tag");
    assert_eq!(&got.sctp[12..], &init[12..], "chunks");
    // The client got the INIT-ACK from HOST_IP:host_port, CRC32C valid, chunks intact.
    let answer = answer.unwrap_or_else(|| panic!("no INIT-ACK came back through {host_port}"));
    let expected = init_ack_for(&got);
    assert_eq!(answer.chunk_type, CHUNK_INIT_ACK);
    assert_eq!(
        answer.src,
        HOST_IP.parse::<Ipv4Addr>().unwrap(),
        "reply source"
    );
    assert_eq!(
        (answer.sport, answer.dport),
        (host_port, sport),
        "reply ports"
    );
    assert!(answer.crc_ok, "CRC32C of the INIT-ACK the client received");
    assert_eq!(&answer.sctp[4..8], &expected[4..8], "verification tag");
    assert_eq!(&answer.sctp[12..], &expected[12..], "chunks");
}

#[test]
fn sctp_published_ports_translate_ports_and_crc() {
    let mut world = World::new();
    let daemon = world.daemon();
    daemon.json(&["network", "create", "front", "--subnet", "10.88.0.0/24"]);
    let ip = endpoint(
        &mut world,
        &daemon,
        "front",
        "web",
        &[
            "-p",
            "9000:80/sctp",
            "-p",
            "9001:9001/sctp",
            "-p",
            "9100-9103:7100-7103/sctp",
        ],
    );
    let c_ip: Ipv4Addr = ip.parse().unwrap();
    let responder = Responder::start(world.container_ns("web"));

    // A port-changing mapping, then a same-port one.
    check_mapping(&world, &responder, c_ip, 40000, (9000, 80));
    check_mapping(&world, &responder, c_ip, 40001, (9001, 9001));
    // A run of ports is one range entry in the data path (ND_PORT_RANGES).
    check_mapping(&world, &responder, c_ip, 40010, (9102, 7102));
    // The flow is tracked: a second INIT of the same association goes the same way.
    check_mapping(&world, &responder, c_ip, 40000, (9000, 80));

    // An unpublished SCTP port reaches no container.
    let (_, answer) = associate(&world, 40002, 9002, SILENCE);
    assert!(answer.is_none_or(|a| a.chunk_type != CHUNK_INIT_ACK));
    assert!(responder.next(SILENCE).is_none(), "9002 is not published");

    // SCTP 9000 and TCP 9000 are different ports: TCP 9000 is free for another endpoint.
    let listing = daemon.cli(&["port", "ls"]).1;
    assert!(
        listing
            .lines()
            .any(|l| l.contains("sctp") && l.contains("9000") && l.contains("web")),
        "{listing}"
    );
    let api_ip: Ipv4Addr = endpoint(&mut world, &daemon, "front", "api", &["-p", "9000:80"])
        .parse()
        .unwrap();
    let _tcp = common::TcpServer::start(world.container_ns("api"), "0.0.0.0:80", "api");
    let answer = tcp_request(&world.ext, &format!("{HOST_IP}:9000"), TIMEOUT).expect("TCP 9000");
    assert!(answer.starts_with("api saw"), "{answer}");
    // ... and SCTP 9000 still goes to web.
    check_mapping(&world, &responder, c_ip, 40003, (9000, 80));
    // Hairpin: a container reaches the published SCTP port through the host's address;
    // the target sees the client's own address, the client sees HOST_IP:9000 answer.
    let (init, answer) = associate_from(world.container_ns("api"), HOST_IP, 41000, 9000, TIMEOUT);
    let got = responder.next(TIMEOUT).expect("hairpin INIT reached web");
    assert_eq!((got.src, got.sport), (api_ip, 41000), "hairpin source kept");
    assert_eq!((got.dst, got.dport), (c_ip, 80));
    assert!(got.crc_ok, "hairpin INIT CRC32C");
    assert_eq!(&got.sctp[12..], &init[12..]);
    let answer = answer.expect("hairpin INIT-ACK");
    assert_eq!((answer.src, answer.sport), (HOST_IP.parse().unwrap(), 9000));
    assert!(answer.crc_ok, "hairpin INIT-ACK CRC32C");
    // A second SCTP 9000 is refused.
    let err = daemon.fails(&[
        "endpoint",
        "create",
        "front",
        "--netns",
        world.container("db").to_str().unwrap(),
        "-p",
        "9000:5432/sctp",
    ]);
    assert!(err.contains("already allocated"), "{err}");
}

/// Outbound SCTP is masqueraded: the source port is kept when it is free (no CRC32C update
/// needed), and rewritten (CRC32C updated) when another container already uses it towards
/// the same peer.
#[test]
fn sctp_from_containers_is_masqueraded() {
    let mut world = World::new();
    world.route_outside();
    let daemon = world.daemon();
    daemon.json(&["network", "create", "out", "--subnet", "10.89.0.0/24"]);
    let a_ip: Ipv4Addr = endpoint(&mut world, &daemon, "out", "a", &[])
        .parse()
        .unwrap();
    let b_ip: Ipv4Addr = endpoint(&mut world, &daemon, "out", "b", &[])
        .parse()
        .unwrap();
    let outside = Responder::start(&world.ext);
    let host: Ipv4Addr = HOST_IP.parse().unwrap();
    let mut nat_ports = Vec::new();
    for (role, c_ip) in [("a", a_ip), ("b", b_ip)] {
        let ns = world.container_ns(role);
        let (init, answer) = associate_from(ns, OUTSIDE_IP, 5000, 7000, TIMEOUT);
        // What the outside saw: the host's address, a valid CRC32C, the chunks as sent.
        let got = outside
            .next(TIMEOUT)
            .unwrap_or_else(|| panic!("no INIT from {role} reached the outside"));
        assert_eq!(got.src, host, "{role}: masqueraded source");
        assert!(got.crc_ok, "{role}: CRC32C at the outside");
        assert_eq!(&got.sctp[12..], &init[12..], "{role}: chunks");
        nat_ports.push(got.sport);
        // The INIT-ACK came back to the container, translated back, CRC32C valid.
        let answer = answer.unwrap_or_else(|| panic!("{role}: no INIT-ACK"));
        assert_eq!((answer.dst, answer.dport), (c_ip, 5000), "{role}: reply");
        assert_eq!(answer.src, OUTSIDE_IP.parse::<Ipv4Addr>().unwrap());
        assert!(answer.crc_ok, "{role}: CRC32C of the INIT-ACK");
        assert_eq!(
            &answer.sctp[12..],
            &init_ack_for(&got)[12..],
            "{role}: chunks"
        );
    }
    assert_eq!(nat_ports[0], 5000, "the first flow keeps its source port");
    assert!(
        nat_ports[1] >= 61000,
        "the second one gets a NAT port: {nat_ports:?}"
    );
}
