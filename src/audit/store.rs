//! The issuance store: Postgres in production, an embedded SQLite file by default.

use super::{AuditError, IssuanceRecord, Revocation};
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, QueryBuilder, Row, Sqlite, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// What [`Store::connect`] bounds each statement by.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

const COLUMNS: &str = "issued_at, request_id, issuer, subject, client_id, actor, target, \
    google_principal, scopes, source, outcome, error_code, expires_at, token_sha256, \
    client_addr, user_agent, api_client, azp, server_request_id, service_account, claimed_client";

/// Values bound per record: one per column of [`COLUMNS`].
const COLUMNS_PER_RECORD: usize = {
    let bytes = COLUMNS.as_bytes();
    let (mut i, mut commas) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b',' {
            commas += 1;
        }
        i += 1;
    }
    commas + 1
};

/// Parameters SQLite accepts in one statement (`SQLITE_MAX_VARIABLE_NUMBER`).
const SQLITE_MAX_PARAMETERS: usize = 32_766;

/// Records one INSERT can carry: every record binds [`COLUMNS_PER_RECORD`] values.
pub const MAX_BATCH: usize = SQLITE_MAX_PARAMETERS / COLUMNS_PER_RECORD;

/// Key of the Postgres advisory lock held by the replica purging old records ("sts_purg").
pub const PURGE_LOCK_KEY: i64 = 0x7374_735f_7075_7267;

const PURGE_SQL: &str = "DELETE FROM issuances WHERE id IN \
     (SELECT id FROM issuances WHERE issued_at < $1 ORDER BY issued_at LIMIT $2)";

/// The Postgres channel a committed revocation or lift is announced on.
pub const REVOCATIONS_CHANNEL: &str = "sts_bridge_revocations";

/// What a revocation change announces: a SHA-256 of the issuer and subject, never the
/// subject itself. Listeners re-read the table; the hash only lets a change be told apart
/// in a trace.
fn change_payload(issuer: &str, subject: &str) -> String {
    let mut hash = crate::secret::fingerprint(format!("{issuer}\0{subject}").as_bytes());
    hash.truncate(16);
    hash
}

/// A database holding issuances, revocations and admin actions.
#[derive(Clone)]
pub enum Store {
    /// PostgreSQL (production).
    Postgres(PgPool),
    /// SQLite file (the embedded default).
    Sqlite(SqlitePool),
}

/// Filters and page of an issuance listing; newest first.
#[derive(Debug, Clone, Default)]
pub struct IssuanceQuery {
    /// Only this subject.
    pub subject: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Not before this time.
    pub since: Option<OffsetDateTime>,
    /// Before this time.
    pub until: Option<OffsetDateTime>,
    /// Only rows with an id below this (the cursor of the previous page).
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// An issuance as read back from the store.
#[derive(Debug, Clone, Serialize)]
pub struct StoredIssuance {
    /// Row id (also the pagination key).
    pub id: i64,
    /// RFC 3339 time.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Request id: the caller's `X-Request-Id`, else the server's id.
    pub request_id: String,
    /// The id the server generated for the request (absent on rows written before it was kept).
    pub server_request_id: Option<String>,
    /// Token issuer.
    pub issuer: String,
    /// Subject.
    pub subject: String,
    /// Client id.
    pub client_id: Option<String>,
    /// Actor.
    pub actor: Option<String>,
    /// The subject token's `azp` / `client_id`.
    pub azp: Option<String>,
    /// Target.
    pub target: String,
    /// Google principal.
    pub google_principal: Option<String>,
    /// The service account whose credential was handed out.
    pub service_account: Option<String>,
    /// Scopes, space-separated.
    pub scopes: String,
    /// `sts`, `cache`, `impersonation`.
    pub source: Option<String>,
    /// `issued` or `refused`.
    pub outcome: String,
    /// Error code of a refusal.
    pub error_code: Option<String>,
    /// Expiry of the credential.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// SHA-256 of the Google token.
    pub token_sha256: Option<String>,
    /// Caller's address.
    pub client_addr: Option<String>,
    /// Caller's User-Agent.
    pub user_agent: Option<String>,
    /// Caller's x-goog-api-client.
    pub api_client: Option<String>,
    /// A public client the caller named itself as, unproven.
    pub claimed_client: Option<String>,
}

/// Something an administrator did.
#[derive(Debug, Clone)]
pub struct AdminAction {
    /// When.
    pub at: OffsetDateTime,
    /// Request id.
    pub request_id: String,
    /// The administrator's subject.
    pub actor: String,
    /// `list_issuances`, `revoke`, `lift_revocation`.
    pub action: &'static str,
    /// Subject acted upon, if any.
    pub subject: Option<String>,
    /// Parameters, as JSON text.
    pub detail: String,
}

/// An admin action as read back from the store.
#[derive(Debug, Clone, Serialize)]
pub struct StoredAdminAction {
    /// Row id (also the pagination key).
    pub id: i64,
    /// RFC 3339 time.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Request id of the admin call.
    pub request_id: String,
    /// The administrator's subject.
    pub actor: String,
    /// `list_issuances`, `revoke`, `lift_revocation`, ...
    pub action: String,
    /// Subject acted upon, if any.
    pub subject: Option<String>,
    /// Parameters of the call.
    pub detail: serde_json::Value,
}

/// SQLite keeps times as fixed-width RFC 3339 text in UTC, so text order is time order.
fn sqlite_time(t: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

fn parse_sqlite_time(text: &str) -> Result<OffsetDateTime, AuditError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| AuditError::Store(format!("bad time {text:?} in the store: {e}")))
}

