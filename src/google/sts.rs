//! Google STS client: RFC 8693 token exchange against a workforce pool provider.

use super::GoogleError;
use crate::breaker::Breaker;
use crate::metrics::{transport_error, Metrics};
use crate::secret::Token;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Largest response body read from Google.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// One exchange request, as Google STS expects it.
#[derive(Debug, Clone)]
pub struct StsRequest<'a> {
    /// Workforce provider resource.
    pub audience: &'a str,
    /// Requested Google OAuth scopes.
    pub scopes: &'a [String],
    /// The caller's OIDC token.
    pub subject_token: &'a Token,
    /// Type of `subject_token` as the provider expects it.
    pub subject_token_type: &'a str,
    /// Project billed for the exchange.
    pub user_project: Option<&'a str>,
}

/// A federated access token from Google.
#[derive(Debug, Clone)]
pub struct StsToken {
    /// The Google access token.
    pub access_token: Token,
    /// Lifetime Google granted.
    pub expires_in: Duration,
}

#[derive(Deserialize)]
struct Success {
    access_token: String,
    expires_in: Option<i64>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct Failure {
    error: String,
    error_description: Option<String>,
}

/// How one exchange retries: 429, 5xx, connection failures and timeouts are tried again
/// after an exponential backoff with full jitter, or after Google's `Retry-After` when it
/// sends one, while attempts and the deadline allow.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Calls made at most.
    pub max_attempts: u32,
    /// Total time, waits included.
    pub deadline: Duration,
    /// First backoff; doubled at each retry.
    pub base_backoff: Duration,
    /// Calls in flight at once.
    pub max_concurrent: usize,
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: random in [0, base·2^(attempt-1)].
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        let ceiling =
            self.base_backoff.as_millis() as u64 * (1 << attempt.min(10).saturating_sub(1));
        Duration::from_millis(fastrand::u64(0..=ceiling))
    }
}

/// Why one attempt failed.
enum AttemptError {
    /// Worth another attempt, after Google's `Retry-After` when it sent one.
    Retriable(GoogleError, Option<Duration>),
    /// Final.
    Final(GoogleError),
}

/// Client for `POST https://sts.googleapis.com/v1/token`.
#[derive(Clone)]
pub struct StsClient {
    http: reqwest::Client,
    url: String,
    metrics: Arc<Metrics>,
    retry: RetryPolicy,
    slots: Arc<tokio::sync::Semaphore>,
    breaker: Arc<Breaker>,
}

impl StsClient {
    /// A client posting to `url` through `http` (which carries the per-call timeouts),
    /// refusing at once while `breaker` is open.
    pub fn new(
        http: reqwest::Client,
        url: String,
        metrics: Arc<Metrics>,
        retry: RetryPolicy,
        breaker: Arc<Breaker>,
    ) -> Self {
        let slots = Arc::new(tokio::sync::Semaphore::new(retry.max_concurrent));
        Self {
            http,
            url,
            metrics,
            retry,
            slots,
            breaker,
        }
    }

