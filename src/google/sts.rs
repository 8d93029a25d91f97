//! Google STS client: RFC 8693 token exchange against a workforce pool provider.

use super::GoogleError;
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

/// Client for `POST https://sts.googleapis.com/v1/token`.
#[derive(Clone)]
pub struct StsClient {
    http: reqwest::Client,
    url: String,
    metrics: Arc<Metrics>,
}

impl StsClient {
    /// A client posting to `url` through `http` (which carries the timeouts).
    pub fn new(http: reqwest::Client, url: String, metrics: Arc<Metrics>) -> Self {
        Self { http, url, metrics }
    }

    /// Exchanges the subject token for a federated Google access token.
    pub async fn exchange(&self, req: &StsRequest<'_>) -> Result<StsToken, GoogleError> {
        super::check_forwardable(req.subject_token.expose())?;
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
        let response = sent.map_err(|e| GoogleError::Unavailable(describe_transport(&e)))?;
        let status = response.status();
        let body = read_bounded(response).await?;
        if status.is_success() {
            return parse_success(&body);
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(GoogleError::Unavailable(format!("HTTP {status}")));
        }
        let failure: Failure = serde_json::from_slice(&body).map_err(|_| {
            GoogleError::BadResponse(format!("HTTP {status} without an OAuth error body"))
        })?;
        Err(GoogleError::Refused {
            error: failure.error,
            description: failure.error_description.unwrap_or_default(),
        })
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

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, GoogleError> {
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

fn describe_transport(e: &reqwest::Error) -> String {
    match transport_error(e) {
        "timeout" => "timed out".into(),
        "connect" => "connection failed".into(),
        _ => "request failed".into(),
    }
}
