//! `BPF_PROG_TEST_RUN` tests of the IPv6 data path: published-port DNAT and its reverse,
//! masquerade of tracked flows, checksums over the IPv6 pseudo-header, policy, and NDP.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use netdriver_common::{
    CT_ACT_DNAT, CT_ACT_REDIRECT, CT_ACT_SELF_HAIRPIN, CT_DIR_IN, CtEntry6, CtKey6, NetInfo6,
    PROTO_ICMPV6, PortKey6, PortTarget6, crc32c::crc32c,
};

use super::*;

pub(super) fn a6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

fn net6(dp: &mut Dataplane, subnet: &str, bridge: u32, flags: u32) {
    let subnet: Ipv6Net = subnet.parse().unwrap();
    let mut gw = subnet.network().octets();
    gw[15] = 1;
    dp.add_network6(
        subnet,
        NetInfo6 {
            bridge_ifindex: bridge,
            flags,
            gateway: gw,
            snat_addr: [0; 16],
        },
    )
    .unwrap();
}

/// The IPv6 pseudo-header sum for an L4 payload of `len` bytes.
fn pseudo6(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut p = Vec::from(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    u32::from(sum(&p, 0))
}

fn csum_at(proto: u8) -> usize {
    match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => 2,
    }
}

/// An Ethernet + IPv6 frame (hop limit 64) around `l4`, its checksum filled in (SCTP: the
/// CRC32C, which covers no pseudo-header).
fn frame6(src: [u8; 16], dst: [u8; 16], proto: u8, mut l4: Vec<u8>) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(l4.len()).unwrap().to_be_bytes());
    f.extend_from_slice(&[proto, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    if proto == PROTO_SCTP {
        l4[8..12].fill(0);
        let crc = crc32c(&l4);
        l4[8..12].copy_from_slice(&crc.to_le_bytes());
    } else {
        let at = csum_at(proto);
        l4[at..at + 2].copy_from_slice(&[0, 0]);
        let c = !sum(&l4, pseudo6(&src, &dst, proto, l4.len()));
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    f.extend_from_slice(&l4);
    f
}

fn ports_l4(sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4
}

fn tcp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = ports_l4(sport, dport);
    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(b"hello over IPv6");
    frame6(src, dst, PROTO_TCP, l4)
}

pub(super) fn udp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> Vec<u8> {
    let mut l4 = ports_l4(sport, dport);
    l4.extend_from_slice(&[0, 13, 0, 0]);
    l4.extend_from_slice(b"hello");
    frame6(src, dst, PROTO_UDP, l4)
}

fn echo6(src: [u8; 16], dst: [u8; 16], kind: u8, id: u16) -> Vec<u8> {
    let mut l4 = vec![kind, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&[0, 1, 1, 2, 3, 4]);
    frame6(src, dst, PROTO_ICMPV6, l4)
}

/// A neighbour solicitation (or another ICMP message of type `kind`) for `target`.
pub(super) fn ndp(src: [u8; 16], dst: [u8; 16], kind: u8, target: [u8; 16]) -> Vec<u8> {
    let mut l4 = vec![kind, 0, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(&target);
    l4.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
    frame6(src, dst, PROTO_ICMPV6, l4)
}

/// Asserts the L4 checksum of an IPv6 frame is valid (over the pseudo-header; SCTP: its
/// CRC32C over the SCTP packet alone).
fn assert_checksum6(f: &[u8]) {
    let proto = f[20];
    let l4 = &f[54..];
    if proto == PROTO_SCTP {
        let mut zeroed = l4.to_vec();
        zeroed[8..12].fill(0);
        let field = u32::from_le_bytes(l4[8..12].try_into().unwrap());
        assert_eq!(field, crc32c(&zeroed), "SCTP CRC32C");
        return;
    }
    assert_eq!(
        sum(l4, pseudo6(&f[22..38], &f[38..54], proto, l4.len())),
        0xffff,
        "L4 checksum over the IPv6 pseudo-header"
    );
    if proto == PROTO_UDP {
        assert_ne!(&l4[6..8], &[0, 0], "IPv6 forbids a zero UDP checksum");
    }
}

fn src6(f: &[u8]) -> &[u8] {
    &f[22..38]
}

fn dst6(f: &[u8]) -> &[u8] {
    &f[38..54]
}

const C1_6: &str = "2001:db8:1::2";
const C2_6: &str = "2001:db8:1::3";
const OTHER6: &str = "2001:db8:2::2";
const INTERNAL6: &str = "2001:db8:3::2";
const HOST6: &str = "2001:db8:ff::1";
const HOST6_B: &str = "2001:db8:ff::2";
const REMOTE6: &str = "2001:db8:ee::10";
const C1_MAC: [u8; 6] = [2, 0x42, 10, 1, 0, 2];

fn target(port: u16) -> PortTarget6 {
    PortTarget6 {
        addr: a6(C1_6),
        port,
        _pad0: 0,
        ifindex: 1,
        mac: C1_MAC,
        gw_mac: [2, 0, 0, 0, 0, 9],
    }
}

fn key6(host: &str, port: u16, proto: u8) -> PortKey6 {
    PortKey6 {
        host_addr: if host.is_empty() { [0; 16] } else { a6(host) },
        host_port: port,
        proto,
        _pad: 0,
    }
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_published_ports_dnat_and_reverse() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_ICC | NET_F_MASQUERADE);
        dp.publish6(key6("", 8080, PROTO_TCP), target(80)).unwrap();
        dp.publish6(key6("", 5353, PROTO_UDP), target(53)).unwrap();
        // An exact host address wins over the wildcard.
        dp.publish6(key6(HOST6_B, 8080, PROTO_TCP), target(81))
            .unwrap();
        let (remote, host, c1) = (a6(REMOTE6), a6(HOST6), a6(C1_6));

        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &tcp6(remote, 5555, host, 8080, 2));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[0..6], &C1_MAC, "container MAC");
        assert_eq!(dst6(&out), &c1, "destination: the container");
        assert_eq!(src6(&out), &remote, "the client's address is kept");
        assert_eq!(&out[56..58], &80u16.to_be_bytes());
        assert_eq!(out[21], 63, "hop limit");
        assert_checksum6(&out);
        let ct = dp.conntrack6().unwrap();
        assert!(ct.iter().any(|(k, e)| e.kind == CT_KIND_PUBLISHED
            && k.saddr == c1
            && k.daddr == remote
            && k.dport == 5555
            && e.xlate_addr == host
            && e.xlate_port == 8080
            && e.owner_addr == c1));
        // The reply goes back as the host's address and port.
        let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &tcp6(c1, 80, remote, 5555, 0x12));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(src6(&out), &host);
        assert_eq!(&out[54..56], &8080u16.to_be_bytes());
        assert_eq!(dst6(&out), &remote);
        assert_checksum6(&out);

        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &tcp6(remote, 5556, a6(HOST6_B), 8080, 2));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[56..58], &81u16.to_be_bytes(), "the exact binding");
        assert_checksum6(&out);

        // UDP, both ways.
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &udp6(remote, 4444, host, 5353));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(dst6(&out), &c1);
        assert_eq!(&out[56..58], &53u16.to_be_bytes());
        assert_checksum6(&out);
        let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &udp6(c1, 53, remote, 4444));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(src6(&out), &host);
        assert_eq!(&out[54..56], &5353u16.to_be_bytes());
        assert_checksum6(&out);

        // Not published: nothing reaches the container.
        let before = dp.drops(DROP_UNPUBLISHED);
        let (verdict, _) = dp.run(PROG_FROM_UPLINK, &tcp6(remote, 5555, c1, 22, 2));
        assert_eq!(verdict, TC_ACT_SHOT);
        assert_eq!(dp.drops(DROP_UNPUBLISHED), before + 1);
        // Unpublished: the port is the host's again.
        dp.unpublish6(&key6("", 8080, PROTO_TCP)).unwrap();
        let frame = tcp6(remote, 5557, host, 8080, 2);
        assert_eq!(dp.run(PROG_FROM_UPLINK, &frame), (TC_ACT_OK, frame));
        // The flush takes the IPv6 flows of the container.
        assert!(dp.flush_conntrack6(Ipv6Addr::from(c1)).unwrap() >= 2);
        assert!(dp.conntrack6().unwrap().is_empty());
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_masqueraded_flows_are_translated_both_ways() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_ICC | NET_F_MASQUERADE);
        let (remote, host, c1) = (a6(REMOTE6), a6(HOST6), a6(C1_6));
        // A masqueraded TCP flow and an echo, as nd_from_container records them.
        for (proto, sport, dport) in [(PROTO_TCP, 40000, 80), (PROTO_ICMPV6, 7, 0)] {
            masq_flow6(dp, proto, (c1, sport), (remote, dport), (host, 61000));
        }
        let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &tcp6(c1, 40000, remote, 80, 0x10));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(src6(&out), &host, "source: the host");
        assert_eq!(&out[54..56], &61000u16.to_be_bytes());
        assert_eq!(out[21], 63);
        assert_checksum6(&out);
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &tcp6(remote, 80, host, 61000, 0x12));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(dst6(&out), &c1);
        assert_eq!(&out[56..58], &40000u16.to_be_bytes());
        assert_eq!(&out[0..6], &C1_MAC);
        assert_checksum6(&out);
        // ICMPv6 echo, by identifier (its checksum covers the pseudo-header too).
        let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &echo6(c1, remote, 128, 7));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(src6(&out), &host);
        assert_eq!(&out[58..60], &61000u16.to_be_bytes(), "echo identifier");
        assert_checksum6(&out);
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &echo6(remote, host, 129, 61000));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(dst6(&out), &c1);
        assert_eq!(&out[58..60], &7u16.to_be_bytes());
        assert_checksum6(&out);
        // The TCP entry saw an ACK: established; the sweeper and flushes see ND_CT6.
        let ct = dp.conntrack6().unwrap();
        assert!(ct.iter().any(|(k, e)| k.proto == PROTO_TCP && e.state == 1));
        let far_future = monotonic_ns() + 7 * 3600 * 1_000_000_000;
        let report = dp
            .sweep_conntrack(&CtTimeouts::default(), far_future)
            .unwrap();
        assert_eq!(report.removed, 4);
        assert!(dp.conntrack6().unwrap().is_empty());
        let _ = CT_DIR_IN;
    });
}

