//! `ND_CT` from the daemon's side: listing, flushing an endpoint's flows, and sweeping
//! expired entries (the data path never deletes; it only refreshes `last_seen_ns`).

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData};
use netdriver_common::{
    CT_DIR_IN, CT_KIND_PUBLISHED, CT_REFRESH_NS, CT_ST_CLOSING, CT_ST_ESTABLISHED, CT_ST_RESET,
    CtEntry, CtEntry6, CtKey, CtKey6, CtTimes, MAP_CT, MAP_CT6, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_SCTP, PROTO_TCP,
};

use super::{Dataplane, DataplaneError, is_not_found, map_err};

/// A conntrack key of either family (`ND_CT`'s [`CtKey`], `ND_CT6`'s [`CtKey6`]): what the
/// sweeper and the flushes need, so one implementation serves both tables.
pub trait FlowKey: Copy + Eq + Hash + aya::Pod {
    type Entry: Copy + CtTimes + aya::Pod;
    const MAP: &'static str;
    fn proto(&self) -> u8;
    fn partner(&self, entry: &Self::Entry) -> Option<Self>;
    fn table(dp: &Dataplane) -> &BpfHashMap<MapData, Self, Self::Entry>;
    fn table_mut(dp: &mut Dataplane) -> &mut BpfHashMap<MapData, Self, Self::Entry>;
}

impl FlowKey for CtKey {
    type Entry = CtEntry;
    const MAP: &'static str = MAP_CT;
    fn proto(&self) -> u8 {
        self.proto
    }
    fn partner(&self, entry: &CtEntry) -> Option<Self> {
        CtKey::partner(self, entry)
    }
    fn table(dp: &Dataplane) -> &BpfHashMap<MapData, Self, CtEntry> {
        &dp.ct
    }
    fn table_mut(dp: &mut Dataplane) -> &mut BpfHashMap<MapData, Self, CtEntry> {
        &mut dp.ct
    }
}

impl FlowKey for CtKey6 {
    type Entry = CtEntry6;
    const MAP: &'static str = MAP_CT6;
    fn proto(&self) -> u8 {
        self.proto
    }
    fn partner(&self, entry: &CtEntry6) -> Option<Self> {
        CtKey6::partner(self, entry)
    }
    fn table(dp: &Dataplane) -> &BpfHashMap<MapData, Self, CtEntry6> {
        &dp.ct6
    }
    fn table_mut(dp: &mut Dataplane) -> &mut BpfHashMap<MapData, Self, CtEntry6> {
        &mut dp.ct6
    }
}

/// Default idle timeout of SCTP flows: several missed heartbeats.
pub const SCTP_TIMEOUT_DEFAULT_SECS: u64 = 300;

/// How long an idle entry lives, by protocol and TCP state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtTimeouts {
    /// TCP before the handshake completes.
    pub tcp_syn: Duration,
    pub tcp_established: Duration,
    /// TCP after a FIN or RST.
    pub tcp_closing: Duration,
    pub udp: Duration,
    /// SCTP flows are tracked like UDP (no association state), with their own timeout: an
    /// idle association still sends a HEARTBEAT every 30 s (RFC 9260's default).
    pub sctp: Duration,
    pub icmp: Duration,
}

impl Default for CtTimeouts {
    /// Cilium's defaults (TCP 6 h, SYN 60 s, closing 10 s, other 60 s), ICMP 30 s.
    fn default() -> Self {
        Self {
            tcp_syn: Duration::from_secs(60),
            tcp_established: Duration::from_secs(6 * 3600),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(60),
            sctp: Duration::from_secs(SCTP_TIMEOUT_DEFAULT_SECS),
            icmp: Duration::from_secs(30),
        }
    }
}

