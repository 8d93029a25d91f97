//! The middle of the service: which target, which scopes, the cache, and the exchange flow.

mod cache;
mod firebase;
mod shared_tier;
mod targets;

pub use cache::{CacheKey, CachedCredential, CredentialCache};
pub use firebase::{uid_for, FirebaseError, FIREBASE_AUDIENCE};
pub use shared_tier::{SharedTier, SharedTierError};
pub use targets::{Target, TargetError, Targets};

use crate::assertion::{minted_attributes, AssertionError, Minter};
use crate::audit::{Audit, AuditError, IssuanceRecord, Outcome};
use crate::config::{ClientSettings, Settings, TargetKind, TargetSettings};
use crate::google::{GoogleError, IamCredentialsClient, OwnIdentity, StsClient, StsRequest};
use crate::identity::{Identity, IdentityError, Validator};
use crate::metrics::Metrics;
use crate::policy::{self, PolicyError};
use crate::ratelimit::{KeyedLimit, Rate};
use crate::secret::Token;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A validated-in-form exchange request (the route layer has parsed the wire format).
#[derive(Debug)]
pub struct ExchangeRequest {
    /// The caller's OIDC token.
    pub subject_token: Token,
    /// Target name or workforce provider resource.
    pub audience: String,
    /// Requested scopes (may be empty).
    pub scopes: Vec<String>,
    /// RFC 8693 actor token: the service acting for the subject, when one is.
    pub actor_token: Option<Token>,
    /// `options.userProject`, when the caller sent one.
    pub user_project: Option<String>,
    /// Whether `requested_token_type` asked for a JWT (`Some(true)`), an access token
    /// (`Some(false)`), or was absent.
    pub wants_jwt: Option<bool>,
    /// Who is asking, for the record.
    pub context: RequestContext,
}

/// Facts about the HTTP request that go into the issuance record.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Request id: the caller's `X-Request-Id`, else the server's id.
    pub request_id: String,
    /// The id the server generated for the request.
    pub server_request_id: Option<String>,
    /// Caller's address (the real client's, past trusted proxies).
    pub client_addr: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `x-goog-api-client`.
    pub api_client: Option<String>,
    /// Client id proven by HTTP Basic authentication.
    pub client_id: Option<String>,
    /// A public client's id, named with HTTP Basic but proving nothing: recorded, never
    /// trusted.
    pub claimed_client: Option<String>,
}

impl RequestContext {
    /// The client a record names: the one proven by HTTP Basic, else the token's
    /// `azp`/`client_id`.
    pub fn client_for<'a>(&'a self, identity: &'a Identity) -> Option<&'a str> {
        self.client_id.as_deref().or(identity.client_id.as_deref())
    }
}

/// Where a handed-out credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Freshly exchanged with Google STS.
    Sts,
    /// Served from the cache.
    Cache,
    /// A service account's token from IAM Credentials.
    Impersonation,
    /// A token the bridge had signed (Firebase custom tokens).
    Signing,
}

impl Source {
    /// Lower-case name, for logs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Sts => "sts",
            Source::Cache => "cache",
            Source::Impersonation => "impersonation",
            Source::Signing => "signing",
        }
    }
}

/// A credential handed out.
#[derive(Debug)]
pub struct Issued {
    /// The Google access token, or the Firebase custom token.
    pub access_token: Token,
    /// RFC 8693 type of `access_token`.
    pub issued_token_type: &'static str,
    /// Whole seconds of life left, at least 1.
    pub expires_in: u64,
    /// Scopes granted, space-separated, when they differ from the request.
    pub scope: Option<String>,
    /// Fresh or cached.
    pub source: Source,
    /// Who received it.
    pub identity: Identity,
    /// Target name.
    pub target: Arc<str>,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Google principal the credential acts as.
    pub google_principal: Option<String>,
    /// The service account whose credential it is, if any.
    pub service_account: Option<String>,
    /// The target's kind.
    pub kind: TargetKind,
    /// Client that asked: the Basic client id, else the token's `azp`/`client_id`.
    pub client_id: Option<String>,
}

