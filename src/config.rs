//! Typed configuration: a TOML file plus `STS_BRIDGE__SECTION__KEY` environment overrides,
//! validated once at start-up with errors that name the key.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Algorithms a token may be signed with. HMAC and `none` are never accepted (RFC 8725 §3.1).
pub const ASYMMETRIC_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
];

/// Google clients treat a credential with this little life left as already stale
/// (google-auth's 3 min 45 s threshold), so the refresh margin must not be smaller.
pub const MIN_REFRESH_MARGIN_SECS: u64 = 225;

/// The whole configuration of one sts-bridge process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP listener binds to.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Trusted token issuers.
    #[serde(default)]
    pub issuers: Vec<IssuerSettings>,
    /// Google credentials the service can hand out.
    #[serde(default)]
    pub targets: Vec<TargetSettings>,
    /// Clients allowed to authenticate with HTTP Basic.
    #[serde(default)]
    pub clients: Vec<ClientSettings>,
    /// Google endpoints and outbound HTTP behaviour.
    #[serde(default)]
    pub google: GoogleSettings,
    /// Credential cache.
    #[serde(default)]
    pub cache: CacheSettings,
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
    /// Issuance records.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Admin API.
    #[serde(default)]
    pub admin: AdminSettings,
}

/// One trusted OIDC issuer (an Auth0 tenant, typically).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// Exact `iss` value, e.g. `https://TENANT.auth0.com/` (Auth0 keeps the trailing slash).
    pub issuer: String,
    /// Accepted `aud` values (the Auth0 API identifier).
    pub audiences: Vec<String>,
    /// Accepted signing algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Claim holding the caller's groups (Auth0 puts custom claims under a namespace).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Claim holding the caller's roles.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Least time between two JWKS fetches caused by unknown key ids, in seconds.
    #[serde(default = "default_jwks_min_refetch")]
    pub jwks_min_refetch_secs: u64,
    /// Seconds between two scheduled JWKS fetches, so a key the issuer withdrew stops
    /// being trusted even when no token names an unknown key.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    /// Discovery document URL; defaults to `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery_url: Option<String>,
}

/// How a target makes a Google credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// Google STS exchange against a workforce pool provider.
    Workforce,
}

/// One named way to make a Google credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    /// Name callers may pass as `audience`.
    pub name: String,
    /// Kind of credential.
    pub kind: TargetKind,
    /// Workforce provider resource,
    /// `//iam.googleapis.com/locations/global/workforcePools/POOL/providers/PROVIDER`.
    pub provider: String,
    /// Project billed for the exchange (`options.userProject`), a number or an id.
    #[serde(default)]
    pub user_project: Option<String>,
    /// Scopes callers may ask for.
    pub allowed_scopes: Vec<String>,
    /// Scopes used when the caller sends none.
    #[serde(default)]
    pub default_scopes: Vec<String>,
    /// `subject_token_type` sent to Google STS.
    #[serde(default = "default_upstream_token_type")]
    pub subject_token_type: String,
}

/// A client that authenticates with HTTP Basic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// Client id.
    pub id: String,
    /// SHA-256 of the client secret, hex; the secret itself is never configured.
    pub secret_sha256: String,
}

/// Google endpoints; overridable for tests and development.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleSettings {
    /// Google STS token endpoint.
    #[serde(default = "default_sts_url")]
    pub sts_url: String,
    /// Whole-request timeout for Google calls, in milliseconds.
    #[serde(default = "default_google_timeout")]
    pub timeout_ms: u64,
    /// Seconds a caller is told to wait when Google is unavailable.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
}

/// Credential cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Most entries kept.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// A cached credential with less than this left is refreshed in the background.
    #[serde(default = "default_refresh_margin")]
    pub refresh_margin_secs: u64,
    /// A cached credential with less than this left is never handed out.
    #[serde(default = "default_min_remaining")]
    pub min_remaining_secs: u64,
    /// Subject tokens already validated (`[cache.validated_tokens]`).
    #[serde(default)]
    pub validated_tokens: ValidatedTokenSettings,
}

