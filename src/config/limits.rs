//! `[limits]`: how much one caller may ask of the service.

use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};

/// Per-subject and per-client-address rate limits, and the bound on refusal records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// Whether the rate limits apply at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Exchanges per subject (issuer and `sub`), counted once its token is validated.
    #[serde(default = "default_per_subject")]
    pub per_subject: RateSettings,
    /// Exchanges per client address (an IPv6 caller counts by its /64), before anything
    /// else is read.
    #[serde(default = "default_per_client_address")]
    pub per_client_address: RateSettings,
    /// Refusal records written per subject; refusals beyond it are still answered, and
    /// counted, but not written.
    #[serde(default = "default_refusal_records")]
    pub refusal_records_per_subject: RateSettings,
    /// Subjects, and client addresses, tracked at most by each limit.
    #[serde(default = "default_max_tracked_keys")]
    pub max_tracked_keys: u64,
}

/// A rate: `per_minute` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSettings {
    /// Average per minute.
    pub per_minute: u32,
    /// At once, after a quiet spell.
    pub burst: u32,
}

fn default_true() -> bool {
    true
}
fn default_per_subject() -> RateSettings {
    RateSettings {
        per_minute: 600,
        burst: 100,
    }
}
fn default_per_client_address() -> RateSettings {
    RateSettings {
        per_minute: 6_000,
        burst: 1_000,
    }
}
fn default_refusal_records() -> RateSettings {
    RateSettings {
        per_minute: 60,
        burst: 20,
    }
}
fn default_max_tracked_keys() -> u64 {
    100_000
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            per_subject: default_per_subject(),
            per_client_address: default_per_client_address(),
            refusal_records_per_subject: default_refusal_records(),
            max_tracked_keys: default_max_tracked_keys(),
        }
    }
}

impl RateSettings {
    /// `per_minute/min, burst N`, for `check-config`.
    pub fn describe(&self) -> String {
        format!("{}/min, burst {}", self.per_minute, self.burst)
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(1..=60_000_000).contains(&self.per_minute) {
            return Err(invalid(
                format!("{key}.per_minute"),
                "must be between 1 and 60000000",
            ));
        }
        if !(1..=1_000_000).contains(&self.burst) {
            return Err(invalid(
                format!("{key}.burst"),
                "must be between 1 and 1000000",
            ));
        }
        Ok(())
    }
}

impl LimitsSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.per_subject.validate("limits.per_subject")?;
        self.per_client_address
            .validate("limits.per_client_address")?;
        self.refusal_records_per_subject
            .validate("limits.refusal_records_per_subject")?;
        if !(100..=10_000_000).contains(&self.max_tracked_keys) {
            return Err(invalid(
                "limits.max_tracked_keys",
                "must be between 100 and 10000000",
            ));
        }
        Ok(())
    }
}