/// Why an exchange was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The subject token is not acceptable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The actor token is not acceptable.
    #[error("actor_token: {0}")]
    Actor(IdentityError),
    /// The audience or scopes cannot be served.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The target's policy does not let this caller through.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The caller asked to bill another project than the target's.
    #[error("userProject {asked} is not allowed for target {target}; it bills project {bills} (remove workforce_pool_user_project from the credential file or set it to {bills})")]
    UserProject {
        /// What the caller asked for, at most 64 characters of it.
        asked: String,
        /// Target name.
        target: String,
        /// The project the target bills.
        bills: String,
    },
    /// Google refused or failed.
    #[error(transparent)]
    Google(#[from] GoogleError),
    /// An administrator revoked the subject. The administrator's reason stays in the
    /// record: it may say more than the subject should read.
    #[error("subject {subject} is revoked until {until}; ask an administrator")]
    Revoked {
        /// The subject.
        subject: String,
        /// RFC 3339 end of the revocation.
        until: String,
    },
    /// The issuance could not be recorded, so nothing is handed out.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The bridge could not sign an assertion for the caller.
    #[error(transparent)]
    Assertion(#[from] AssertionError),
    /// A Firebase custom token could not be made.
    #[error(transparent)]
    Firebase(#[from] FirebaseError),
    /// The subject asked more often than its rate limit allows.
    #[error("too many exchanges for this subject; try again in {} s", crate::ratelimit::retry_after_secs(*.wait))]
    RateLimited {
        /// Until the next exchange is allowed.
        wait: Duration,
    },
}

impl BrokerError {
    /// The RFC 6749 / RFC 8693 error code for this refusal.
    pub fn oauth_code(&self) -> &'static str {
        match self {
            BrokerError::Identity(IdentityError::KeysUnavailable(_)) => "temporarily_unavailable",
            BrokerError::Identity(_) => "invalid_grant",
            BrokerError::Actor(IdentityError::KeysUnavailable(_)) => "temporarily_unavailable",
            BrokerError::Actor(_) => "invalid_grant",
            BrokerError::Target(TargetError::Unknown { .. }) => "invalid_target",
            BrokerError::Target(TargetError::NoServiceAccount { .. }) => "access_denied",
            BrokerError::Target(TargetError::TokenType { .. }) => "invalid_request",
            BrokerError::Firebase(FirebaseError::ClaimsTooLarge { .. }) => "invalid_request",
            BrokerError::Firebase(_) => "temporarily_unavailable",
            BrokerError::Target(_) => "invalid_scope",
            BrokerError::Policy(p) => p.oauth_code(),
            BrokerError::UserProject { .. } => "invalid_request",
            BrokerError::Revoked { .. } => "access_denied",
            BrokerError::RateLimited { .. } => "slow_down",
            BrokerError::Audit(_) => "temporarily_unavailable",
            BrokerError::Assertion(AssertionError::SubjectExpired) => "invalid_grant",
            BrokerError::Assertion(_) => "temporarily_unavailable",
            BrokerError::Google(GoogleError::WouldRefuse(_)) => "invalid_grant",
            BrokerError::Google(GoogleError::IamRefused { error, .. }) => match error.as_str() {
                "invalid_grant" => "invalid_grant",
                "invalid_scope" => "invalid_scope",
                "invalid_target" => "invalid_target",
                "access_denied" => "access_denied",
                _ => "invalid_request",
            },
            BrokerError::Google(GoogleError::Refused { error, .. }) => match error.as_str() {
                "invalid_grant" => "invalid_grant",
                "invalid_scope" => "invalid_scope",
                "invalid_target" => "invalid_target",
                "unauthorized_client" => "unauthorized_client",
                "access_denied" => "access_denied",
                _ => "invalid_request",
            },
            BrokerError::Google(_) => "temporarily_unavailable",
        }
    }
}

/// The clients of Google's APIs an exchange may call.
pub struct GoogleClients {
    /// Google STS.
    pub sts: StsClient,
    /// IAM Credentials.
    pub iam: IamCredentialsClient,
    /// The service's own Google identity.
    pub own: Arc<OwnIdentity>,
}

/// Runs exchanges.
pub struct Broker {
    validator: Validator,
    /// Swapped whole on reload; a request keeps the target it resolved.
    targets: RwLock<Arc<Targets>>,
    sts: StsClient,
    iam: IamCredentialsClient,
    own: Arc<OwnIdentity>,
    minter: Option<Arc<Minter>>,
    cache: CredentialCache,
    /// The cache's second tier, shared by the replicas; `None` without Redis.
    shared: Option<Arc<SharedTier>>,
    /// Google's recent refusals (4xx), by cache key; `None` when none are remembered.
    refusals: Option<moka::future::Cache<CacheKey, GoogleError>>,
    refresh_margin: Duration,
    /// HTTP Basic clients, by id, for their limits.
    clients: HashMap<String, ClientSettings>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    /// Exchanges per subject; `None` when rate limits are off.
    subject_limit: Option<KeyedLimit<SubjectKey>>,
    /// Refusal records written per subject.
    refusal_records: KeyedLimit<SubjectKey>,
}

/// A person (issuer and subject) as the rate limits track them: 16 bytes of SHA-256 rather
/// than two strings, since a limiter is kept for every recently seen subject, and no
/// caller can choose a subject that shares another's allowance.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SubjectKey([u8; 16]);

impl SubjectKey {
    fn of(issuer: &str, subject: &str) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        // Length-prefixed, so no (issuer, subject) pair reads as another.
        hasher.update((issuer.len() as u64).to_be_bytes());
        hasher.update(issuer);
        hasher.update(subject);
        let digest = hasher.finalize();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        Self(key)
    }
}

