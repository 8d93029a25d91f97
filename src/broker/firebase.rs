//! Firebase custom tokens: the claims Firebase Authentication checks, and signing with a
//! downloaded key when IAM Credentials `signJwt` is not used.

use crate::assertion::minted_attributes;
use crate::config::{FirebaseSettings, MAX_FIREBASE_CLAIMS_BYTES};
use crate::identity::Identity;
use crate::secret::Token;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;

/// The audience Firebase Authentication requires of a custom token.
pub const FIREBASE_AUDIENCE: &str =
    "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit";
/// Firebase's limit on `uid`.
const MAX_UID_CHARS: usize = 128;

/// Why a custom token could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FirebaseError {
    /// The configured claims of this caller exceed Firebase's limit.
    #[error("the claims of your Firebase token would take {bytes} bytes, over Firebase's limit of {MAX_FIREBASE_CLAIMS_BYTES}; ask an administrator to pass fewer claims")]
    ClaimsTooLarge {
        /// Serialised size.
        bytes: usize,
    },
    /// The configured key file is unusable.
    #[error("the Firebase signing key file is unusable: {0}")]
    KeyFile(String),
}

/// The Firebase `uid` for `subject`: the subject itself when Firebase accepts its length,
/// else `sha256:` and the hex SHA-256 of it (71 characters), stable for the same subject.
pub fn uid_for(subject: &str) -> String {
    if subject.chars().count() <= MAX_UID_CHARS {
        subject.to_owned()
    } else {
        format!("sha256:{}", crate::secret::fingerprint(subject.as_bytes()))
    }
}

/// The payload of a custom token for `identity`, signed by `settings.service_account`.
pub fn custom_token_claims(
    settings: &FirebaseSettings,
    identity: &Identity,
) -> Result<Value, FirebaseError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut payload = json!({
        "iss": settings.service_account,
        "sub": settings.service_account,
        "aud": FIREBASE_AUDIENCE,
        "iat": now,
        "exp": now + settings.lifetime_secs as i64,
        "uid": uid_for(&identity.subject),
    });
    let claims = minted_attributes(identity, &settings.claims);
    if !claims.is_empty() {
        let bytes = Value::Object(claims.clone()).to_string().len();
        if bytes > MAX_FIREBASE_CLAIMS_BYTES {
            return Err(FirebaseError::ClaimsTooLarge { bytes });
        }
        payload["claims"] = Value::Object(claims);
    }
    Ok(payload)
}

#[derive(Deserialize)]
struct KeyFileJson {
    client_email: String,
    private_key_id: String,
    private_key: String,
}

/// A downloaded service-account key that signs custom tokens itself.
pub struct KeyFile {
    kid: String,
    key: EncodingKey,
}

impl KeyFile {
    /// Reads the key file at `path`, which must belong to `service_account`.
    pub fn load(path: &Path, service_account: &str) -> Result<Self, FirebaseError> {
        let unusable = |why: String| FirebaseError::KeyFile(format!("{}: {why}", path.display()));
        let text = std::fs::read(path).map_err(|e| unusable(e.to_string()))?;
        let file: KeyFileJson = serde_json::from_slice(&text)
            .map_err(|_| unusable("not a service-account key file".into()))?;
        if file.client_email != service_account {
            return Err(unusable(format!(
                "it holds a key of {}, not of {service_account}",
                file.client_email
            )));
        }
        let key = EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .map_err(|_| unusable("private_key is not an RSA key".into()))?;
        Ok(Self {
            kid: file.private_key_id,
            key,
        })
    }

    /// `payload` signed RS256, with the key's id in the header as Google's keys publish it.
    pub fn sign(&self, payload: &Value) -> Result<Token, FirebaseError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, payload, &self.key)
            .map(Token::new)
            .map_err(|e| FirebaseError::KeyFile(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_firebase_accepts_is_the_uid_and_a_longer_one_is_hashed() {
        assert_eq!(uid_for("auth0|alice"), "auth0|alice");
        let long = format!("oidc|{}", "x".repeat(200));
        let uid = uid_for(&long);
        assert_eq!(uid.len(), 71);
        assert!(uid.starts_with("sha256:"));
        assert_eq!(uid, uid_for(&long));
        assert_ne!(uid, uid_for(&format!("{long}y")));
        assert_eq!(uid_for(&"é".repeat(128)), "é".repeat(128));
    }
}
