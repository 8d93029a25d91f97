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
        Ok(())
    }
}