impl Broker {
    /// A broker from its parts.
    pub fn new(
        settings: &Settings,
        validator: Validator,
        google: GoogleClients,
        minter: Option<Arc<Minter>>,
        audit: Arc<Audit>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            validator,
            targets: RwLock::new(Arc::new(Targets::new(&settings.targets))),
            sts: google.sts,
            iam: google.iam,
            own: google.own,
            minter,
            cache: cache::build(
                settings.cache.max_entries,
                Duration::from_secs(settings.cache.min_remaining_secs),
            ),
            shared: None,
            refusals: (settings.google.refusal_memory_secs > 0).then(|| {
                moka::future::Cache::builder()
                    .max_capacity(settings.cache.max_entries)
                    .time_to_live(Duration::from_secs(settings.google.refusal_memory_secs))
                    .build()
            }),
            refresh_margin: Duration::from_secs(settings.cache.refresh_margin_secs),
            clients: settings
                .clients
                .iter()
                .map(|c| (c.id.clone(), c.clone()))
                .collect(),
            audit,
            metrics,
            subject_limit: settings.limits.enabled.then(|| {
                KeyedLimit::new(
                    Rate::from(&settings.limits.per_subject),
                    settings.limits.max_tracked_keys,
                )
            }),
            refusal_records: KeyedLimit::new(
                Rate::from(&settings.limits.refusal_records_per_subject),
                settings.limits.max_tracked_keys,
            ),
        }
    }

    /// The broker with `shared` as its cache's second tier.
    pub fn with_shared_tier(mut self, shared: Option<Arc<SharedTier>>) -> Self {
        self.shared = shared;
        self
    }

    /// Drops `subject`'s credentials from the shared tier too (after a revocation), so no
    /// replica takes them from there again.
    pub async fn purge_shared_subject(&self, subject: &str) {
        if let Some(shared) = &self.shared {
            shared.purge_subject(subject).await;
        }
    }

    /// Takes one exchange of the subject's allowance.
    async fn check_subject_limit(&self, identity: &Identity) -> Result<(), BrokerError> {
        let Some(limit) = &self.subject_limit else {
            return Ok(());
        };
        limit
            .check(SubjectKey::of(&identity.issuer, &identity.subject))
            .await
            .map_err(|wait| {
                self.metrics.rate_limited("subject");
                BrokerError::RateLimited { wait }
            })
    }

    /// Writes `record`; a refusal only while its subject is within the refusal-record
    /// rate, so one valid token sent in a loop cannot grow the table without bound.
    async fn write_record(&self, record: IssuanceRecord) -> Result<(), AuditError> {
        if record.outcome == Outcome::Refused {
            let key = SubjectKey::of(&record.issuer, &record.subject);
            if self.refusal_records.check(key).await.is_err() {
                self.metrics.refusal_record_dropped();
                return Ok(());
            }
        }
        self.audit.writer.record(record).await
    }

    async fn remembered_refusal(&self, key: &CacheKey) -> Option<GoogleError> {
        self.refusals.as_ref()?.get(key).await
    }

    /// Remembers a refusal Google gave (not a failure: those are worth trying again).
    async fn remember_refusal(&self, key: &CacheKey, e: &BrokerError) {
        if let (
            Some(refusals),
            BrokerError::Google(g @ (GoogleError::Refused { .. } | GoogleError::IamRefused { .. })),
        ) = (&self.refusals, e)
        {
            refusals.insert(key.clone(), g.clone()).await;
        }
    }

    /// The issuance records.
    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// Drops every cached credential of `subject` of `issuer` (after a revocation;
    /// [`crate::audit::ANY_ISSUER`] for every issuer).
    pub fn purge_subject(&self, issuer: &str, subject: &str) {
        let (issuer, subject) = (issuer.to_owned(), subject.to_owned());
        if let Err(e) = self.cache.invalidate_entries_if(move |k, _| {
            k.subject() == subject && (issuer == crate::audit::ANY_ISSUER || k.issuer() == issuer)
        }) {
            tracing::error!(error = %e, "cache purge failed");
        }
    }

    /// The targets in force.
    fn targets(&self) -> Arc<Targets> {
        self.targets.read().expect("targets lock").clone()
    }

    /// Puts new targets and policies in force. Requests already past target resolution
    /// finish under the old ones; cached credentials of targets whose settings changed
    /// or that are gone are dropped.
    pub fn replace_targets(&self, settings: &[TargetSettings]) {
        let fresh = Arc::new(Targets::new(settings));
        let old = std::mem::replace(
            &mut *self.targets.write().expect("targets lock"),
            fresh.clone(),
        );
        let changed: Vec<Arc<str>> = old
            .all()
            .iter()
            .filter(|t| {
                fresh.resolve(&t.name).map_or(true, |f| {
                    serde_json::to_value(&f.settings).ok() != serde_json::to_value(&t.settings).ok()
                })
            })
            .map(|t| t.name.clone())
            .collect();
        if changed.is_empty() {
            return;
        }
        tracing::info!(targets = ?changed, "cached credentials of changed targets dropped");
        if let Err(e) = self
            .cache
            .invalidate_entries_if(move |k, _| changed.contains(k.target()))
        {
            tracing::error!(error = %e, "cache purge failed");
        }
    }

    /// The validator, for readiness and key loading.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The target name `audience` selects and its kind, if any (bounded metrics labels).
    pub fn target_name(&self, audience: &str) -> Option<(Arc<str>, TargetKind)> {
        self.targets()
            .resolve(audience)
            .ok()
            .map(|t| (t.name.clone(), t.settings.kind))
    }

    /// Number of cached credentials (after applying pending evictions and inserts).
    pub async fn cached_entries(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }

    /// Validates the subject token and hands out a Google credential for the same person.
    /// Every outcome after a valid signature is recorded before the caller sees it; a
    /// credential whose record cannot be committed is not handed out.
    pub async fn exchange(&self, req: ExchangeRequest) -> Result<Issued, BrokerError> {
        let identity = self
            .validator
            .validate(req.subject_token.expose())
            .await
            .inspect_err(|e| self.metrics.token_rejected(e.reason()))?;
        let span = tracing::Span::current();
        span.record("subject", identity.subject.as_str());
        // Every later line of this request names the client its record names.
        if let Some(client) = req.context.client_for(&identity) {
            span.record("client", client);
        }
        let actor = match &req.actor_token {
            None => Ok(None),
            Some(token) => self
                .validator
                .validate(token.expose())
                .await
                .map(Some)
                .map_err(BrokerError::Actor),
        };
        // Resolved once: a reload while this request runs changes neither its policy
        // nor its record.
        let resolved = self.targets().resolve(&req.audience);
        let (actor, decided) = match actor {
            Ok(actor) => {
                let decided = self
                    .decide(&identity, actor.as_ref(), &resolved, &req)
                    .await;
                (actor, decided)
            }
            Err(e) => (None, Err(e)),
        };
        let actor = actor.as_ref();
        let target = resolved.as_ref().ok();
        let record = self.record_for(&identity, actor, target, &req, &decided);
        self.write_record(record).await?;
        let decided = match decided {
            // Checked again as the credential is about to leave, so none leaves once a
            // revocation made while this request waited for Google or the record has
            // returned to the administrator.
            Ok(_) if self.revocation_of(&identity).is_some() => {
                let refused = Err(self.revocation_of(&identity).expect("checked above"));
                let record = self.record_for(&identity, actor, target, &req, &refused);
                self.write_record(record).await?;
                refused
            }
            other => other,
        };
        decided.map(|d| Issued {
            access_token: d.access_token,
            expires_in: d.expires_in,
            scope: d.scope,
            source: d.source,
            target: d.target,
            scopes: d.scopes,
            google_principal: d.google_principal,
            service_account: d.service_account,
            issued_token_type: if d.kind == TargetKind::Firebase {
                crate::rfc8693::TOKEN_TYPE_JWT
            } else {
                crate::rfc8693::TOKEN_TYPE_ACCESS_TOKEN
            },
            kind: d.kind,
            client_id: req.context.client_for(&identity).map(str::to_owned),
            identity,
        })
    }

    async fn decide(
        &self,
        identity: &Identity,
        actor: Option<&Identity>,
        resolved: &Result<Arc<Target>, TargetError>,
        req: &ExchangeRequest,
    ) -> Result<Decision, BrokerError> {
        self.check_subject_limit(identity).await?;
        if let Some(revoked) = self.revocation_of(identity) {
            return Err(revoked);
        }
        let target = resolved.clone()?;
        policy::check(&target.settings.policy, &target.name, identity)?;
        policy::check_actor(&target.settings.policy, &target.name, actor)?;
        if let Some(client) = req
            .context
            .client_id
            .as_ref()
            .and_then(|id| self.clients.get(id))
        {
            policy::check_client(client, &target.name, identity)?;
        }
        target.check_token_type(req.wants_jwt)?;
        let scopes = target.scopes_for(&req.scopes)?;
        let user_project = user_project_for(&target, req.user_project.clone())?;
        let scope = (scopes != sorted_unique(&req.scopes)).then(|| scopes.join(" "));
        // In assertion mode Google sees the minted claims only, so they tell credentials apart.
        let minted = target
            .assertion()
            .map(|a| minted_attributes(identity, &a.attributes));
        let service_account = target.service_account_for(identity)?;
        let key = CacheKey::new(
            identity,
            actor,
            target.name.clone(),
            target.key_scopes(&scopes),
            target.key_user_project(user_project.as_deref()),
            minted.as_ref(),
        )
        .of(target.settings.kind, service_account.clone());
        let subject = Subject {
            token: req.subject_token.clone(),
            identity: identity.clone(),
        };

        if let Some(refusal) = self.remembered_refusal(&key).await {
            return Err(BrokerError::Google(refusal));
        }
        let mut fetched = false;
        let mut from_shared = false;
        let cached = self.cache.get(&key).await;
        let hit = cached.is_some();
        let entry = match cached {
            Some(entry) => entry,
            None => {
                let fetched_entry = self
                    .cache
                    .try_get_with(key.clone(), async {
                        let upstream = self.upstream();
                        let fetch = upstream.fetch(&target, &key, &subject);
                        let Some(shared) = &self.shared else {
                            fetched = true;
                            return fetch.await;
                        };
                        // Another replica's credential is served as a cached one.
                        let obtained = shared.obtain(&key, fetch).await?;
                        fetched = !obtained.shared_hit;
                        from_shared = obtained.shared_hit;
                        Ok(obtained.credential)
                    })
                    .await
                    .map_err(|e| (*e).clone());
                match fetched_entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        self.remember_refusal(&key, &e).await;
                        return Err(e);
                    }
                }
            }
        };
        self.metrics
            .cache_lookup(match (hit, fetched, from_shared) {
                (true, _, _) => "hit",
                (false, true, _) => "miss",
                (false, false, true) => "shared",
                (false, false, false) => "coalesced",
            });

        if !fetched && entry.remaining() < self.refresh_margin && entry.claim_refresh() {
            self.refresh_in_background(target.clone(), key, subject, entry.clone());
        }
        Ok(Decision {
            access_token: entry.token.clone(),
            expires_in: policy::capped_lifetime(
                &target.settings.policy,
                entry.remaining().as_secs(),
            ),
            scope,
            source: if fetched {
                fresh_source(&target)
            } else {
                Source::Cache
            },
            google_principal: target.principal_for(&identity.subject),
            service_account,
            kind: target.settings.kind,
            target: target.name.clone(),
            scopes,
        })
    }

    /// The refusal for `identity` when a revocation is in force.
    fn revocation_of(&self, identity: &Identity) -> Option<BrokerError> {
        let r = self
            .audit
            .revocations
            .active_for(&identity.issuer, &identity.subject)?;
        Some(BrokerError::Revoked {
            subject: r.subject,
            until: r.until.format(&Rfc3339).unwrap_or_default(),
        })
    }

    fn record_for(
        &self,
        identity: &Identity,
        actor: Option<&Identity>,
        target: Option<&Arc<Target>>,
        req: &ExchangeRequest,
        decided: &Result<Decision, BrokerError>,
    ) -> IssuanceRecord {
        let now = OffsetDateTime::now_utc();
        let ctx = &req.context;
        let mut record = IssuanceRecord {
            issued_at: now,
            request_id: ctx.request_id.clone(),
            server_request_id: ctx.server_request_id.clone(),
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            client_id: ctx.client_for(identity).map(str::to_owned),
            actor: actor.map(|a| a.subject.clone()),
            azp: identity.client_id.clone(),
            target: bounded(&req.audience),
            google_principal: None,
            service_account: None,
            scopes: bounded(&req.scopes.join(" ")),
            source: None,
            outcome: Outcome::Refused,
            error_code: None,
            expires_at: None,
            token_sha256: None,
            client_addr: ctx.client_addr.clone(),
            user_agent: ctx.user_agent.clone(),
            api_client: ctx.api_client.clone(),
            claimed_client: ctx.claimed_client.clone(),
        };
        match decided {
            Ok(d) => {
                record.target = d.target.to_string();
                record.google_principal = d.google_principal.clone();
                record.service_account = d.service_account.clone();
                record.scopes = d.scopes.join(" ");
                record.source = Some(d.source.as_str());
                record.outcome = Outcome::Issued;
                record.expires_at = Some(now + Duration::from_secs(d.expires_in));
                record.token_sha256 = Some(d.access_token.fingerprint());
            }
            Err(e) => {
                if let Some(t) = target {
                    record.target = t.name.to_string();
                    record.google_principal = t.principal_for(&identity.subject);
                    record.service_account = t.service_account_for(identity).ok().flatten();
                }
                record.error_code = Some(e.oauth_code().to_owned());
            }
        }
        record
    }

    fn refresh_in_background(
        &self,
        target: Arc<Target>,
        key: CacheKey,
        subject: Subject,
        old: Arc<CachedCredential>,
    ) {
        let upstream = self.upstream();
        let cache = self.cache.clone();
        let metrics = self.metrics.clone();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let fetch = upstream.fetch(&target, &key, &subject);
            // Through the shared tier, one replica refreshes and the others take its
            // credential (the tier holds none inside the refresh margin).
            let result = match &shared {
                Some(shared) => shared.obtain(&key, fetch).await.map(|o| o.credential),
                None => fetch.await,
            };
            metrics.cache_refresh(if result.is_ok() { "ok" } else { "error" });
            match result {
                Ok(fresh) => cache.insert(key, fresh).await,
                Err(e) => {
                    tracing::warn!(target = %target.name, error = %e, "background refresh failed; serving the cached credential");
                    // Let a later request try again, but not the very next one.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    old.release_refresh();
                }
            }
        });
    }
}

