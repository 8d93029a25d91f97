//! Outbound calls to Google: the Security Token Service.

mod forwardable;
pub mod provider;
mod sts;

pub use forwardable::check as check_forwardable;
pub use sts::{RetryPolicy, StsClient, StsRequest, StsToken};

/// What went wrong talking to Google.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoogleError {
    /// Google refused the request; `error` is its RFC 6749 code, `description` its reason.
    #[error("Google STS refused the exchange ({error}): {description}")]
    Refused {
        /// RFC 6749 error code from Google.
        error: String,
        /// Google's description.
        description: String,
    },
    /// Google could not be reached, timed out, throttled or failed (5xx).
    #[error("Google STS is unavailable: {0}")]
    Unavailable(String),
    /// Google failed repeatedly, so it was not called; it may be tried again after the
    /// duration given.
    #[error("Google STS is unavailable: it failed repeatedly, so it is not called for {} s", .0.as_secs())]
    CircuitOpen(std::time::Duration),
    /// The subject token is one Google refuses (`invalid_grant`); it was not sent.
    #[error("{0}")]
    WouldRefuse(String),
    /// Google answered 200 with a body that is not a usable token response.
    #[error("Google STS answered with an unusable response: {0}")]
    BadResponse(String),
}
