//! Targets: which Google credential an `audience` asks for, and which scopes it may carry.

use crate::config::{MappedClaim, TargetAssertion, TargetKind, TargetMode, TargetSettings};
use crate::identity::Identity;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// One configured target, ready for lookups.
#[derive(Debug)]
pub struct Target {
    /// Target name.
    pub name: Arc<str>,
    /// Its configuration.
    pub settings: TargetSettings,
    /// The scope sets most asked for (the defaults, each allowed scope alone) and the
    /// configured user project, made once: every cached credential for them shares these
    /// instead of holding copies.
    shared_scopes: Vec<Arc<[String]>>,
    shared_user_project: Option<Arc<str>>,
}

/// Why the requested target or scopes cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No target answers to this audience.
    #[error("audience {audience} is not a configured target; use one of: {known}")]
    Unknown {
        /// What the caller asked for.
        audience: String,
        /// Names the caller may use.
        known: String,
    },
    /// A requested scope is not allowed for the target.
    #[error("scope {scope} is not allowed for target {target}; allowed: {allowed}")]
    ScopeNotAllowed {
        /// First offending scope.
        scope: String,
        /// Target name.
        target: String,
        /// Allowed scopes.
        allowed: String,
    },
    /// An `impersonate` target maps none of the caller's claim values to a service account.
    #[error("target {target} maps no service account to your {claims}; ask an administrator for a role that one is mapped to")]
    NoServiceAccount {
        /// Target name.
        target: String,
        /// The claims the mapping reads, e.g. `roles`.
        claims: String,
    },
    /// The requested token type is not the one this target makes.
    #[error("target {target} issues {issues}; send requested_token_type={issues} or leave it out")]
    TokenType {
        /// Target name.
        target: String,
        /// The token type the target issues.
        issues: &'static str,
    },
    /// No scope requested and the target has no default.
    #[error(
        "no scope requested and target {target} has no default scopes; request one of: {allowed}"
    )]
    NoScope {
        /// Target name.
        target: String,
        /// Allowed scopes.
        allowed: String,
    },
}

/// All targets, found by name or by workforce provider resource.
#[derive(Debug)]
pub struct Targets {
    all: Vec<Arc<Target>>,
    by_audience: HashMap<String, Arc<Target>>,
}

impl Targets {
    /// Indexes the configured targets.
    pub fn new(settings: &[TargetSettings]) -> Self {
        let mut by_audience = HashMap::new();
        let mut all = Vec::new();
        for s in settings {
            let shared_scopes = std::iter::once(sorted(&s.default_scopes))
                .chain(s.allowed_scopes.iter().map(|scope| vec![scope.clone()]))
                .map(Arc::from)
                .collect();
            let target = Arc::new(Target {
                name: Arc::from(s.name.as_str()),
                settings: s.clone(),
                shared_scopes,
                shared_user_project: s.user_project.as_deref().map(Arc::from),
            });
            if s.kind == TargetKind::Workforce {
                by_audience.insert(s.provider.clone(), target.clone());
            }
            by_audience.insert(s.name.clone(), target.clone());
            all.push(target);
        }
        Self { all, by_audience }
    }

    /// Every target, in configuration order.
    pub fn all(&self) -> &[Arc<Target>] {
        &self.all
    }

    /// The target `audience` names (its name or its provider resource).
    pub fn resolve(&self, audience: &str) -> Result<Arc<Target>, TargetError> {
        self.by_audience.get(audience).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.all.iter().map(|t| &*t.name).collect();
            TargetError::Unknown {
                audience: audience.chars().take(300).collect(),
                known: known.join(", "),
            }
        })
    }
}

impl Target {
    /// `scopes` (sorted) as a cache key holds them: shared with every other key of this
    /// target when it is a set the target made up front.
    pub fn key_scopes(&self, scopes: &[String]) -> Arc<[String]> {
        self.shared_scopes
            .iter()
            .find(|shared| ***shared == *scopes)
            .cloned()
            .unwrap_or_else(|| Arc::from(scopes))
    }

    /// `project` as a cache key holds it: shared when it is the configured one.
    pub fn key_user_project(&self, project: Option<&str>) -> Option<Arc<str>> {
        let project = project?;
        match &self.shared_user_project {
            Some(shared) if **shared == *project => Some(shared.clone()),
            _ => Some(Arc::from(project)),
        }
    }

    /// How assertions are made for this target, when it is in assertion mode.
    pub fn assertion(&self) -> Option<&TargetAssertion> {
        match self.settings.mode {
            TargetMode::Assertion => self.settings.assertion.as_ref(),
            TargetMode::PassThrough => None,
        }
    }

