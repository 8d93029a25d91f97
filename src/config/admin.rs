//! `[admin]`: the admin API.

use serde::{Deserialize, Serialize};

/// Admin API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Whether `/admin/v1/*` is served.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Permission an admin token must carry in its `permissions` claim (Auth0 RBAC).
    #[serde(default = "default_admin_permission")]
    pub permission: String,
}

fn default_true() -> bool {
    true
}
fn default_admin_permission() -> String {
    "sts:admin".into()
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            permission: default_admin_permission(),
        }
    }
}
