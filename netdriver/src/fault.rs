//! Crash points for the crash-consistency tests: with `NETDRIVER_CRASH_AT=<point>` in its
//! environment the daemon aborts, as a SIGKILL would stop it, when it reaches that point.
//! Without the variable a point costs one environment lookup.

/// Aborts the process if `NETDRIVER_CRASH_AT` names `point`.
pub fn point(point: &str) {
    if std::env::var_os("NETDRIVER_CRASH_AT").is_some_and(|p| p == point) {
        eprintln!("netdriver: crash point {point} reached; aborting");
        std::process::abort();
    }
}
