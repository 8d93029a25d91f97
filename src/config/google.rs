//! `[google]`: Google endpoints and outbound HTTP behaviour.

use super::{check_url, invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Google endpoints; overridable for tests and development.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleSettings {
    /// Google STS token endpoint.
    #[serde(default = "default_sts_url")]
    pub sts_url: String,
    /// Whole-request timeout for Google calls, in milliseconds.
    #[serde(default = "default_google_timeout")]
    pub timeout_ms: u64,
    /// Seconds a caller is told to wait when Google is unavailable.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
}

fn default_sts_url() -> String {
    "https://sts.googleapis.com/v1/token".into()
}
fn default_google_timeout() -> u64 {
    10_000
}
fn default_retry_after() -> u64 {
    5
}

impl Default for GoogleSettings {
    fn default() -> Self {
        Self {
            sts_url: default_sts_url(),
            timeout_ms: default_google_timeout(),
            retry_after_secs: default_retry_after(),
        }
    }
}

impl GoogleSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_url("google.sts_url", &self.sts_url)?;
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(invalid(
                "google.timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if !(1..=3600).contains(&self.retry_after_secs) {
            return Err(invalid(
                "google.retry_after_secs",
                "must be between 1 and 3600",
            ));
        }
        Ok(())
    }

    /// Timeout of one Google call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
