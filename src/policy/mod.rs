//! Who may get what: pure functions from a target's policy and the caller's validated
//! claims to a decision. Deny is the default; every refusal names the rule and the value
//! that was missing, so the caller knows what to ask for.

use crate::config::{ClientSettings, PolicySettings};
use crate::identity::Identity;

/// Why a policy refused a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The caller lacks a permission, role or group, or is a machine where people only
    /// are allowed (RFC 6749 `access_denied`).
    #[error("target {target} refuses this token ({rule}): {detail}")]
    AccessDenied {
        /// Target name.
        target: String,
        /// The rule that failed, as configured (`any_groups`, `machine_tokens`, ...).
        rule: &'static str,
        /// What was required and what the token carried.
        detail: String,
    },
    /// The token was obtained by a client the target does not accept
    /// (RFC 6749 `unauthorized_client`).
    #[error("target {target} refuses this token ({rule}): {detail}")]
    UnauthorizedClient {
        /// Target name.
        target: String,
        /// The rule that failed.
        rule: &'static str,
        /// What was required and what the token carried.
        detail: String,
    },
}

impl PolicyError {
    fn denied(target: &str, rule: &'static str, detail: String) -> Self {
        PolicyError::AccessDenied {
            target: target.to_owned(),
            rule,
            detail,
        }
    }

    fn unauthorized(target: &str, rule: &'static str, detail: String) -> Self {
        PolicyError::UnauthorizedClient {
            target: target.to_owned(),
            rule,
            detail,
        }
    }

    /// The RFC 6749 error code.
    pub fn oauth_code(&self) -> &'static str {
        match self {
            PolicyError::AccessDenied { .. } => "access_denied",
            PolicyError::UnauthorizedClient { .. } => "unauthorized_client",
        }
    }

    /// The rule that failed.
    pub fn rule(&self) -> &'static str {
        match self {
            PolicyError::AccessDenied { rule, .. }
            | PolicyError::UnauthorizedClient { rule, .. } => rule,
        }
    }
}

/// Lets `identity` use `target` when every rule its policy states holds.
pub fn check(
    policy: &PolicySettings,
    target: &str,
    identity: &Identity,
) -> Result<(), PolicyError> {
    let denied = |rule, detail| PolicyError::denied(target, rule, detail);
    if !policy.names_anyone() {
        return Err(denied(
            "policy",
            "the target's policy names no permission, role, group or client, so it serves nobody; ask an administrator".into(),
        ));
    }
    if identity.is_machine() && !policy.machine_tokens {
        return Err(denied(
            "machine_tokens",
            format!(
                "machine tokens (client credentials) are not accepted, and subject {} is one; use a person's token",
                printable(&identity.subject)
            ),
        ));
    }
    if !policy.clients.is_empty() {
        let client = identity.client_id.as_deref();
        if !client.is_some_and(|c| policy.clients.iter().any(|a| a == c)) {
            return Err(PolicyError::unauthorized(
                target,
                "clients",
                format!(
                    "tokens must be issued to one of the clients {}; this token's azp/client_id is {}",
                    policy.clients.join(", "),
                    client.map_or_else(|| "absent".into(), printable)
                ),
            ));
        }
    }
    let lists = [
        (
            "permissions",
            &policy.any_permissions,
            &policy.all_permissions,
            &identity.permissions,
        ),
        (
            "roles",
            &policy.any_roles,
            &policy.all_roles,
            &identity.roles,
        ),
        (
            "groups",
            &policy.any_groups,
            &policy.all_groups,
            &identity.groups,
        ),
    ];
    for (what, any, all, held) in lists {
        if let Some(detail) = missing_any(what, any, held) {
            return Err(denied(any_rule(what), detail));
        }
        if let Some(detail) = missing_all(what, all, held) {
            return Err(denied(all_rule(what), detail));
        }
    }
    Ok(())
}

/// Lets `actor` act for the caller: an actor must be a machine token, and a target listing
/// `actor_clients` requires one issued to a listed client.
pub fn check_actor(
    policy: &PolicySettings,
    target: &str,
    actor: Option<&Identity>,
) -> Result<(), PolicyError> {
    let denied = |rule, detail| PolicyError::denied(target, rule, detail);
    match actor {
        None if policy.actor_clients.is_empty() => Ok(()),
        None => Err(denied(
            "actor_clients",
            format!(
                "an actor_token issued to one of the clients {} is required",
                policy.actor_clients.join(", ")
            ),
        )),
        Some(a) if !a.is_machine() => Err(denied(
            "actor",
            format!(
                "the actor must be a client-credentials token; {} is not one",
                printable(&a.subject)
            ),
        )),
        Some(_) if policy.actor_clients.is_empty() => Ok(()),
        Some(a) => {
            let client = a.client_id.as_deref();
            if client.is_some_and(|c| policy.actor_clients.iter().any(|l| l == c)) {
                return Ok(());
            }
            Err(PolicyError::unauthorized(
                target,
                "actor_clients",
                format!(
                    "the actor must be one of the clients {}; this actor's azp/client_id is {}",
                    policy.actor_clients.join(", "),
                    client.map_or_else(|| "absent".into(), printable)
                ),
            ))
        }
    }
}

/// Lets the client that authenticated with HTTP Basic use `target` for `identity` when
/// its own limits (targets, `azp` values) allow it.
pub fn check_client(
    client: &ClientSettings,
    target: &str,
    identity: &Identity,
) -> Result<(), PolicyError> {
    let refused = |rule, detail| PolicyError::unauthorized(target, rule, detail);
    if !client.targets.is_empty() && !client.targets.iter().any(|t| t == target) {
        return Err(refused(
            "clients.targets",
            format!(
                "client {} may use only the targets {}",
                client.id,
                client.targets.join(", ")
            ),
        ));
    }
    let azp = identity.client_id.as_deref();
    if !client.azp.is_empty() && !azp.is_some_and(|a| client.azp.iter().any(|c| c == a)) {
        return Err(refused(
            "clients.azp",
            format!(
                "client {} may present tokens issued to {} only; this token's azp/client_id is {}",
                client.id,
                client.azp.join(", "),
                azp.map_or_else(|| "absent".into(), printable)
            ),
        ));
    }
    Ok(())
}

/// The `expires_in` to report for a credential with `remaining_secs` of life: never more
/// than the policy's longest lifetime, never less than 1.
pub fn capped_lifetime(policy: &PolicySettings, remaining_secs: u64) -> u64 {
    remaining_secs.min(policy.max_lifetime_secs).max(1)
}

fn any_rule(what: &str) -> &'static str {
    match what {
        "permissions" => "any_permissions",
        "roles" => "any_roles",
        _ => "any_groups",
    }
}

fn all_rule(what: &str) -> &'static str {
    match what {
        "permissions" => "all_permissions",
        "roles" => "all_roles",
        _ => "all_groups",
    }
}

fn missing_any(what: &str, required: &[String], held: &[String]) -> Option<String> {
    if required.is_empty() || required.iter().any(|r| held.contains(r)) {
        return None;
    }
    Some(format!(
        "the token's {what} must include one of {}; it carries none of them",
        required.join(", ")
    ))
}

fn missing_all(what: &str, required: &[String], held: &[String]) -> Option<String> {
    let missing: Vec<&str> = required
        .iter()
        .filter(|r| !held.contains(r))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "the token's {what} must include all of {}; missing: {}",
        required.join(", "),
        missing.join(", ")
    ))
}

/// A token-chosen value quoted in a message: bounded and printable.
fn printable(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

#[cfg(test)]
mod tests;
