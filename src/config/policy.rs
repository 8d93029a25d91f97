//! `[targets.policy]`: who may use a target. Deny is the default: a policy that names
//! nobody lets nobody through.

use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};

/// The longest credential lifetime a policy may allow: Google STS access tokens live an hour.
pub const MAX_LIFETIME_SECS: u64 = 3600;

/// Who may use one target, over the validated token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// The token's `permissions` must hold at least one of these.
    #[serde(default)]
    pub any_permissions: Vec<String>,
    /// The token's `permissions` must hold every one of these.
    #[serde(default)]
    pub all_permissions: Vec<String>,
    /// The issuer's roles claim must hold at least one of these.
    #[serde(default)]
    pub any_roles: Vec<String>,
    /// The issuer's roles claim must hold every one of these.
    #[serde(default)]
    pub all_roles: Vec<String>,
    /// The issuer's groups claim must hold at least one of these.
    #[serde(default)]
    pub any_groups: Vec<String>,
    /// The issuer's groups claim must hold every one of these.
    #[serde(default)]
    pub all_groups: Vec<String>,
    /// The token's `azp` (or `client_id`) must be one of these.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Whether machine tokens (`gty: client-credentials`, `sub` ending in `@clients`) may
    /// use the target.
    #[serde(default)]
    pub machine_tokens: bool,
    /// When set, an RFC 8693 actor token is required, issued to one of these clients
    /// (`azp` / `client_id`).
    #[serde(default)]
    pub actor_clients: Vec<String>,
    /// `expires_in` handed out never exceeds this many seconds.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_secs: u64,
}

fn default_max_lifetime() -> u64 {
    MAX_LIFETIME_SECS
}

impl Default for PolicySettings {
    /// Names nobody: refuses everyone.
    fn default() -> Self {
        Self {
            any_permissions: Vec::new(),
            all_permissions: Vec::new(),
            any_roles: Vec::new(),
            all_roles: Vec::new(),
            any_groups: Vec::new(),
            all_groups: Vec::new(),
            clients: Vec::new(),
            machine_tokens: false,
            actor_clients: Vec::new(),
            max_lifetime_secs: MAX_LIFETIME_SECS,
        }
    }
}

impl PolicySettings {
    /// Whether any rule names who may pass; a policy naming nobody refuses everyone.
    pub fn names_anyone(&self) -> bool {
        [
            &self.any_permissions,
            &self.all_permissions,
            &self.any_roles,
            &self.all_roles,
            &self.any_groups,
            &self.all_groups,
            &self.clients,
        ]
        .iter()
        .any(|list| !list.is_empty())
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let lists = [
            ("any_permissions", &self.any_permissions),
            ("all_permissions", &self.all_permissions),
            ("any_roles", &self.any_roles),
            ("all_roles", &self.all_roles),
            ("any_groups", &self.any_groups),
            ("all_groups", &self.all_groups),
            ("clients", &self.clients),
            ("actor_clients", &self.actor_clients),
        ];
        for (name, list) in lists {
            if list.iter().any(|v| v.is_empty() || v.len() > 256) {
                return Err(invalid(
                    format!("{key}.{name}"),
                    "values must be 1-256 characters",
                ));
            }
        }
        if !(300..=MAX_LIFETIME_SECS).contains(&self.max_lifetime_secs) {
            return Err(invalid(
                format!("{key}.max_lifetime_secs"),
                format!("must be between 300 and {MAX_LIFETIME_SECS}: Google client libraries treat a credential with less than 225 s left as expired"),
            ));
        }
        Ok(())
    }
}
