//! Listing `ND_CT` in batches, and flushing an endpoint's flows in one pass.

use std::collections::{HashMap, HashSet};

use netdriver_common::{CT_DIR_IN, CT_KIND_PUBLISHED, CtEntry, CtKey, PROTO_TCP, PROTO_UDP};

use super::{Tuning, be, with_tuning};

fn key(i: u32, dir: u8, dport: u16) -> CtKey {
    let [_, _, hi, lo] = i.to_be_bytes();
    CtKey {
        saddr_be: be([203, 0, 113, 1 + hi]),
        daddr_be: be([198, 51, 100, lo]),
        sport: 40_000,
        dport,
        proto: PROTO_TCP,
        dir,
        _pad: [0; 2],
    }
}

/// More entries than one batch call returns, some of them an endpoint's: the batch listing
/// sees exactly what the entry-by-entry one sees, and the endpoint flush removes exactly the
/// endpoint's flows (its address, its host ports, the published flows translated to them).
#[test]
fn batch_listing_matches_iteration_and_endpoint_flush_takes_only_its_flows() {
    let tuning = Tuning {
        ct_max_entries: 20_000,
        ..Tuning::default()
    };
    with_tuning(tuning, |dp| {
        let n = 9_000;
        for i in 0..n {
            dp.ct.insert(key(i, 0, 80), CtEntry::default(), 0).unwrap();
        }
        let container = be([198, 51, 100, 7]);
        // Inbound flows to host port 8080/tcp, a published flow translated to host port
        // 9090/tcp, and a flow owned by the container.
        dp.ct
            .insert(key(1, CT_DIR_IN, 8080), CtEntry::default(), 0)
            .unwrap();
        let published = CtEntry {
            kind: CT_KIND_PUBLISHED,
            xlate_port: 9090,
            ..CtEntry::default()
        };
        dp.ct.insert(key(2, 1, 5000), published, 0).unwrap();
        let owned = CtEntry {
            owner_addr_be: container,
            ..CtEntry::default()
        };
        dp.ct.insert(key(3, 1, 6000), owned, 0).unwrap();
        // Not the endpoint's: the same port over UDP.
        let udp = CtKey {
            proto: PROTO_UDP,
            ..key(4, CT_DIR_IN, 8080)
        };
        dp.ct.insert(udp, CtEntry::default(), 0).unwrap();

        let batch: HashMap<CtKey, CtEntry> = dp.conntrack().unwrap().into_iter().collect();
        let iter: HashMap<CtKey, CtEntry> =
            dp.entries_iter::<CtKey>().unwrap().into_iter().collect();
        assert_eq!(batch.len(), 9_004);
        assert_eq!(batch, iter);

        // Every key whose daddr is 198.51.100.7 (i % 256 == 7) is the container's too.
        let addr_flows = (0..n).filter(|i| i % 256 == 7).count();
        let ports = HashSet::from([(8080, PROTO_TCP), (9090, PROTO_TCP)]);
        let removed = dp
            .flush_conntrack_endpoint(std::net::Ipv4Addr::new(198, 51, 100, 7), &ports)
            .unwrap();
        assert_eq!(removed, addr_flows + 3);
        let left: HashSet<CtKey> = dp
            .conntrack()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(left.len(), 9_004 - removed);
        assert!(left.contains(&udp));
        assert!(!left.contains(&key(1, CT_DIR_IN, 8080)));
        assert!(!left.contains(&key(2, 1, 5000)));
        assert!(!left.contains(&key(3, 1, 6000)));
        assert!(left.iter().all(|k| k.daddr_be != container));
    });
}
