//! Revoked subjects: kept in the database, mirrored in memory, and polled so every replica
//! honours a revocation within the poll interval.

use super::{AuditError, Store};
use std::collections::HashMap;
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
        self.active
            .write()
            .expect("revocations lock")
            .insert(revocation.subject.clone(), revocation);
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
        let fresh = store.active_revocations(OffsetDateTime::now_utc()).await?;
        let mut active = self.active.write().expect("revocations lock");
        let newly: Vec<String> = fresh
            .iter()
            .filter(|r| active.get(&r.subject) != Some(r))
            .map(|r| r.subject.clone())
            .collect();
        *active = fresh.into_iter().map(|r| (r.subject.clone(), r)).collect();
        Ok(newly)
    }
}