/// Runs `$body` once per engine, with `$pool` the engine's pool, `$time` turning a time into
/// the engine's column value, and `$read` reading a nullable time column of a row; the two
/// engines differ only there (Postgres has `timestamptz`, SQLite keeps RFC 3339 text).
macro_rules! per_engine {
    ($store:expr, |$pool:ident, $time:ident, $read:ident| $body:expr) => {
        match $store {
            Store::Postgres($pool) => {
                #[allow(unused_variables)]
                let $time = |t: OffsetDateTime| t;
                #[allow(unused_variables)]
                let $read = |r: &sqlx::postgres::PgRow,
                             c: &str|
                 -> Result<Option<OffsetDateTime>, AuditError> {
                    Ok(r.try_get(c)?)
                };
                $body
            }
            Store::Sqlite($pool) => {
                #[allow(unused_variables)]
                let $time = sqlite_time;
                #[allow(unused_variables)]
                let $read = |r: &sqlx::sqlite::SqliteRow,
                             c: &str|
                 -> Result<Option<OffsetDateTime>, AuditError> {
                    let text: Option<String> = r.try_get(c)?;
                    text.map(|t| parse_sqlite_time(&t)).transpose()
                };
                $body
            }
        }
    };
}

impl Store {
    /// Connects to `database_url` (Postgres) or, when it is `None`, opens (creating) the
    /// SQLite file at `sqlite_path`.
    pub async fn connect(
        database_url: Option<&str>,
        sqlite_path: &Path,
        pool_size: u32,
    ) -> Result<Self, AuditError> {
        Self::connect_with(
            database_url,
            sqlite_path,
            pool_size,
            DEFAULT_STATEMENT_TIMEOUT,
        )
        .await
    }

    /// Like [`Store::connect`], each statement bounded by `statement_timeout` (Postgres
    /// `statement_timeout`; SQLite waits that long for a lock at most).
    pub async fn connect_with(
        database_url: Option<&str>,
        sqlite_path: &Path,
        pool_size: u32,
        statement_timeout: Duration,
    ) -> Result<Self, AuditError> {
        match database_url {
            Some(url) => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|_| {
                        AuditError::Store("DATABASE_URL is not a valid postgres:// URL".into())
                    })?
                    .options([(
                        "statement_timeout",
                        statement_timeout.as_millis().to_string(),
                    )]);
                let tcp_peer = options
                    .get_socket()
                    .is_none()
                    .then(|| (options.get_host().to_owned(), options.get_port()));
                let pool = PgPoolOptions::new()
                    .max_connections(pool_size)
                    .acquire_timeout(Duration::from_secs(3))
                    .after_connect(move |_conn, _meta| {
                        let tcp_peer = tcp_peer.clone();
                        Box::pin(async move {
                            if let Some((host, port)) = tcp_peer {
                                super::nodelay::disable_towards(&host, port).await;
                            }
                            Ok(())
                        })
                    })
                    .connect_lazy_with(options);
                Ok(Store::Postgres(pool))
            }
            None => {
                if let Some(dir) = sqlite_path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        AuditError::Store(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(sqlite_path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(statement_timeout);
                let pool = SqlitePoolOptions::new()
                    .max_connections(pool_size.max(1))
                    .acquire_timeout(Duration::from_secs(3))
                    .connect_with(options)
                    .await?;
                Ok(Store::Sqlite(pool))
            }
        }
    }