impl CtTimeouts {
    /// The idle timeout of one entry.
    #[must_use]
    pub fn of<K: FlowKey>(&self, key: &K, entry: &K::Entry) -> Duration {
        match key.proto() {
            PROTO_TCP => match entry.state() {
                CT_ST_ESTABLISHED => self.tcp_established,
                CT_ST_CLOSING | CT_ST_RESET => self.tcp_closing,
                _ => self.tcp_syn,
            },
            PROTO_ICMP | PROTO_ICMPV6 => self.icmp,
            PROTO_SCTP => self.sctp,
            _ => self.udp,
        }
    }

    /// Whether the entry has been idle longer than its timeout. `last_seen_ns` may lag the
    /// last packet by up to `CT_REFRESH_NS` (the data path refreshes it at most that often),
    /// so that much slack is added.
    fn expired<K: FlowKey>(&self, key: &K, entry: &K::Entry, now_ns: u64) -> bool {
        let idle = now_ns.saturating_sub(entry.last_seen_ns());
        u128::from(idle) > self.of(key, entry).as_nanos() + u128::from(CT_REFRESH_NS)
    }
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub removed: usize,
    pub remaining: usize,
}

/// The keys to delete: entries expired whose partner (if any) is expired or gone. Both
/// directions of a flow go together, so a one-way stream keeps its reply slot (and its
/// masquerade port) as long as it flows.
#[must_use]
pub fn expired_keys<K: FlowKey>(
    entries: &HashMap<K, K::Entry>,
    timeouts: &CtTimeouts,
    now_ns: u64,
) -> Vec<K> {
    entries
        .iter()
        .filter(|&(key, entry)| {
            timeouts.expired(key, entry, now_ns)
                && key
                    .partner(entry)
                    .and_then(|p| entries.get_key_value(&p))
                    .is_none_or(|(pk, pe)| timeouts.expired(pk, pe, now_ns))
        })
        .map(|(key, _)| *key)
        .collect()
}

/// Whether a flow involves container address `a` (network order), in either direction or
/// as the owner of a translation.
fn of_addr(a: u32, key: &CtKey, entry: &CtEntry) -> bool {
    key.saddr_be == a || key.daddr_be == a || entry.owner_addr_be == a
}

/// Whether an IPv4 flow uses one of the host ports `ports` ((port, protocol), host order).
fn of_host_ports(ports: &HashSet<(u16, u8)>, key: &CtKey, entry: &CtEntry) -> bool {
    (entry.kind == CT_KIND_PUBLISHED && ports.contains(&(entry.xlate_port, key.proto)))
        || (key.dir == CT_DIR_IN && ports.contains(&(key.dport, key.proto)))
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of `bpf_ktime_get_ns`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000_000 + nanos
}

