//! netdriver's eBPF programs. The programs themselves live in the `netdriver` binary target
//! (`src/main.rs`), which `netdriver/build.rs` builds for `bpfel-unknown-none` with aya-build.
//!
//! This library target exists so that `netdriver` can list this crate as a build-dependency
//! (cargo then rebuilds the daemon when the programs change), as aya-template does. It is
//! also compiled for the host, so it holds nothing that needs the BPF target.
#![no_std]
