//! IAM Credentials client: `generateAccessToken` (service-account impersonation) and
//! `signJwt` (a JWT signed by a service account's Google-held key).

use super::sts::{describe_transport, read_bounded, retry_after_of, RetryPolicy};
use super::{GoogleError, StsToken};
use crate::breaker::Breaker;
use crate::metrics::{transport_error, Metrics};
use crate::secret::Token;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Client for `https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/…`.
#[derive(Clone)]
pub struct IamCredentialsClient {
    http: reqwest::Client,
    base_url: String,
    metrics: Arc<Metrics>,
    breaker: Arc<Breaker>,
    retry: RetryPolicy,
    slots: Arc<tokio::sync::Semaphore>,
}

/// An access token of a service account.
pub type ServiceAccountToken = StsToken;

/// A JWT signed by a service account's Google-managed key.
#[derive(Debug, Clone)]
pub struct SignedJwt {
    /// Id of the key that signed it.
    pub key_id: String,
    /// The JWT.
    pub jwt: Token,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessTokenReply {
    access_token: String,
    expire_time: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignJwtReply {
    key_id: String,
    signed_jwt: String,
}

#[derive(Deserialize)]
struct ErrorReply {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

impl IamCredentialsClient {
    /// A client for the API at `base_url` (`https://iamcredentials.googleapis.com`), called
    /// only while `breaker` lets it, retrying Google's 429, 5xx and silences as `retry`
    /// says (the same policy as the STS calls, with its own bound on calls in flight).
    pub fn new(
        http: reqwest::Client,
        base_url: String,
        metrics: Arc<Metrics>,
        breaker: Arc<Breaker>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            metrics,
            breaker,
            slots: Arc::new(tokio::sync::Semaphore::new(retry.max_concurrent)),
            retry,
        }
    }

    /// An access token for `service_account`, obtained with `bearer` (a federated token or
    /// the service's own), through the `delegates` chain.
    pub async fn generate_access_token(
        &self,
        bearer: &Token,
        service_account: &str,
        scopes: &[String],
        lifetime: Duration,
        delegates: &[String],
    ) -> Result<ServiceAccountToken, GoogleError> {
        let body = json!({
            "scope": scopes,
            "lifetime": format!("{}s", lifetime.as_secs()),
            "delegates": delegates
                .iter()
                .map(|d| format!("projects/-/serviceAccounts/{d}"))
                .collect::<Vec<_>>(),
        });
        let requested_at = OffsetDateTime::now_utc();
        let reply = self
            .call(bearer, service_account, "generateAccessToken", &body)
            .await?;
        let reply: AccessTokenReply = serde_json::from_slice(&reply).map_err(|e| {
            GoogleError::BadResponse(format!("not a generateAccessToken response: {e}"))
        })?;
        let expires = OffsetDateTime::parse(&reply.expire_time, &Rfc3339).map_err(|_| {
            GoogleError::BadResponse(format!("expireTime {} is not RFC 3339", reply.expire_time))
        })?;
        let secs = (expires - requested_at).whole_seconds();
        if reply.access_token.is_empty() || secs <= 0 {
            return Err(GoogleError::BadResponse(
                "empty accessToken or expireTime in the past".into(),
            ));
        }
        Ok(StsToken {
            access_token: Token::new(reply.access_token),
            expires_in: Duration::from_secs(secs as u64),
        })
    }

    /// `payload` (a JSON object) signed by `service_account`'s Google-managed key.
    pub async fn sign_jwt(
        &self,
        bearer: &Token,
        service_account: &str,
        payload: &serde_json::Value,
    ) -> Result<SignedJwt, GoogleError> {
        let body = json!({ "payload": payload.to_string() });
        let reply = self.call(bearer, service_account, "signJwt", &body).await?;
        let reply: SignJwtReply = serde_json::from_slice(&reply)
            .map_err(|e| GoogleError::BadResponse(format!("not a signJwt response: {e}")))?;
        Ok(SignedJwt {
            key_id: reply.key_id,
            jwt: Token::new(reply.signed_jwt),
        })
    }

    /// One call, tried again after Google's failures (429, 5xx, no answer) with backoff or
    /// Google's `Retry-After`, while attempts and the deadline allow; refusals are final.
    async fn call(
        &self,
        bearer: &Token,
        service_account: &str,
        method: &str,
        body: &serde_json::Value,
    ) -> Result<Vec<u8>, GoogleError> {
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{}:{method}",
            self.base_url,
            percent_encoding::utf8_percent_encode(service_account, PATH_SEGMENT)
        );
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = self.retry.deadline.saturating_sub(started.elapsed());
            let outcome = tokio::time::timeout(left, self.attempt(&url, bearer, body))
                .await
                .unwrap_or_else(|_| {
                    Err((
                        GoogleError::IamUnavailable(
                            "timed out (no answer within the exchange deadline)".into(),
                        ),
                        None,
                    ))
                });
            let (error, retry_after) = match outcome {
                Ok(reply) => return Ok(reply),
                Err((e @ GoogleError::IamUnavailable(_), retry_after)) => (e, retry_after),
                Err((e, _)) => return Err(e),
            };
            let wait = retry_after.unwrap_or_else(|| self.retry.backoff(attempt));
            if attempt >= self.retry.max_attempts || started.elapsed() + wait >= self.retry.deadline
            {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt once the breaker lets it through and a slot is free; only a failure of
    /// Google's (429, 5xx, no answer) counts against the breaker: a refusal is an answer.
    async fn attempt(
        &self,
        url: &str,
        bearer: &Token,
        body: &serde_json::Value,
    ) -> Result<Vec<u8>, (GoogleError, Option<Duration>)> {
        let mut admission = self
            .breaker
            .admit()
            .map_err(|open| (GoogleError::IamCircuitOpen(open.retry_after), None))?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| (GoogleError::IamUnavailable("shutting down".into()), None))?;
        admission.sent();
        let outcome = self.send(url, bearer, body).await;
        match &outcome {
            Err((GoogleError::IamUnavailable(_), _)) => admission.failed(),
            _ => admission.succeeded(),
        }
        outcome
    }

    async fn send(
        &self,
        url: &str,
        bearer: &Token,
        body: &serde_json::Value,
    ) -> Result<Vec<u8>, (GoogleError, Option<Duration>)> {
        let started = Instant::now();
        let sent = self
            .http
            .post(url)
            .bearer_auth(bearer.expose())
            .json(body)
            .send()
            .await;
        let code = match &sent {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) => transport_error(e).to_owned(),
        };
        self.metrics
            .upstream("iam_credentials", &code, started.elapsed());
        let response =
            sent.map_err(|e| (GoogleError::IamUnavailable(describe_transport(&e)), None))?;
        let status = response.status();
        let retry_after = retry_after_of(&response);
        let body = read_bounded(response).await.map_err(|e| match e {
            GoogleError::Unavailable(why) => (GoogleError::IamUnavailable(why), None),
            other => (other, None),
        })?;
        if status.is_success() {
            return Ok(body);
        }
        let (reason, message) = serde_json::from_slice::<ErrorReply>(&body)
            .map(|r| (r.error.status, r.error.message))
            .unwrap_or_default();
        let message: String = message.chars().take(300).collect();
        let reason = if reason.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            reason
        };
        Err((refusal(status.as_u16(), reason, message), retry_after))
    }
}

/// Google's error, as one of ours: the RFC 6749 code it amounts to, with Google's reason.
fn refusal(status: u16, reason: String, message: String) -> GoogleError {
    let error = match (status, reason.as_str()) {
        (429, _) | (500..=599, _) => {
            return GoogleError::IamUnavailable(format!("{reason}: {message}"));
        }
        (403, _) => "access_denied",
        (404, _) => "invalid_target",
        (401, _) => "invalid_grant",
        (400, _) if message.to_ascii_lowercase().contains("scope") => "invalid_scope",
        _ => "invalid_request",
    };
    GoogleError::IamRefused {
        error: error.into(),
        reason,
        description: message,
    }
}

/// Characters a service account email keeps in a path segment (`@` stays readable).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'@')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_');
