//! `[admin]`: the admin API.

use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

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
    /// The one trusted issuer whose tokens may administer; unset: any trusted issuer.
    #[serde(default)]
    pub issuer: Option<String>,
    /// An admin token's `aud` must hold one of these; unset: the issuer's audiences.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// A listener of its own for `/admin/v1/*` (and the health checks); unset: the public
    /// listener serves the admin API.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Secret the paging cursors are signed with; set the same value on every replica
    /// behind one load balancer. Unset: a key drawn at start-up (cursors then work only
    /// on the replica that returned them, and not across restarts).
    #[serde(default)]
    pub cursor_secret: Option<String>,
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
            issuer: None,
            audiences: Vec::new(),
            listen: None,
            cursor_secret: None,
        }
    }
}

impl AdminSettings {
    /// `trusted` are the configured issuers' `iss` values.
    pub(super) fn validate(&self, trusted: &[&str]) -> Result<(), ConfigError> {
        if self.cursor_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(invalid(
                "admin.cursor_secret",
                "must be at least 16 characters when set",
            ));
        }
        if self.permission.is_empty() {
            return Err(invalid("admin.permission", "must not be empty"));
        }
        if let Some(issuer) = &self.issuer {
            if !trusted.contains(&issuer.as_str()) {
                return Err(invalid(
                    "admin.issuer",
                    format!(
                        "`{issuer}` is not one of the trusted issuers: {}",
                        trusted.join(", ")
                    ),
                ));
            }
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(invalid("admin.audiences", "values must not be empty"));
        }
        Ok(())
    }
}
