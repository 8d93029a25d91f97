//! Inbound identity: OIDC discovery, the issuers' key sets, and JWT validation that turns a
//! raw subject token into typed claims.

mod keyset;
mod token_cache;
mod validate;

pub use keyset::{FetchError, KeySet, KeysNotReady, VerifyingKey};
pub use token_cache::TokenCacheLimits;
#[cfg(feature = "fuzzing")]
pub use validate::parse_unverified;

use crate::config::IssuerSettings;
use std::sync::Arc;

/// Fetches `issuer`'s discovery document and key set once, as the service would, and says
/// what was found (`check-config --probe`).
pub async fn probe(issuer: &IssuerSettings) -> Result<String, String> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| crate::causes::chain(&e))?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let breaker = Arc::new(crate::breaker::Breaker::new(
        "jwks",
        crate::config::BreakerSettings::default(),
        metrics.clone(),
    ));
    let keys = KeySet::new(issuer, http, breaker, metrics);
    let count = keys.refresh().await.map_err(|e| e.to_string())?;
    let (jwks_uri, kids) = keys.loaded_keys();
    Ok(format!(
        "discovery ok; key set {} holds {count} usable key(s): {}",
        jwks_uri.unwrap_or_default(),
        kids.join(", ")
    ))
}
pub use validate::{Validator, MAX_TOKEN_BYTES};

/// The caller, as proven by a validly signed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Exact `iss`.
    pub issuer: String,
    /// `sub`: `auth0|…` for people, `CLIENT@clients` for machines.
    pub subject: String,
    /// `azp`, or `client_id` in the RFC 9068 profile.
    pub client_id: Option<String>,
    /// `aud`, as a list.
    pub audiences: Vec<String>,
    /// Space-separated `scope`, split.
    pub scopes: Vec<String>,
    /// Auth0 RBAC `permissions`.
    pub permissions: Vec<String>,
    /// Groups from the issuer's configured groups claim.
    pub groups: Vec<String>,
    /// Roles from the issuer's configured roles claim.
    pub roles: Vec<String>,
    /// `gty` (Auth0 puts `client-credentials` there for machine tokens), as a list.
    pub grant_types: Vec<String>,
    /// Email address, from the issuer's email claim, when the token carries one.
    pub email: Option<String>,
    /// Display name, from the issuer's name claim, when the token carries one.
    pub name: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// SHA-256 over every claim Google could map (all but `exp`, `iat`, `nbf`, `auth_time`
    /// and `jti`, or the issuer's `cache_key_claims`): tokens that differ here never share
    /// a cached credential.
    pub claims_digest: [u8; 32],
}

impl Identity {
    /// Whether the token was issued to a machine: Auth0's `gty: client-credentials`, or a
    /// subject of the form `CLIENT@clients`.
    pub fn is_machine(&self) -> bool {
        self.grant_types.iter().any(|g| g == "client-credentials")
            || self.subject.ends_with("@clients")
    }
}

/// Why a subject token was refused. Every message says what to fix and never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The token is not a well-formed JWT.
    #[error("subject token is malformed: {0}")]
    Malformed(String),
    /// The token is valid in form but must not be accepted; the first field is a short
    /// reason for metrics (`expired`, `audience`, `signature`, ...).
    #[error("{1}")]
    Rejected(&'static str, String),
    /// The issuer's keys are not available yet.
    #[error("signing keys of issuer {0} are not available yet; try again shortly")]
    KeysUnavailable(String),
}

impl IdentityError {
    /// A bounded reason, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::Malformed(_) => "malformed",
            IdentityError::Rejected(reason, _) => reason,
            IdentityError::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}
