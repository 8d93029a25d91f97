//! `[audit]`: where and how issuance records are kept.

use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where and how issuance records are kept.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// `postgres://…`; unset means the embedded SQLite file. `DATABASE_URL` overrides it.
    #[serde(default)]
    pub database_url: Option<String>,
    /// SQLite file used when no database URL is set.
    #[serde(default = "default_sqlite_path")]
    pub sqlite_path: PathBuf,
    /// Database connections.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Records older than this many days are purged.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Seconds between two purges.
    #[serde(default = "default_purge_interval")]
    pub purge_interval_secs: u64,
    /// Records waiting to be written, at most.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Records written in one statement, at most.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long a request waits for room in a full queue before it is refused (ms).
    #[serde(default = "default_enqueue_timeout")]
    pub enqueue_timeout_ms: u64,
    /// How long a request waits for its record's commit before it is refused (ms).
    #[serde(default = "default_commit_timeout")]
    pub commit_timeout_ms: u64,
    /// Seconds between two reloads of the revocations table.
    #[serde(default = "default_revocation_poll")]
    pub revocation_poll_secs: u64,
    /// With Postgres, every replica listens for revocations and lifts committed by the
    /// others (`LISTEN/NOTIFY`) and applies them within a second; the poll stays as the
    /// safety net. Ignored for the SQLite file, which one process serves.
    #[serde(default = "default_revocation_push")]
    pub revocation_push: bool,
    /// First wait (ms) before the revocation listener connects again after losing its
    /// connection; doubles on each failure in a row, up to 30 s.
    #[serde(default = "default_revocation_push_retry")]
    pub revocation_push_retry_ms: u64,
    /// Batches being written at once; more than one keeps records flowing while the
    /// database is slower than arrivals (at most `pool_size`). Postgres only: SQLite lets
    /// one writer in at a time.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long (ms) a commit runs before the next batch goes out beside it. Until then
    /// the records that arrive wait for it and leave together as one batch: each statement
    /// costs the database far more than each row. 0 sends each batch as soon as a slot is
    /// free.
    #[serde(default = "default_overlap_after")]
    pub overlap_after_ms: u64,
    /// Longest a single database statement may run (ms): Postgres `statement_timeout`,
    /// SQLite's busy timeout. A stuck statement then fails, and the caller gets a 503,
    /// instead of holding a connection for good. Migrations are not bound by it.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_ms: u64,
    /// First wait (ms) before a dead record writer is started again; doubles on each
    /// death in a row, up to 30 s.
    #[serde(default = "default_writer_restart_backoff")]
    pub writer_restart_backoff_ms: u64,
}

impl std::fmt::Debug for AuditSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database URL may carry a password.
        f.debug_struct("AuditSettings")
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("sqlite_path", &self.sqlite_path)
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

fn default_sqlite_path() -> PathBuf {
    PathBuf::from("data/sts-bridge.sqlite")
}
fn default_pool_size() -> u32 {
    8
}
fn default_retention_days() -> u32 {
    400
}
fn default_purge_interval() -> u64 {
    3600
}
fn default_queue_capacity() -> usize {
    10_000
}
fn default_max_batch() -> usize {
    512
}
fn default_enqueue_timeout() -> u64 {
    100
}
fn default_commit_timeout() -> u64 {
    5_000
}
fn default_max_in_flight() -> usize {
    2
}
fn default_overlap_after() -> u64 {
    2
}
fn default_statement_timeout() -> u64 {
    5_000
}
fn default_writer_restart_backoff() -> u64 {
    100
}
fn default_revocation_poll() -> u64 {
    10
}
fn default_revocation_push() -> bool {
    true
}
fn default_revocation_push_retry() -> u64 {
    500
}
impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            database_url: None,
            sqlite_path: default_sqlite_path(),
            pool_size: default_pool_size(),
            retention_days: default_retention_days(),
            purge_interval_secs: default_purge_interval(),
            queue_capacity: default_queue_capacity(),
            max_batch: default_max_batch(),
            enqueue_timeout_ms: default_enqueue_timeout(),
            commit_timeout_ms: default_commit_timeout(),
            revocation_poll_secs: default_revocation_poll(),
            revocation_push: default_revocation_push(),
            revocation_push_retry_ms: default_revocation_push_retry(),
            max_in_flight: default_max_in_flight(),
            overlap_after_ms: default_overlap_after(),
            statement_timeout_ms: default_statement_timeout(),
            writer_restart_backoff_ms: default_writer_restart_backoff(),
        }
    }
}

impl AuditSettings {
    /// The first wait before the revocation listener reconnects.
    pub fn revocation_push_retry(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.revocation_push_retry_ms)
    }

    /// The statement timeout as a duration.
    pub fn statement_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.statement_timeout_ms)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "audit.database_url",
                    "must be a postgres:// URL (leave it unset for the embedded SQLite file)",
                ));
            }
        }
        let max_batch_range = format!("between 1 and {}", crate::audit::MAX_BATCH);
        let checks: [(&str, bool, &str); 13] = [
            (
                "audit.pool_size",
                (1..=100).contains(&self.pool_size),
                "between 1 and 100",
            ),
            (
                "audit.retention_days",
                self.retention_days >= 1,
                "at least 1",
            ),
            (
                "audit.purge_interval_secs",
                self.purge_interval_secs >= 1,
                "at least 1",
            ),
            (
                "audit.queue_capacity",
                (1..=1_000_000).contains(&self.queue_capacity),
                "between 1 and 1000000",
            ),
            // Each record binds one parameter per column; SQLite allows 32766 per statement.
            (
                "audit.max_batch",
                (1..=crate::audit::MAX_BATCH).contains(&self.max_batch),
                max_batch_range.as_str(),
            ),
            (
                "audit.enqueue_timeout_ms",
                (1..=10_000).contains(&self.enqueue_timeout_ms),
                "between 1 and 10000",
            ),
            (
                "audit.commit_timeout_ms",
                (100..=60_000).contains(&self.commit_timeout_ms),
                "between 100 and 60000",
            ),
            (
                "audit.revocation_poll_secs",
                (1..=3600).contains(&self.revocation_poll_secs),
                "between 1 and 3600",
            ),
            (
                "audit.revocation_push_retry_ms",
                (10..=30_000).contains(&self.revocation_push_retry_ms),
                "between 10 and 30000",
            ),
            (
                "audit.statement_timeout_ms",
                (100..=600_000).contains(&self.statement_timeout_ms),
                "between 100 and 600000",
            ),
            (
                "audit.max_in_flight",
                (1..=self.pool_size as usize).contains(&self.max_in_flight),
                "between 1 and audit.pool_size",
            ),
            (
                "audit.overlap_after_ms",
                self.overlap_after_ms <= 10_000,
                "between 0 and 10000",
            ),
            (
                "audit.writer_restart_backoff_ms",
                (10..=30_000).contains(&self.writer_restart_backoff_ms),
                "between 10 and 30000",
            ),
        ];
        for (key, ok, rule) in checks {
            if !ok {
                return Err(invalid(key, format!("must be {rule}")));
            }
        }
        Ok(())
    }
}