/// The person an exchange is for: their validated token and what it proved.
#[derive(Clone)]
struct Subject {
    token: Token,
    identity: Identity,
}

/// Where a fresh credential of `target` comes from.
fn fresh_source(target: &Target) -> Source {
    match target.settings.kind {
        TargetKind::Workforce if target.settings.service_account.is_none() => Source::Sts,
        TargetKind::Workforce | TargetKind::Impersonate => Source::Impersonation,
        TargetKind::Firebase => Source::Signing,
    }
}

/// What a federated token needs to call IAM Credentials; the caller's scopes go to the
/// service account's token instead.
static IAM_CREDENTIALS_SCOPES: std::sync::LazyLock<[String; 1]> =
    std::sync::LazyLock::new(|| ["https://www.googleapis.com/auth/cloud-platform".to_owned()]);

/// What a cache miss or refresh needs to obtain a credential from Google.
#[derive(Clone)]
struct Upstream {
    sts: StsClient,
    iam: IamCredentialsClient,
    own: Arc<OwnIdentity>,
    minter: Option<Arc<Minter>>,
}

impl Broker {
    fn upstream(&self) -> Upstream {
        Upstream {
            sts: self.sts.clone(),
            iam: self.iam.clone(),
            own: self.own.clone(),
            minter: self.minter.clone(),
        }
    }
}

