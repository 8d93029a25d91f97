//! `[assertion]` and each target's `mode` / `[targets.assertion]`: the bridge as an issuer
//! of its own, whose short-lived assertions a workforce provider trusts instead of Auth0.

use super::{check_url, invalid, is_plain_name, ConfigError, Settings};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

/// What a target sends Google STS as the subject token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetMode {
    /// The caller's own token, as received.
    #[default]
    #[serde(rename = "pass-through", alias = "pass_through")]
    PassThrough,
    /// A short-lived JWT the bridge signs for the same person.
    Assertion,
}

/// How a target's assertions are made.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetAssertion {
    /// `aud` of the assertion: the workforce provider's client id (`--client-id`).
    pub client_id: String,
    /// Seconds from `iat` to `exp`.
    #[serde(default = "default_assertion_lifetime")]
    pub lifetime_secs: u64,
    /// Assertion claim name ← identity attribute; nothing else about the caller is passed.
    #[serde(default)]
    pub attributes: BTreeMap<String, IdentityAttribute>,
}

/// A fact about the caller that an assertion may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityAttribute {
    /// Groups, from the issuer's groups claim.
    Groups,
    /// Roles, from the issuer's roles claim.
    Roles,
    /// Auth0 RBAC permissions.
    Permissions,
    /// Email address.
    Email,
    /// Display name.
    Name,
    /// `azp` / `client_id` of the caller's token.
    ClientId,
}

/// The bridge as an OIDC issuer of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionSettings {
    /// `iss` of the assertions, the provider's `--issuer-uri` (https; http only on loopback).
    pub issuer: String,
    /// Signing keys with their rotation state; exactly one is `active`.
    pub keys: Vec<AssertionKeySettings>,
}

/// One signing key of the bridge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionKeySettings {
    /// Key id, in the JWKS and in each assertion's header.
    pub kid: String,
    /// PEM file of the private key (`sts-bridge keys generate`).
    pub file: PathBuf,
    /// `next` (published, not signing), `active` (signing) or `retiring` (published only).
    pub state: KeyState,
}

/// Where a key is in its rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Published in the JWKS so Google knows it before it signs.
    Next,
    /// Signs every new assertion.
    Active,
    /// Published until the last assertion it signed has expired.
    Retiring,
}

/// Longest assertion lifetime: Google refuses `exp - iat` over 48 hours.
pub const MAX_ASSERTION_LIFETIME_SECS: u64 = 48 * 3600;

/// Claims the bridge sets itself, which an attribute may not replace.
const RESERVED_ASSERTION_CLAIMS: &[&str] = &["iss", "sub", "aud", "iat", "exp", "nbf", "jti"];

fn default_assertion_lifetime() -> u64 {
    300
}

impl Settings {
    pub(super) fn validate_assertion(&self) -> Result<(), ConfigError> {
        if let Some(assertion) = &self.assertion {
            assertion.validate()?;
        }
        for (i, target) in self.targets.iter().enumerate() {
            let key = format!("targets[{i}]");
            match (target.mode, &target.assertion) {
                (TargetMode::PassThrough, None) => {}
                (TargetMode::PassThrough, Some(_)) => {
                    return Err(invalid(
                        format!("{key}.assertion"),
                        "only used with mode = \"assertion\"",
                    ))
                }
                (TargetMode::Assertion, None) => return Err(invalid(
                    format!("{key}.assertion"),
                    "mode = \"assertion\" needs [targets.assertion] with the provider's client_id",
                )),
                (TargetMode::Assertion, Some(a)) => {
                    if self.assertion.is_none() {
                        return Err(invalid(
                            "assertion",
                            format!("target {} uses assertion mode, so [assertion] must name the bridge's issuer and keys", target.name),
                        ));
                    }
                    a.validate(&format!("{key}.assertion"))?;
                    // The assertion's `sub` is the caller's `sub`: two issuers could each
                    // have a user with the same one, who would then be one Google principal.
                    if self.issuers.len() > 1 {
                        return Err(invalid(
                            format!("{key}.mode"),
                            "assertion mode needs exactly one trusted issuer: the same `sub` from two issuers would become one Google principal; run one sts-bridge per issuer, or use pass-through",
                        ));
                    }
                    if a.lifetime_secs > target.policy.max_lifetime_secs {
                        return Err(invalid(
                            format!("{key}.assertion.lifetime_secs"),
                            format!(
                                "must not exceed the target's policy.max_lifetime_secs ({})",
                                target.policy.max_lifetime_secs
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl AssertionSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        check_url("assertion.issuer", &self.issuer)?;
        let url = url::Url::parse(&self.issuer).expect("checked above");
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "assertion.issuer",
                "must have no query or fragment (Google appends /.well-known/openid-configuration)",
            ));
        }
        let mut kids = HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            if !is_plain_name(&key.kid, 64) {
                return Err(invalid(
                    format!("assertion.keys[{i}].kid"),
                    "1-64 characters of letters, digits, '-', '_' or '.'",
                ));
            }
            if !kids.insert(&key.kid) {
                return Err(invalid(format!("assertion.keys[{i}].kid"), "listed twice"));
            }
        }
        let active = self
            .keys
            .iter()
            .filter(|k| k.state == KeyState::Active)
            .count();
        if active != 1 {
            return Err(invalid(
                "assertion.keys",
                format!("exactly one key must be state = \"active\" (found {active})"),
            ));
        }
        Ok(())
    }
}

impl TargetAssertion {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.client_id.is_empty() || self.client_id.len() > 256 {
            return Err(invalid(
                format!("{key}.client_id"),
                "the workforce provider's client id, 1-256 characters",
            ));
        }
        if !(30..=MAX_ASSERTION_LIFETIME_SECS).contains(&self.lifetime_secs) {
            return Err(invalid(
                format!("{key}.lifetime_secs"),
                format!("must be between 30 and {MAX_ASSERTION_LIFETIME_SECS} (Google refuses exp - iat over 48 h)"),
            ));
        }
        for name in self.attributes.keys() {
            let ok = (1..=64).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !RESERVED_ASSERTION_CLAIMS.contains(&name.as_str());
            if !ok {
                return Err(invalid(
                    format!("{key}.attributes.{name}"),
                    format!(
                        "claim names are 1-64 letters, digits or '_', and not one of {}",
                        RESERVED_ASSERTION_CLAIMS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
