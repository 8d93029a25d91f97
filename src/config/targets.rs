//! `[[targets]]`: the named ways to make a Google credential.

use super::{invalid, is_plain_name, ConfigError, PolicySettings, TargetAssertion, TargetMode};
use crate::google::provider::parse_workforce_provider;
use crate::rfc8693::{TOKEN_TYPE_JWT, UPSTREAM_SUBJECT_TOKEN_TYPES};
use serde::{Deserialize, Serialize};

/// How a target makes a Google credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// Google STS exchange against a workforce pool provider.
    Workforce,
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
    /// `//iam.googleapis.com/locations/global/workforcePools/POOL/providers/PROVIDER`.
    pub provider: String,
    /// Project billed for the exchange (`options.userProject`), a number or an id.
    #[serde(default)]
    pub user_project: Option<String>,
    /// Scopes callers may ask for.
    pub allowed_scopes: Vec<String>,
    /// Scopes used when the caller sends none.
    #[serde(default)]
    pub default_scopes: Vec<String>,
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
}

fn default_upstream_token_type() -> String {
    TOKEN_TYPE_JWT.into()
}

impl TargetSettings {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !is_plain_name(&self.name, 128) {
            return Err(invalid(
                format!("{key}.name"),
                "1-128 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        if parse_workforce_provider(&self.provider).is_none() {
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
}
