//! `[[targets]]`: the named ways to make a Google credential.

use super::{
    invalid, is_plain_name, ConfigError, IdentityAttribute, PolicySettings, TargetAssertion,
    TargetMode,
};
use crate::google::provider::parse_workforce_provider;
use crate::rfc8693::{TOKEN_TYPE_JWT, UPSTREAM_SUBJECT_TOKEN_TYPES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Longest access token IAM Credentials grants without the organisation policy that
/// allows up to 12 hours.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;
/// Firebase refuses custom tokens that live longer.
pub const MAX_FIREBASE_LIFETIME_SECS: u64 = 3600;
/// Firebase's limit on the serialised developer claims of a custom token.
pub const MAX_FIREBASE_CLAIMS_BYTES: usize = 1000;
/// Claim names Firebase refuses in a custom token's `claims`.
pub const FIREBASE_RESERVED_CLAIMS: &[&str] = &[
    "acr",
    "amr",
    "at_hash",
    "aud",
    "auth_time",
    "azp",
    "cnf",
    "c_hash",
    "exp",
    "firebase",
    "iat",
    "iss",
    "jti",
    "nbf",
    "nonce",
    "sub",
    "uid",
    "user_id",
];

/// How a target makes a Google credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// Google STS exchange against a workforce pool provider (then, optionally, the
    /// federated identity impersonates a service account).
    Workforce,
    /// The service's own Google identity impersonates a service account chosen by the
    /// caller's claims.
    Impersonate,
    /// A Firebase custom token for the caller, signed by a service account.
    Firebase,
}

impl TargetKind {
    /// Lower-case name, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Workforce => "workforce",
            TargetKind::Impersonate => "impersonate",
            TargetKind::Firebase => "firebase",
        }
    }
}

/// Which claim an `impersonate` mapping reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappedClaim {
    /// Roles, from the issuer's roles claim.
    Roles,
    /// Groups, from the issuer's groups claim.
    Groups,
    /// Auth0 RBAC permissions.
    Permissions,
}

impl MappedClaim {
    /// The claim's name in configuration and refusals.
    pub fn as_str(self) -> &'static str {
        match self {
            MappedClaim::Roles => "roles",
            MappedClaim::Groups => "groups",
            MappedClaim::Permissions => "permissions",
        }
    }
}

/// One rule of an `impersonate` target: a caller whose `claim` holds `value` gets a
/// credential of `service_account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountMapping {
    /// The claim read.
    pub claim: MappedClaim,
    /// The value it must hold.
    pub value: String,
    /// The service account then impersonated.
    pub service_account: String,
}

/// How a `firebase` target makes custom tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirebaseSettings {
    /// The service account that signs (the token's `iss` and `sub`).
    pub service_account: String,
    /// Custom claims (`claims` in the token, `request.auth.token.NAME` in rules), by name.
    #[serde(default)]
    pub claims: BTreeMap<String, IdentityAttribute>,
    /// Seconds the custom token is valid for sign-in (at most 3600).
    #[serde(default = "default_firebase_lifetime")]
    pub lifetime_secs: u64,
    /// Sign with this downloaded key of `service_account` instead of through IAM
    /// Credentials `signJwt`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_firebase_lifetime() -> u64 {
    MAX_FIREBASE_LIFETIME_SECS
}

fn default_token_lifetime() -> u64 {
    DEFAULT_TOKEN_LIFETIME_SECS
}

