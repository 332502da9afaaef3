//! Grouping bindings into runs of consecutive ports, which the data path stores as ranges,
//! and splitting a range into the aligned blocks an LPM trie holds.

use std::net::IpAddr;

use super::{PortBinding, Proto};

/// Consecutive host ports to consecutive container ports, on one address and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRun {
    pub proto: Proto,
    pub host_ip: IpAddr,
    pub host_start: u16,
    pub host_end: u16,
    pub container_start: u16,
}

impl PortRun {
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.host_end - self.host_start) + 1
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The binding of a run of one port.
    #[must_use]
    pub fn first(&self) -> PortBinding {
        PortBinding {
            proto: self.proto,
            host_ip: self.host_ip,
            host_port: self.host_start,
            container_port: self.container_start,
        }
    }

    /// The aligned blocks covering the run: (first port, number of fixed leading bits).
    #[must_use]
    pub fn blocks(&self) -> Vec<(u16, u32)> {
        blocks(self.host_start, self.host_end)
    }
}

/// The aligned blocks covering `start..=end`: (first port, number of fixed leading bits).
#[must_use]
pub fn blocks(start: u16, end: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut start, end) = (u32::from(start), u32::from(end));
    while start <= end {
        // The largest power of two that `start` is aligned to and that fits in the rest.
        let mut size = if start == 0 {
            1 << 16
        } else {
            1 << start.trailing_zeros()
        };
        while start + size - 1 > end {
            size >>= 1;
        }
        let first = u16::try_from(start).expect("inside the range");
        out.push((first, 16 - size.trailing_zeros()));
        start += size;
    }
    out
}

/// The maximal spans of consecutive ports in `ports`, inclusive, ascending.
#[must_use]
pub fn spans(ports: &std::collections::BTreeSet<u16>) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match out.last_mut() {
            Some((_, hi)) if u32::from(*hi) + 1 == u32::from(p) => *hi = p,
            _ => out.push((p, p)),
        }
    }
    out
}

/// The runs of `bindings`, maximal, in order of (protocol, address, host port).
#[must_use]
pub fn runs(bindings: &[PortBinding]) -> Vec<PortRun> {
    let mut sorted = bindings.to_vec();
    sorted.sort_by_key(|b| (b.proto, b.host_ip, b.host_port));
    let mut out: Vec<PortRun> = Vec::new();
    for b in sorted {
        if let Some(last) = out.last_mut()
            && last.proto == b.proto
            && last.host_ip == b.host_ip
            && u32::from(last.host_end) + 1 == u32::from(b.host_port)
            && u32::from(last.container_start) + u32::from(b.host_port - last.host_start)
                == u32::from(b.container_port)
        {
            last.host_end = b.host_port;
            continue;
        }
        out.push(PortRun {
            proto: b.proto,
            host_ip: b.host_ip,
            host_start: b.host_port,
            host_end: b.host_port,
            container_start: b.container_port,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(host_port: u16, container_port: u16) -> PortBinding {
        PortBinding {
            proto: Proto::Tcp,
            host_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
            host_port,
            container_port,
        }
    }

    #[test]
    fn consecutive_bindings_form_runs() {
        let mut bindings: Vec<_> = (8000..=8999).map(|p| b(p, p)).collect();
        bindings.push(b(9000, 80)); // breaks the container sequence
        bindings.push(b(9001, 81));
        bindings.push(b(7000, 7000));
        bindings.push(PortBinding {
            proto: Proto::Udp,
            ..b(8000, 8000)
        });
        let runs = runs(&bindings);
        let spans: Vec<_> = runs
            .iter()
            .map(|r| (r.proto, r.host_start, r.host_end, r.container_start))
            .collect();
        assert_eq!(
            spans,
            vec![
                (Proto::Tcp, 7000, 7000, 7000),
                (Proto::Tcp, 8000, 8999, 8000),
                (Proto::Tcp, 9000, 9001, 80),
                (Proto::Udp, 8000, 8000, 8000),
            ]
        );
    }

    #[test]
    fn blocks_cover_exactly_the_run() {
        for (start, end) in [
            (8000, 8999),
            (0, 65535),
            (1, 1),
            (65535, 65535),
            (1024, 11023),
        ] {
            let run = PortRun {
                proto: Proto::Tcp,
                host_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
                host_start: start,
                host_end: end,
                container_start: start,
            };
            let blocks = run.blocks();
            assert!(blocks.len() <= 30, "{start}-{end}: {}", blocks.len());
            let mut next = u32::from(start);
            for (first, bits) in &blocks {
                assert_eq!(u32::from(*first), next);
                let size = 1u32 << (16 - bits);
                assert_eq!(u32::from(*first) % size, 0, "aligned");
                next += size;
            }
            assert_eq!(next, u32::from(end) + 1, "{start}-{end}");
        }
    }
}
