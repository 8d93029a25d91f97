//! `[[issuers]]`: the OIDC issuers whose tokens are trusted.

use super::{check_url, invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The only algorithms Google's workforce pool providers accept in a subject token.
pub const FORWARDED_ALGORITHMS: &[&str] = &["RS256", "ES256"];

/// Algorithms a token may be signed with. HMAC and `none` are never accepted (RFC 8725 §3.1).
pub const ASYMMETRIC_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
];

/// One trusted OIDC issuer (an Auth0 tenant, typically).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// Exact `iss` value, e.g. `https://TENANT.auth0.com/` (Auth0 keeps the trailing slash).
    pub issuer: String,
    /// Accepted `aud` values (the Auth0 API identifier).
    pub audiences: Vec<String>,
    /// Accepted signing algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Claim holding the caller's groups (Auth0 puts custom claims under a namespace).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Claim holding the caller's roles.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Least time between two JWKS fetches caused by unknown key ids, in seconds.
    #[serde(default = "default_jwks_min_refetch")]
    pub jwks_min_refetch_secs: u64,
    /// Seconds between two scheduled JWKS fetches, so a key the issuer withdrew stops
    /// being trusted even when no token names an unknown key.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    /// Discovery document URL; defaults to `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// Claims that tell two tokens' credentials apart in the cache. Unset: every claim
    /// but `exp`, `iat`, `nbf`, `auth_time` and `jti`, so a token differing in anything
    /// Google could map never receives a credential minted for another.
    #[serde(default)]
    pub cache_key_claims: Option<Vec<String>>,
    /// Claim holding the caller's email address (default `email`).
    #[serde(default)]
    pub email_claim: Option<String>,
    /// Claim holding the caller's display name (default `name`).
    #[serde(default)]
    pub name_claim: Option<String>,
    /// Hosts besides the issuer's own that a `jwks_uri` from discovery may point to when it
    /// changes (e.g. `www.googleapis.com`); a changed `jwks_uri` elsewhere is refused and
    /// the last good keys stay.
    #[serde(default)]
    pub jwks_allowed_hosts: Vec<String>,
    /// Accept only RFC 9068 access tokens (header `typ` `at+jwt` or `application/at+jwt`):
    /// ID tokens and tokens without that `typ` are refused.
    #[serde(default)]
    pub require_at_jwt: bool,
    /// Seconds the last good key set may go without a successful refresh before readiness
    /// fails (the keys are still used meanwhile).
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age_secs: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_leeway() -> u64 {
    30
}
fn default_jwks_min_refetch() -> u64 {
    60
}
fn default_jwks_refresh() -> u64 {
    300
}
fn default_jwks_max_age() -> u64 {
    86_400
}

impl IssuerSettings {
    /// An issuer trusted for `audiences`, with every other key at its default.
    pub fn new(issuer: String, audiences: Vec<String>) -> Self {
        Self {
            issuer,
            audiences,
            algorithms: default_algorithms(),
            leeway_secs: default_leeway(),
            groups_claim: None,
            roles_claim: None,
            jwks_min_refetch_secs: default_jwks_min_refetch(),
            jwks_refresh_secs: default_jwks_refresh(),
            discovery_url: None,
            cache_key_claims: None,
            email_claim: None,
            name_claim: None,
            jwks_allowed_hosts: Vec::new(),
            require_at_jwt: false,
            jwks_max_age_secs: default_jwks_max_age(),
        }
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_url(&format!("{key}.issuer"), &self.issuer)?;
        if let Some(url) = &self.discovery_url {
            check_url(&format!("{key}.discovery_url"), url)?;
        }
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.is_empty()) {
            return Err(invalid(
                format!("{key}.audiences"),
                "list the API identifier(s) the tokens are issued for",
            ));
        }
        if self.algorithms.is_empty() {
            return Err(invalid(format!("{key}.algorithms"), "must not be empty"));
        }
        for alg in &self.algorithms {
            if !ASYMMETRIC_ALGORITHMS.contains(&alg.as_str()) {
                return Err(invalid(
                    format!("{key}.algorithms"),
                    format!(
                        "`{alg}` is not accepted; use asymmetric algorithms only: {}",
                        ASYMMETRIC_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        if self.leeway_secs > 300 {
            return Err(invalid(
                format!("{key}.leeway_secs"),
                "at most 300 seconds of clock skew is tolerated",
            ));
        }
        if !(1..=86_400).contains(&self.jwks_refresh_secs) {
            return Err(invalid(
                format!("{key}.jwks_refresh_secs"),
                "must be between 1 and 86400",
            ));
        }
        if self.jwks_max_age_secs <= self.jwks_refresh_secs || self.jwks_max_age_secs > 30 * 86_400
        {
            return Err(invalid(
                format!("{key}.jwks_max_age_secs"),
                "must be longer than jwks_refresh_secs and at most 2592000 (30 days)",
            ));
        }
        if let Some(host) = self
            .jwks_allowed_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains(['/', ':', '@', ' ']))
        {
            return Err(invalid(
                format!("{key}.jwks_allowed_hosts"),
                format!("`{host}` is not a host name (no scheme, port or path)"),
            ));
        }
        if self.jwks_min_refetch_secs == 0 {
            return Err(invalid(
                format!("{key}.jwks_min_refetch_secs"),
                "must be at least 1, or unknown key ids could hammer the issuer",
            ));
        }
        Ok(())
    }

    /// Least time between two key-set fetches.
    pub fn jwks_min_refetch(&self) -> Duration {
        Duration::from_secs(self.jwks_min_refetch_secs)
    }

    /// Age of the last good key set after which readiness fails.
    pub fn jwks_max_age(&self) -> Duration {
        Duration::from_secs(self.jwks_max_age_secs)
    }

    /// Time between two scheduled key-set fetches.
    pub fn jwks_refresh(&self) -> Duration {
        Duration::from_secs(self.jwks_refresh_secs)
    }
}
