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