/// A frame builder: source address and port, destination address and port.
type Frame6 = fn([u8; 16], u16, [u8; 16], u16) -> Vec<u8>;

/// The two `ND_CT6` entries of a flow from `C1_6` port 40000 to its own published port
/// (host `HOST6` 8080 -> 80), as `hairpin::from_container` records them.
fn self_hairpin_entries(dp: &mut Dataplane, proto: u8, gw: [u8; 16]) {
    let (host, c1) = (a6(HOST6), a6(C1_6));
    let entry = |xlate_addr, xlate_port, action| CtEntry6 {
        xlate_addr,
        owner_addr: c1,
        xlate_port,
        action: action | CT_ACT_REDIRECT | CT_ACT_SELF_HAIRPIN,
        ifindex: 1,
        smac: [2, 0, 0, 0, 0, 9],
        dmac: C1_MAC,
        kind: CT_KIND_PUBLISHED,
        ..CtEntry6::default()
    };
    let key = |daddr, sport, dport| CtKey6 {
        saddr: c1,
        daddr,
        sport,
        dport,
        proto,
        dir: CT_DIR_OUT,
        _pad: [0; 2],
    };
    dp.ct6
        .insert(key(host, 40000, 8080), entry(c1, 80, CT_ACT_DNAT), 0)
        .unwrap();
    dp.ct6
        .insert(key(gw, 80, 40000), entry(host, 8080, CT_ACT_SNAT), 0)
        .unwrap();
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_a_container_reaches_its_own_port_from_its_gateway() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_ICC | NET_F_MASQUERADE);
        let (host, c1, gw) = (a6(HOST6), a6(C1_6), a6("2001:db8:1::1"));
        let tcp: Frame6 = |src, sport, dst, dport| tcp6(src, sport, dst, dport, 0x10);
        for (proto, frame) in [(PROTO_TCP, tcp), (PROTO_UDP, udp6 as Frame6)] {
            self_hairpin_entries(dp, proto, gw);
            // To its own port: both ends rewritten, back to its own veth.
            let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &frame(c1, 40000, host, 8080));
            assert_eq!(verdict, TC_ACT_REDIRECT, "proto {proto}");
            assert_eq!(&out[0..6], &C1_MAC);
            assert_eq!(src6(&out), &gw, "source: the gateway");
            assert_eq!(&out[54..56], &40000u16.to_be_bytes(), "its port kept");
            assert_eq!(dst6(&out), &c1);
            assert_eq!(&out[56..58], &80u16.to_be_bytes());
            assert_eq!(out[21], 63, "hop limit");
            assert_checksum6(&out);
            // Its reply to the gateway: from the host address and port, to itself.
            let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &frame(c1, 80, gw, 40000));
            assert_eq!(verdict, TC_ACT_REDIRECT);
            assert_eq!(src6(&out), &host);
            assert_eq!(&out[54..56], &8080u16.to_be_bytes());
            assert_eq!(dst6(&out), &c1, "destination: back to itself");
            assert_eq!(&out[56..58], &40000u16.to_be_bytes());
            assert_checksum6(&out);
            // No hop left: the kernel's, untranslated (not half).
            let mut last_hop = frame(c1, 40000, host, 8080);
            last_hop[21] = 1;
            assert_eq!(
                dp.run(PROG_FROM_CONTAINER, &last_hop),
                (TC_ACT_OK, last_hop)
            );
        }
        // Both entries of each flow are the container's.
        assert_eq!(dp.flush_conntrack6(Ipv6Addr::from(c1)).unwrap(), 4);
        assert!(dp.conntrack6().unwrap().is_empty());
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_policy_decisions() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_MASQUERADE);
        net6(dp, "2001:db8:2::/64", 11, NET_F_ICC | NET_F_MASQUERADE);
        net6(dp, "2001:db8:3::/64", 12, NET_F_ICC | NET_F_INTERNAL);
        let from = PROG_FROM_CONTAINER;
        let (c1, c2, other) = (a6(C1_6), a6(C2_6), a6(OTHER6));
        // ICC off: refused.
        assert_eq!(dp.run(from, &tcp6(c1, 40000, c2, 80, 2)).0, TC_ACT_SHOT);
        assert_eq!(dp.run(from, &echo6(c1, c2, 128, 7)).0, TC_ACT_SHOT);
        assert_eq!(dp.drops(DROP_ICC), 2);
        // The gateway is the host's: passed.
        let gw = a6("2001:db8:1::1");
        assert_eq!(dp.run(from, &tcp6(c1, 40000, gw, 80, 2)).0, TC_ACT_OK);
        // Another network: isolated.
        assert_eq!(dp.run(from, &tcp6(c1, 40000, other, 80, 2)).0, TC_ACT_SHOT);
        assert_eq!(dp.drops(DROP_ISOLATED), 1);
        // ICC on inside a network: passed.
        let other2 = a6("2001:db8:2::3");
        assert_eq!(
            dp.run(from, &tcp6(other, 40000, other2, 80, 2)).0,
            TC_ACT_OK
        );
        // Internal: no way out.
        let remote = a6(REMOTE6);
        assert_eq!(
            dp.run(from, &udp6(a6(INTERNAL6), 40000, remote, 53)).0,
            TC_ACT_SHOT
        );
        assert_eq!(dp.drops(DROP_INTERNAL), 1);
        // A source in no container network: spoofed.
        assert_eq!(dp.run(from, &udp6(remote, 1, a6(HOST6), 53)).0, TC_ACT_SHOT);
        assert_eq!(dp.drops(DROP_SPOOFED), 1);
        // No route out in this namespace: the kernel's business, untracked.
        assert_eq!(dp.run(from, &tcp6(c1, 40000, remote, 80, 2)).0, TC_ACT_OK);
        assert!(dp.conntrack6().unwrap().is_empty());
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_neighbour_discovery_passes_untouched() {
    with_dataplane(|dp| {
        // ICC off and a published port: the strictest setting for NDP to pass through.
        net6(dp, "2001:db8:1::/64", 10, NET_F_MASQUERADE);
        dp.publish6(key6("", 8080, PROTO_TCP), target(80)).unwrap();
        let (c1, c2, host) = (a6(C1_6), a6(C2_6), a6(HOST6));
        let ll = a6("fe80::42:aff:fe01:2");
        let solicited = a6("ff02::1:ff00:3");
        let all_routers = a6("ff02::2");
        let frames = [
            // Neighbour solicitation and advertisement between containers and the gateway.
            ndp(c1, solicited, 135, c2),
            ndp(c2, c1, 136, c2),
            ndp(ll, solicited, 135, a6("2001:db8:1::1")),
            // DAD (unspecified source), router solicitation and advertisement.
            ndp([0; 16], solicited, 135, c1),
            ndp(ll, all_routers, 133, [0; 16]),
            ndp(ll, a6("ff02::1"), 134, [0; 16]),
            // On the uplink: solicitations for the host's and a container's address.
            ndp(a6(REMOTE6), host, 135, host),
            ndp(a6(REMOTE6), c1, 135, c1),
            // Link-local unicast traffic between neighbours.
            tcp6(ll, 40000, a6("fe80::1"), 80, 2),
        ];
        for (i, frame) in frames.iter().enumerate() {
            for prog in [PROG_FROM_CONTAINER, PROG_FROM_UPLINK] {
                let (verdict, out) = dp.run(prog, frame);
                assert_eq!(verdict, TC_ACT_OK, "frame {i} on {prog}");
                assert_eq!(&out, frame, "frame {i} on {prog}: bytes changed");
            }
        }
        assert_eq!(dp.drop_counters().unwrap().iter().sum::<u64>(), 0);
        assert!(dp.conntrack6().unwrap().is_empty());
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_short_frames_are_not_translated() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_ICC | NET_F_MASQUERADE);
        dp.publish6(key6("", 8080, PROTO_TCP), target(80)).unwrap();
        let (remote, host) = (a6(REMOTE6), a6(HOST6));
        let good = tcp6(remote, 5555, host, 8080, 2);
        // A truncated TCP header (see `exthdr` for extension headers).
        let short = good[..56].to_vec();
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &short);
        assert_eq!((verdict, &out), (TC_ACT_OK, &short));
        // The full frame is translated (the cases above fail for the right reason).
        assert_eq!(dp.run(PROG_FROM_UPLINK, &good).0, TC_ACT_REDIRECT);
    });
}

