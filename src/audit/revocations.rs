//! Revoked subjects: kept in the database, mirrored in memory, and polled so every replica
//! honours a revocation within the poll interval.

use super::{AuditError, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use time::OffsetDateTime;

/// A subject refused until a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked subject.
    pub subject: String,
    /// Refused until then.
    pub until: OffsetDateTime,
    /// Why.
    pub reason: String,
    /// When the revocation was made.
    pub created_at: OffsetDateTime,
    /// Who made it (the administrator's subject).
    pub created_by: String,
}

/// The in-memory mirror of the revocations table.
#[derive(Default)]
pub struct Revocations {
    active: RwLock<HashMap<String, Revocation>>,
    /// Bumped by every local change, so a reload that read the table before the change
    /// does not overwrite it with an older snapshot.
    version: AtomicU64,
}

impl Revocations {
    /// The revocation in force for `subject`, if any.
    pub fn active_for(&self, subject: &str) -> Option<Revocation> {
        let now = OffsetDateTime::now_utc();
        self.active
            .read()
            .expect("revocations lock")
            .get(subject)
            .filter(|r| r.until > now)
            .cloned()
    }

    /// Applies a revocation made on this replica at once.
    pub fn insert(&self, revocation: Revocation) {
        let mut active = self.active.write().expect("revocations lock");
        self.version.fetch_add(1, Ordering::SeqCst);
        active.insert(revocation.subject.clone(), revocation);
    }

    /// Forgets a lifted revocation at once.
    pub fn remove(&self, subject: &str) {
        self.active
            .write()
            .expect("revocations lock")
            .remove(subject);
    }

    /// Reloads from the store; returns the subjects revoked since the last load.
    pub async fn reload(&self, store: &Store) -> Result<Vec<String>, AuditError> {
        let version = self.version.load(Ordering::SeqCst);
        let fresh = store.active_revocations(OffsetDateTime::now_utc()).await?;
        let mut active = self.active.write().expect("revocations lock");
        if self.version.load(Ordering::SeqCst) != version {
            // A revocation changed here while the table was read; the next reload sees it.
            return Ok(Vec::new());
        }
        let newly: Vec<String> = fresh
            .iter()
            .filter(|r| active.get(&r.subject) != Some(r))
            .map(|r| r.subject.clone())
            .collect();
        *active = fresh.into_iter().map(|r| (r.subject.clone(), r)).collect();
        Ok(newly)
    }
}
