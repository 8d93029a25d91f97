//! `[jwks]`: how the issuers' discovery documents and key sets are fetched. Their own HTTP
//! client, so a slow issuer cannot hold the connections or the time Google STS needs.

use super::{invalid, BreakerSettings, ConfigError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Outbound behaviour of key-set and discovery fetches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksSettings {
    /// Time to establish a connection to an issuer, in milliseconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Whole-request timeout of one discovery or key-set fetch, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Circuit breaker of each issuer's discovery and key-set endpoints.
    #[serde(default)]
    pub breaker: BreakerSettings,
}

fn default_connect_timeout() -> u64 {
    2_000
}
fn default_timeout() -> u64 {
    5_000
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: default_connect_timeout(),
            timeout_ms: default_timeout(),
            breaker: BreakerSettings::default(),
        }
    }
}

impl JwksSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(100..=60_000).contains(&self.connect_timeout_ms) {
            return Err(invalid(
                "jwks.connect_timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(invalid("jwks.timeout_ms", "must be between 100 and 60000"));
        }
        self.breaker.validate("jwks.breaker")
    }

    /// Time to connect to an issuer.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Timeout of one fetch.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