/// An `ICMPv6` error of type `kind` from `REMOTE6` to `HOST6` quoting a packet
/// `HOST6:sport -> REMOTE6:dport`.
fn icmp6_error(kind: u8, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let (remote, host) = (a6(REMOTE6), a6(HOST6));
    let mut quoted = vec![0x60, 0, 0, 0, 0, 20, proto, 63];
    quoted.extend_from_slice(&host);
    quoted.extend_from_slice(&remote);
    quoted.extend_from_slice(&ports_l4(sport, dport));
    quoted.extend_from_slice(&[0, 0, 0, 1]);
    // Packet too big carries the MTU; the others 4 unused bytes.
    let mut l4 = vec![kind, 0, 0, 0, 0, 0, 0x05, 0x00];
    l4.extend_from_slice(&quoted);
    frame6(remote, host, PROTO_ICMPV6, l4)
}

/// Checks an `ICMPv6` error after translation: addressed to `to`, quoting `to:port`.
fn assert_icmp6_error_for(out: &[u8], to: [u8; 16], port: u16) {
    assert_eq!(dst6(out), &to, "outer destination");
    assert_eq!(&out[70..86], &to, "quoted source");
    assert_eq!(&out[102..104], &port.to_be_bytes(), "quoted source port");
    assert_eq!(out[21], 63, "hop limit");
    assert_checksum6(out);
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_icmp_errors_about_translated_flows_reach_the_container() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_ICC | NET_F_MASQUERADE);
        let (remote, host, c1) = (a6(REMOTE6), a6(HOST6), a6(C1_6));
        // The reply entry of a masqueraded TCP flow c1:40000 -> remote:80 (NAT port 61000).
        let in_key = CtKey6 {
            saddr: remote,
            daddr: host,
            sport: 80,
            dport: 61000,
            proto: PROTO_TCP,
            dir: CT_DIR_IN,
            _pad: [0; 2],
        };
        let back = CtEntry6 {
            xlate_addr: c1,
            owner_addr: c1,
            xlate_port: 40000,
            action: CT_ACT_DNAT | CT_ACT_REDIRECT,
            ifindex: 1,
            dmac: C1_MAC,
            kind: CT_KIND_MASQ,
            ..CtEntry6::default()
        };
        dp.ct6.insert(in_key, back, 0).unwrap();
        // Packet too big about the masqueraded flow: PMTU discovery reaches the container.
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &icmp6_error(2, PROTO_TCP, 61000, 80));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_icmp6_error_for(&out, c1, 40000);
        assert_eq!(&out[0..6], &C1_MAC);
        // Port unreachable about a published port's reply.
        dp.publish6(key6("", 8080, PROTO_UDP), target(53)).unwrap();
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &icmp6_error(1, PROTO_UDP, 8080, 5555));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_icmp6_error_for(&out, c1, 53);
        // About nothing netdriver translated: the host's business, untouched.
        let unrelated = icmp6_error(2, PROTO_TCP, 33333, 80);
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &unrelated);
        assert_eq!((verdict, out), (TC_ACT_OK, unrelated));
    });
}

