//! Listing a hash map with `BPF_MAP_LOOKUP_BATCH`: one syscall per few thousand entries,
//! where aya's iterator makes two per entry (next key, then lookup). `ND_CT` holds tens of
//! thousands of flows, and every endpoint create and remove lists it.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per call; a bucket with more than this many entries makes the kernel
/// answer `ENOSPC`, and the call is repeated with room for twice as many.
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every (key, value) of the hash map `fd` (keys of `K`'s size, values of `V`'s: not a
/// per-CPU map). Fails with the kernel's error, e.g. `EINVAL` where the kernel has no batch
/// operations for the map.
pub(super) fn lookup_all<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    // The hash map's batch token is a bucket index (u32); room for a u64 keeps it aligned.
    let mut token = 0u64;
    let mut next = 0u64;
    let mut chunk = CHUNK;
    let mut first = true;
    loop {
        let mut keys = vec![0u8; chunk * size_of::<K>()];
        let mut values = vec![0u8; chunk * size_of::<V>()];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw mut token as u64 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(chunk).expect("chunk fits"),
            map_fd: u32::try_from(fd.as_raw_fd()).expect("fds are non-negative"),
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers that hold `count` keys and values and at the
        // tokens; all outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        let done = match err.as_ref().and_then(io::Error::raw_os_error) {
            None => false,
            Some(libc::ENOENT) => true,
            Some(libc::ENOSPC) if attr.count == 0 => {
                chunk *= 2;
                continue;
            }
            Some(_) => return Err(err.expect("an error")),
        };
        let count = attr.count as usize;
        for i in 0..count {
            // SAFETY: the kernel filled `count` keys and values; `Pod` types are valid for
            // any bytes, and the reads are unaligned.
            let (k, v) = unsafe {
                (
                    keys.as_ptr()
                        .add(i * size_of::<K>())
                        .cast::<K>()
                        .read_unaligned(),
                    values
                        .as_ptr()
                        .add(i * size_of::<V>())
                        .cast::<V>()
                        .read_unaligned(),
                )
            };
            out.push((k, v));
        }
        if done {
            return Ok(out);
        }
        token = next;
        first = false;
    }
}
