//! The IPv6 data path, on tc only (`nd_xdp_uplink` passes IPv6 up to `nd_from_uplink`).
//! It follows the IPv4 one step for step and shares its family-neutral parts: the L4 port
//! parsing (`parse::transport`), port rewriting (`nat::rewrite_port`), redirects, the
//! conntrack table operations (`ct::Flow`) and the masquerade port search
//! (`egress::claim_free_port`).
//!
//! Up to four hop-by-hop, destination-options and routing (no segment left) headers are walked
//! past to the L4 header (`parse::ipv6`). A packet whose L4 header is not TCP, UDP, SCTP or
//! `ICMPv6` behind them (fragments, routing headers with segments left, ESP, AH) has no ports
//! and is handled like an IPv4 packet without ports (passed to the kernel, or dropped where
//! policy says so). `ICMPv6` errors about
//! translated flows are translated back to the container (`icmp_err`). `ICMPv6` neighbour discovery,
//! router solicitation/advertisement and MLD always pass untouched.

pub mod container;
pub mod ct;
pub mod egress;
pub mod hairpin;
pub mod icmp_err;
pub mod nat;
pub mod parse;
pub mod policy;
pub mod published;
pub mod uplink;

/// The verdict-shaped answer of `container::from_container` for a new flow that may leave:
/// `nd_from_container` then runs `egress::outbound` as a separate BPF function, next to the
/// first one rather than nested in it (nested, the two stack frames exceed 512 bytes). Not a
/// tc verdict.
pub const GO_OUTBOUND: i32 = i32::MIN;

/// The same for an `ICMPv6` error arriving on an uplink: `nd_from_uplink` then runs
/// `icmp_err::from_uplink` as a separate BPF function.
pub const GO_ICMP_ERROR: i32 = i32::MIN + 1;

/// The same for the first packet of a flow to a host address (the route lookup says local:
/// maybe a hairpin flow to a published port), and for the packets of a container's flow to its
/// own published port (`ND_CT6` entries with `CT_ACT_SELF_HAIRPIN`): `nd_from_container` then
/// runs `hairpin::from_container`, whose work would not fit in the callers' frames.
pub const GO_HAIRPIN: i32 = i32::MIN + 2;
