//! `[cache]`: the credential cache.

use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};

/// Google clients treat a credential with this little life left as already stale
/// (google-auth's 3 min 45 s threshold), so the refresh margin must not be smaller.
pub const MIN_REFRESH_MARGIN_SECS: u64 = 225;

/// Credential cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Most entries kept.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// A cached credential with less than this left is refreshed in the background.
    #[serde(default = "default_refresh_margin")]
    pub refresh_margin_secs: u64,
    /// A cached credential with less than this left is never handed out.
    #[serde(default = "default_min_remaining")]
    pub min_remaining_secs: u64,
    /// Subject tokens already validated (`[cache.validated_tokens]`).
    #[serde(default)]
    pub validated_tokens: ValidatedTokenSettings,
}

/// The validated-token cache: a token presented again within its lifetime skips the
/// signature check. Revocation, policy and key withdrawal still apply on every request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatedTokenSettings {
    /// Keep validated tokens at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A token is kept until its `exp`, and never longer than this.
    #[serde(default = "default_validated_token_max_secs")]
    pub max_secs: u64,
    /// Most tokens kept.
    #[serde(default = "default_validated_token_max_entries")]
    pub max_entries: u64,
}

impl Default for ValidatedTokenSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_secs: default_validated_token_max_secs(),
            max_entries: default_validated_token_max_entries(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_validated_token_max_secs() -> u64 {
    3600
}
fn default_validated_token_max_entries() -> u64 {
    // Hot tokens (a data tool reuses its token for the hour) are what the cache is for; a
    // bound well below the credential cache's keeps 100,000 subjects under 150 MiB.
    10_000
}

impl ValidatedTokenSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.max_secs) {
            return Err(invalid(
                "cache.validated_tokens.max_secs",
                "must be between 1 and 86400",
            ));
        }
        if !(1..=10_000_000).contains(&self.max_entries) {
            return Err(invalid(
                "cache.validated_tokens.max_entries",
                "must be between 1 and 10000000",
            ));
        }
        Ok(())
    }
}

fn default_max_entries() -> u64 {
    100_000
}
fn default_refresh_margin() -> u64 {
    300
}
fn default_min_remaining() -> u64 {
    60
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_entries: default_max_entries(),
            refresh_margin_secs: default_refresh_margin(),
            min_remaining_secs: default_min_remaining(),
            validated_tokens: ValidatedTokenSettings::default(),
        }
    }
}

impl CacheSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries == 0 {
            return Err(invalid("cache.max_entries", "must be at least 1"));
        }
        if self.refresh_margin_secs < MIN_REFRESH_MARGIN_SECS {
            return Err(invalid(
                "cache.refresh_margin_secs",
                format!(
                    "must be at least {MIN_REFRESH_MARGIN_SECS}: Google client libraries treat a credential with less left as expired and would call again before every request"
                ),
            ));
        }
        if self.refresh_margin_secs > 1800 {
            return Err(invalid("cache.refresh_margin_secs", "must be at most 1800"));
        }
        if self.min_remaining_secs == 0 || self.min_remaining_secs >= self.refresh_margin_secs {
            return Err(invalid(
                "cache.min_remaining_secs",
                "must be at least 1 and below cache.refresh_margin_secs",
            ));
        }
        self.validated_tokens.validate()
    }
}