/// One named way to make a Google credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    /// Name callers may pass as `audience`.
    pub name: String,
    /// Kind of credential.
    pub kind: TargetKind,
    /// Workforce provider resource,
    /// `//iam.googleapis.com/locations/global/workforcePools/POOL/providers/PROVIDER`
    /// (`workforce` only).
    #[serde(default)]
    pub provider: String,
    /// Project billed for the exchange (`options.userProject`), a number or an id.
    #[serde(default)]
    pub user_project: Option<String>,
    /// Scopes callers may ask for (none for `firebase`).
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    /// Scopes used when the caller sends none.
    #[serde(default)]
    pub default_scopes: Vec<String>,
    /// Grant a request the allowed part of its scopes (at least one must remain) rather
    /// than refuse it, saying so in the answer's `scope`; gcloud asks for scopes of its own.
    #[serde(default)]
    pub narrow_scopes: bool,
    /// `subject_token_type` sent to Google STS.
    #[serde(default = "default_upstream_token_type")]
    pub subject_token_type: String,
    /// Who may use this target; nobody when it names no one.
    #[serde(default)]
    pub policy: PolicySettings,
    /// What Google is shown: the caller's own token, or an assertion the bridge signs.
    #[serde(default)]
    pub mode: TargetMode,
    /// The assertion's audience, lifetime and attributes (with `mode = "assertion"`).
    #[serde(default)]
    pub assertion: Option<TargetAssertion>,
    /// `workforce`: the service account the federated identity impersonates; its token is
    /// handed out instead of the federated one.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Service accounts between the caller and the impersonated one, in order (each a
    /// Token Creator on the next).
    #[serde(default)]
    pub delegates: Vec<String>,
    /// Lifetime asked of IAM Credentials for service-account tokens, in seconds.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
    /// `impersonate`: which service account the caller's claims select; first match wins.
    #[serde(default)]
    pub service_accounts: Vec<ServiceAccountMapping>,
    /// `firebase`: how custom tokens are made.
    #[serde(default)]
    pub firebase: Option<FirebaseSettings>,
}

fn default_upstream_token_type() -> String {
    TOKEN_TYPE_JWT.into()
}

impl Default for TargetSettings {
    /// A workforce target without a name, provider or scopes: not valid until they are set.
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: TargetKind::Workforce,
            provider: String::new(),
            user_project: None,
            allowed_scopes: Vec::new(),
            default_scopes: Vec::new(),
            narrow_scopes: false,
            subject_token_type: default_upstream_token_type(),
            policy: PolicySettings::default(),
            mode: TargetMode::default(),
            assertion: None,
            service_account: None,
            delegates: Vec::new(),
            token_lifetime_secs: default_token_lifetime(),
            service_accounts: Vec::new(),
            firebase: None,
        }
    }
}