    /// The Postgres pool; `None` for the SQLite file.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match self {
            Store::Postgres(pool) => Some(pool),
            Store::Sqlite(_) => None,
        }
    }

    /// Engine name, for logs.
    pub fn engine(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Applies the migrations of this engine.
    pub async fn migrate(&self) -> Result<(), AuditError> {
        let result = match self {
            Store::Postgres(pool) => {
                // Rewriting a large table may take longer than any request should.
                let mut conn = pool.acquire().await?;
                sqlx::query("SET statement_timeout = 0")
                    .execute(&mut *conn)
                    .await?;
                let result = PG_MIGRATIONS.run(&mut *conn).await;
                let reset = sqlx::query("RESET statement_timeout")
                    .execute(&mut *conn)
                    .await;
                if reset.is_err() {
                    // Never hand an unbounded connection back to the pool.
                    conn.close_on_drop();
                }
                result
            }
            Store::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
        };
        result.map_err(|e| AuditError::Store(format!("migration failed: {e}")))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        per_engine!(self, |pool, _time, _read| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .is_ok())
    }

    /// Writes `rows` in one statement.
    pub async fn insert_issuances(&self, rows: &[IssuanceRecord]) -> Result<(), AuditError> {
        if rows.is_empty() {
            return Ok(());
        }
        match self {
            Store::Postgres(pool) => insert_postgres(pool, rows).await,
            Store::Sqlite(pool) => insert_sqlite(pool, rows).await,
        }
    }

    /// Issuances matching `q`, newest first.
    pub async fn list_issuances(
        &self,
        q: &IssuanceQuery,
    ) -> Result<Vec<StoredIssuance>, AuditError> {
        per_engine!(self, |pool, time, read| {
            let mut b =
                QueryBuilder::new(format!("SELECT id, {COLUMNS} FROM issuances WHERE 1 = 1"));
            if let Some(s) = &q.subject {
                b.push(" AND subject = ").push_bind(s.clone());
            }
            if let Some(t) = &q.target {
                b.push(" AND target = ").push_bind(t.clone());
            }
            if let Some(t) = q.since {
                b.push(" AND issued_at >= ").push_bind(time(t));
            }
            if let Some(t) = q.until {
                b.push(" AND issued_at < ").push_bind(time(t));
            }
            if let Some(id) = q.before_id {
                b.push(" AND id < ").push_bind(id);
            }
            b.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
            let rows = b.build().fetch_all(pool).await?;
            rows.iter().map(|r| read_row(r, read)).collect()
        })
    }

    /// The newest record of a credential handed out whose Google token has the SHA-256
    /// fingerprint `token_sha256`.
    pub async fn issued_by_fingerprint(
        &self,
        token_sha256: &str,
    ) -> Result<Option<StoredIssuance>, AuditError> {
        let sql = format!(
            "SELECT id, {COLUMNS} FROM issuances \
             WHERE token_sha256 = $1 AND outcome = 'issued' ORDER BY id DESC LIMIT 1"
        );
        per_engine!(self, |pool, _time, read| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(token_sha256.to_owned())
                .fetch_optional(pool)
                .await?;
            row.map(|r| read_row(&r, read)).transpose()
        })
    }

    /// Creates or replaces the revocation of `r.subject` of `r.issuer`. On Postgres the
    /// same statement notifies [`REVOCATIONS_CHANNEL`], so the other replicas hear of it
    /// when, and only if, it commits.
    pub async fn upsert_revocation(&self, r: &Revocation) -> Result<(), AuditError> {
        const SQL: &str = "INSERT INTO revocations (issuer, subject, revoked_until, reason, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (issuer, subject) DO UPDATE SET revoked_until = excluded.revoked_until, \
             reason = excluded.reason, created_at = excluded.created_at, created_by = excluded.created_by";
        if let Store::Postgres(pool) = self {
            let sql = format!(
                "WITH changed AS ({SQL} RETURNING 1) \
                 SELECT pg_notify('{REVOCATIONS_CHANNEL}', $7) FROM changed"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&r.issuer)
                .bind(&r.subject)
                .bind(r.until)
                .bind(&r.reason)
                .bind(r.created_at)
                .bind(&r.created_by)
                .bind(change_payload(&r.issuer, &r.subject))
                .execute(pool)
                .await?;
            return Ok(());
        }
        per_engine!(self, |pool, time, _read| sqlx::query(SQL)
            .bind(&r.issuer)
            .bind(&r.subject)
            .bind(time(r.until))
            .bind(&r.reason)
            .bind(time(r.created_at))
            .bind(&r.created_by)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Lifts the revocation of `subject` of `issuer`; false when there was none.
    /// On Postgres the same statement notifies [`REVOCATIONS_CHANNEL`] when a row went.
    pub async fn delete_revocation(&self, issuer: &str, subject: &str) -> Result<bool, AuditError> {
        const SQL: &str = "DELETE FROM revocations WHERE issuer = $1 AND subject = $2";
        if let Store::Postgres(pool) = self {
            let sql = format!(
                "WITH gone AS ({SQL} RETURNING 1) \
                 SELECT pg_notify('{REVOCATIONS_CHANNEL}', $3) FROM gone"
            );
            let notified = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(issuer)
                .bind(subject)
                .bind(change_payload(issuer, subject))
                .fetch_all(pool)
                .await?;
            return Ok(!notified.is_empty());
        }
        let affected = per_engine!(self, |pool, _time, _read| sqlx::query(SQL)
            .bind(issuer)
            .bind(subject)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(affected > 0)
    }

    /// Revocations still in force at `now`.
    pub async fn active_revocations(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<Revocation>, AuditError> {
        self.list_revocations(now, None, i64::MAX).await
    }

    /// Up to `limit` revocations in force at `now`, ordered by issuer and subject, after
    /// the (issuer, subject) of the previous page.
    pub async fn list_revocations(
        &self,
        now: OffsetDateTime,
        after: Option<(String, String)>,
        limit: i64,
    ) -> Result<Vec<Revocation>, AuditError> {
        // A subject is never empty, so ("", "") sorts before every row.
        const SQL: &str = "SELECT issuer, subject, revoked_until, reason, created_at, created_by \
             FROM revocations WHERE revoked_until > $1 AND (issuer, subject) > ($2, $3) \
             ORDER BY issuer, subject LIMIT $4";
        let (issuer, subject) = after.unwrap_or_default();
        per_engine!(self, |pool, time, read| {
            let rows = sqlx::query(SQL)
                .bind(time(now))
                .bind(&issuer)
                .bind(&subject)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Revocation {
                        issuer: r.try_get("issuer")?,
                        subject: r.try_get("subject")?,
                        until: required(read(r, "revoked_until")?)?,
                        reason: r.try_get("reason")?,
                        created_at: required(read(r, "created_at")?)?,
                        created_by: r.try_get("created_by")?,
                    })
                })
                .collect()
        })
    }

    /// Up to `limit` admin actions, newest first, below `before_id`, of `actor` if given.
    pub async fn list_admin_actions(
        &self,
        actor: Option<&str>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredAdminAction>, AuditError> {
        per_engine!(self, |pool, _time, read| {
            let mut b = QueryBuilder::new(
                "SELECT id, at, request_id, actor, action, subject, detail FROM admin_actions WHERE 1 = 1",
            );
            if let Some(a) = actor {
                b.push(" AND actor = ").push_bind(a.to_owned());
            }
            if let Some(id) = before_id {
                b.push(" AND id < ").push_bind(id);
            }
            b.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
            let rows = b.build().fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    let detail: String = r.try_get("detail")?;
                    Ok(StoredAdminAction {
                        id: r.try_get("id")?,
                        at: required(read(r, "at")?)?,
                        request_id: r.try_get("request_id")?,
                        actor: r.try_get("actor")?,
                        action: r.try_get("action")?,
                        subject: r.try_get("subject")?,
                        detail: serde_json::from_str(&detail)
                            .unwrap_or(serde_json::Value::String(detail)),
                    })
                })
                .collect()
        })
    }

    /// Records what an administrator did.
    pub async fn record_admin_action(&self, a: &AdminAction) -> Result<(), AuditError> {
        const SQL: &str =
            "INSERT INTO admin_actions (at, request_id, actor, action, subject, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)";
        per_engine!(self, |pool, time, _read| sqlx::query(SQL)
            .bind(time(a.at))
            .bind(&a.request_id)
            .bind(&a.actor)
            .bind(a.action)
            .bind(&a.subject)
            .bind(&a.detail)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Deletes at most `batch` issuances older than `cutoff`; returns how many went.
    pub async fn purge_issuances_before(
        &self,
        cutoff: OffsetDateTime,
        batch: i64,
    ) -> Result<u64, AuditError> {
        Ok(per_engine!(self, |pool, time, _read| sqlx::query(
            PURGE_SQL
        )
        .bind(time(cutoff))
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected()))
    }

    /// The right to purge, when no other replica holds it. On Postgres that is the session
    /// advisory lock [`PURGE_LOCK_KEY`] on a connection of its own; a SQLite file has one
    /// process writing it, so the right is always there.
    pub async fn try_purge_lock(&self) -> Result<Option<PurgeLock>, AuditError> {
        let Store::Postgres(pool) = self else {
            return Ok(Some(PurgeLock {
                store: self.clone(),
                conn: None,
            }));
        };
        let mut conn = pool.acquire().await?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(PURGE_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
        Ok(held.then(|| PurgeLock {
            store: self.clone(),
            conn: Some(conn),
        }))
    }

    /// Deletes the issuances older than `cutoff`, `batch` rows per statement so that no
    /// transaction grows large; `None` (nothing deleted) while another replica purges.
    pub async fn purge_expired(
        &self,
        cutoff: OffsetDateTime,
        batch: i64,
    ) -> Result<Option<u64>, AuditError> {
        let Some(mut lock) = self.try_purge_lock().await? else {
            return Ok(None);
        };
        let mut purged = 0;
        let outcome = loop {
            match lock.purge_before(cutoff, batch).await {
                Ok(n) => {
                    purged += n;
                    if n < batch as u64 {
                        break Ok(Some(purged));
                    }
                }
                Err(e) => break Err(e),
            }
        };
        lock.release().await;
        outcome
    }
}

/// The right to purge old records, held by one replica at a time; see
/// [`Store::try_purge_lock`]. Dropped without [`PurgeLock::release`], its connection is
/// closed, which ends the session and so frees the lock.
pub struct PurgeLock {
    store: Store,
    conn: Option<PoolConnection<Postgres>>,
}

impl PurgeLock {
    /// Deletes at most `batch` issuances older than `cutoff`; returns how many went.
    pub async fn purge_before(
        &mut self,
        cutoff: OffsetDateTime,
        batch: i64,
    ) -> Result<u64, AuditError> {
        match self.conn.as_mut() {
            Some(conn) => Ok(sqlx::query(PURGE_SQL)
                .bind(cutoff)
                .bind(batch)
                .execute(&mut **conn)
                .await?
                .rows_affected()),
            None => self.store.purge_issuances_before(cutoff, batch).await,
        }
    }

    /// Frees the lock for the other replicas.
    pub async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked: Result<bool, _> = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
            .bind(PURGE_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await;
        if !matches!(unlocked, Ok(true)) {
            // A pooled session still holding the lock would keep every replica from purging.
            conn.close_on_drop();
        }
    }
}

impl Drop for PurgeLock {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

fn required(time: Option<OffsetDateTime>) -> Result<OffsetDateTime, AuditError> {
    time.ok_or_else(|| AuditError::Store("a required time column is empty".into()))
}

/// One multi-row insert: arrays unnested server-side.
async fn insert_postgres(pool: &PgPool, rows: &[IssuanceRecord]) -> Result<(), AuditError> {
    let col = |f: fn(&IssuanceRecord) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    let sql = format!(
        "INSERT INTO issuances ({COLUMNS}) SELECT * FROM UNNEST(\
         $1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
         $13::timestamptz[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
         $19::text[], $20::text[], $21::text[])"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(rows.iter().map(|r| r.issued_at).collect::<Vec<_>>())
        .bind(col(|r| Some(r.request_id.clone())))
        .bind(col(|r| Some(r.issuer.clone())))
        .bind(col(|r| Some(r.subject.clone())))
        .bind(col(|r| r.client_id.clone()))
        .bind(col(|r| r.actor.clone()))
        .bind(col(|r| Some(r.target.clone())))
        .bind(col(|r| r.google_principal.clone()))
        .bind(col(|r| Some(r.scopes.clone())))
        .bind(col(|r| r.source.map(str::to_owned)))
        .bind(col(|r| Some(r.outcome.as_str().to_owned())))
        .bind(col(|r| r.error_code.clone()))
        .bind(rows.iter().map(|r| r.expires_at).collect::<Vec<_>>())
        .bind(col(|r| r.token_sha256.clone()))
        .bind(col(|r| r.client_addr.clone()))
        .bind(col(|r| r.user_agent.clone()))
        .bind(col(|r| r.api_client.clone()))
        .bind(col(|r| r.azp.clone()))
        .bind(col(|r| r.server_request_id.clone()))
        .bind(col(|r| r.service_account.clone()))
        .bind(col(|r| r.claimed_client.clone()))
        .execute(pool)
        .await?;
    Ok(())
}

/// One multi-row `INSERT … VALUES (…), (…)` (SQLite has no arrays).
async fn insert_sqlite(pool: &SqlitePool, rows: &[IssuanceRecord]) -> Result<(), AuditError> {
    let mut b = QueryBuilder::<Sqlite>::new(format!("INSERT INTO issuances ({COLUMNS}) "));
    b.push_values(rows, |mut v, r| {
        v.push_bind(sqlite_time(r.issued_at))
            .push_bind(r.request_id.clone())
            .push_bind(r.issuer.clone())
            .push_bind(r.subject.clone())
            .push_bind(r.client_id.clone())
            .push_bind(r.actor.clone())
            .push_bind(r.target.clone())
            .push_bind(r.google_principal.clone())
            .push_bind(r.scopes.clone())
            .push_bind(r.source)
            .push_bind(r.outcome.as_str())
            .push_bind(r.error_code.clone())
            .push_bind(r.expires_at.map(sqlite_time))
            .push_bind(r.token_sha256.clone())
            .push_bind(r.client_addr.clone())
            .push_bind(r.user_agent.clone())
            .push_bind(r.api_client.clone())
            .push_bind(r.azp.clone())
            .push_bind(r.server_request_id.clone())
            .push_bind(r.service_account.clone())
            .push_bind(r.claimed_client.clone());
    });
    b.build().execute(pool).await?;
    Ok(())
}

/// Reads one issuance row; `time_col` reads a nullable time column in the engine's form.
fn read_row<R: Row>(
    r: &R,
    time_col: impl Fn(&R, &str) -> Result<Option<OffsetDateTime>, AuditError>,
) -> Result<StoredIssuance, AuditError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredIssuance {
        id: r.try_get("id")?,
        issued_at: time_col(r, "issued_at")?
            .ok_or_else(|| AuditError::Store("issuance without a time".into()))?,
        request_id: r.try_get("request_id")?,
        server_request_id: r.try_get("server_request_id")?,
        issuer: r.try_get("issuer")?,
        subject: r.try_get("subject")?,
        client_id: r.try_get("client_id")?,
        actor: r.try_get("actor")?,
        azp: r.try_get("azp")?,
        service_account: r.try_get("service_account")?,
        target: r.try_get("target")?,
        google_principal: r.try_get("google_principal")?,
        scopes: r.try_get("scopes")?,
        source: r.try_get("source")?,
        outcome: r.try_get("outcome")?,
        error_code: r.try_get("error_code")?,
        expires_at: time_col(r, "expires_at")?,
        token_sha256: r.try_get("token_sha256")?,
        client_addr: r.try_get("client_addr")?,
        user_agent: r.try_get("user_agent")?,
        api_client: r.try_get("api_client")?,
        claimed_client: r.try_get("claimed_client")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Outcome;

    fn record(n: usize) -> IssuanceRecord {
        IssuanceRecord {
            issued_at: OffsetDateTime::now_utc(),
            request_id: format!("req-{n}"),
            server_request_id: Some(format!("srv-{n}")),
            issuer: "https://issuer.example/".into(),
            subject: format!("user-{n}"),
            client_id: None,
            actor: None,
            azp: None,
            target: "firebase".into(),
            google_principal: None,
            service_account: Some("signer@project.iam.gserviceaccount.com".into()),
            scopes: String::new(),
            source: Some("signing"),
            outcome: Outcome::Issued,
            error_code: None,
            expires_at: None,
            token_sha256: None,
            client_addr: None,
            user_agent: None,
            api_client: None,
            claimed_client: None,
        }
    }

    async fn sqlite(dir: &tempfile::TempDir) -> (Store, SqlitePool) {
        let store = Store::connect(None, &dir.path().join("records.db"), 1)
            .await
            .unwrap();
        let Store::Sqlite(pool) = &store else {
            unreachable!("no database URL was given")
        };
        let pool = pool.clone();
        (store, pool)
    }

    #[tokio::test]
    async fn the_largest_batch_allowed_fits_one_sqlite_statement() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = sqlite(&dir).await;
        store.migrate().await.unwrap();
        let rows: Vec<_> = (0..MAX_BATCH).map(record).collect();
        store.insert_issuances(&rows).await.unwrap();
        let stored = store
            .list_issuances(&IssuanceQuery {
                subject: Some(format!("user-{}", MAX_BATCH - 1)),
                limit: 10,
                ..IssuanceQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        let last = &stored[0];
        assert_eq!(
            last.server_request_id.as_deref(),
            Some(format!("srv-{}", MAX_BATCH - 1).as_str())
        );
        assert_eq!(
            last.service_account.as_deref(),
            Some("signer@project.iam.gserviceaccount.com")
        );
        // One record more binds more parameters than SQLite takes in one statement.
        let too_many: Vec<_> = (0..=SQLITE_MAX_PARAMETERS / COLUMNS_PER_RECORD + 1)
            .map(record)
            .collect();
        assert!(too_many.len() * COLUMNS_PER_RECORD > SQLITE_MAX_PARAMETERS);
        assert!(store.insert_issuances(&too_many).await.is_err());
    }

    #[tokio::test]
    async fn the_sqlite_table_rebuild_keeps_server_request_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (store, pool) = sqlite(&dir).await;
        // The database as it was before the service_account column came.
        SQLITE_MIGRATIONS
            .run_to(20261202000017, &pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO issuances (issued_at, request_id, server_request_id, issuer, subject, \
             target, scopes, source, outcome) VALUES \
             ('2026-12-01T10:00:00.000000Z', 'caller-id', 'server-id', 'https://issuer.example/', \
             'alice', 'bigquery', 'scope-a', 'sts', 'issued')",
        )
        .execute(&pool)
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let stored = store
            .list_issuances(&IssuanceQuery {
                subject: Some("alice".into()),
                limit: 10,
                ..IssuanceQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].request_id, "caller-id");
        assert_eq!(stored[0].server_request_id.as_deref(), Some("server-id"));
        assert_eq!(stored[0].service_account, None);
        // The rebuilt table takes new records with both columns.
        store.insert_issuances(&[record(1)]).await.unwrap();
        let stored = store
            .list_issuances(&IssuanceQuery {
                subject: Some("user-1".into()),
                limit: 10,
                ..IssuanceQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(stored[0].server_request_id.as_deref(), Some("srv-1"));
        assert!(stored[0].service_account.is_some());
    }
}
