//! Issuance records: every credential handed out and every refusal of a validly signed
//! token, written durably through a group-commit writer; revocations; retention.

mod nodelay;
mod push;
mod revocations;
mod store;
mod writer;

pub use push::{spawn_listener, OnRevoked, LISTENER_APPLICATION_NAME};
pub use revocations::{Revocation, Revocations, ANY_ISSUER};
pub use store::{
    AdminAction, IssuanceQuery, PurgeLock, Store, StoredAdminAction, StoredIssuance, MAX_BATCH,
    PURGE_LOCK_KEY, REVOCATIONS_CHANNEL,
};
pub use writer::{AuditWriter, WriterLimits, WriterStats};

use time::OffsetDateTime;

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A credential was handed out.
    Issued,
    /// The exchange was refused.
    Refused,
}

impl Outcome {
    /// Name stored in the `outcome` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::Refused => "refused",
        }
    }
}

/// One row of the `issuances` table. Holds a fingerprint of the Google token, never the token.
#[derive(Debug, Clone)]
pub struct IssuanceRecord {
    /// When the exchange was decided.
    pub issued_at: OffsetDateTime,
    /// Request id: the caller's `X-Request-Id`, else the server's id.
    pub request_id: String,
    /// The id the server generated for the request, whatever the caller sent.
    pub server_request_id: Option<String>,
    /// Token issuer.
    pub issuer: String,
    /// Token subject: the person (or machine) the credential is for.
    pub subject: String,
    /// `azp`/`client_id` of the subject token, or the Basic client id.
    pub client_id: Option<String>,
    /// Actor on whose behalf the call was made, if any.
    pub actor: Option<String>,
    /// The subject token's `azp` / `client_id`, whatever client authenticated with Basic.
    pub azp: Option<String>,
    /// Target name (or the requested audience when it named no target).
    pub target: String,
    /// The Google principal the credential acts as.
    pub google_principal: Option<String>,
    /// The service account whose credential was handed out (impersonation, Firebase
    /// signing); the person stays in `subject`.
    pub service_account: Option<String>,
    /// Scopes, space-separated.
    pub scopes: String,
    /// `sts`, `cache`, `impersonation` or `signing`; `None` for refusals.
    pub source: Option<&'static str>,
    /// Issued or refused.
    pub outcome: Outcome,
    /// RFC 6749 error code of a refusal.
    pub error_code: Option<String>,
    /// When the handed-out credential expires.
    pub expires_at: Option<OffsetDateTime>,
    /// SHA-256 of the handed-out Google token, hex.
    pub token_sha256: Option<String>,
    /// Caller's address.
    pub client_addr: Option<String>,
    /// Caller's `User-Agent`.
    pub user_agent: Option<String>,
    /// Caller's `x-goog-api-client` (which Google library and version).
    pub api_client: Option<String>,
    /// A public client the caller named itself as (HTTP Basic with a published secret):
    /// claimed, not proven.
    pub claimed_client: Option<String>,
}

/// Why a record could not be written; the credential must then not be handed out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The database could not be reached or failed.
    #[error("the issuance store is unavailable: {0}")]
    Store(String),
    /// The database refused these rows (a constraint or encoding problem in the data).
    #[error("the issuance store refused the record: {0}")]
    Rejected(String),
    /// The queue stayed full past the enqueue deadline.
    #[error("the issuance queue is full")]
    QueueFull,
    /// The commit did not complete in time.
    #[error("the issuance record was not committed in time")]
    CommitTimeout,
    /// The writer task has stopped.
    #[error("the issuance writer has stopped")]
    WriterStopped,
    /// The request to the store was malformed (bad cursor, bad time).
    #[error("{0}")]
    InvalidQuery(String),
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        // Connection strings can carry passwords; sqlx errors do not include them.
        match e {
            // A statement cancelled by `statement_timeout` is an outage, not a bad row.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => {
                AuditError::Store(db.to_string())
            }
            sqlx::Error::Database(db) => AuditError::Rejected(db.to_string()),
            other => AuditError::Store(other.to_string()),
        }
    }
}

/// Everything the records need at run time: the store, the writer, the revocation mirror.
pub struct Audit {
    /// The database.
    pub store: Store,
    /// The group-commit writer.
    pub writer: AuditWriter,
    /// Revocations in force.
    pub revocations: Revocations,
}
