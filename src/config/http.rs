//! `[http]`: how strictly the listeners treat what callers send.

use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Inbound HTTP behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Milliseconds a caller has to send a whole request body; a body still incomplete
    /// then is answered 408 and its connection closed.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Whether error descriptions may name other targets, the billing project and the
    /// allowed scopes (useful while setting up; off in production).
    #[serde(default)]
    pub verbose_errors: bool,
}

fn default_body_timeout_ms() -> u64 {
    10_000
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_timeout_ms: default_body_timeout_ms(),
            verbose_errors: false,
        }
    }
}

impl HttpSettings {
    /// The body timeout as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(100..=300_000).contains(&self.body_timeout_ms) {
            return Err(invalid(
                "http.body_timeout_ms",
                "must be between 100 and 300000 milliseconds",
            ));
        }
        Ok(())
    }
}
