//! `[cache]`: the credential cache.

use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    /// Redis shared by every replica as the cache's second tier (`redis://…` or
    /// `rediss://…`); unset: each replica keeps its own cache only.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// 32-byte key (64 hex digits or base64) that encrypts and names the entries in Redis;
    /// the same on every replica. Required with `redis_url` unless `redis_key_file` is set.
    #[serde(default)]
    pub redis_key: Option<String>,
    /// A file holding `redis_key` (a mounted Secret, for instance).
    #[serde(default)]
    pub redis_key_file: Option<PathBuf>,
    /// Prefix of every Redis key this service writes.
    #[serde(default = "default_redis_key_prefix")]
    pub redis_key_prefix: String,
    /// A Redis command taking longer than this counts as a failure: the replica then uses
    /// its own cache and exchanges until Redis answers again.
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// How long a replica waits for another replica's exchange of the same credential
    /// before it exchanges itself.
    #[serde(default = "default_redis_lock_wait_ms")]
    pub redis_lock_wait_ms: u64,
}

fn default_redis_key_prefix() -> String {
    "sts-bridge:".into()
}
fn default_redis_timeout_ms() -> u64 {
    100
}
fn default_redis_lock_wait_ms() -> u64 {
    3000
}

/// Decodes a 32-byte key from 64 hex digits or base64 (standard or URL-safe, padded or not).
fn decode_key(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        engines.iter().find_map(|e| e.decode(text).ok())?
    };
    bytes.try_into().ok()
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
            redis_url: None,
            redis_key: None,
            redis_key_file: None,
            redis_key_prefix: default_redis_key_prefix(),
            redis_timeout_ms: default_redis_timeout_ms(),
            redis_lock_wait_ms: default_redis_lock_wait_ms(),
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
        self.validated_tokens.validate()?;
        if self.redis_url.is_some() {
            self.validate_redis()?;
        }
        Ok(())
    }

    fn validate_redis(&self) -> Result<(), ConfigError> {
        let url = self.redis_url.as_deref().unwrap_or_default();
        // The URL may hold a password: the message names the key, never the value.
        if url.starts_with("rediss://") {
            return Err(invalid(
                "cache.redis_url",
                "rediss:// (TLS) is not supported by this build; reach Redis over a private network or a TLS sidecar",
            ));
        }
        if redis::Client::open(url).is_err() {
            return Err(invalid(
                "cache.redis_url",
                "must be a redis://host:port/db or unix:///path URL",
            ));
        }
        self.redis_key_bytes()?;
        if self.redis_key_prefix.is_empty()
            || self.redis_key_prefix.len() > 64
            || self
                .redis_key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "cache.redis_key_prefix",
                "must be 1 to 64 characters without spaces",
            ));
        }
        if !(1..=10_000).contains(&self.redis_timeout_ms) {
            return Err(invalid(
                "cache.redis_timeout_ms",
                "must be between 1 and 10000",
            ));
        }
        if !(10..=60_000).contains(&self.redis_lock_wait_ms) {
            return Err(invalid(
                "cache.redis_lock_wait_ms",
                "must be between 10 and 60000",
            ));
        }
        Ok(())
    }

    /// The shared tier's key, from `redis_key` or `redis_key_file`.
    pub fn redis_key_bytes(&self) -> Result<[u8; 32], ConfigError> {
        let (key, text) = match (&self.redis_key, &self.redis_key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "cache.redis_key",
                    "set either cache.redis_key or cache.redis_key_file, not both",
                ))
            }
            (Some(text), None) => ("cache.redis_key", text.clone()),
            (None, Some(path)) => (
                "cache.redis_key_file",
                std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        "cache.redis_key_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?,
            ),
            (None, None) => {
                return Err(invalid(
                    "cache.redis_key",
                    "required with cache.redis_url (or cache.redis_key_file): 32 bytes as 64 hex digits or base64, the same on every replica (openssl rand -base64 32)",
                ))
            }
        };
        decode_key(&text).ok_or_else(|| invalid(key, "must be 32 bytes as 64 hex digits or base64"))
    }
}
