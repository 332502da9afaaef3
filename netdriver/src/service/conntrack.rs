//! The conntrack sweeper and the "table full" warnings.

use std::time::Duration;

use netdriver_common::{DROP_CT_FAILED, DROP_NAMES, DROP_NAT_EXHAUSTED};

use super::{ServiceError, State};
use crate::dataplane::{CtTimeouts, Tuning, monotonic_ns};

/// Conntrack settings of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConntrackConfig {
    pub tuning: Tuning,
    pub timeouts: CtTimeouts,
    /// How often expired entries are swept; zero means the default.
    pub sweep_interval: Duration,
}

/// The sweep interval when none is configured.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

impl ConntrackConfig {
    #[must_use]
    pub fn sweep_interval(&self) -> Duration {
        if self.sweep_interval.is_zero() {
            DEFAULT_SWEEP_INTERVAL
        } else {
            self.sweep_interval
        }
    }
}

/// Counters whose growth means new flows were refused.
const REFUSALS: [u32; 2] = [DROP_CT_FAILED, DROP_NAT_EXHAUSTED];

impl State {
    /// Deletes expired entries; logs when new flows were refused since the last sweep.
    pub(super) fn sweep_conntrack(&mut self) -> Result<(), ServiceError> {
        let report = self
            .dp
            .sweep_conntrack(&self.config.conntrack.timeouts, monotonic_ns())?;
        self.ct_entries = report.remaining;
        if report.removed > 0 {
            tracing::debug!(
                removed = report.removed,
                remaining = report.remaining,
                "conntrack sweep"
            );
        }
        let drops = self.dp.drop_counters()?;
        for (slot, reason) in REFUSALS.into_iter().enumerate() {
            let i = reason as usize;
            let now = drops.get(i).copied().unwrap_or(0);
            let before = std::mem::replace(&mut self.refusals[slot], now);
            if now > before {
                tracing::warn!(
                    reason = DROP_NAMES[i],
                    refused = now - before,
                    entries = report.remaining,
                    max_entries = self.config.conntrack.tuning.ct_max_entries,
                    "new flows refused: conntrack table full or no free masquerade port \
                     (raise --ct-max-entries or widen --nat-port-range); existing flows continue"
                );
            }
        }
        Ok(())
    }
}
