//! Step timings of control-plane operations, logged at debug level
//! (`RUST_LOG=netdriver=debug`): where an endpoint create or remove spends its time.

use std::time::Instant;

/// Logs the time each step of one operation took, and the total when dropped.
pub(super) struct Stopwatch {
    op: &'static str,
    subject: String,
    start: Instant,
    last: Instant,
}

impl Stopwatch {
    pub(super) fn new(op: &'static str, subject: &str) -> Self {
        let now = Instant::now();
        Self {
            op,
            subject: subject.to_owned(),
            start: now,
            last: now,
        }
    }

    /// Logs the time since the previous step (or the start) under `step`.
    pub(super) fn lap(&mut self, step: &'static str) {
        let now = Instant::now();
        tracing::debug!(
            op = self.op,
            subject = %self.subject,
            step,
            us = micros(now - self.last),
            "step"
        );
        self.last = now;
    }
}

impl Drop for Stopwatch {
    fn drop(&mut self) {
        tracing::debug!(
            op = self.op,
            subject = %self.subject,
            us = micros(self.start.elapsed()),
            "total"
        );
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