/// An SCTP packet with one INIT chunk and `extra` payload bytes, its CRC32C valid.
fn sctp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, extra: usize) -> Vec<u8> {
    let mut l4 = ports_l4(sport, dport);
    l4.extend_from_slice(&[0xca, 0xfe, 0xf0, 0x0d, 0, 0, 0, 0]); // verification tag, CRC
    l4.extend_from_slice(&[
        1, 0, 0, 20, 0xde, 0xad, 0xbe, 0xef, 0, 1, 0, 0, 0, 10, 0, 10,
    ]);
    l4.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    l4.extend((0..extra).map(|i| u8::try_from(i % 251).unwrap()));
    frame6(src, dst, PROTO_SCTP, l4)
}

/// Everything after the SCTP common header, and its verification tag, is unchanged.
fn assert_sctp_chunks_intact(out: &[u8], sent: &[u8]) {
    assert_eq!(out.len(), sent.len());
    assert_eq!(&out[66..], &sent[66..], "chunks");
    assert_eq!(&out[58..62], &sent[58..62], "verification tag");
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_sctp_published_ports_and_masquerade_update_the_crc() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_ICC | NET_F_MASQUERADE);
        dp.publish6(key6("", 9000, PROTO_SCTP), target(80)).unwrap();
        let (remote, host, c1) = (a6(REMOTE6), a6(HOST6), a6(C1_6));
        // A port-changing mapping at several lengths (the CRC update depends on the length).
        for (i, extra) in [0usize, 1, 3, 200, 1400].into_iter().enumerate() {
            let sport = 5555 + u16::try_from(i).unwrap();
            let sent = sctp6(remote, sport, host, 9000, extra);
            let (verdict, out) = dp.run(PROG_FROM_UPLINK, &sent);
            assert_eq!(verdict, TC_ACT_REDIRECT, "extra {extra}");
            assert_eq!(&out[0..6], &C1_MAC);
            assert_eq!(dst6(&out), &c1);
            assert_eq!(src6(&out), &remote);
            assert_eq!(&out[54..56], &sport.to_be_bytes(), "source port kept");
            assert_eq!(&out[56..58], &80u16.to_be_bytes(), "destination port");
            assert_eq!(out[21], 63, "hop limit");
            assert_checksum6(&out);
            assert_sctp_chunks_intact(&out, &sent);
            let reply = sctp6(c1, 80, remote, sport, extra);
            let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &reply);
            assert_eq!(verdict, TC_ACT_REDIRECT, "reply, extra {extra}");
            assert_eq!(src6(&out), &host, "reply source address");
            assert_eq!(&out[54..56], &9000u16.to_be_bytes(), "reply source port");
            assert_checksum6(&out);
            assert_sctp_chunks_intact(&out, &reply);
        }
        // An offloaded CRC (field 0) stays pending.
        let mut offloaded = sctp6(remote, 6000, host, 9000, 10);
        offloaded[62..66].fill(0);
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &offloaded);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[56..58], &80u16.to_be_bytes());
        assert_eq!(&out[62..66], &[0; 4]);
        // An SCTP port is not a TCP port of the same number.
        let (verdict, _) = dp.run(PROG_FROM_UPLINK, &tcp6(remote, 5555, host, 9000, 2));
        assert_eq!(verdict, TC_ACT_OK, "TCP 9000 is not published");

        // Masquerade, as nd_from_container records a flow whose source port had to change.
        masq_flow6(dp, PROTO_SCTP, (c1, 5000), (remote, 9999), (host, 61000));
        let sent = sctp6(c1, 5000, remote, 9999, 99);
        let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &sent);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(src6(&out), &host);
        assert_eq!(&out[54..56], &61000u16.to_be_bytes());
        assert_checksum6(&out);
        assert_sctp_chunks_intact(&out, &sent);
        let reply = sctp6(remote, 9999, host, 61000, 7);
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &reply);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(dst6(&out), &c1);
        assert_eq!(&out[56..58], &5000u16.to_be_bytes());
        assert_checksum6(&out);
        assert_sctp_chunks_intact(&out, &reply);
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_port_ranges_map_every_port_of_the_range() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_ICC | NET_F_MASQUERADE);
        // Host ports 20000-20999 to container ports 30000-30999 on every IPv6 address,
        // 21000-21009 on HOST6_B only to 40000-40009.
        let blocks = |from: u16, to: u16| {
            crate::ports::PortRun {
                proto: crate::ports::Proto::Tcp,
                host_ip: std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                host_start: from,
                host_end: to,
                container_start: 0,
            }
            .blocks()
        };
        dp.publish_range6(
            key6("", 20000, PROTO_TCP),
            &blocks(20000, 20999),
            target(30000),
        )
        .unwrap();
        dp.publish_range6(
            key6(HOST6_B, 21000, PROTO_TCP),
            &blocks(21000, 21009),
            target(40000),
        )
        .unwrap();
        let (remote, host, c1) = (a6(REMOTE6), a6(HOST6), a6(C1_6));
        for (dst, port, expect) in [
            (host, 20000u16, 30000u16),
            (host, 20517, 30517),
            (host, 20999, 30999),
            (a6(HOST6_B), 21009, 40009),
        ] {
            let (verdict, out) = dp.run(PROG_FROM_UPLINK, &tcp6(remote, 5555, dst, port, 2));
            assert_eq!(verdict, TC_ACT_REDIRECT, "port {port}");
            assert_eq!(dst6(&out), &c1);
            assert_eq!(&out[56..58], &expect.to_be_bytes(), "port {port}");
            assert_checksum6(&out);
            // The reply goes back as the host port.
            let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &tcp6(c1, expect, remote, 5555, 0x12));
            assert_eq!(verdict, TC_ACT_REDIRECT);
            assert_eq!(src6(&out), &dst);
            assert_eq!(&out[54..56], &port.to_be_bytes());
        }
        // Outside the ranges, on another address, or another protocol: the host's.
        for frame in [
            tcp6(remote, 5556, host, 19999, 2),
            tcp6(remote, 5556, host, 21000, 2),
            udp6(remote, 5556, host, 20000),
        ] {
            assert_eq!(dp.run(PROG_FROM_UPLINK, &frame), (TC_ACT_OK, frame));
        }
        // Unpublished: gone.
        dp.unpublish_range6(&key6("", 20000, PROTO_TCP), &blocks(20000, 20999))
            .unwrap();
        let frame = tcp6(remote, 5557, host, 20517, 2);
        assert_eq!(dp.run(PROG_FROM_UPLINK, &frame), (TC_ACT_OK, frame));
    });
}

