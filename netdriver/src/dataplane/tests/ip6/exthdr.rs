//! IPv6 extension headers: hop-by-hop, destination-options and routing headers with no
//! segment left are walked past to the L4 header, which is then translated like any other;
//! fragments, routing headers with segments left and headers past the fourth are not.

use super::*;

const HOPOPTS: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DSTOPTS: u8 = 60;
const AH: u8 = 51;

/// An 8-byte options header (hop-by-hop or destination options) holding one `PadN` option.
const PADN_OPTIONS: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];

/// A 16-byte options header (`hdr_ext_len` 1) holding one `PadN` option.
const LONG_OPTIONS: [u8; 16] = [0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// `frame` with the extension headers `exts` (type, bytes) inserted in front of its L4
/// header, in order, each header's next-header byte filled in; the payload length grows. The
/// L4 checksum stays valid: the pseudo-header holds the upper-layer length, not the payload
/// length.
fn with_exts(frame: &[u8], exts: &[(u8, &[u8])]) -> Vec<u8> {
    let mut f = frame[..54].to_vec();
    let mut next = frame[20];
    let mut chain = Vec::new();
    for (kind, ext) in exts.iter().rev() {
        let mut ext = ext.to_vec();
        ext[0] = next;
        ext.extend_from_slice(&chain);
        chain = ext;
        next = *kind;
    }
    f[20] = next;
    let len = u16::from_be_bytes([f[18], f[19]]) + u16::try_from(chain.len()).unwrap();
    f[18..20].copy_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&chain);
    f.extend_from_slice(&frame[54..]);
    f
}

/// The inverse of [`with_ext`] for the first `len` bytes of extension headers: the frame as
/// if the L4 header followed the fixed header, for the checks that expect it there.
fn without_ext(frame: &[u8], len: usize, proto: u8) -> Vec<u8> {
    let mut f = frame[..54].to_vec();
    f[20] = proto;
    let plen = u16::from_be_bytes([f[18], f[19]]) - u16::try_from(len).unwrap();
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f.extend_from_slice(&frame[54 + len..]);
    f
}

/// The options headers a SYN and its reply carry: destination options alone, and
/// hop-by-hop then a longer destination-options header (24 bytes in all).
const OPTIONS_CHAINS: [&[(u8, &[u8])]; 2] = [
    &[(DSTOPTS, &PADN_OPTIONS)],
    &[(HOPOPTS, &PADN_OPTIONS), (DSTOPTS, &LONG_OPTIONS)],
];

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_tcp_behind_options_headers_is_translated_both_ways() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_ICC | NET_F_MASQUERADE);
        dp.publish6(key6("", 8080, PROTO_TCP), target(80)).unwrap();
        let (remote, host, c1) = (a6(REMOTE6), a6(HOST6), a6(C1_6));
        for (i, exts) in OPTIONS_CHAINS.into_iter().enumerate() {
            let sent = with_exts(&tcp6(remote, 5555, host, 8080, 2), exts);
            let ext = exts.iter().map(|(_, e)| e.len()).sum::<usize>();
            let (verdict, out) = dp.run(PROG_FROM_UPLINK, &sent);
            assert_eq!(verdict, TC_ACT_REDIRECT, "case {i}");
            assert_eq!(&out[0..6], &C1_MAC);
            assert_eq!(dst6(&out), &c1, "destination: the container");
            assert_eq!(src6(&out), &remote, "the client's address is kept");
            assert_eq!(out[21], 63, "hop limit");
            assert_eq!(
                &out[18..21],
                &sent[18..21],
                "payload length and next header"
            );
            assert_eq!(&out[54..54 + ext], &sent[54..54 + ext], "extension headers");
            let l4 = 54 + ext;
            assert_eq!(&out[l4..l4 + 2], &5555u16.to_be_bytes(), "source port");
            assert_eq!(
                &out[l4 + 2..l4 + 4],
                &80u16.to_be_bytes(),
                "destination port"
            );
            assert_checksum6(&without_ext(&out, ext, PROTO_TCP));

            // The container's SYN-ACK, behind the same headers, goes back from the host.
            let reply = with_exts(&tcp6(c1, 80, remote, 5555, 0x12), exts);
            let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &reply);
            assert_eq!(verdict, TC_ACT_REDIRECT, "reply, case {i}");
            assert_eq!(src6(&out), &host, "reply source address");
            assert_eq!(dst6(&out), &remote);
            assert_eq!(
                &out[l4..l4 + 2],
                &8080u16.to_be_bytes(),
                "reply source port"
            );
            assert_eq!(
                &out[54..54 + ext],
                &sent[54..54 + ext],
                "reply extension headers"
            );
            assert_checksum6(&without_ext(&out, ext, PROTO_TCP));
        }
        assert_eq!(dp.drop_counters().unwrap().iter().sum::<u64>(), 0);
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_sctp_behind_options_headers_gets_its_crc_over_the_l4_length() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_ICC | NET_F_MASQUERADE);
        dp.publish6(key6("", 9000, PROTO_SCTP), target(80)).unwrap();
        let (remote, host, c1) = (a6(REMOTE6), a6(HOST6), a6(C1_6));
        for (i, exts) in OPTIONS_CHAINS.into_iter().enumerate() {
            let plain = sctp6(remote, 5555, host, 9000, 100);
            let sent = with_exts(&plain, exts);
            let ext = exts.iter().map(|(_, e)| e.len()).sum::<usize>();
            let (verdict, out) = dp.run(PROG_FROM_UPLINK, &sent);
            assert_eq!(verdict, TC_ACT_REDIRECT, "case {i}");
            assert_eq!(dst6(&out), &c1);
            assert_eq!(&out[56 + ext..58 + ext], &80u16.to_be_bytes());
            // The CRC32C covers the SCTP packet only: its update must use the L4 length.
            let inner = without_ext(&out, ext, PROTO_SCTP);
            assert_checksum6(&inner);
            assert_sctp_chunks_intact(&inner, &plain);
        }
    });
}

