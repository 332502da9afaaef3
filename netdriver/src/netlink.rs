//! Bridges, veth pairs, addresses and routes over rtnetlink.
