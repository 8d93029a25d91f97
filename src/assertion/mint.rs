//! Minting: the bridge's key ring, its discovery document, and the assertions it signs.

use super::keys::{PublicJwks, SigningKey};
use super::AssertionError;
use crate::config::{AssertionSettings, IdentityAttribute, KeyState, TargetAssertion};
use crate::identity::Identity;
use crate::secret::Token;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// An assertion the bridge signed. `Debug` shows only the token's fingerprint.
#[derive(Debug, Clone)]
pub struct Assertion {
    /// The signed JWT.
    pub token: Token,
    /// Key that signed it.
    pub kid: String,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// The bridge's issuer URL and keys: signs with the active key, publishes them all.
#[derive(Debug)]
pub struct Minter {
    issuer: String,
    keys: Vec<SigningKey>,
}

impl Minter {
    /// Loads every configured key file (the configuration has been validated).
    pub fn load(settings: &AssertionSettings) -> Result<Self, AssertionError> {
        let keys = settings
            .keys
            .iter()
            .map(SigningKey::load)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            issuer: settings.issuer.clone(),
            keys,
        })
    }

    /// The issuer URL, the assertions' `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the JWKS is served: `<issuer>/.well-known/jwks.json`.
    pub fn jwks_uri(&self) -> String {
        format!(
            "{}/.well-known/jwks.json",
            self.issuer.trim_end_matches('/')
        )
    }

    /// Path of the discovery document on this service (the issuer's path plus the suffix).
    pub fn discovery_path(&self) -> String {
        well_known_path(&self.issuer, "openid-configuration")
    }

    /// Path of the JWKS on this service.
    pub fn jwks_path(&self) -> String {
        well_known_path(&self.issuer, "jwks.json")
    }

    /// Every key that is `next`, `active` or `retiring`, in Google's uploaded-key form.
    pub fn jwks(&self) -> PublicJwks {
        PublicJwks {
            keys: self.keys.iter().map(|k| k.public_jwk().clone()).collect(),
        }
    }

    /// The OpenID Provider metadata Google reads from `<issuer>/.well-known/openid-configuration`.
    pub fn discovery(&self) -> Value {
        let mut algorithms: Vec<&str> = self.keys.iter().map(|k| k.algorithm.as_str()).collect();
        algorithms.sort_unstable();
        algorithms.dedup();
        json!({
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri(),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algorithms,
            "claims_supported": ["iss", "sub", "aud", "iat", "exp", "jti"],
        })
    }

    fn active(&self) -> &SigningKey {
        self.keys
            .iter()
            .find(|k| k.state == KeyState::Active)
            .expect("validated: exactly one active key")
    }

    /// Signs an assertion for `identity` as `target` describes it. It never outlives the
    /// caller's token, so a refresh cannot extend a person's access past it.
    pub fn mint(
        &self,
        identity: &Identity,
        target: &TargetAssertion,
    ) -> Result<Assertion, AssertionError> {
        let now = jsonwebtoken::get_current_timestamp();
        let expires_at = (now + target.lifetime_secs).min(identity.expires_at);
        if expires_at <= now {
            return Err(AssertionError::SubjectExpired);
        }
        let mut claims = minted_attributes(identity, &target.attributes);
        for (name, value) in [
            ("iss", json!(self.issuer)),
            ("sub", json!(identity.subject)),
            ("aud", json!(target.client_id)),
            ("iat", json!(now)),
            ("exp", json!(expires_at)),
            ("jti", json!(uuid::Uuid::new_v4().to_string())),
        ] {
            claims.insert(name.to_owned(), value);
        }
        let key = self.active();
        Ok(Assertion {
            token: Token::new(key.sign(&Value::Object(claims))?),
            kid: key.kid.clone(),
            expires_at,
        })
    }
}

/// The attribute claims an assertion for `identity` carries: only those `mapping` names.
/// Lists are sorted so that the same facts always give the same claims.
pub fn minted_attributes(
    identity: &Identity,
    mapping: &BTreeMap<String, IdentityAttribute>,
) -> Map<String, Value> {
    let list = |values: &[String]| {
        let mut v = values.to_vec();
        v.sort();
        v.dedup();
        Some(json!(v))
    };
    let one = |value: &Option<String>| value.as_ref().map(|v| json!(v));
    mapping
        .iter()
        .filter_map(|(claim, attribute)| {
            let value = match attribute {
                IdentityAttribute::Groups => list(&identity.groups),
                IdentityAttribute::Roles => list(&identity.roles),
                IdentityAttribute::Permissions => list(&identity.permissions),
                IdentityAttribute::Email => one(&identity.email),
                IdentityAttribute::Name => one(&identity.name),
                IdentityAttribute::ClientId => one(&identity.client_id),
            }?;
            Some((claim.clone(), value))
        })
        .collect()
}

fn well_known_path(issuer: &str, document: &str) -> String {
    let path = url::Url::parse(issuer)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    format!("{path}/.well-known/{document}")
}