/// Frames with a TCP SYN to a published port behind headers the walk stops at.
fn unwalked(syn: &[u8]) -> Vec<Vec<u8>> {
    // The first fragment (offset 0, more fragments) of a datagram.
    let fragment = [0u8, 0, 0, 1, 0, 0, 0, 42];
    // A segment routing header with one segment left: the final destination is elsewhere.
    let mut srh = vec![0u8, 2, 4, 1, 0, 0, 0, 0];
    srh.extend_from_slice(&a6("2001:db8:ee::20"));
    let five: Vec<(u8, &[u8])> = vec![(DSTOPTS, &PADN_OPTIONS); 5];
    vec![
        with_exts(syn, &[(FRAGMENT, &fragment)]),
        with_exts(syn, &[(HOPOPTS, &PADN_OPTIONS), (FRAGMENT, &fragment)]),
        with_exts(syn, &[(ROUTING, &srh)]),
        with_exts(syn, &five),
        with_exts(
            syn,
            &[(AH, &[0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])],
        ),
        // A header that claims more bytes than the frame has.
        with_exts(syn, &[(DSTOPTS, &[0, 200, 1, 4, 0, 0, 0, 0])]),
    ]
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_fragments_routing_headers_and_long_chains_pass_untouched() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_ICC | NET_F_MASQUERADE);
        dp.publish6(key6("", 8080, PROTO_TCP), target(80)).unwrap();
        let (remote, host, c1) = (a6(REMOTE6), a6(HOST6), a6(C1_6));
        let syn = tcp6(remote, 5555, host, 8080, 2);
        for (i, frame) in unwalked(&syn).iter().enumerate() {
            let (verdict, out) = dp.run(PROG_FROM_UPLINK, frame);
            assert_eq!((verdict, &out), (TC_ACT_OK, frame), "case {i}");
        }
        // A routing header with no segment left is walked past (the cases above fail for
        // the right reason): so are four options headers.
        let mut srh_done = vec![0u8, 2, 4, 0, 0, 0, 0, 0];
        srh_done.extend_from_slice(&a6("2001:db8:ee::20"));
        let four: Vec<(u8, &[u8])> = vec![(DSTOPTS, &PADN_OPTIONS); 4];
        for frame in [
            with_exts(&syn, &[(ROUTING, &srh_done)]),
            with_exts(&syn, &four),
        ] {
            let (verdict, out) = dp.run(PROG_FROM_UPLINK, &frame);
            assert_eq!(verdict, TC_ACT_REDIRECT);
            assert_eq!(dst6(&out), &c1);
        }
        // From a container: no ports, so nothing is tracked or translated.
        let reply = tcp6(c1, 80, remote, 5555, 0x12);
        for (i, frame) in unwalked(&reply).iter().enumerate() {
            let (verdict, out) = dp.run(PROG_FROM_CONTAINER, frame);
            assert_eq!((verdict, &out), (TC_ACT_OK, frame), "container case {i}");
        }
        assert!(
            dp.conntrack6()
                .unwrap()
                .iter()
                .all(|(_, e)| e.kind == CT_KIND_PUBLISHED)
        );
    });
}
