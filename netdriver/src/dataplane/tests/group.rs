//! Multicast and broadcast from a container, both families: the ICC rule of the veth's
//! network (`ND_VETHS`) decides; link machinery always passes.

use super::{
    ip6::{a6, ndp, udp6},
    *,
};

const BROADCAST: [u8; 6] = [0xff; 6];
/// The subnet of `net` below, its broadcast address, and an address in no container network.
const SUBNET: &str = "10.1.0.0/24";
const SUBNET_BCAST: [u8; 4] = [10, 1, 0, 255];
const FOREIGN: [u8; 4] = [192, 0, 2, 1];
const IGMP: u8 = 2;

fn udp4(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut l4 = Vec::from(40000u16.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 13, 0, 0]);
    l4.extend_from_slice(b"hello");
    frame(src, dst, PROTO_UDP, l4)
}

/// An ARP request for `C2`, broadcast.
fn arp() -> Vec<u8> {
    let mut f = Vec::from(BROADCAST);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&C1);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&C2);
    f
}

/// An `MLDv2` report to `ff02::16` behind a hop-by-hop header (router alert), as Linux sends it.
fn mld_report(src: [u8; 16]) -> Vec<u8> {
    let mut f = ndp(src, a6("ff02::16"), 143, [0; 16]);
    let hbh = [58, 0, 5, 2, 0, 0, 1, 0];
    f.splice(54..54, hbh);
    f[20] = 0;
    let len = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&len.to_be_bytes());
    to_mac(f, [0x33, 0x33, 0, 0, 0, 0x16])
}

/// Frames a container sends to a group (or to a group address behind a neighbour's MAC).
fn group_frames() -> Vec<Vec<u8>> {
    let ll = a6("fe80::42:aff:fe01:2");
    vec![
        to_mac(udp4(C1, SUBNET_BCAST, 5000), BROADCAST),
        to_mac(udp4(C1, [255; 4], 5000), BROADCAST),
        to_mac(udp4(C1, [224, 0, 0, 251], 5353), [1, 0, 0x5e, 0, 0, 0xfb]),
        to_mac(udp4(C1, [239, 1, 2, 3], 5000), PEER_MAC),
        to_mac(
            udp6(ll, 5353, a6("ff02::fb"), 5353),
            [0x33, 0x33, 0, 0, 0, 0xfb],
        ),
        to_mac(
            udp6(a6("2001:db8:1::2"), 5000, a6("ff02::1"), 5000),
            [0x33, 0x33, 0, 0, 0, 1],
        ),
        to_mac(udp6(ll, 5000, a6("ff02::1"), 5000), PEER_MAC),
    ]
}

/// Link machinery: ARP, IGMP, neighbour solicitation, MLD.
fn link_frames() -> Vec<Vec<u8>> {
    let ll = a6("fe80::42:aff:fe01:2");
    vec![
        arp(),
        to_mac(
            frame(C1, [224, 0, 0, 22], IGMP, vec![0x22, 0, 0, 0, 0, 0, 0, 0]),
            [1, 0, 0x5e, 0, 0, 0x16],
        ),
        to_mac(
            ndp(ll, a6("ff02::1:ff01:3"), 135, a6("fe80::42:aff:fe01:3")),
            [0x33, 0x33, 0xff, 1, 0, 3],
        ),
        mld_report(ll),
    ]
}

/// Asserts every frame gets `verdict`, and that passed frames are untouched.
fn assert_verdicts(dp: &Dataplane, frames: &[Vec<u8>], verdict: u32, case: &str) {
    for (i, frame) in frames.iter().enumerate() {
        let (got, out) = dp.run(PROG_FROM_CONTAINER, frame);
        assert_eq!(got, verdict, "{case}: frame {i}");
        if verdict == TC_ACT_OK {
            assert_eq!(&out, frame, "{case}: frame {i} changed");
        }
    }
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn multicast_and_broadcast_follow_the_icc_of_the_veths_network() {
    with_dataplane(|dp| {
        net(dp, SUBNET, 10, NET_F_MASQUERADE);
        let (group, link) = (group_frames(), link_frames());
        // No entry (a veth attached by an older version): passed, as before.
        assert_verdicts(dp, &group, TC_ACT_OK, "no entry");

        // ICC off: group frames go to the host only (a clone; the original is dropped).
        attach_lo(dp, NET_F_MASQUERADE);
        assert_verdicts(dp, &group, TC_ACT_SHOT, "ICC off");
        assert_eq!(dp.drops(DROP_ICC), u64::try_from(group.len()).unwrap());
        assert_verdicts(dp, &link, TC_ACT_OK, "ICC off, link machinery");
        // A broadcast from an address of no container network is spoofed.
        let spoofed = to_mac(udp4(FOREIGN, [255; 4], 5000), BROADCAST);
        assert_eq!(dp.run(PROG_FROM_CONTAINER, &spoofed).0, TC_ACT_SHOT);
        assert_eq!(dp.drops(DROP_SPOOFED), 1);

        // ICC on: the bridge floods them, untouched; nothing is tracked.
        attach_lo(dp, NET_F_ICC | NET_F_MASQUERADE);
        assert_verdicts(dp, &group, TC_ACT_OK, "ICC on");
        assert_verdicts(dp, &link, TC_ACT_OK, "ICC on, link machinery");
        assert_eq!(dp.drops(DROP_ICC), u64::try_from(group.len()).unwrap());
        assert!(dp.conntrack().unwrap().is_empty());
        dp.detach_container("lo").unwrap();
    });
}
