//! netdriver: an eBPF-accelerated container network driver.
//!
//! The library holds all logic; `main.rs` only parses the command line.

pub mod api;
pub mod cli;
pub mod client;
pub mod cni;
pub mod daemon;
pub mod dataplane;
pub mod fault;
pub mod ipam;
pub mod model;
pub mod netlink;
pub mod plugin;
pub mod ports;
pub mod service;
pub mod store;
