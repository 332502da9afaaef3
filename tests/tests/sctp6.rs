//! SCTP over IPv6 through the real daemon: a published `[::]` SCTP port (the IPv6 twin of
//! `-p 9000:80/sctp`) and masquerade of outbound IPv6 SCTP. As in `sctp.rs`, the kernel has
//! no SCTP sockets, so both ends are raw IPv6 sockets (protocol 132) exchanging crafted
//! INIT and INIT-ACK packets. An IPv6 raw socket delivers the payload without the IP header:
//! each socket is bound to its own address (so what it receives was addressed to it) and
//! `recvfrom` gives the source.

mod common;

use std::{
    net::Ipv6Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::{
    EXT_IP6, HOST_IP6, Netns, SILENCE, TIMEOUT, World, endpoint6, network6,
    sctp::{CHUNK_INIT, CHUNK_INIT_ACK, crc_ok, init_ack, init_body, packet},
};

/// The INIT-ACK the responder answers an INIT with.
fn init_ack_for(init: &Seen) -> Vec<u8> {
    let cookie: Vec<u8> = (0..41u8).map(|i| i ^ 0xa5).collect();
    init_ack(init.sport, init.dport, init.initiate_tag, &cookie)
}

/// Raw IPv6 SCTP sockets, each bound to its own address: packets come without the IPv6
/// header, their source from `recvfrom`.
type RawSctp6 = common::sctp::RawSctp<Ipv6Addr>;

/// One SCTP packet one end received (addressed to the address its socket is bound to).
#[derive(Debug, Clone)]
struct Seen {
    src: Ipv6Addr,
    sport: u16,
    dport: u16,
    chunk_type: u8,
    initiate_tag: u32,
    crc_ok: bool,
    sctp: Vec<u8>,
}

fn parse(src: Ipv6Addr, sctp: &[u8]) -> Option<Seen> {
    if sctp.len() < 20 {
        return None;
    }
    let be16 = |at: usize| u16::from_be_bytes([sctp[at], sctp[at + 1]]);
    Some(Seen {
        src,
        sport: be16(0),
        dport: be16(2),
        chunk_type: sctp[12],
        initiate_tag: u32::from_be_bytes(sctp[16..20].try_into().unwrap()),
        crc_ok: crc_ok(sctp),
        sctp: sctp.to_vec(),
    })
}

/// An SCTP "stack" on `addr` in `ns`: answers every INIT with a valid CRC32C with an
/// INIT-ACK and reports what it received. Stops on drop; serves at most 60 s.
struct Responder {
    stop: Arc<AtomicBool>,
    seen: mpsc::Receiver<Seen>,
    handle: Option<JoinHandle<()>>,
}

impl Responder {
    fn start(ns: &Netns, addr: Ipv6Addr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ready_tx, ready) = mpsc::channel();
        let (tx, seen) = mpsc::channel();
        let handle = ns.spawn(move || {
            let sock = RawSctp6::bound(addr);
            ready_tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Some(p) = sock.recv().and_then(|(src, p)| parse(src, &p)) else {
                    continue;
                };
                if p.chunk_type == CHUNK_INIT && p.crc_ok {
                    sock.send(p.src, &init_ack_for(&p));
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

/// Sends an INIT from `from` (in `ns`) to `to:port` from `sport`; returns the INIT and the
/// first SCTP packet back to `sport` within `wait`.
fn associate(
    ns: &Netns,
    from: Ipv6Addr,
    to: Ipv6Addr,
    sport: u16,
    port: u16,
    wait: Duration,
) -> (Vec<u8>, Option<Seen>) {
    let tag = 0x2000_0000 | u32::from(sport);
    let init = packet(
        sport,
        port,
        0,
        CHUNK_INIT,
        &init_body(tag, b"client over v6"),
    );
    let sent = init.clone();
    let answer = ns.run(move || {
        let sock = RawSctp6::bound(from);
        sock.send(to, &init);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(p) = sock.recv().and_then(|(src, p)| parse(src, &p))
                && p.dport == sport
            {
                return Some(p);
            }
        }
        None
    });
    (sent, answer)
}

/// One INIT through `[HOST_IP6]:host_port` and the INIT-ACK back, checked at both ends.
fn check_mapping(world: &World, responder: &Responder, sport: u16, ports: (u16, u16)) {
    let (host_port, container_port) = ports;
    let (ext, host): (Ipv6Addr, Ipv6Addr) = (EXT_IP6.parse().unwrap(), HOST_IP6.parse().unwrap());
    let (init, answer) = associate(&world.ext, ext, host, sport, host_port, TIMEOUT);
    let got = responder
        .next(TIMEOUT)
        .unwrap_or_else(|| panic!("no INIT reached the container through [::]:{host_port}"));
    assert_eq!(got.chunk_type, CHUNK_INIT);
    assert_eq!(got.dport, container_port, "destination port");
    assert_eq!(
        (got.src, got.sport),
        (ext, sport),
        "the client's address and port"
    );
    assert!(got.crc_ok, "CRC32C of the INIT the container received");
    assert_eq!(&got.sctp[4..8], &init[4..8], "verification tag");
    assert_eq!(&got.sctp[12..], &init[12..], "chunks");
    let answer = answer.unwrap_or_else(|| panic!("no INIT-ACK came back through {host_port}"));
    let expected = init_ack_for(&got);
    assert_eq!(answer.chunk_type, CHUNK_INIT_ACK);
    assert_eq!(answer.src, host, "reply source: the host address");
    assert_eq!(
        (answer.sport, answer.dport),
        (host_port, sport),
        "reply ports"
    );
    assert!(answer.crc_ok, "CRC32C of the INIT-ACK the client received");
    assert_eq!(&answer.sctp[12..], &expected[12..], "chunks");
}

#[test]
fn ipv6_sctp_published_ports_translate_ports_and_crc() {
    let mut world = World::new();
    world.ipv6_uplink();
    let daemon = world.daemon();
    network6(&daemon, "sc6", "10.93.0.0/24", "2001:db8:93::/64", &[]);
    // No host address: published on 0.0.0.0 and on its [::] twin.
    let ip6: Ipv6Addr = endpoint6(
        &mut world,
        &daemon,
        "sc6",
        "web",
        &["-p", "9000:80/sctp", "-p", "9001:9001/sctp"],
    )
    .parse()
    .unwrap();
    let responder = Responder::start(world.container_ns("web"), ip6);
    check_mapping(&world, &responder, 40000, (9000, 80));
    check_mapping(&world, &responder, 40001, (9001, 9001));
    // Tracked: a second INIT of the same association goes the same way.
    check_mapping(&world, &responder, 40000, (9000, 80));
    // An unpublished SCTP port reaches no container.
    let (ext, host): (Ipv6Addr, Ipv6Addr) = (EXT_IP6.parse().unwrap(), HOST_IP6.parse().unwrap());
    let (_, answer) = associate(&world.ext, ext, host, 40002, 9002, SILENCE);
    assert!(answer.is_none_or(|a| a.chunk_type != CHUNK_INIT_ACK));
    assert!(responder.next(SILENCE).is_none(), "9002 is not published");
    // Both families' bindings are in the data path.
    let ports6 = common::map_dump(&daemon, "ND_PORTS6");
    assert_eq!(ports6.len(), 2, "{ports6:?}");
}

/// Outbound IPv6 SCTP is masqueraded to the host address: the first flow keeps its source
/// port, a second one from another container with the same ports gets a NAT port (CRC32C
/// updated).
#[test]
fn ipv6_sctp_from_containers_is_masqueraded() {
    let mut world = World::new();
    world.ipv6_uplink();
    let daemon = world.daemon();
    network6(&daemon, "out6", "10.94.0.0/24", "2001:db8:94::/64", &[]);
    let a: Ipv6Addr = endpoint6(&mut world, &daemon, "out6", "a", &[])
        .parse()
        .unwrap();
    let b: Ipv6Addr = endpoint6(&mut world, &daemon, "out6", "b", &[])
        .parse()
        .unwrap();
    let (ext, host): (Ipv6Addr, Ipv6Addr) = (EXT_IP6.parse().unwrap(), HOST_IP6.parse().unwrap());
    let outside = Responder::start(&world.ext, ext);
    let mut nat_ports = Vec::new();
    for (role, c_ip) in [("a", a), ("b", b)] {
        let ns = world.container_ns(role);
        let (init, answer) = associate(ns, c_ip, ext, 5000, 7000, TIMEOUT);
        let got = outside
            .next(TIMEOUT)
            .unwrap_or_else(|| panic!("no INIT from {role} reached the outside"));
        assert_eq!(got.src, host, "{role}: masqueraded source");
        assert!(got.crc_ok, "{role}: CRC32C at the outside");
        assert_eq!(&got.sctp[12..], &init[12..], "{role}: chunks");
        nat_ports.push(got.sport);
        let answer = answer.unwrap_or_else(|| panic!("{role}: no INIT-ACK"));
        assert_eq!((answer.src, answer.dport), (ext, 5000), "{role}: reply");
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
