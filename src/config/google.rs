//! `[google]`: Google endpoints and outbound HTTP behaviour.

use super::{check_url, invalid, BreakerSettings, ConfigError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Google endpoints; overridable for tests and development.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleSettings {
    /// Google STS token endpoint.
    #[serde(default = "default_sts_url")]
    pub sts_url: String,
    /// Base URL of the IAM Credentials API (service-account impersonation and signing).
    #[serde(default = "default_iam_credentials_url")]
    pub iam_credentials_url: String,
    /// A service-account key file holding the service's own Google identity (for
    /// `impersonate` and `firebase` targets); unset: Application Default Credentials
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's, or the metadata server).
    #[serde(default)]
    pub credentials_file: Option<std::path::PathBuf>,
    /// Time to establish a connection to Google STS, in milliseconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Whole-request timeout for Google calls, in milliseconds.
    #[serde(default = "default_google_timeout")]
    pub timeout_ms: u64,
    /// Seconds a caller is told to wait when Google is unavailable.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
    /// Calls made for one exchange when Google answers 429 or 5xx, or the connection
    /// fails or times out (1: no retry); the same for each IAM Credentials call.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Total time for one exchange, retries and their waits included, in milliseconds.
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    /// Seconds a refusal by Google (4xx) is answered again from memory for the same
    /// subject, target, scopes and claims, so a client retrying in a loop does not spend
    /// the project's STS quota; 0 remembers nothing.
    #[serde(default = "default_refusal_memory")]
    pub refusal_memory_secs: u64,
    /// Calls to Google STS in flight at once, background refreshes included; further
    /// exchanges wait for a free slot within their deadline.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_calls: usize,
    /// Circuit breaker of Google STS: once open, exchanges that need Google are answered
    /// `503` with `Retry-After` at once (cached credentials are still served).
    #[serde(default)]
    pub breaker: BreakerSettings,
}

fn default_sts_url() -> String {
    "https://sts.googleapis.com/v1/token".into()
}
fn default_iam_credentials_url() -> String {
    "https://iamcredentials.googleapis.com".into()
}
fn default_connect_timeout() -> u64 {
    2_000
}
fn default_google_timeout() -> u64 {
    10_000
}
fn default_retry_after() -> u64 {
    5
}
fn default_max_attempts() -> u32 {
    3
}
fn default_deadline() -> u64 {
    15_000
}
fn default_max_concurrent() -> usize {
    64
}
fn default_refusal_memory() -> u64 {
    10
}

impl Default for GoogleSettings {
    fn default() -> Self {
        Self {
            sts_url: default_sts_url(),
            iam_credentials_url: default_iam_credentials_url(),
            credentials_file: None,
            connect_timeout_ms: default_connect_timeout(),
            timeout_ms: default_google_timeout(),
            retry_after_secs: default_retry_after(),
            max_attempts: default_max_attempts(),
            deadline_ms: default_deadline(),
            refusal_memory_secs: default_refusal_memory(),
            max_concurrent_calls: default_max_concurrent(),
            breaker: BreakerSettings::default(),
        }
    }
}

impl GoogleSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_url("google.sts_url", &self.sts_url)?;
        check_url("google.iam_credentials_url", &self.iam_credentials_url)?;
        if let Some(file) = &self.credentials_file {
            if !file.is_file() {
                return Err(invalid(
                    "google.credentials_file",
                    format!("{} is not a readable file", file.display()),
                ));
            }
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(invalid(
                "google.timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if !(100..=60_000).contains(&self.connect_timeout_ms) {
            return Err(invalid(
                "google.connect_timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if !(1..=3600).contains(&self.retry_after_secs) {
            return Err(invalid(
                "google.retry_after_secs",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(invalid("google.max_attempts", "must be between 1 and 10"));
        }
        if !(1..=10_000).contains(&self.max_concurrent_calls) {
            return Err(invalid(
                "google.max_concurrent_calls",
                "must be between 1 and 10000",
            ));
        }
        if self.refusal_memory_secs > 3600 {
            return Err(invalid(
                "google.refusal_memory_secs",
                "must be at most 3600",
            ));
        }
        if !(100..=120_000).contains(&self.deadline_ms) {
            return Err(invalid(
                "google.deadline_ms",
                "must be between 100 and 120000",
            ));
        }
        self.breaker.validate("google.breaker")
    }

    /// Total time for one exchange, retries included.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Time to connect to Google STS.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Timeout of one Google call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
