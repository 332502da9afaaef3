//! netdriver: an eBPF-accelerated container network driver.
//!
//! The library holds all logic; `main.rs` only parses the command line.

pub mod dataplane;
pub mod netlink;