impl Upstream {
    /// Obtains a fresh credential of the target's kind.
    async fn fetch(
        &self,
        target: &Target,
        key: &CacheKey,
        subject: &Subject,
    ) -> Result<Arc<CachedCredential>, BrokerError> {
        match target.settings.kind {
            TargetKind::Workforce => self.workforce(target, key, subject).await,
            TargetKind::Impersonate => self.impersonate(target, key).await,
            TargetKind::Firebase => self.firebase(target, subject).await,
        }
    }

    /// The mapped service account's token, obtained with the service's own identity.
    async fn impersonate(
        &self,
        target: &Target,
        key: &CacheKey,
    ) -> Result<Arc<CachedCredential>, BrokerError> {
        let service_account = key.service_account().ok_or_else(|| {
            GoogleError::BadResponse("no service account was mapped for this request".into())
        })?;
        let own = self.own.token().await?;
        self.service_account_token(target, key, &own, service_account)
            .await
    }

    /// A Firebase custom token for the caller, signed by the target's service account.
    async fn firebase(
        &self,
        target: &Target,
        subject: &Subject,
    ) -> Result<Arc<CachedCredential>, BrokerError> {
        let settings = target.settings.firebase.as_ref().ok_or_else(|| {
            GoogleError::BadResponse("the target has no [targets.firebase] settings".into())
        })?;
        let requested_at = std::time::Instant::now();
        let payload = firebase::custom_token_claims(settings, &subject.identity)?;
        let jwt = match &settings.key_file {
            Some(path) => {
                firebase::KeyFile::load(path, &settings.service_account)?.sign(&payload)?
            }
            None => {
                let own = self.own.token().await?;
                self.iam
                    .sign_jwt(&own, &settings.service_account, &payload)
                    .await?
                    .jwt
            }
        };
        Ok(Arc::new(CachedCredential::new(
            jwt,
            requested_at,
            Duration::from_secs(settings.lifetime_secs),
        )))
    }

