//! The one place where errors become RFC 6749 §5.2 JSON.

use crate::audit::AuditError;
use crate::broker::{BrokerError, TargetError};
use crate::google::GoogleError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;

/// An error as the caller sees it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: String,
    retry_after: Option<u64>,
    challenge: Option<String>,
    close: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            retry_after: None,
            challenge: None,
            close: false,
        }
    }

    /// The same error, answered with `Connection: close` (the rest of the request was
    /// never read, so the connection cannot carry another).
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// An error with a status and code of the caller's choosing.
    pub fn with_status(
        status: StatusCode,
        code: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self::new(status, code, description)
    }

    /// A Bearer-token refusal (RFC 6750 §3): 401 or 403 with a `WWW-Authenticate` challenge.
    pub fn bearer(
        status: StatusCode,
        code: &'static str,
        description: impl Into<String>,
        challenge: String,
    ) -> Self {
        let mut e = Self::new(status, code, description);
        e.challenge = Some(challenge);
        e
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// `invalid_request` with another status (413, 415).
    pub fn invalid_request_status(status: StatusCode, description: impl Into<String>) -> Self {
        Self::new(status, "invalid_request", description)
    }

    /// 400 `unsupported_grant_type`.
    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }

    /// 401 `invalid_client`, with a `WWW-Authenticate` challenge.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    /// 503 `temporarily_unavailable` with `Retry-After`.
    pub fn unavailable(description: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description,
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 429 `slow_down` with `Retry-After`: a rate limit was reached.
    pub fn rate_limited(description: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "slow_down", description);
        e.retry_after = Some(retry_after);
        e
    }

    /// The RFC 6749 error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Maps a broker refusal; `retry_after` is used for 503s. Unless `verbose`, the
    /// description does not name other targets, the billing project or the allowed
    /// scopes: a caller with any valid token would otherwise learn the configuration.
    pub fn from_broker(e: &BrokerError, retry_after: u64, verbose: bool) -> Self {
        if let BrokerError::RateLimited { wait } = e {
            return Self::rate_limited(e.to_string(), crate::ratelimit::retry_after_secs(*wait));
        }
        let code = e.oauth_code();
        // An open breaker knows when its next probe is due; that beats the configured guess.
        let retry_after = match e {
            BrokerError::Google(
                GoogleError::CircuitOpen(wait) | GoogleError::IamCircuitOpen(wait),
            ) => wait.as_secs().max(1),
            _ => retry_after,
        };
        let description = match e {
            BrokerError::Target(t) if !verbose => terse_target_error(t),
            BrokerError::UserProject { asked, target, .. } if !verbose => format!(
                "userProject {asked} is not allowed for target {target}; remove workforce_pool_user_project from the credential file"
            ),
            BrokerError::Google(GoogleError::Refused { description, .. }) => {
                format!("Google STS refused the exchange: {description}")
            }
            BrokerError::Google(GoogleError::WouldRefuse(why)) => why.clone(),
            BrokerError::Google(GoogleError::IamRefused { .. }) => e.to_string(),
            BrokerError::Google(_) => format!("{e}; try again in {retry_after} s"),
            // The database's own error text stays in the logs.
            BrokerError::Audit(AuditError::Store(_) | AuditError::Rejected(_)) => format!(
                "the issuance store is unavailable, so no credential was handed out; try again in {retry_after} s"
            ),
            BrokerError::Audit(a) => format!(
                "{a}, so no credential was handed out; try again in {retry_after} s"
            ),
            _ => e.to_string(),
        };
        let status = match code {
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "unauthorized_client" | "access_denied" => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut error = Self::new(status, code, description);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            error.retry_after = Some(retry_after);
        }
        error
    }
}

/// A target refusal naming only what the caller sent.
fn terse_target_error(e: &TargetError) -> String {
    match e {
        TargetError::Unknown { audience, .. } => {
            format!("audience {audience} is not a configured target; ask an administrator for the target name")
        }
        TargetError::ScopeNotAllowed { scope, target, .. } => {
            format!("scope {scope} is not allowed for target {target}")
        }
        TargetError::NoScope { target, .. } => {
            format!("no scope requested and target {target} has no default scopes; send a scope")
        }
        TargetError::NoServiceAccount { .. } | TargetError::TokenType { .. } => e.to_string(),
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"));
        if self.close {
            response.force_close();
        }
        if let Some(secs) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if let Some(challenge) = &self.challenge {
            response.insert_header((header::WWW_AUTHENTICATE, challenge.as_str()));
        } else if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                r#"Basic realm="sts-bridge", charset="UTF-8""#,
            ));
        }
        response.json(Body {
            error: self.code,
            error_description: &self.description,
        })
    }
}
