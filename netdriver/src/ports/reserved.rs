//! `net.ipv4.ip_local_reserved_ports` (of the daemon's network namespace; it covers IPv6 too)
//! kept in sync with the published host ports, so the kernel never hands a published port
//! out as an ephemeral port. The ports netdriver added are recorded in a file of the state
//! directory: only those are ever removed, so the administrator's entries stay, and a
//! restarted daemon knows which entries are its own.

use std::{
    collections::BTreeSet,
    fs, io,
    path::{Path, PathBuf},
};

/// The sysctl, as seen by the calling thread's namespace.
pub const SYSCTL: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
/// The record of netdriver's own entries, in the state directory.
const RECORD: &str = "reserved-ports";

#[derive(Debug, thiserror::Error)]
pub enum ReservedPortsError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {} ({value:?}): expected ports and ranges separated by commas", path.display())]
    Parse { path: PathBuf, value: String },
}

/// Parses the sysctl's syntax: `1,2-5,8` (empty: none).
#[must_use]
pub fn parse(text: &str) -> Option<BTreeSet<u16>> {
    let mut out = BTreeSet::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
        if lo > hi {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(out)
}

/// Formats ports the way the kernel prints them: ascending, consecutive ports as ranges.
#[must_use]
pub fn format(ports: &BTreeSet<u16>) -> String {
    super::runs::spans(ports)
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What the sysctl should hold and which entries are ours, given its current value, the
/// entries recorded as ours and the published ports. A published port the administrator
/// had reserved already stays the administrator's.
#[must_use]
pub fn merge(
    current: &BTreeSet<u16>,
    ours_before: &BTreeSet<u16>,
    published: &BTreeSet<u16>,
) -> (BTreeSet<u16>, BTreeSet<u16>) {
    let admin: BTreeSet<u16> = current.difference(ours_before).copied().collect();
    let ours: BTreeSet<u16> = published.difference(&admin).copied().collect();
    (admin.union(&ours).copied().collect(), ours)
}

fn read(path: &Path) -> Result<BTreeSet<u16>, ReservedPortsError> {
    let text = fs::read_to_string(path).map_err(|source| ReservedPortsError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })?;
    parse(&text).ok_or_else(|| ReservedPortsError::Parse {
        path: path.to_owned(),
        value: text,
    })
}

fn write(path: &Path, ports: &BTreeSet<u16>) -> Result<(), ReservedPortsError> {
    fs::write(path, format(ports) + "\n").map_err(|source| ReservedPortsError::Io {
        op: "write",
        path: path.to_owned(),
        source,
    })
}

fn read_record(path: &Path) -> Result<BTreeSet<u16>, ReservedPortsError> {
    match read(path) {
        Err(ReservedPortsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(BTreeSet::new())
        }
        other => other,
    }
}

/// Makes the sysctl reserve exactly the administrator's entries plus `published`.
pub fn sync(state_dir: &Path, published: &BTreeSet<u16>) -> Result<(), ReservedPortsError> {
    sync_at(Path::new(SYSCTL), &state_dir.join(RECORD), published)
}

/// Removes netdriver's entries from the sysctl and forgets the record (cleanup).
pub fn release(state_dir: &Path) -> Result<(), ReservedPortsError> {
    let record = state_dir.join(RECORD);
    sync_at(Path::new(SYSCTL), &record, &BTreeSet::new())?;
    match fs::remove_file(&record) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(ReservedPortsError::Io {
            op: "remove",
            path: record,
            source,
        }),
        _ => Ok(()),
    }
}

fn sync_at(
    sysctl: &Path,
    record: &Path,
    published: &BTreeSet<u16>,
) -> Result<(), ReservedPortsError> {
    let current = read(sysctl)?;
    let ours_before = read_record(record)?;
    let (wanted, ours) = merge(&current, &ours_before, published);
    if wanted == current && ours == ours_before {
        return Ok(());
    }
    // Recorded first as a superset, so that a crash between the two writes never makes one
    // of our entries look like the administrator's.
    write(record, &ours_before.union(&ours).copied().collect())?;
    if wanted != current {
        write(sysctl, &wanted)?;
    }
    write(record, &ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ports: &[u16]) -> BTreeSet<u16> {
        ports.iter().copied().collect()
    }

    #[test]
    fn parses_and_formats_the_kernel_syntax() {
        assert_eq!(parse("").unwrap(), set(&[]));
        assert_eq!(parse("\n").unwrap(), set(&[]));
        assert_eq!(
            parse("80,8000-8002\n").unwrap(),
            set(&[80, 8000, 8001, 8002])
        );
        assert_eq!(
            format(&set(&[80, 8000, 8001, 8002, 9000])),
            "80,8000-8002,9000"
        );
        assert_eq!(format(&set(&[])), "");
        assert!(parse("x").is_none());
        assert!(parse("9-8").is_none());
        assert!(parse("70000").is_none());
    }

    #[test]
    fn keeps_the_administrators_entries() {
        // The admin reserved 22 and 8080; we had added 9000, 9001 is published now.
        let (wanted, ours) = merge(&set(&[22, 8080, 9000]), &set(&[9000]), &set(&[8080, 9001]));
        assert_eq!(wanted, set(&[22, 8080, 9001]));
        // 8080 was the admin's before it was published: unpublishing it leaves it.
        assert_eq!(ours, set(&[9001]));
        let (wanted, ours) = merge(&wanted, &ours, &set(&[]));
        assert_eq!(wanted, set(&[22, 8080]));
        assert_eq!(ours, set(&[]));
    }

    #[test]
    fn sync_writes_files() {
        let dir = std::env::temp_dir().join(format!("nd-reserved-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (sysctl, record) = (dir.join("sysctl"), dir.join("record"));
        fs::write(&sysctl, "22\n").unwrap();
        sync_at(&sysctl, &record, &set(&[8080, 8081])).unwrap();
        assert_eq!(fs::read_to_string(&sysctl).unwrap(), "22,8080-8081\n");
        assert_eq!(read_record(&record).unwrap(), set(&[8080, 8081]));
        sync_at(&sysctl, &record, &set(&[8081])).unwrap();
        assert_eq!(fs::read_to_string(&sysctl).unwrap(), "22,8081\n");
        sync_at(&sysctl, &record, &set(&[])).unwrap();
        assert_eq!(fs::read_to_string(&sysctl).unwrap(), "22\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