    async fn service_account_token(
        &self,
        target: &Target,
        key: &CacheKey,
        bearer: &Token,
        service_account: &str,
    ) -> Result<Arc<CachedCredential>, BrokerError> {
        let requested_at = std::time::Instant::now();
        let token = self
            .iam
            .generate_access_token(
                bearer,
                service_account,
                key.scopes(),
                Duration::from_secs(target.settings.token_lifetime_secs),
                &target.settings.delegates,
            )
            .await?;
        Ok(Arc::new(CachedCredential::new(
            token.access_token,
            requested_at,
            token.expires_in,
        )))
    }

    /// The federated token, or the token of the service account it impersonates.
    async fn workforce(
        &self,
        target: &Target,
        key: &CacheKey,
        subject: &Subject,
    ) -> Result<Arc<CachedCredential>, BrokerError> {
        let requested_at = std::time::Instant::now();
        let federated = self.federated(target, key, subject).await?;
        let Some(service_account) = key.service_account() else {
            return Ok(Arc::new(CachedCredential::new(
                federated.access_token,
                requested_at,
                federated.expires_in,
            )));
        };
        self.service_account_token(target, key, &federated.access_token, service_account)
            .await
    }

    /// Exchanges what the target shows Google (the caller's token, or a fresh assertion
    /// for the same person) for a federated token.
    async fn federated(
        &self,
        target: &Target,
        key: &CacheKey,
        subject: &Subject,
    ) -> Result<crate::google::StsToken, BrokerError> {
        let minted;
        let subject_token = match (target.assertion(), &self.minter) {
            (Some(a), Some(minter)) => {
                minted = minter.mint(&subject.identity, a)?;
                tracing::debug!(kid = %minted.kid, assertion = %minted.token, "assertion minted");
                &minted.token
            }
            (Some(_), None) => {
                return Err(AssertionError::Signing("no signing keys are loaded".into()).into())
            }
            (None, _) => &subject.token,
        };
        Ok(self
            .sts
            .exchange(&StsRequest {
                audience: &target.settings.provider,
                scopes: if key.service_account().is_some() {
                    &IAM_CREDENTIALS_SCOPES[..]
                } else {
                    key.scopes()
                },
                subject_token,
                subject_token_type: &target.settings.subject_token_type,
                user_project: key.user_project(),
            })
            .await?)
    }
}

/// What `decide` settled on, before the identity is attached.
struct Decision {
    access_token: Token,
    expires_in: u64,
    scope: Option<String>,
    source: Source,
    target: Arc<str>,
    scopes: Vec<String>,
    google_principal: Option<String>,
    service_account: Option<String>,
    kind: TargetKind,
}

/// Caps a caller-chosen value before it is stored.
fn bounded(value: &str) -> String {
    value.chars().take(512).collect()
}

/// The project to bill: the target's, unless it has none and the caller named one.
fn user_project_for(
    target: &Target,
    requested: Option<String>,
) -> Result<Option<String>, BrokerError> {
    match (&target.settings.user_project, requested) {
        (configured, None) => Ok(configured.clone()),
        (None, Some(asked)) => Ok(Some(asked)),
        (Some(configured), Some(asked)) if *configured == asked => Ok(Some(asked)),
        (Some(configured), Some(asked)) => Err(BrokerError::UserProject {
            asked: asked.chars().take(64).collect(),
            target: target.name.to_string(),
            bills: configured.clone(),
        }),
    }
}

fn sorted_unique(scopes: &[String]) -> Vec<String> {
    let mut v = scopes.to_vec();
    v.sort();
    v.dedup();
    v
}