/// The validated-token cache: a token presented again within its lifetime skips the
/// signature check. Revocation, policy and key withdrawal still apply on every request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatedTokenSettings {
    /// Keep validated tokens at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A token is kept until its `exp`, and never longer than this.
    #[serde(default = "default_validated_token_max_secs")]
    pub max_secs: u64,
    /// Most tokens kept.
    #[serde(default = "default_validated_token_max_entries")]
    pub max_entries: u64,
}

impl Default for ValidatedTokenSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_secs: default_validated_token_max_secs(),
            max_entries: default_validated_token_max_entries(),
        }
    }
}

fn default_validated_token_max_secs() -> u64 {
    3600
}
fn default_validated_token_max_entries() -> u64 {
    // Hot tokens (a data tool reuses its token for the hour) are what the cache is for; a
    // bound well below the credential cache's keeps 100,000 subjects under 150 MiB.
    10_000
}

impl ValidatedTokenSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.max_secs) {
            return Err(invalid(
                "cache.validated_tokens.max_secs",
                "must be between 1 and 86400",
            ));
        }
        if !(1..=10_000_000).contains(&self.max_entries) {
            return Err(invalid(
                "cache.validated_tokens.max_entries",
                "must be between 1 and 10000000",
            ));
        }
        Ok(())
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `json` (production) or `text`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// `tracing` filter directive, e.g. `info,sts_bridge=debug`.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

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
    /// Batches being written at once; more than one keeps records flowing while the
    /// database is slower than arrivals (at most `pool_size`).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
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

/// Admin API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Whether `/admin/v1/*` is served.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Permission an admin token must carry in its `permissions` claim (Auth0 RBAC).
    #[serde(default = "default_admin_permission")]
    pub permission: String,
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
fn default_revocation_poll() -> u64 {
    10
}
fn default_max_in_flight() -> usize {
    4
}
fn default_true() -> bool {
    true
}
fn default_admin_permission() -> String {
    "sts:admin".into()
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
            max_in_flight: default_max_in_flight(),
        }
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            permission: default_admin_permission(),
        }
    }
}