    /// Exchanges the subject token for a federated Google access token.
    pub async fn exchange(&self, req: &StsRequest<'_>) -> Result<StsToken, GoogleError> {
        super::check_forwardable(req.subject_token.expose())?;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = self.retry.deadline.saturating_sub(started.elapsed());
            let outcome = tokio::time::timeout(left, self.attempt_in_slot(req))
                .await
                .unwrap_or_else(|_| {
                    Err(AttemptError::Final(GoogleError::Unavailable(
                        "timed out (no answer within the exchange deadline)".into(),
                    )))
                });
            let (error, retry_after) = match outcome {
                Ok(token) => return Ok(token),
                Err(AttemptError::Final(e)) => return Err(e),
                Err(AttemptError::Retriable(e, retry_after)) => (e, retry_after),
            };
            let wait = retry_after.unwrap_or_else(|| self.retry.backoff(attempt));
            if attempt >= self.retry.max_attempts || started.elapsed() + wait >= self.retry.deadline
            {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt once the breaker lets it through and a slot is free: a dead or slow
    /// Google must not gather an unbounded crowd of calls. The breaker is asked first, so
    /// callers do not queue for a slot only to be refused.
    async fn attempt_in_slot(&self, req: &StsRequest<'_>) -> Result<StsToken, AttemptError> {
        let mut admission = self
            .breaker
            .admit()
            .map_err(|open| AttemptError::Final(GoogleError::CircuitOpen(open.retry_after)))?;
        let _slot =
            self.slots.acquire().await.map_err(|_| {
                AttemptError::Final(GoogleError::Unavailable("shutting down".into()))
            })?;
        admission.sent();
        let outcome = self.attempt(req).await;
        match &outcome {
            Err(AttemptError::Retriable(..)) => admission.failed(),
            _ => admission.succeeded(),
        }
        outcome
    }

    async fn attempt(&self, req: &StsRequest<'_>) -> Result<StsToken, AttemptError> {
        let scope = req.scopes.join(" ");
        let options = req
            .user_project
            .map(|p| serde_json::json!({ "userProject": p }).to_string());
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", GRANT_TYPE),
            ("audience", req.audience),
            ("scope", &scope),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", req.subject_token.expose()),
            ("subject_token_type", req.subject_token_type),
        ];
        if let Some(options) = &options {
            form.push(("options", options));
        }
        let started = Instant::now();
        let sent = self.http.post(&self.url).form(&form).send().await;
        let code = match &sent {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) => transport_error(e).to_owned(),
        };
        self.metrics
            .upstream("google_sts", &code, started.elapsed());
        let response = sent.map_err(|e| {
            AttemptError::Retriable(GoogleError::Unavailable(describe_transport(&e)), None)
        })?;
        let status = response.status();
        let retry_after = retry_after_of(&response);
        let body = read_bounded(response).await.map_err(|e| match e {
            GoogleError::Unavailable(_) => AttemptError::Retriable(e, None),
            other => AttemptError::Final(other),
        })?;
        if status.is_success() {
            return parse_success(&body).map_err(AttemptError::Final);
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(AttemptError::Retriable(
                GoogleError::Unavailable(format!("HTTP {status}")),
                retry_after,
            ));
        }
        let failure: Failure = serde_json::from_slice(&body).map_err(|_| {
            AttemptError::Final(GoogleError::BadResponse(format!(
                "HTTP {status} without an OAuth error body"
            )))
        })?;
        Err(AttemptError::Final(GoogleError::Refused {
            error: failure.error,
            description: failure.error_description.unwrap_or_default(),
        }))
    }
}

fn parse_success(body: &[u8]) -> Result<StsToken, GoogleError> {
    let ok: Success = serde_json::from_slice(body)
        .map_err(|e| GoogleError::BadResponse(format!("not a token response: {e}")))?;
    if ok.access_token.is_empty() {
        return Err(GoogleError::BadResponse("empty access_token".into()));
    }
    if let Some(t) = &ok.token_type {
        if !t.eq_ignore_ascii_case("bearer") {
            return Err(GoogleError::BadResponse(format!(
                "token_type {t} is not Bearer"
            )));
        }
    }
    let secs = ok
        .expires_in
        .filter(|s| *s > 0)
        .ok_or_else(|| GoogleError::BadResponse("missing or non-positive expires_in".into()))?;
    Ok(StsToken {
        access_token: Token::new(ok.access_token),
        expires_in: Duration::from_secs(secs as u64),
    })
}

/// Google's `Retry-After` in seconds, when it sent one.
pub(super) fn retry_after_of(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

pub(super) async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, GoogleError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| GoogleError::Unavailable(describe_transport(&e)))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(GoogleError::BadResponse(format!(
                "response larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(super) fn describe_transport(e: &reqwest::Error) -> String {
    match transport_error(e) {
        "timeout" => "timed out".into(),
        "connect" => "connection failed".into(),
        _ => "request failed".into(),
    }
}
