//! SCTP through the real programs: published ports (port-changing and same-port), replies,
//! masquerade, and the CRC32C after every rewrite.

use netdriver_common::{CT_ACT_DNAT, CT_ACT_REDIRECT, CT_DIR_IN, DROP_CSUM};

use super::*;

const MAC_C1: [u8; 6] = [2, 0x42, 10, 1, 0, 2];

/// An SCTP packet `src:sport -> dst:dport` with one INIT chunk and `extra` payload bytes
/// (in a padding-free trailing chunk), its CRC32C valid.
fn sctp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, extra: usize) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // verification tag, checksum
    // INIT: type 1, flags 0, length 20, initiate tag, a_rwnd, streams, initial TSN.
    l4.extend_from_slice(&[
        1, 0, 0, 20, 0xde, 0xad, 0xbe, 0xef, 0, 1, 0, 0, 0, 10, 0, 10,
    ]);
    l4.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    l4.extend((0..extra).map(|i| u8::try_from(i % 251).unwrap()));
    frame(src, dst, PROTO_SCTP, l4)
}

fn publish(dp: &mut Dataplane, host_port: u16, port: u16) {
    dp.publish(
        PortKey {
            host_addr_be: be(HOST),
            host_port,
            proto: PROTO_SCTP,
            _pad: 0,
        },
        PortTarget {
            addr_be: be(C1),
            port,
            _pad0: 0,
            ifindex: 1,
            mac: MAC_C1,
            gw_mac: [2, 0, 0, 0, 0, 9],
        },
    )
    .unwrap();
}

