//! `[[clients]]`: clients that authenticate with HTTP Basic.

use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};

/// A client that authenticates with HTTP Basic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// Client id.
    pub id: String,
    /// SHA-256 of the client secret, hex; the secret itself is never configured.
    pub secret_sha256: String,
    /// Subject tokens this client presents must have one of these `azp` / `client_id`
    /// values; empty: any.
    #[serde(default)]
    pub azp: Vec<String>,
    /// Targets this client may ask for; empty: any (each target's policy still applies).
    #[serde(default)]
    pub targets: Vec<String>,
}

impl ClientSettings {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let ok = self.secret_sha256.len() == 64
            && self.secret_sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(invalid(
                format!("{key}.secret_sha256"),
                "must be 64 hex characters (the SHA-256 of the secret)",
            ));
        }
        Ok(())
    }
}

/// The Cloud SDK's OAuth client id: `gcloud` presents it with HTTP Basic on every exchange
/// of an `external_account` file that does not impersonate, and on token introspection.
pub const CLOUD_SDK_CLIENT_ID: &str = "32555940559.apps.googleusercontent.com";
/// The Cloud SDK's client secret, published in its sources: it proves nothing.
pub const CLOUD_SDK_CLIENT_SECRET: &str = "ZmssLNjJy2998hD4CTg2ejr2";

/// A public client: an id (and the secret it ships with, which is no secret) that a caller
/// may claim without proving anything. It is recorded as claimed and grants nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicClientSettings {
    /// Client id.
    pub id: String,
    /// The secret this client's software ships with; a caller naming `id` with another
    /// secret is not that software and is refused. Empty: the secret must be empty too.
    #[serde(default)]
    pub secret: String,
}

impl PublicClientSettings {
    /// The Cloud SDK (`gcloud`, `bq`).
    pub fn cloud_sdk() -> Self {
        Self {
            id: CLOUD_SDK_CLIENT_ID.into(),
            secret: CLOUD_SDK_CLIENT_SECRET.into(),
        }
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.id.is_empty() || self.id.len() > 256 || self.id.contains(':') {
            return Err(invalid(
                format!("{key}.id"),
                "must be 1-256 characters without ':'",
            ));
        }
        Ok(())
    }
}

/// The public clients accepted when the configuration names none: the Cloud SDK's.
pub fn default_public_clients() -> Vec<PublicClientSettings> {
    vec![PublicClientSettings::cloud_sdk()]
}
