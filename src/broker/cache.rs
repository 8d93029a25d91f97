//! Credential cache: one entry per (issuer, subject, target, scopes, identity claims),
//! served with its remaining lifetime, refreshed ahead of expiry, bounded in size.

use crate::config::TargetKind;
use crate::identity::Identity;
use crate::secret::Token;
use moka::future::Cache;
use moka::Expiry;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a cached credential is for. Every field takes part in equality, so two subjects,
/// targets, scope sets or claim sets never share an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    issuer: String,
    subject: String,
    target: Arc<str>,
    scopes: Arc<[String]>,
    user_project: Option<Arc<str>>,
    /// What the credential is: a federated token, a service account's token or a custom
    /// token, and whose.
    kind: TargetKind,
    service_account: Option<String>,
    claims_digest: [u8; 32],
}

impl CacheKey {
    /// Key for `identity` asking `target` for `scopes` (already sorted). `minted` is the
    /// attributes of the assertion Google will see, in assertion mode: then only they, not
    /// the caller's other claims, tell credentials apart.
    pub fn new(
        identity: &Identity,
        actor: Option<&Identity>,
        target: Arc<str>,
        scopes: Arc<[String]>,
        user_project: Option<Arc<str>>,
        minted: Option<&Map<String, Value>>,
    ) -> Self {
        Self {
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            target,
            scopes,
            user_project,
            kind: TargetKind::Workforce,
            service_account: None,
            claims_digest: claims_digest(identity, actor, minted),
        }
    }

    /// The same key for a credential of `kind`, of `service_account` when it is one's.
    pub fn of(mut self, kind: TargetKind, service_account: Option<String>) -> Self {
        self.kind = kind;
        self.service_account = service_account;
        self
    }

    /// The service account whose credential this entry holds.
    pub fn service_account(&self) -> Option<&str> {
        self.service_account.as_deref()
    }

    /// The issuer of the subject this entry belongs to.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The target this entry is for.
    pub fn target(&self) -> &Arc<str> {
        &self.target
    }

    /// The subject this entry belongs to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Scopes, sorted.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// Project billed for the exchange.
    pub fn user_project(&self) -> Option<&str> {
        self.user_project.as_deref()
    }

    /// Every field, length-prefixed, in a form that is the same in every process and
    /// release (unlike `Hash`): what the shared tier's key names are derived from.
    pub(super) fn canonical_bytes(&self) -> Vec<u8> {
        fn put(out: &mut Vec<u8>, part: Option<&[u8]>) {
            match part {
                None => out.push(0),
                Some(bytes) => {
                    out.push(1);
                    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
        let mut out = b"sts-bridge cache key v1".to_vec();
        put(&mut out, Some(self.issuer.as_bytes()));
        put(&mut out, Some(self.subject.as_bytes()));
        put(&mut out, Some(self.target.as_bytes()));
        out.extend_from_slice(&(self.scopes.len() as u64).to_be_bytes());
        for scope in self.scopes.iter() {
            put(&mut out, Some(scope.as_bytes()));
        }
        put(&mut out, self.user_project.as_deref().map(str::as_bytes));
        put(&mut out, Some(self.kind.as_str().as_bytes()));
        put(&mut out, self.service_account.as_deref().map(str::as_bytes));
        put(&mut out, Some(&self.claims_digest));
        out
    }
}

/// Hash of the claims Google's attribute mapping and conditions may use: a changed group
/// membership, or a token from another client, for another audience or with any other
/// claim changed (the validator's digest of all but the time claims), must not reuse a
/// credential minted for the old one.
fn claims_digest(
    identity: &Identity,
    actor: Option<&Identity>,
    minted: Option<&Map<String, Value>>,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    match minted {
        Some(attributes) => {
            hasher.update(b"assertion");
            // serde_json's map is ordered by key, so equal claims always hash alike.
            hasher.update(Value::Object(attributes.clone()).to_string().as_bytes());
        }
        None => token_claims_digest(&mut hasher, identity),
    }
    // A credential obtained with one actor is not handed to another (or to none).
    if let Some(actor) = actor {
        hasher.update(b"actor");
        for part in [actor.issuer.as_bytes(), actor.subject.as_bytes()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.update(actor.claims_digest);
    }
    hasher.finalize().into()
}

/// The caller's token's claims, for pass-through mode: Google sees that token.
fn token_claims_digest(hasher: &mut Sha256, identity: &Identity) {
    let client: Vec<String> = identity.client_id.iter().cloned().collect();
    for (label, values) in [
        ("groups", &identity.groups),
        ("roles", &identity.roles),
        ("permissions", &identity.permissions),
        ("audiences", &identity.audiences),
        ("client", &client),
        ("grant_types", &identity.grant_types),
    ] {
        let mut sorted: Vec<&String> = values.iter().collect();
        sorted.sort();
        hasher.update(label.as_bytes());
        hasher.update((sorted.len() as u64).to_be_bytes());
        for v in sorted {
            hasher.update((v.len() as u64).to_be_bytes());
            hasher.update(v.as_bytes());
        }
    }
    hasher.update(identity.claims_digest);
}

/// A Google credential and when it expires.
#[derive(Debug)]
pub struct CachedCredential {
    /// The Google access token.
    pub token: Token,
    /// Monotonic expiry time.
    pub expires_at: Instant,
    refreshing: AtomicBool,
}

impl CachedCredential {
    /// A credential valid for `lifetime` from `requested_at` (when the request that obtained
    /// it was sent, so time spent waiting for Google is not counted twice).
    pub fn new(token: Token, requested_at: Instant, lifetime: Duration) -> Self {
        Self {
            token,
            expires_at: requested_at + lifetime,
            refreshing: AtomicBool::new(false),
        }
    }

    /// Time left before the credential expires.
    pub fn remaining(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }

    /// Claims the single background refresh of this entry; true for the first caller only.
    pub fn claim_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Gives the refresh back after a failure so a later request may try again.
    pub fn release_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }
}

/// Evicts an entry once less than `min_remaining` of its life is left.
struct UntilNearlyExpired {
    min_remaining: Duration,
}

impl UntilNearlyExpired {
    fn ttl(&self, value: &CachedCredential) -> Option<Duration> {
        Some(value.remaining().saturating_sub(self.min_remaining))
    }
}

impl Expiry<CacheKey, Arc<CachedCredential>> for UntilNearlyExpired {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedCredential>,
        _created_at: Instant,
    ) -> Option<Duration> {
        self.ttl(value)
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedCredential>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.ttl(value)
    }
}

/// The bounded credential cache.
pub type CredentialCache = Cache<CacheKey, Arc<CachedCredential>>;

/// A cache of at most `max_entries` that drops entries with less than `min_remaining` left.
pub fn build(max_entries: u64, min_remaining: Duration) -> CredentialCache {
    Cache::builder()
        .max_capacity(max_entries)
        .expire_after(UntilNearlyExpired { min_remaining })
        .support_invalidation_closures()
        .build()
}