impl AuditSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "audit.database_url",
                    "must be a postgres:// URL (leave it unset for the embedded SQLite file)",
                ));
            }
        }
        let checks: [(&str, bool, &str); 9] = [
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
            // 17 bound columns per row; SQLite allows 32766 parameters per statement.
            (
                "audit.max_batch",
                (1..=1900).contains(&self.max_batch),
                "between 1 and 1900",
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
                "audit.max_in_flight",
                (1..=self.pool_size as usize).contains(&self.max_in_flight),
                "between 1 and audit.pool_size",
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

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_leeway() -> u64 {
    30
}
fn default_jwks_min_refetch() -> u64 {
    60
}
fn default_jwks_refresh() -> u64 {
    300
}
fn default_upstream_token_type() -> String {
    crate::broker::TOKEN_TYPE_JWT.into()
}
fn default_sts_url() -> String {
    "https://sts.googleapis.com/v1/token".into()
}
fn default_google_timeout() -> u64 {
    10_000
}
fn default_retry_after() -> u64 {
    5
}
fn default_max_entries() -> u64 {
    100_000
}
fn default_refresh_margin() -> u64 {
    300
}
fn default_min_remaining() -> u64 {
    60
}
fn default_log_format() -> String {
    "json".into()
}
fn default_log_filter() -> String {
    "info".into()
}

impl Default for GoogleSettings {
    fn default() -> Self {
        Self {
            sts_url: default_sts_url(),
            timeout_ms: default_google_timeout(),
            retry_after_secs: default_retry_after(),
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_entries: default_max_entries(),
            refresh_margin_secs: default_refresh_margin(),
            min_remaining_secs: default_min_remaining(),
            validated_tokens: ValidatedTokenSettings::default(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            filter: default_log_filter(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            issuers: Vec::new(),
            targets: Vec::new(),
            clients: Vec::new(),
            google: GoogleSettings::default(),
            cache: CacheSettings::default(),
            log: LogSettings::default(),
            audit: AuditSettings::default(),
            admin: AdminSettings::default(),
        }
    }
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or has the wrong shape.
    #[error("configuration could not be loaded: {0}")]
    Load(String),
    /// A value is present but unacceptable.
    #[error("configuration key `{key}`: {problem}")]
    Invalid {
        /// Dotted path of the key, e.g. `targets[0].provider`.
        key: String,
        /// What is wrong and what would be accepted.
        problem: String,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl Settings {
    /// Loads `path` (when given) and the `STS_BRIDGE__…` environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "configuration file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("STS_BRIDGE__").split("__"));
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        // The conventional variable wins, so platforms that inject it need no mapping.
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            settings.audit.database_url = Some(url);
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every rule a running service relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.issuers.is_empty() {
            return Err(invalid(
                "issuers",
                "at least one trusted issuer is required",
            ));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            issuer.validate(&format!("issuers[{i}]"))?;
        }
        let mut seen = HashSet::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            if !seen.insert(&issuer.issuer) {
                return Err(invalid(format!("issuers[{i}].issuer"), "listed twice"));
            }
        }
        if self.targets.is_empty() {
            return Err(invalid("targets", "at least one target is required"));
        }
        let mut names = HashSet::new();
        let mut providers = HashSet::new();
        for (i, target) in self.targets.iter().enumerate() {
            let key = format!("targets[{i}]");
            target.validate(&key)?;
            if !names.insert(&target.name) {
                return Err(invalid(format!("{key}.name"), "target name used twice"));
            }
            if !providers.insert(&target.provider) {
                return Err(invalid(
                    format!("{key}.provider"),
                    "two targets name the same provider, so an audience could not tell them apart",
                ));
            }
        }
        for (i, client) in self.clients.iter().enumerate() {
            let ok = client.secret_sha256.len() == 64
                && client.secret_sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(invalid(
                    format!("clients[{i}].secret_sha256"),
                    "must be 64 hex characters (the SHA-256 of the secret)",
                ));
            }
        }
        self.google.validate()?;
        self.cache.validate()?;
        self.audit.validate()?;
        if self.admin.permission.is_empty() {
            return Err(invalid("admin.permission", "must not be empty"));
        }
        if !matches!(self.log.format.as_str(), "json" | "text") {
            return Err(invalid("log.format", "must be `json` or `text`"));
        }
        Ok(())
    }
}

impl IssuerSettings {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_url(&format!("{key}.issuer"), &self.issuer)?;
        if let Some(url) = &self.discovery_url {
            check_url(&format!("{key}.discovery_url"), url)?;
        }
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.is_empty()) {
            return Err(invalid(
                format!("{key}.audiences"),
                "list the API identifier(s) the tokens are issued for",
            ));
        }
        if self.algorithms.is_empty() {
            return Err(invalid(format!("{key}.algorithms"), "must not be empty"));
        }
        for alg in &self.algorithms {
            if !ASYMMETRIC_ALGORITHMS.contains(&alg.as_str()) {
                return Err(invalid(
                    format!("{key}.algorithms"),
                    format!(
                        "`{alg}` is not accepted; use asymmetric algorithms only: {}",
                        ASYMMETRIC_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        if self.leeway_secs > 300 {
            return Err(invalid(
                format!("{key}.leeway_secs"),
                "at most 300 seconds of clock skew is tolerated",
            ));
        }
        if !(1..=86_400).contains(&self.jwks_refresh_secs) {
            return Err(invalid(
                format!("{key}.jwks_refresh_secs"),
                "must be between 1 and 86400",
            ));
        }
        if self.jwks_min_refetch_secs == 0 {
            return Err(invalid(
                format!("{key}.jwks_min_refetch_secs"),
                "must be at least 1, or unknown key ids could hammer the issuer",
            ));
        }
        Ok(())
    }

    /// Least time between two key-set fetches.
    pub fn jwks_min_refetch(&self) -> Duration {
        Duration::from_secs(self.jwks_min_refetch_secs)
    }

    /// Time between two scheduled key-set fetches.
    pub fn jwks_refresh(&self) -> Duration {
        Duration::from_secs(self.jwks_refresh_secs)
    }
}

/// The parts of a workforce provider resource name.
pub fn parse_workforce_provider(provider: &str) -> Option<(&str, &str, &str)> {
    let rest = provider.strip_prefix("//iam.googleapis.com/locations/")?;
    let mut parts = rest.split('/');
    let location = parts.next()?;
    let (pools, pool, providers, name) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    if pools != "workforcePools"
        || providers != "providers"
        || parts.next().is_some()
        || ![location, pool, name].iter().all(|s| valid(s))
    {
        return None;
    }
    Some((location, pool, name))
}

impl TargetSettings {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 128
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            return Err(invalid(
                format!("{key}.name"),
                "1-128 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        if parse_workforce_provider(&self.provider).is_none() {
            return Err(invalid(
                format!("{key}.provider"),
                format!(
                    "`{}` is not of the form //iam.googleapis.com/locations/global/workforcePools/POOL/providers/PROVIDER",
                    self.provider
                ),
            ));
        }
        if self.allowed_scopes.is_empty() {
            return Err(invalid(
                format!("{key}.allowed_scopes"),
                "list the Google OAuth scopes this target may hand out",
            ));
        }
        for scope in &self.default_scopes {
            if !self.allowed_scopes.contains(scope) {
                return Err(invalid(
                    format!("{key}.default_scopes"),
                    format!("`{scope}` is not in allowed_scopes"),
                ));
            }
        }
        if let Some(project) = &self.user_project {
            if project.is_empty() || project.len() > 64 {
                return Err(invalid(
                    format!("{key}.user_project"),
                    "a project number or id of 1-64 characters",
                ));
            }
        }
        if !crate::broker::UPSTREAM_SUBJECT_TOKEN_TYPES.contains(&self.subject_token_type.as_str())
        {
            return Err(invalid(
                format!("{key}.subject_token_type"),
                format!(
                    "must be one of {}",
                    crate::broker::UPSTREAM_SUBJECT_TOKEN_TYPES.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

impl GoogleSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        check_url("google.sts_url", &self.sts_url)?;
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(invalid(
                "google.timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if !(1..=3600).contains(&self.retry_after_secs) {
            return Err(invalid(
                "google.retry_after_secs",
                "must be between 1 and 3600",
            ));
        }
        Ok(())
    }

    /// Timeout of one Google call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl CacheSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries == 0 {
            return Err(invalid("cache.max_entries", "must be at least 1"));
        }
        if self.refresh_margin_secs < MIN_REFRESH_MARGIN_SECS {
            return Err(invalid(
                "cache.refresh_margin_secs",
                format!(
                    "must be at least {MIN_REFRESH_MARGIN_SECS}: Google client libraries treat a credential with less left as expired and would call again before every request"
                ),
            ));
        }
        if self.refresh_margin_secs > 1800 {
            return Err(invalid("cache.refresh_margin_secs", "must be at most 1800"));
        }
        if self.min_remaining_secs == 0 || self.min_remaining_secs >= self.refresh_margin_secs {
            return Err(invalid(
                "cache.min_remaining_secs",
                "must be at least 1 and below cache.refresh_margin_secs",
            ));
        }
        self.validated_tokens.validate()
    }
}

/// `https://` anywhere; plain `http://` only towards the loopback interface.
fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let url =
        url::Url::parse(value).map_err(|e| invalid(key, format!("`{value}` is not a URL: {e}")))?;
    if is_secure_url(&url) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{value}` must use https (plain http is allowed only for loopback addresses)"),
        ))
    }
}

/// Whether `url` may be fetched: `https://` anywhere, plain `http://` only on loopback.
pub fn is_secure_url(url: &url::Url) -> bool {
    url.scheme() == "https" || (url.scheme() == "http" && is_loopback_host(url))
}

/// Whether `url` points at this machine's loopback interface.
pub fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Settings {
        Settings {
            issuers: vec![IssuerSettings {
                issuer: "https://tenant.auth0.com/".into(),
                audiences: vec!["https://sts-bridge".into()],
                algorithms: default_algorithms(),
                leeway_secs: 30,
                groups_claim: None,
                roles_claim: None,
                jwks_min_refetch_secs: 60,
                jwks_refresh_secs: 300,
                discovery_url: None,
            }],
            targets: vec![TargetSettings {
                name: "bigquery".into(),
                kind: TargetKind::Workforce,
                provider: "//iam.googleapis.com/locations/global/workforcePools/p/providers/a0"
                    .into(),
                user_project: Some("123".into()),
                allowed_scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
                default_scopes: vec![],
                subject_token_type: default_upstream_token_type(),
            }],
            ..Settings::default()
        }
    }

    fn problem_key(s: &Settings) -> String {
        match s.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type is fixed by figment
    fn the_documented_example_configuration_is_valid() {
        // Inside a jail: the environment is process-wide and another test changes it.
        figment::Jail::expect_with(|_| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
            let s = Settings::load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(s.targets[0].name, "bigquery");
            assert_eq!(s.issuers[0].issuer, "https://example-tenant.eu.auth0.com/");
            Ok(())
        });
    }

    #[test]
    fn a_complete_configuration_is_accepted() {
        valid().validate().unwrap();
    }

    #[test]
    fn hmac_algorithms_are_refused_by_key() {
        let mut s = valid();
        s.issuers[0].algorithms = vec!["HS256".into()];
        assert_eq!(problem_key(&s), "issuers[0].algorithms");
    }

    #[test]
    fn refresh_margin_below_google_clients_threshold_is_refused() {
        let mut s = valid();
        s.cache.refresh_margin_secs = 200;
        assert_eq!(problem_key(&s), "cache.refresh_margin_secs");
    }

    #[test]
    fn validated_token_cache_and_writer_bounds_are_refused_by_key() {
        let mut s = valid();
        s.cache.validated_tokens.max_secs = 0;
        assert_eq!(problem_key(&s), "cache.validated_tokens.max_secs");
        let mut s = valid();
        s.audit.max_in_flight = s.audit.pool_size as usize + 1;
        assert_eq!(problem_key(&s), "audit.max_in_flight");
    }

    #[test]
    fn malformed_provider_is_refused_by_key() {
        let mut s = valid();
        s.targets[0].provider =
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x"
                .into();
        assert_eq!(problem_key(&s), "targets[0].provider");
    }

    #[test]
    fn plain_http_issuer_is_refused_unless_loopback() {
        let mut s = valid();
        s.issuers[0].issuer = "http://tenant.auth0.com/".into();
        assert_eq!(problem_key(&s), "issuers[0].issuer");
        s.issuers[0].issuer = "http://127.0.0.1:9000/".into();
        s.validate().unwrap();
    }

    #[test]
    fn default_scope_outside_allowed_is_refused() {
        let mut s = valid();
        s.targets[0].default_scopes = vec!["https://www.googleapis.com/auth/bigquery".into()];
        assert_eq!(problem_key(&s), "targets[0].default_scopes");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type is fixed by figment
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let text = r#"
            [[issuers]]
            issuer = "https://tenant.auth0.com/"
            audiences = ["https://sts-bridge"]
            [[targets]]
            name = "bq"
            kind = "workforce"
            provider = "//iam.googleapis.com/locations/global/workforcePools/p/providers/a0"
            allowed_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
            [cache]
            max_entries = 10
        "#;
        std::fs::write(&path, text).unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("STS_BRIDGE__CACHE__MAX_ENTRIES", "77");
            let s = Settings::load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(s.cache.max_entries, 77);
            assert_eq!(s.targets[0].name, "bq");
            jail.set_env("STS_BRIDGE__CACHE__REFRESH_MARGIN_SECS", "10");
            let err = Settings::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains("cache.refresh_margin_secs"), "{err}");
            Ok(())
        });
    }
}
