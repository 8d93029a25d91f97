//! Inbound identity: OIDC discovery, the issuers' key sets, and JWT validation that turns a
//! raw subject token into typed claims.

mod keyset;
mod token_cache;
mod validate;

pub use keyset::{FetchError, KeySet, VerifyingKey};
pub use token_cache::TokenCacheLimits;
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
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
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