/// Bytes after the SCTP common header are unchanged.
fn assert_chunks_intact(out: &[u8], sent: &[u8]) {
    assert_eq!(out.len(), sent.len());
    assert_eq!(&out[46..], &sent[46..], "chunks");
    assert_eq!(&out[38..42], &sent[38..42], "verification tag");
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn sctp_published_ports_rewrite_ports_and_crc() {
    with_dataplane(|dp| {
        net(dp, "10.1.0.0/24", 10, NET_F_ICC | NET_F_MASQUERADE);
        publish(dp, 9000, 80);
        publish(dp, 9001, 9001);
        // Port-changing mapping, at several lengths (the CRC update depends on it).
        for (i, extra) in [0usize, 1, 3, 200, 1400].into_iter().enumerate() {
            let sport = 5555 + u16::try_from(i).unwrap();
            let sent = sctp(REMOTE, sport, HOST, 9000, extra);
            let (verdict, out) = dp.run(PROG_FROM_UPLINK, &sent);
            assert_eq!(verdict, TC_ACT_REDIRECT, "extra {extra}");
            assert_eq!(&out[0..6], &MAC_C1, "container MAC");
            assert_eq!(&out[30..34], &C1, "destination address");
            assert_eq!(&out[34..36], &sport.to_be_bytes(), "source port kept");
            assert_eq!(&out[36..38], &80u16.to_be_bytes(), "destination port");
            assert_eq!(out[22], 63, "TTL");
            assert_checksums(&out);
            assert_chunks_intact(&out, &sent);
            // The reply goes back as HOST:9000.
            let reply = sctp(C1, 80, REMOTE, sport, extra);
            let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &reply);
            assert_eq!(verdict, TC_ACT_REDIRECT, "reply, extra {extra}");
            assert_eq!(&out[26..30], &HOST, "reply source address");
            assert_eq!(&out[34..36], &9000u16.to_be_bytes(), "reply source port");
            assert_checksums(&out);
            assert_chunks_intact(&out, &reply);
        }
        // Same-port mapping: only the address changes, the CRC stays as it was.
        let sent = sctp(REMOTE, 7000, HOST, 9001, 33);
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &sent);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[30..34], &C1);
        assert_eq!(&out[36..38], &9001u16.to_be_bytes());
        assert_eq!(&out[42..46], &sent[42..46], "CRC untouched");
        assert_checksums(&out);
        let ct = dp.conntrack().unwrap();
        assert!(ct.iter().any(|(k, e)| e.kind == CT_KIND_PUBLISHED
            && k.proto == PROTO_SCTP
            && k.sport == 80
            && k.dport == 5555
            && e.xlate_port == 9000));
        // An SCTP port is not a TCP port of the same number.
        let (verdict, _) = dp.run(PROG_FROM_UPLINK, &tcp(REMOTE, 5555, HOST, 9000, 2));
        assert_eq!(verdict, TC_ACT_OK, "TCP 9000 is not published");
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn sctp_offloaded_crc_and_fragments() {
    with_dataplane(|dp| {
        net(dp, "10.1.0.0/24", 10, NET_F_ICC | NET_F_MASQUERADE);
        publish(dp, 9000, 80);
        // A zero CRC field: the sender's stack computes it later (CRC offload); left at 0.
        let mut offloaded = sctp(REMOTE, 5555, HOST, 9000, 10);
        offloaded[42..46].fill(0);
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &offloaded);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[36..38], &80u16.to_be_bytes());
        assert_eq!(&out[42..46], &[0; 4], "an offloaded CRC stays pending");
        // The first of several fragments: the whole SCTP packet is not here, so its CRC
        // cannot be updated; the packet is dropped, not sent with a wrong CRC.
        let mut first = sctp(REMOTE, 5556, HOST, 9000, 10);
        first[20] |= 0x20; // more fragments
        let c = !sum(
            &{
                let mut h = first[14..34].to_vec();
                h[10..12].fill(0);
                h
            },
            0,
        );
        first[24..26].copy_from_slice(&c.to_be_bytes());
        let (verdict, _) = dp.run(PROG_FROM_UPLINK, &first);
        assert_eq!(verdict, TC_ACT_SHOT);
        assert_eq!(dp.drops(DROP_CSUM), 1);
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn sctp_masquerade_rewrites_the_source_port_and_crc() {
    with_dataplane(|dp| {
        net(dp, "10.1.0.0/24", 10, NET_F_ICC | NET_F_MASQUERADE);
        // A masqueraded flow whose source port had to change, as nd_from_container records it.
        let out_key = CtKey {
            saddr_be: be(C1),
            daddr_be: be(REMOTE),
            sport: 5000,
            dport: 9999,
            proto: PROTO_SCTP,
            dir: CT_DIR_OUT,
            _pad: [0; 2],
        };
        let out_entry = CtEntry {
            xlate_addr_be: be(HOST),
            xlate_port: 61000,
            action: CT_ACT_SNAT | CT_ACT_REDIRECT_NEIGH,
            ifindex: 1,
            owner_addr_be: be(C1),
            kind: CT_KIND_MASQ,
            ..CtEntry::default()
        };
        let in_entry = CtEntry {
            xlate_addr_be: be(C1),
            xlate_port: 5000,
            action: CT_ACT_DNAT | CT_ACT_REDIRECT,
            ifindex: 1,
            dmac: MAC_C1,
            owner_addr_be: be(C1),
            kind: CT_KIND_MASQ,
            ..CtEntry::default()
        };
        let in_key = out_key.partner(&out_entry).unwrap();
        assert_eq!(in_key.dir, CT_DIR_IN);
        dp.ct.insert(out_key, out_entry, 0).unwrap();
        dp.ct.insert(in_key, in_entry, 0).unwrap();
        let sent = sctp(C1, 5000, REMOTE, 9999, 99);
        let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &sent);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[26..30], &HOST);
        assert_eq!(&out[34..36], &61000u16.to_be_bytes());
        assert_checksums(&out);
        assert_chunks_intact(&out, &sent);
        let reply = sctp(REMOTE, 9999, HOST, 61000, 7);
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &reply);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[30..34], &C1);
        assert_eq!(&out[36..38], &5000u16.to_be_bytes());
        assert_checksums(&out);
        assert_chunks_intact(&out, &reply);
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn icmp_errors_about_sctp_flows_reach_the_container() {
    with_dataplane(|dp| {
        net(dp, "10.1.0.0/24", 10, NET_F_ICC | NET_F_MASQUERADE);
        dp.publish(
            PortKey {
                host_addr_be: 0,
                host_port: 9000,
                proto: PROTO_SCTP,
                _pad: 0,
            },
            PortTarget {
                addr_be: be(C1),
                port: 80,
                _pad0: 0,
                ifindex: 1,
                mac: MAC_C1,
                gw_mac: [2, 0, 0, 0, 0, 9],
            },
        )
        .unwrap();
        // "Fragmentation needed" about the reply HOST:9000 -> REMOTE:5555.
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &icmp_error(3, 4, PROTO_SCTP, 9000, 5555));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_icmp_error_for(&out, C1, 80);
        // The same about TCP 9000 is nobody's: untouched.
        let tcp_err = icmp_error(3, 4, PROTO_TCP, 9000, 5555);
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &tcp_err);
        assert_eq!((verdict, out), (TC_ACT_OK, tcp_err));
    });
}
