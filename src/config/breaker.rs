//! Circuit breaker settings, shared by every upstream that has one (`[google.breaker]`,
//! `[jwks.breaker]`).

use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When a circuit breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Failed calls in a row (429, 5xx, connection failures, timeouts) that open the
    /// breaker, when they all fall within `window_secs` of the first.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Seconds within which `failure_threshold` failures must fall to open the breaker.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// Seconds an open breaker answers at once without calling; then one probe call decides
    /// whether it closes or stays open for another cool-down.
    #[serde(default = "default_cool_down")]
    pub cool_down_secs: u64,
}

fn default_failure_threshold() -> u32 {
    5
}
fn default_window() -> u64 {
    30
}
fn default_cool_down() -> u64 {
    15
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: default_failure_threshold(),
            window_secs: default_window(),
            cool_down_secs: default_cool_down(),
        }
    }
}

impl BreakerSettings {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(1..=1000).contains(&self.failure_threshold) {
            return Err(invalid(
                format!("{key}.failure_threshold"),
                "must be between 1 and 1000",
            ));
        }
        if !(1..=3600).contains(&self.window_secs) {
            return Err(invalid(
                format!("{key}.window_secs"),
                "must be between 1 and 3600",
            ));
        }
        if !(1..=3600).contains(&self.cool_down_secs) {
            return Err(invalid(
                format!("{key}.cool_down_secs"),
                "must be between 1 and 3600",
            ));
        }
        Ok(())
    }

    /// Time within which the failures must fall.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }

    /// Time an open breaker waits before a probe.
    pub fn cool_down(&self) -> Duration {
        Duration::from_secs(self.cool_down_secs)
    }
}