impl TargetSettings {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !is_plain_name(&self.name, 128) {
            return Err(invalid(
                format!("{key}.name"),
                "1-128 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        self.validate_kind(key)?;
        if !(60..=43_200).contains(&self.token_lifetime_secs) {
            return Err(invalid(
                format!("{key}.token_lifetime_secs"),
                "must be between 60 and 43200 (over 3600 needs Google's constraints/iam.allowServiceAccountCredentialLifetimeExtension)",
            ));
        }
        for (i, d) in self.delegates.iter().enumerate() {
            check_service_account(&format!("{key}.delegates[{i}]"), d)?;
        }
        if self.kind == TargetKind::Firebase {
            return self.policy.validate(&format!("{key}.policy"));
        }
        if self.kind == TargetKind::Workforce && parse_workforce_provider(&self.provider).is_none()
        {
            return Err(invalid(
                format!("{key}.provider"),
                format!(
                    "`{}` is not of the form //iam.googleapis.com/locations/global/workforcePools/POOL/providers/PROVIDER",
                    self.provider
                ),
            ));
        }
        if self.allowed_scopes.is_empty() {
            return Err(invalid(
                format!("{key}.allowed_scopes"),
                "list the Google OAuth scopes this target may hand out",
            ));
        }
        for scope in &self.default_scopes {
            if !self.allowed_scopes.contains(scope) {
                return Err(invalid(
                    format!("{key}.default_scopes"),
                    format!("`{scope}` is not in allowed_scopes"),
                ));
            }
        }
        if let Some(project) = &self.user_project {
            if project.is_empty() || project.len() > 64 {
                return Err(invalid(
                    format!("{key}.user_project"),
                    "a project number or id of 1-64 characters",
                ));
            }
        }
        if !UPSTREAM_SUBJECT_TOKEN_TYPES.contains(&self.subject_token_type.as_str()) {
            return Err(invalid(
                format!("{key}.subject_token_type"),
                format!("must be one of {}", UPSTREAM_SUBJECT_TOKEN_TYPES.join(", ")),
            ));
        }
        self.policy.validate(&format!("{key}.policy"))
    }

    /// The settings each kind needs, and none that belong to another kind.
    fn validate_kind(&self, key: &str) -> Result<(), ConfigError> {
        let only = |field: &str, kinds: &str| {
            invalid(
                format!("{key}.{field}"),
                format!("only {kinds} targets take {field}"),
            )
        };
        let workforce = self.kind == TargetKind::Workforce;
        if !workforce && !self.provider.is_empty() {
            return Err(only("provider", "workforce"));
        }
        if !workforce && self.mode == TargetMode::Assertion {
            return Err(only("mode = \"assertion\"", "workforce"));
        }
        if !workforce && self.service_account.is_some() {
            return Err(only("service_account", "workforce"));
        }
        if let Some(sa) = &self.service_account {
            check_service_account(&format!("{key}.service_account"), sa)?;
        }
        if self.kind != TargetKind::Impersonate && !self.service_accounts.is_empty() {
            return Err(only("service_accounts", "impersonate"));
        }
        if self.kind != TargetKind::Firebase && self.firebase.is_some() {
            return Err(only("firebase", "firebase"));
        }
        match self.kind {
            TargetKind::Workforce => Ok(()),
            TargetKind::Impersonate => self.validate_mappings(key),
            TargetKind::Firebase => match &self.firebase {
                Some(f) => f.validate(&format!("{key}.firebase")),
                None => Err(invalid(
                    format!("{key}.firebase"),
                    "a firebase target needs [targets.firebase] with the signing service_account",
                )),
            },
        }
    }

    fn validate_mappings(&self, key: &str) -> Result<(), ConfigError> {
        if self.service_accounts.is_empty() {
            return Err(invalid(
                format!("{key}.service_accounts"),
                "map at least one claim value to a service account, e.g. { claim = \"roles\", value = \"analyst\", service_account = \"bq-analyst@PROJECT.iam.gserviceaccount.com\" }",
            ));
        }
        for (i, m) in self.service_accounts.iter().enumerate() {
            let at = format!("{key}.service_accounts[{i}]");
            if m.value.is_empty() || m.value.len() > 256 {
                return Err(invalid(format!("{at}.value"), "1-256 characters"));
            }
            check_service_account(&format!("{at}.service_account"), &m.service_account)?;
        }
        Ok(())
    }
}

impl FirebaseSettings {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_service_account(&format!("{key}.service_account"), &self.service_account)?;
        if !(60..=MAX_FIREBASE_LIFETIME_SECS).contains(&self.lifetime_secs) {
            return Err(invalid(
                format!("{key}.lifetime_secs"),
                "must be between 60 and 3600: Firebase refuses custom tokens that live longer than an hour",
            ));
        }
        for name in self.claims.keys() {
            if FIREBASE_RESERVED_CLAIMS.contains(&name.as_str()) {
                return Err(invalid(
                    format!("{key}.claims.{name}"),
                    format!(
                        "`{name}` is reserved by Firebase; reserved names: {}",
                        FIREBASE_RESERVED_CLAIMS.join(", ")
                    ),
                ));
            }
            if !is_plain_name(name, 64) {
                return Err(invalid(
                    format!("{key}.claims"),
                    "claim names are 1-64 characters of letters, digits, '-', '_' or '.'",
                ));
            }
        }
        Ok(())
    }
}

/// A service account email: `NAME@PROJECT.iam.gserviceaccount.com` or another
/// `…gserviceaccount.com` domain (default and Google-managed accounts).
fn check_service_account(key: &str, email: &str) -> Result<(), ConfigError> {
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(name, domain)| {
            !name.is_empty()
                && domain.ends_with("gserviceaccount.com")
                && format!("{name}{domain}")
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "`{}` is not a service account email (NAME@PROJECT.iam.gserviceaccount.com)",
                email.chars().take(100).collect::<String>()
            ),
        ))
    }
}
