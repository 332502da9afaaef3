//! `BPF_PROG_TEST_RUN` tests: the real programs run on crafted frames in a private network
//! namespace, asserting the verdict, the rewritten bytes (checksums included) and the maps.
//! The machine's root namespace is never touched: each test unshares its own.

use std::sync::atomic::{AtomicUsize, Ordering};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use netdriver_common::{
    CT_ACT_REDIRECT_NEIGH, CT_ACT_SNAT, CT_DIR_OUT, CT_KIND_LINK, CT_KIND_MASQ, CT_KIND_PUBLISHED,
    DROP_ICC, DROP_INTERNAL, DROP_ISOLATED, DROP_SPOOFED, DROP_UNPUBLISHED, NET_F_ICC,
    NET_F_INTERNAL, NET_F_MASQUERADE, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP, crc32c::crc32c,
};

use super::*;

mod ct;
mod sctp;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` with a freshly loaded data path, on a thread in a new network namespace; the pins
/// are removed afterwards (also after a panic).
fn with_dataplane(f: impl FnOnce(&mut Dataplane) + Send + 'static) {
    let tuning = Tuning {
        ct_max_entries: 64,
        nat_ports: (61000, 61001),
        ..Tuning::default()
    };
    with_tuning(tuning, f);
}

/// [`with_dataplane`] with the maps sized by `tuning`.
fn with_tuning(tuning: Tuning, f: impl FnOnce(&mut Dataplane) + Send + 'static) {
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/ndut-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let pins = dir.clone();
    let result = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare a network namespace (needs root)");
        let mut dp = Dataplane::load_with(&pins, tuning).expect("load the data path");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut dp)));
        dp.remove_everything().expect("remove pins and links");
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .join();
    // `remove_dir_all`: a load the verifier refused panics before `remove_everything`, with
    // the maps already pinned.
    let _ = fs::remove_dir_all(&dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

impl Dataplane {
    /// Runs `program` on `frame`: (verdict, frame as the program left it).
    fn run(&self, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        self.try_run(program, frame).expect("BPF_PROG_TEST_RUN")
    }

    fn try_run(&self, program: &str, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(program)
            .expect("program exists")
            .try_into()
            .expect("a classifier");
        let mut out = vec![0u8; frame.len() + 256];
        let result = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    fn drops(&self, reason: u32) -> u64 {
        self.drop_counters().unwrap()[reason as usize]
    }
}

fn be(ip: [u8; 4]) -> u32 {
    u32::from_ne_bytes(ip)
}

fn net(dp: &mut Dataplane, subnet: &str, bridge: u32, flags: u32) {
    let subnet: Ipv4Net = subnet.parse().unwrap();
    let gw = subnet.hosts().next().unwrap();
    dp.add_network(
        subnet,
        NetInfo {
            bridge_ifindex: bridge,
            flags,
            gateway_be: u32::from_ne_bytes(gw.octets()),
            snat_addr_be: 0,
        },
    )
    .unwrap();
}

/// The one's-complement sum of `data`, folded.
fn sum(data: &[u8], mut acc: u32) -> u16 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        acc += u32::from(word);
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits")]
    let folded = acc as u16;
    folded
}

fn pseudo(ip: &[u8], l4_len: usize) -> u32 {
    let mut p = Vec::from(&ip[12..20]);
    p.extend_from_slice(&[0, ip[9]]);
    p.extend_from_slice(&u16::try_from(l4_len).unwrap().to_be_bytes());
    u32::from(sum(&p, 0))
}

/// An Ethernet + IPv4 frame (TTL 64) around `l4`, whose checksum field is filled in (SCTP:
/// the CRC32C).
fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, mut l4: Vec<u8>) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = u16::try_from(20 + l4.len()).unwrap();
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = !sum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let csum_at = match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => 2,
    };
    if proto == PROTO_SCTP {
        l4[8..12].fill(0);
        let crc = crc32c(&l4);
        l4[8..12].copy_from_slice(&crc.to_le_bytes());
    } else {
        let acc = if proto == PROTO_ICMP {
            0
        } else {
            pseudo(&ip, l4.len())
        };
        let c = !sum(&l4, acc);
        l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(b"hello");
    frame(src, dst, PROTO_TCP, l4)
}

fn echo(src: [u8; 4], dst: [u8; 4], id: u16) -> Vec<u8> {
    let mut l4 = vec![8, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&[0, 1, 1, 2, 3, 4]);
    frame(src, dst, PROTO_ICMP, l4)
}

/// Asserts the IPv4 and L4 checksums of a frame are valid.
fn assert_checksums(f: &[u8]) {
    let ip = &f[14..34];
    assert_eq!(sum(ip, 0), 0xffff, "IPv4 checksum");
    let l4 = &f[34..];
    if ip[9] == PROTO_SCTP {
        let mut zeroed = l4.to_vec();
        zeroed[8..12].fill(0);
        let field = u32::from_le_bytes(l4[8..12].try_into().unwrap());
        assert_eq!(field, crc32c(&zeroed), "SCTP CRC32C");
        return;
    }
    let acc = if ip[9] == PROTO_ICMP {
        0
    } else {
        pseudo(ip, l4.len())
    };
    assert_eq!(sum(l4, acc), 0xffff, "L4 checksum");
}

const C1: [u8; 4] = [10, 1, 0, 2];
const C2: [u8; 4] = [10, 1, 0, 3];
const OTHER_NET: [u8; 4] = [10, 2, 0, 2];
const INTERNAL: [u8; 4] = [10, 3, 0, 2];
const REMOTE: [u8; 4] = [203, 0, 113, 10];
const HOST: [u8; 4] = [198, 51, 100, 1];

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn policy_decisions() {
    with_dataplane(|dp| {
        net(dp, "10.1.0.0/24", 10, NET_F_MASQUERADE);
        net(dp, "10.2.0.0/24", 11, NET_F_ICC | NET_F_MASQUERADE);
        net(dp, "10.3.0.0/24", 12, NET_F_ICC | NET_F_INTERNAL);
        let from = PROG_FROM_CONTAINER;
        // ICC off: refused, both ways.
        assert_eq!(dp.run(from, &tcp(C1, 40000, C2, 80, 2)).0, TC_ACT_SHOT);
        assert_eq!(dp.run(from, &tcp(C2, 40000, C1, 80, 2)).0, TC_ACT_SHOT);
        assert_eq!(dp.run(from, &echo(C1, C2, 7)).0, TC_ACT_SHOT);
        assert_eq!(dp.drops(DROP_ICC), 3);
        // A link opens one port one way, and the reply direction is recorded.
        dp.add_link(LinkKey {
            parent_addr_be: be(C1),
            child_addr_be: be(C2),
            port: 5432,
            proto: PROTO_TCP,
            _pad: 0,
        })
        .unwrap();
        assert_eq!(dp.run(from, &tcp(C1, 40000, C2, 5432, 2)).0, TC_ACT_OK);
        assert_eq!(dp.run(from, &tcp(C2, 5432, C1, 40000, 0x12)).0, TC_ACT_OK);
        assert_eq!(dp.run(from, &tcp(C2, 5433, C1, 40000, 2)).0, TC_ACT_SHOT);
        let ct = dp.conntrack().unwrap();
        assert!(ct.iter().any(|(k, e)| e.kind == CT_KIND_LINK
            && k.saddr_be == be(C2)
            && k.sport == 5432
            && k.dir == CT_DIR_OUT));
        // Gateways are the host's; other networks are not reachable.
        assert_eq!(
            dp.run(from, &tcp(C1, 40000, [10, 1, 0, 1], 22, 2)).0,
            TC_ACT_OK
        );
        assert_eq!(
            dp.run(from, &tcp(C1, 40000, OTHER_NET, 80, 2)).0,
            TC_ACT_SHOT
        );
        assert_eq!(
            dp.run(from, &tcp(OTHER_NET, 40000, C1, 80, 2)).0,
            TC_ACT_SHOT
        );
        assert_eq!(dp.drops(DROP_ISOLATED), 2);
        // Internal: out is refused, the own gateway is not.
        assert_eq!(
            dp.run(from, &tcp(INTERNAL, 40000, REMOTE, 80, 2)).0,
            TC_ACT_SHOT
        );
        assert_eq!(dp.run(from, &echo(INTERNAL, REMOTE, 9)).0, TC_ACT_SHOT);
        assert_eq!(
            dp.run(from, &tcp(INTERNAL, 40000, [10, 3, 0, 1], 53, 2)).0,
            TC_ACT_OK
        );
        assert_eq!(dp.drops(DROP_INTERNAL), 2);
        // A source outside every container network.
        assert_eq!(
            dp.run(from, &tcp([192, 0, 2, 1], 1, REMOTE, 80, 2)).0,
            TC_ACT_SHOT
        );
        assert_eq!(dp.drops(DROP_SPOOFED), 1);
        // Outsiders reach no container address.
        assert_eq!(
            dp.run(PROG_FROM_UPLINK, &tcp(REMOTE, 1234, C1, 80, 2)).0,
            TC_ACT_SHOT
        );
        assert_eq!(dp.drops(DROP_UNPUBLISHED), 1);
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn rewrites_keep_checksums_valid_and_cost_a_hop() {
    with_dataplane(|dp| {
        net(dp, "10.1.0.0/24", 10, NET_F_ICC | NET_F_MASQUERADE);
        // A masqueraded TCP and ICMP flow, as nd_from_container would have recorded them.
        for (proto, sport, dport) in [(PROTO_TCP, 40000, 80), (PROTO_ICMP, 7, 0)] {
            let key = CtKey {
                saddr_be: be(C1),
                daddr_be: be(REMOTE),
                sport,
                dport,
                proto,
                dir: CT_DIR_OUT,
                _pad: [0; 2],
            };
            let entry = CtEntry {
                xlate_addr_be: be(HOST),
                xlate_port: 61000,
                action: CT_ACT_SNAT | CT_ACT_REDIRECT_NEIGH,
                ifindex: 1,
                owner_addr_be: be(C1),
                kind: CT_KIND_MASQ,
                ..CtEntry::default()
            };
            dp.ct.insert(key, entry, 0).unwrap();
        }
        let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &tcp(C1, 40000, REMOTE, 80, 0x10));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[26..30], &HOST, "source address");
        assert_eq!(&out[34..36], &61000u16.to_be_bytes(), "source port");
        assert_eq!(out[22], 63, "TTL");
        assert_checksums(&out);
        let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &echo(C1, REMOTE, 7));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[26..30], &HOST);
        assert_eq!(&out[38..40], &61000u16.to_be_bytes(), "echo identifier");
        assert_checksums(&out);
        // The TCP entry saw an ACK: established.
        let ct = dp.conntrack().unwrap();
        assert!(ct.iter().any(|(k, e)| k.proto == PROTO_TCP && e.state == 1));

        // A published port: destination rewritten, reply direction recorded.
        dp.publish(
            PortKey {
                host_addr_be: be(HOST),
                host_port: 8080,
                proto: PROTO_TCP,
                _pad: 0,
            },
            PortTarget {
                addr_be: be(C1),
                port: 80,
                _pad0: 0,
                ifindex: 1,
                mac: [2, 0x42, 10, 1, 0, 2],
                gw_mac: [2, 0, 0, 0, 0, 9],
            },
        )
        .unwrap();
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &tcp(REMOTE, 5555, HOST, 8080, 2));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[0..6], &[2, 0x42, 10, 1, 0, 2], "container MAC");
        assert_eq!(&out[30..34], &C1);
        assert_eq!(&out[36..38], &80u16.to_be_bytes());
        assert_eq!(out[22], 63);
        assert_checksums(&out);
        let ct = dp.conntrack().unwrap();
        assert!(ct.iter().any(|(k, e)| e.kind == CT_KIND_PUBLISHED
            && k.saddr_be == be(C1)
            && k.dport == 5555
            && e.xlate_port == 8080));
        // The reply goes back translated.
        let (verdict, out) = dp.run(PROG_FROM_CONTAINER, &tcp(C1, 80, REMOTE, 5555, 0x12));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[26..30], &HOST);
        assert_eq!(&out[34..36], &8080u16.to_be_bytes());
        assert_checksums(&out);
        // No hop left: the kernel's business, untouched.
        let mut last = tcp(REMOTE, 5556, HOST, 8080, 2);
        last[22] = 1;
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &last);
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(&out[30..34], &HOST);
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn malformed_frames_pass_untouched() {
    with_dataplane(|dp| {
        net(dp, "10.1.0.0/24", 10, NET_F_MASQUERADE);
        let good = tcp(C1, 40000, C2, 80, 2);
        // Truncated L4 headers. (BPF_PROG_TEST_RUN itself refuses IPv4 frames shorter than an
        // IPv4 header, so those cannot be fed from here.)
        let mut cases: Vec<Vec<u8>> = vec![good[..34].to_vec(), good[..36].to_vec()];
        let mut bad_ihl = good.clone();
        bad_ihl[14] = 0x44;
        cases.push(bad_ihl);
        let mut v6 = good.clone();
        v6[14] = 0x65;
        cases.push(v6);
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        cases.push(arp);
        for (i, case) in cases.iter().enumerate() {
            for prog in [PROG_FROM_CONTAINER, PROG_FROM_UPLINK] {
                let (verdict, out) = dp
                    .try_run(prog, case)
                    .unwrap_or_else(|e| panic!("case {i} ({} bytes) {prog}: {e:?}", case.len()));
                // Truncated or foreign frames are never translated; ICC still applies to
                // parseable IPv4 between containers (the 34- and 36-byte cases).
                assert!(
                    verdict == TC_ACT_OK || verdict == TC_ACT_SHOT,
                    "case {i} {prog}: {verdict}"
                );
                assert_eq!(&out, case, "case {i} {prog}: bytes changed");
            }
        }
        assert!(dp.conntrack().unwrap().is_empty());
    });
}

/// An ICMP error from `REMOTE` to `HOST` quoting a packet `HOST:sport -> REMOTE:dport`.
fn icmp_error(kind: u8, code: u8, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut quoted = vec![0x45, 0, 0, 48, 0, 1, 0x40, 0, 63, proto, 0, 0];
    quoted.extend_from_slice(&HOST);
    quoted.extend_from_slice(&REMOTE);
    let c = !sum(&quoted, 0);
    quoted[10..12].copy_from_slice(&c.to_be_bytes());
    quoted.extend_from_slice(&sport.to_be_bytes());
    quoted.extend_from_slice(&dport.to_be_bytes());
    quoted.extend_from_slice(&[0, 20, 0xab, 0xcd]);
    let mut l4 = vec![kind, code, 0, 0, 0, 0, 0x05, 0xdc];
    l4.extend_from_slice(&quoted);
    frame(REMOTE, HOST, PROTO_ICMP, l4)
}

/// Checks an ICMP error after translation: addressed to `to`, quoting `to:port`.
fn assert_icmp_error_for(out: &[u8], to: [u8; 4], port: u16) {
    assert_eq!(&out[30..34], &to, "outer destination");
    assert_eq!(&out[54..58], &to, "quoted source");
    assert_eq!(&out[62..64], &port.to_be_bytes(), "quoted source port");
    assert_eq!(sum(&out[14..34], 0), 0xffff, "outer IPv4 checksum");
    assert_eq!(sum(&out[42..62], 0), 0xffff, "quoted IPv4 checksum");
    assert_eq!(sum(&out[34..], 0), 0xffff, "ICMP checksum");
    assert_eq!(out[22], 63, "TTL");
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn icmp_errors_about_translated_flows_reach_the_container() {
    with_dataplane(|dp| {
        net(dp, "10.1.0.0/24", 10, NET_F_ICC | NET_F_MASQUERADE);
        let key = CtKey {
            saddr_be: be(REMOTE),
            daddr_be: be(HOST),
            sport: 53,
            dport: 61000,
            proto: PROTO_UDP,
            dir: netdriver_common::CT_DIR_IN,
            _pad: [0; 2],
        };
        let entry = CtEntry {
            xlate_addr_be: be(C1),
            xlate_port: 40000,
            action: netdriver_common::CT_ACT_DNAT | netdriver_common::CT_ACT_REDIRECT,
            ifindex: 1,
            dmac: [2, 0x42, 10, 1, 0, 2],
            owner_addr_be: be(C1),
            kind: CT_KIND_MASQ,
            ..CtEntry::default()
        };
        dp.ct.insert(key, entry, 0).unwrap();
        // Port unreachable about a masqueraded UDP flow.
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &icmp_error(3, 3, PROTO_UDP, 61000, 53));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_icmp_error_for(&out, C1, 40000);
        assert_eq!(&out[0..6], &[2, 0x42, 10, 1, 0, 2]);
        // "Fragmentation needed" about a published port's reply.
        dp.publish(
            PortKey {
                host_addr_be: 0,
                host_port: 8080,
                proto: PROTO_TCP,
                _pad: 0,
            },
            PortTarget {
                addr_be: be(C1),
                port: 80,
                _pad0: 0,
                ifindex: 1,
                mac: [2, 0x42, 10, 1, 0, 2],
                gw_mac: [2, 0, 0, 0, 0, 9],
            },
        )
        .unwrap();
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &icmp_error(3, 4, PROTO_TCP, 8080, 5555));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_icmp_error_for(&out, C1, 80);
        // About nothing netdriver translated: the host's business, untouched.
        let unrelated = icmp_error(3, 3, PROTO_UDP, 33333, 53);
        let (verdict, out) = dp.run(PROG_FROM_UPLINK, &unrelated);
        assert_eq!((verdict, out), (TC_ACT_OK, unrelated));
    });
}

/// The bridge MAC of the test veth: `frame` and `frame6` address their frames to it.
const BRIDGE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// Another container's MAC on the same bridge.
const PEER_MAC: [u8; 6] = [2, 0x42, 10, 1, 0, 3];

fn to_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[0..6].copy_from_slice(&mac);
    frame
}

/// `BPF_PROG_TEST_RUN` runs a frame as received on `lo` (ifindex 1): the test's "veth", whose
/// "bridge" is `lo` too (down in the test's namespace: a clone sent there goes nowhere).
fn attach_lo(dp: &mut Dataplane, flags: u32) {
    let veth = VethInfo {
        flags,
        bridge_mac: BRIDGE_MAC,
        _pad: [0; 2],
        bridge_ifindex: 1,
    };
    dp.attach_container("lo", veth).unwrap();
    assert_eq!(dp.veths().unwrap(), vec![(1, veth)]);
}

mod group;
mod ip6;