mod exthdr;
mod link_local;

/// A masqueraded flow as `nd_from_container` records it: `container` to `remote` (address,
/// port), translated to `nat`, leaving through ifindex 1; both directions.
fn masq_flow6(
    dp: &mut Dataplane,
    proto: u8,
    container: ([u8; 16], u16),
    remote: ([u8; 16], u16),
    nat: ([u8; 16], u16),
) {
    let out_key = CtKey6 {
        saddr: container.0,
        daddr: remote.0,
        sport: container.1,
        dport: remote.1,
        proto,
        dir: CT_DIR_OUT,
        _pad: [0; 2],
    };
    let out = CtEntry6 {
        xlate_addr: nat.0,
        owner_addr: container.0,
        xlate_port: nat.1,
        action: CT_ACT_SNAT | CT_ACT_REDIRECT_NEIGH,
        ifindex: 1,
        kind: CT_KIND_MASQ,
        ..CtEntry6::default()
    };
    let in_key = out_key.partner(&out).unwrap();
    let back = CtEntry6 {
        xlate_addr: container.0,
        owner_addr: container.0,
        xlate_port: container.1,
        action: CT_ACT_DNAT | CT_ACT_REDIRECT,
        ifindex: 1,
        dmac: C1_MAC,
        kind: CT_KIND_MASQ,
        ..CtEntry6::default()
    };
    dp.ct6.insert(out_key, out, 0).unwrap();
    dp.ct6.insert(in_key, back, 0).unwrap();
}
