//! Revoked subjects, keyed by (issuer, subject): kept in the database, mirrored in memory,
//! and polled so every replica honours a revocation within the poll interval.

use super::{AuditError, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use time::OffsetDateTime;

/// Issuer of revocations made before they named one: they hold for every issuer.
pub const ANY_ISSUER: &str = "";

/// A subject of one issuer refused until a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Issuer of the revoked subject ([`ANY_ISSUER`] for every issuer).
    pub issuer: String,
    /// The revoked subject.
    pub subject: String,
    /// Refused until then.
    pub until: OffsetDateTime,
    /// Why; for the record and administrators, never shown to the subject.
    pub reason: String,
    /// When the revocation was made.
    pub created_at: OffsetDateTime,
    /// Who made it (the administrator's subject).
    pub created_by: String,
}

type Key = (String, String);

/// The in-memory mirror of the revocations table.
#[derive(Default)]
pub struct Revocations {
    active: RwLock<HashMap<Key, Revocation>>,
    /// Bumped by every local change, revocation or lift, so a reload that read the table
    /// before the change does not overwrite it with an older snapshot.
    version: AtomicU64,
}

impl Revocations {
    /// The revocation in force for `subject` of `issuer`, if any.
    pub fn active_for(&self, issuer: &str, subject: &str) -> Option<Revocation> {
        let now = OffsetDateTime::now_utc();
        let active = self.active.read().expect("revocations lock");
        [issuer, ANY_ISSUER]
            .iter()
            .filter_map(|i| active.get(&(i.to_string(), subject.to_owned())))
            .find(|r| r.until > now)
            .cloned()
    }

    /// Applies a revocation made on this replica at once.
    pub fn insert(&self, revocation: Revocation) {
        let mut active = self.active.write().expect("revocations lock");
        self.version.fetch_add(1, Ordering::SeqCst);
        let key = (revocation.issuer.clone(), revocation.subject.clone());
        active.insert(key, revocation);
    }

    /// Forgets a lifted revocation at once.
    pub fn remove(&self, issuer: &str, subject: &str) {
        let mut active = self.active.write().expect("revocations lock");
        self.version.fetch_add(1, Ordering::SeqCst);
        active.remove(&(issuer.to_owned(), subject.to_owned()));
    }

    /// Reloads from the store; returns the (issuer, subject) pairs revoked since the last
    /// load.
    pub async fn reload(&self, store: &Store) -> Result<Vec<(String, String)>, AuditError> {
        let version = self.version.load(Ordering::SeqCst);
        let fresh = store.active_revocations(OffsetDateTime::now_utc()).await?;
        Ok(self.apply(version, fresh))
    }

    /// Like [`Revocations::reload`], but reads the table again (a few times) when a local
    /// change raced the read: a change announced by another replica must not wait for
    /// the next poll.
    pub async fn reload_now(&self, store: &Store) -> Result<Vec<(String, String)>, AuditError> {
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            let version = self.version.load(Ordering::SeqCst);
            let fresh = store.active_revocations(OffsetDateTime::now_utc()).await?;
            if let Some(newly) = self.try_apply(version, fresh) {
                return Ok(newly);
            }
        }
        Ok(Vec::new())
    }

    /// Replaces the mirror with `fresh`, read from the table when the local version was
    /// `version`, unless a local change happened since.
    fn apply(&self, version: u64, fresh: Vec<Revocation>) -> Vec<(String, String)> {
        // When a revocation was made or lifted here while the table was read, the next
        // reload sees it.
        self.try_apply(version, fresh).unwrap_or_default()
    }

    /// [`Revocations::apply`], `None` when a local change since `version` kept the mirror.
    fn try_apply(&self, version: u64, fresh: Vec<Revocation>) -> Option<Vec<(String, String)>> {
        let mut active = self.active.write().expect("revocations lock");
        if self.version.load(Ordering::SeqCst) != version {
            return None;
        }
        let fresh: HashMap<Key, Revocation> = fresh
            .into_iter()
            .map(|r| ((r.issuer.clone(), r.subject.clone()), r))
            .collect();
        let newly = fresh
            .iter()
            .filter(|(k, r)| active.get(*k) != Some(*r))
            .map(|(k, _)| k.clone())
            .collect();
        *active = fresh;
        Some(newly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocation(issuer: &str, subject: &str) -> Revocation {
        let now = OffsetDateTime::now_utc();
        Revocation {
            issuer: issuer.into(),
            subject: subject.into(),
            until: now + time::Duration::hours(1),
            reason: "test".into(),
            created_at: now,
            created_by: "auth0|admin".into(),
        }
    }

    #[test]
    fn a_revocation_holds_for_its_issuer_only_unless_it_names_none() {
        let r = Revocations::default();
        r.insert(revocation("https://a/", "auth0|alice"));
        assert!(r.active_for("https://a/", "auth0|alice").is_some());
        assert!(r.active_for("https://b/", "auth0|alice").is_none());
        r.insert(revocation(ANY_ISSUER, "auth0|bob"));
        assert!(r.active_for("https://b/", "auth0|bob").is_some());
        r.remove("https://a/", "auth0|alice");
        assert!(r.active_for("https://a/", "auth0|alice").is_none());
    }

    #[test]
    fn a_lift_is_not_undone_by_a_reload_that_read_the_table_before_it() {
        let r = Revocations::default();
        let alice = revocation("https://a/", "auth0|alice");
        r.insert(alice.clone());
        // A poll reads the table while alice is still revoked ...
        let version = r.version.load(Ordering::SeqCst);
        let stale = vec![alice];
        // ... the administrator lifts the revocation ...
        r.remove("https://a/", "auth0|alice");
        // ... and the poll's stale snapshot must not bring it back.
        r.apply(version, stale);
        assert!(r.active_for("https://a/", "auth0|alice").is_none());
    }
}
