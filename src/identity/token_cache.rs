//! Validated tokens, so a token presented again skips the signature check. Keyed by the
//! SHA-256 of the exact token bytes; an entry lives until the token's `exp` (plus leeway)
//! or a configured cap, whichever comes first, and is served only while its key is still
//! published (checked by the validator on every hit).

use super::Identity;
use moka::future::Cache;
use moka::Expiry;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bounds of the validated-token cache.
#[derive(Debug, Clone, Copy)]
pub struct TokenCacheLimits {
    /// Most tokens kept.
    pub max_entries: u64,
    /// Longest time a token is kept, whatever its `exp`.
    pub max_age: Duration,
}

/// SHA-256 of a token: the cache never holds the token itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub(super) fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// A token that passed full validation, and what it was verified with.
pub(super) struct Verified {
    /// Who it names.
    pub identity: Identity,
    /// Index of the issuer among the validator's issuers.
    pub issuer: usize,
    /// Key id that verified the signature.
    pub kid: Arc<str>,
    /// That key's material, as [`super::VerifyingKey::material`].
    pub key_material: [u8; 32],
}

impl Verified {
    /// Whether `exp` has not passed, allowing `leeway` seconds as full validation does.
    pub(super) fn in_force(&self, leeway: u64) -> bool {
        self.identity.expires_at.saturating_add(leeway) >= jsonwebtoken::get_current_timestamp()
    }
}

pub(super) struct TokenCache {
    entries: Cache<TokenDigest, Arc<Verified>>,
}

struct UntilExpiry {
    max_age: Duration,
}

impl Expiry<TokenDigest, Arc<Verified>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenDigest,
        value: &Arc<Verified>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left = value
            .identity
            .expires_at
            .saturating_sub(jsonwebtoken::get_current_timestamp());
        Some(Duration::from_secs(left).min(self.max_age))
    }
}

impl TokenCache {
    pub(super) fn new(limits: TokenCacheLimits) -> Self {
        let entries = Cache::builder()
            .max_capacity(limits.max_entries)
            .expire_after(UntilExpiry {
                max_age: limits.max_age,
            })
            .build();
        Self { entries }
    }

    pub(super) async fn get(&self, digest: &TokenDigest) -> Option<Arc<Verified>> {
        self.entries.get(digest).await
    }

    pub(super) async fn insert(&self, digest: TokenDigest, verified: Arc<Verified>) {
        self.entries.insert(digest, verified).await;
    }

    pub(super) async fn invalidate(&self, digest: &TokenDigest) {
        self.entries.invalidate(digest).await;
    }
}
