//! The middle of the service: which target, which scopes, the cache, and the exchange flow.

mod cache;
mod targets;

pub use cache::{CacheKey, CachedCredential, CredentialCache};
pub use targets::{Target, TargetError, Targets};

use crate::config::Settings;
use crate::google::{GoogleError, StsClient, StsRequest};
use crate::identity::{Identity, IdentityError, Validator};
use crate::secret::Token;
use std::sync::Arc;
use std::time::Duration;

/// RFC 8693 token type of a JWT.
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 token type of an OAuth access token.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 token type of an OpenID Connect ID token.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// Subject token types a caller may present.
pub const SUBJECT_TOKEN_TYPES: &[&str] =
    &[TOKEN_TYPE_JWT, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN];
/// Subject token types Google STS accepts for an OIDC workforce provider.
pub const UPSTREAM_SUBJECT_TOKEN_TYPES: &[&str] = &[TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN];

/// A validated-in-form exchange request (the route layer has parsed the wire format).
#[derive(Debug)]
pub struct ExchangeRequest {
    /// The caller's OIDC token.
    pub subject_token: Token,
    /// Target name or workforce provider resource.
    pub audience: String,
    /// Requested scopes (may be empty).
    pub scopes: Vec<String>,
    /// `options.userProject`, when the caller sent one.
    pub user_project: Option<String>,
}

/// Where a handed-out credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Freshly exchanged with Google STS.
    Sts,
    /// Served from the cache.
    Cache,
}

impl Source {
    /// Lower-case name, for logs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Sts => "sts",
            Source::Cache => "cache",
        }
    }
}

/// A credential handed out.
#[derive(Debug)]
pub struct Issued {
    /// The Google access token.
    pub access_token: Token,
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
}

/// Why an exchange was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The subject token is not acceptable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The audience or scopes cannot be served.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The request contradicts the target's configuration.
    #[error("{0}")]
    InvalidRequest(String),
    /// Google refused or failed.
    #[error(transparent)]
    Google(#[from] GoogleError),
}

/// Runs exchanges.
pub struct Broker {
    validator: Validator,
    targets: Targets,
    sts: StsClient,
    cache: CredentialCache,
    refresh_margin: Duration,
}

impl Broker {
    /// A broker from its parts.
    pub fn new(settings: &Settings, validator: Validator, sts: StsClient) -> Self {
        Self {
            validator,
            targets: Targets::new(&settings.targets),
            sts,
            cache: cache::build(
                settings.cache.max_entries,
                Duration::from_secs(settings.cache.min_remaining_secs),
            ),
            refresh_margin: Duration::from_secs(settings.cache.refresh_margin_secs),
        }
    }

    /// The validator, for readiness and key loading.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// Number of cached credentials.
    pub fn cached_entries(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Validates the subject token and hands out a Google credential for the same person.
    pub async fn exchange(&self, req: ExchangeRequest) -> Result<Issued, BrokerError> {
        let target = self.targets.resolve(&req.audience)?;
        let scopes = target.scopes_for(&req.scopes)?;
        let user_project = user_project_for(&target, req.user_project)?;
        let identity = self.validator.validate(req.subject_token.expose()).await?;
        let scope = (scopes != sorted_unique(&req.scopes)).then(|| scopes.join(" "));
        let key = CacheKey::new(&identity, target.name.clone(), scopes, user_project);

        let mut fetched = false;
        let entry = self
            .cache
            .try_get_with(key.clone(), async {
                fetched = true;
                self.fetch(&target, &key, &req.subject_token).await
            })
            .await
            .map_err(|e| BrokerError::Google((*e).clone()))?;

        if !fetched && entry.remaining() < self.refresh_margin && entry.claim_refresh() {
            self.refresh_in_background(target.clone(), key, req.subject_token, entry.clone());
        }
        Ok(Issued {
            access_token: entry.token.clone(),
            expires_in: entry.remaining().as_secs().max(1),
            scope,
            source: if fetched { Source::Sts } else { Source::Cache },
            identity,
            target: target.name.clone(),
        })
    }

    async fn fetch(
        &self,
        target: &Target,
        key: &CacheKey,
        subject_token: &Token,
    ) -> Result<Arc<CachedCredential>, GoogleError> {
        fetch(&self.sts, target, key, subject_token).await
    }

    fn refresh_in_background(
        &self,
        target: Arc<Target>,
        key: CacheKey,
        subject_token: Token,
        old: Arc<CachedCredential>,
    ) {
        let sts = self.sts.clone();
        let cache = self.cache.clone();
        tokio::spawn(async move {
            match fetch(&sts, &target, &key, &subject_token).await {
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

async fn fetch(
    sts: &StsClient,
    target: &Target,
    key: &CacheKey,
    subject_token: &Token,
) -> Result<Arc<CachedCredential>, GoogleError> {
    let token = sts
        .exchange(&StsRequest {
            audience: &target.settings.provider,
            scopes: key.scopes(),
            subject_token,
            subject_token_type: &target.settings.subject_token_type,
            user_project: key.user_project(),
        })
        .await?;
    Ok(Arc::new(CachedCredential::new(
        token.access_token,
        token.expires_in,
    )))
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
        (Some(configured), Some(asked)) => Err(BrokerError::InvalidRequest(format!(
            "userProject {} is not allowed for target {}; it bills project {configured} (remove workforce_pool_user_project from the credential file or set it to {configured})",
            asked.chars().take(64).collect::<String>(),
            target.name
        ))),
    }
}

fn sorted_unique(scopes: &[String]) -> Vec<String> {
    let mut v = scopes.to_vec();
    v.sort();
    v.dedup();
    v
}
