//! ICC over IPv6 link-local addresses: a container's veth says which network it is on
//! (`ND_VETHS`), and with ICC off only frames to the bridge's MAC pass.

use netdriver_common::VethInfo;

use super::*;

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_link_local_unicast_follows_the_icc_of_the_veths_network() {
    with_dataplane(|dp| {
        net6(dp, "2001:db8:1::/64", 10, NET_F_MASQUERADE);
        let (ll, peer, c1) = (
            a6("fe80::42:aff:fe01:2"),
            a6("fe80::42:aff:fe01:3"),
            a6(C1_6),
        );
        let to_peer = to_mac(tcp6(ll, 40000, peer, 80, 2), PEER_MAC);
        // No entry (a veth attached by an older version): passed, as before.
        assert_eq!(dp.run(PROG_FROM_CONTAINER, &to_peer).0, TC_ACT_OK);

        attach_lo(dp, NET_F_MASQUERADE);
        let passing = [
            // To the host: the gateway's fe80::1 behind the bridge's MAC.
            tcp6(ll, 40000, a6("fe80::1"), 80, 2),
            echo6(ll, a6("fe80::1"), 128, 7),
            // Link control between containers.
            to_mac(ndp(ll, peer, 135, peer), PEER_MAC),
            to_mac(
                ndp(ll, a6("ff02::1:ff01:3"), 135, peer),
                [0x33, 0x33, 0xff, 1, 0, 3],
            ),
        ];
        for (i, frame) in passing.iter().enumerate() {
            let (verdict, out) = dp.run(PROG_FROM_CONTAINER, frame);
            assert_eq!((verdict, &out), (TC_ACT_OK, frame), "frame {i}");
        }
        assert_eq!(dp.drops(DROP_ICC), 0);
        let dropped = [
            to_peer.clone(),
            to_mac(udp6(ll, 4000, peer, 53), PEER_MAC),
            to_mac(echo6(ll, peer, 128, 7), PEER_MAC),
            // A global source towards a link-local destination.
            to_mac(tcp6(c1, 40000, peer, 80, 2), PEER_MAC),
        ];
        for (i, frame) in dropped.iter().enumerate() {
            assert_eq!(
                dp.run(PROG_FROM_CONTAINER, frame).0,
                TC_ACT_SHOT,
                "frame {i}"
            );
        }
        assert_eq!(dp.drops(DROP_ICC), 4);

        // ICC on: the same frame passes (re-attaching updates the entry).
        attach_lo(dp, NET_F_ICC | NET_F_MASQUERADE);
        assert_eq!(dp.run(PROG_FROM_CONTAINER, &to_peer).0, TC_ACT_OK);
        // Detaching forgets the veth.
        dp.detach_container("lo").unwrap();
        assert!(dp.veths().unwrap().is_empty());
        assert!(dp.conntrack6().unwrap().is_empty());
    });
}

#[test]
#[ignore = "needs root and BPF; run by cargo xtask test"]
fn ipv6_stale_veth_entries_are_released() {
    with_dataplane(|dp| {
        attach_lo(dp, 0);
        // A previous run's entry for an interface nobody attached in this one.
        dp.set_veth(4242, VethInfo::default()).unwrap();
        assert_eq!(dp.release_stale_veths().unwrap(), 1);
        assert_eq!(
            dp.veths().unwrap().len(),
            1,
            "the attached veth keeps its entry"
        );
        dp.detach_container("lo").unwrap();
        assert!(dp.veths().unwrap().is_empty());
    });
}