    /// The service account whose credential this target hands `identity`: the configured
    /// one, or for `impersonate` the first mapping the caller's claims match.
    pub fn service_account_for(&self, identity: &Identity) -> Result<Option<String>, TargetError> {
        let s = &self.settings;
        match s.kind {
            TargetKind::Workforce => Ok(s.service_account.clone()),
            TargetKind::Firebase => Ok(s.firebase.as_ref().map(|f| f.service_account.clone())),
            TargetKind::Impersonate => {
                let values = |claim: MappedClaim| match claim {
                    MappedClaim::Roles => &identity.roles,
                    MappedClaim::Groups => &identity.groups,
                    MappedClaim::Permissions => &identity.permissions,
                };
                if let Some(m) = s
                    .service_accounts
                    .iter()
                    .find(|m| values(m.claim).contains(&m.value))
                {
                    return Ok(Some(m.service_account.clone()));
                }
                let mut claims: Vec<&str> = s
                    .service_accounts
                    .iter()
                    .map(|m| m.claim.as_str())
                    .collect();
                claims.sort_unstable();
                claims.dedup();
                Err(TargetError::NoServiceAccount {
                    target: self.name.to_string(),
                    claims: claims.join(" or "),
                })
            }
        }
    }

    /// The Google principal a credential of this target acts as for `subject`, with the
    /// attribute mapping `google.subject=assertion.sub` (workforce targets only).
    pub fn principal_for(&self, subject: &str) -> Option<String> {
        if self.settings.kind != TargetKind::Workforce {
            return None;
        }
        let (location, pool, _) =
            crate::google::provider::parse_workforce_provider(&self.settings.provider)?;
        Some(format!(
            "principal://iam.googleapis.com/locations/{location}/workforcePools/{pool}/subject/{subject}"
        ))
    }

    /// Refuses a `requested_token_type` other than what this target makes: Firebase
    /// targets make JWTs, the others access tokens.
    pub fn check_token_type(&self, wants_jwt: Option<bool>) -> Result<(), TargetError> {
        let jwt = self.settings.kind == TargetKind::Firebase;
        match wants_jwt {
            Some(wanted) if wanted != jwt => Err(TargetError::TokenType {
                target: self.name.to_string(),
                issues: if jwt {
                    crate::rfc8693::TOKEN_TYPE_JWT
                } else {
                    crate::rfc8693::TOKEN_TYPE_ACCESS_TOKEN
                },
            }),
            _ => Ok(()),
        }
    }

    /// The scopes a Firebase target's tokens carry: none, whatever the caller asked.
    fn is_scopeless(&self) -> bool {
        self.settings.kind == TargetKind::Firebase
    }

    /// The scopes to request: the caller's (sorted, without repeats) when all are allowed,
    /// the allowed ones among them when the target narrows, else the target's defaults
    /// when the caller sent none.
    pub fn scopes_for(&self, requested: &[String]) -> Result<Vec<String>, TargetError> {
        let allowed = || self.settings.allowed_scopes.join(" ");
        if self.is_scopeless() {
            return match requested.first() {
                None => Ok(Vec::new()),
                Some(scope) => Err(TargetError::ScopeNotAllowed {
                    scope: scope.chars().take(200).collect(),
                    target: self.name.to_string(),
                    allowed: "none (a Firebase custom token carries no OAuth scopes)".into(),
                }),
            };
        }
        if requested.is_empty() {
            if self.settings.default_scopes.is_empty() {
                return Err(TargetError::NoScope {
                    target: self.name.to_string(),
                    allowed: allowed(),
                });
            }
            return Ok(sorted(&self.settings.default_scopes));
        }
        let (granted, refused): (Vec<String>, Vec<String>) = requested
            .iter()
            .cloned()
            .partition(|s| self.settings.allowed_scopes.contains(s));
        match refused.first() {
            None => Ok(sorted(&granted)),
            // RFC 8693 §2.2.1 lets the answer carry narrower scopes than asked; the
            // answer's `scope` then says which were granted.
            Some(_) if self.settings.narrow_scopes && !granted.is_empty() => Ok(sorted(&granted)),
            Some(bad) => Err(TargetError::ScopeNotAllowed {
                scope: bad.chars().take(200).collect(),
                target: self.name.to_string(),
                allowed: allowed(),
            }),
        }
    }
}

fn sorted(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_the_common_scope_sets_and_the_configured_project_share_one_copy() {
        let settings = TargetSettings {
            name: "bq".into(),
            allowed_scopes: vec!["b".into(), "a".into(), "c".into()],
            default_scopes: vec!["b".into(), "a".into()],
            user_project: Some("billing-1".into()),
            ..TargetSettings::default()
        };
        let targets = Targets::new(&[settings]);
        let target = targets.resolve("bq").unwrap();
        let key = |scopes: &[&str]| {
            let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
            target.key_scopes(&scopes)
        };

        for common in [&["a", "b"][..], &["c"], &["a"]] {
            assert!(Arc::ptr_eq(&key(common), &key(common)), "{common:?}");
        }
        let rare = key(&["a", "c"]);
        assert_eq!(*rare, ["a".to_string(), "c".to_string()]);
        assert!(!Arc::ptr_eq(&rare, &key(&["a", "c"])));

        let project = target.key_user_project(Some("billing-1")).unwrap();
        assert!(Arc::ptr_eq(
            &project,
            &target.key_user_project(Some("billing-1")).unwrap()
        ));
        assert_eq!(
            target.key_user_project(Some("other-2")).as_deref(),
            Some("other-2")
        );
        assert_eq!(target.key_user_project(None), None);
    }
}
