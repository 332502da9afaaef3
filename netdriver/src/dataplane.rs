//! Loads the eBPF programs, pins their maps and keeps them up to date.
