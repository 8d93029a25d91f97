//! Assertion mode: the bridge as an OIDC issuer of its own. It signs a short-lived JWT for
//! the person a validated token names, so a workforce provider can trust the bridge alone.

mod keys;
mod mint;

pub use keys::{generate_file, generate_pem, KeyAlgorithm, PublicJwk, PublicJwks, SigningKey};
pub use mint::{minted_attributes, Assertion, Minter};

/// Why an assertion could not be made or the keys not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// A configured key file is unusable.
    #[error("assertion key {kid}: {problem}")]
    Key {
        /// Key id from the configuration.
        kid: String,
        /// What is wrong.
        problem: String,
    },
    /// The caller's token expires before an assertion could be valid.
    #[error("subject token has expired; get a new one from the issuer")]
    SubjectExpired,
    /// Signing failed.
    #[error("assertion could not be signed: {0}")]
    Signing(String),
}