impl Dataplane {
    /// The conntrack entries, as stored in `ND_CT`.
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtEntry)>, DataplaneError> {
        self.entries()
    }

    /// The IPv6 conntrack entries, as stored in `ND_CT6`.
    pub fn conntrack6(&self) -> Result<Vec<(CtKey6, CtEntry6)>, DataplaneError> {
        self.entries()
    }

    /// A table's entries with `BPF_MAP_LOOKUP_BATCH`; entry by entry where the kernel
    /// cannot.
    fn entries<K: FlowKey>(&self) -> Result<Vec<(K, K::Entry)>, DataplaneError> {
        match super::batch::lookup_all(K::table(self).map().fd().as_fd()) {
            Ok(entries) => Ok(entries),
            Err(e) => {
                tracing::debug!("batch lookup of {}: {e}; iterating", K::MAP);
                self.entries_iter()
            }
        }
    }

    /// [`Self::entries`] entry by entry (two syscalls per entry).
    pub(super) fn entries_iter<K: FlowKey>(&self) -> Result<Vec<(K, K::Entry)>, DataplaneError> {
        K::table(self)
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", K::MAP))
    }

    /// Deletes every flow of the container address `addr` (both directions, whatever the
    /// kind: published, masqueraded, forwarded, linked). Returns how many entries.
    pub fn flush_conntrack(&mut self, addr: Ipv4Addr) -> Result<usize, DataplaneError> {
        let a = u32::from_ne_bytes(addr.octets());
        self.flush_where(|key: &CtKey, entry| of_addr(a, key, entry))
    }

    /// [`Self::flush_conntrack`] for an IPv6 container address (`ND_CT6`).
    pub fn flush_conntrack6(&mut self, addr: Ipv6Addr) -> Result<usize, DataplaneError> {
        let a = addr.octets();
        self.flush_where(|key: &CtKey6, entry| {
            key.saddr == a || key.daddr == a || entry.owner_addr == a
        })
    }

    /// Deletes the flows that use host port `port`/`proto` (host order): replies of
    /// published-port flows (whatever container they went to: the stale-UDP case) and
    /// masqueraded flows that were given the port before it was published.
    pub fn flush_conntrack_host_port(
        &mut self,
        port: u16,
        proto: u8,
    ) -> Result<usize, DataplaneError> {
        self.flush_conntrack_host_ports(&HashSet::from([(port, proto)]))
    }

    /// [`Self::flush_conntrack_host_port`] for many (port, protocol) pairs, in one pass over
    /// each family's table.
    pub fn flush_conntrack_host_ports(
        &mut self,
        ports: &HashSet<(u16, u8)>,
    ) -> Result<usize, DataplaneError> {
        let v4 = self.flush_where(|key: &CtKey, entry| of_host_ports(ports, key, entry))?;
        let v6 = self.flush_host_ports6(ports)?;
        Ok(v4 + v6)
    }

    /// [`Self::flush_conntrack`] and [`Self::flush_conntrack_host_ports`] together, in one
    /// pass over each family's table (an endpoint create or remove).
    pub fn flush_conntrack_endpoint(
        &mut self,
        addr: Ipv4Addr,
        ports: &HashSet<(u16, u8)>,
    ) -> Result<usize, DataplaneError> {
        let a = u32::from_ne_bytes(addr.octets());
        let v4 = self.flush_where(|key: &CtKey, entry| {
            of_addr(a, key, entry) || of_host_ports(ports, key, entry)
        })?;
        let v6 = self.flush_host_ports6(ports)?;
        Ok(v4 + v6)
    }

    fn flush_host_ports6(&mut self, ports: &HashSet<(u16, u8)>) -> Result<usize, DataplaneError> {
        self.flush_where(|key: &CtKey6, entry| {
            (entry.kind == CT_KIND_PUBLISHED && ports.contains(&(entry.xlate_port, key.proto)))
                || (key.dir == CT_DIR_IN && ports.contains(&(key.dport, key.proto)))
        })
    }

    /// Deletes expired entries of both tables (see [`expired_keys`]).
    pub fn sweep_conntrack(
        &mut self,
        timeouts: &CtTimeouts,
        now_ns: u64,
    ) -> Result<SweepReport, DataplaneError> {
        let v4 = self.sweep::<CtKey>(timeouts, now_ns)?;
        let v6 = self.sweep::<CtKey6>(timeouts, now_ns)?;
        Ok(SweepReport {
            removed: v4.removed + v6.removed,
            remaining: v4.remaining + v6.remaining,
        })
    }

    fn sweep<K: FlowKey>(
        &mut self,
        timeouts: &CtTimeouts,
        now_ns: u64,
    ) -> Result<SweepReport, DataplaneError> {
        let entries: HashMap<K, K::Entry> = self.entries()?.into_iter().collect();
        let expired = expired_keys(&entries, timeouts, now_ns);
        let removed = self.remove_keys(expired.iter())?;
        Ok(SweepReport {
            removed,
            remaining: entries.len() - removed,
        })
    }

    /// Deletes the entries matching `pred`, and their partners.
    fn flush_where<K: FlowKey>(
        &mut self,
        pred: impl Fn(&K, &K::Entry) -> bool,
    ) -> Result<usize, DataplaneError> {
        let mut doomed = HashSet::new();
        for (key, entry) in self.entries::<K>()? {
            if pred(&key, &entry) {
                doomed.extend(key.partner(&entry));
                doomed.insert(key);
            }
        }
        self.remove_keys(doomed.iter())
    }

    fn remove_keys<'a, K: FlowKey + 'a>(
        &mut self,
        keys: impl Iterator<Item = &'a K>,
    ) -> Result<usize, DataplaneError> {
        let table = K::table_mut(self);
        let mut removed = 0;
        for key in keys {
            match table.remove(key) {
                Ok(()) => removed += 1,
                // Gone since we listed it (a partner removed twice, a racing flush).
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(map_err("remove from", K::MAP)(err)),
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use netdriver_common::{CT_DIR_OUT, CT_KIND_MASQ, CT_ST_NEW, PROTO_UDP};

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn masq_pair(out_seen: u64, in_seen: u64) -> HashMap<CtKey, CtEntry> {
        let out = CtKey {
            saddr_be: 1,
            daddr_be: 2,
            sport: 1000,
            dport: 53,
            proto: PROTO_UDP,
            dir: CT_DIR_OUT,
            _pad: [0; 2],
        };
        let out_e = CtEntry {
            xlate_addr_be: 3,
            xlate_port: 61000,
            kind: CT_KIND_MASQ,
            last_seen_ns: out_seen,
            ..CtEntry::default()
        };
        let inn = out.partner(&out_e).unwrap();
        let in_e = CtEntry {
            xlate_addr_be: 1,
            xlate_port: 1000,
            kind: CT_KIND_MASQ,
            last_seen_ns: in_seen,
            ..CtEntry::default()
        };
        HashMap::from([(out, out_e), (inn, in_e)])
    }

    #[test]
    fn pairs_expire_together() {
        let t = CtTimeouts {
            udp: Duration::from_secs(30),
            ..CtTimeouts::default()
        };
        // A one-way stream: the reply entry is old, the forward one fresh: both stay.
        let entries = masq_pair(100 * SEC, 0);
        assert!(expired_keys(&entries, &t, 101 * SEC).is_empty());
        // Idle for the timeout plus the refresh slack: still there (the data path may not
        // have refreshed the time of a flow that is still active).
        assert!(expired_keys(&entries, &t, 131 * SEC).is_empty());
        // Both idle past the timeout and the slack: both go.
        assert_eq!(expired_keys(&entries, &t, 131 * SEC + 1).len(), 2);
        // A lone entry whose partner is gone expires alone.
        let mut lone = masq_pair(0, 0);
        lone.retain(|k, _| k.dir == CT_DIR_OUT);
        assert_eq!(expired_keys(&lone, &t, 31 * SEC + 1).len(), 1);
    }

    #[test]
    fn timeouts_follow_tcp_state() {
        let t = CtTimeouts::default();
        let key = CtKey {
            proto: PROTO_TCP,
            ..CtKey::default()
        };
        let mut e = CtEntry {
            state: CT_ST_NEW,
            ..CtEntry::default()
        };
        assert_eq!(t.of(&key, &e), t.tcp_syn);
        e.state = CT_ST_ESTABLISHED;
        assert_eq!(t.of(&key, &e), t.tcp_established);
        e.state = CT_ST_CLOSING;
        assert_eq!(t.of(&key, &e), t.tcp_closing);
        e.state = CT_ST_RESET;
        assert_eq!(t.of(&key, &e), t.tcp_closing);
        let icmp = CtKey {
            proto: PROTO_ICMP,
            ..CtKey::default()
        };
        assert_eq!(t.of(&icmp, &e), t.icmp);
        let sctp = CtKey {
            proto: PROTO_SCTP,
            ..CtKey::default()
        };
        assert_eq!(t.of(&sctp, &e), Duration::from_secs(300));
        assert_ne!(t.sctp, t.udp, "SCTP has its own timeout");
    }
}
