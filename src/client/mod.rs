//! The data-tool side: a person signs in to the identity provider once (`login`), and
//! Google client libraries then get that person's Google credential from sts-bridge through
//! an `external_account` file (`auth0-token`, `credentials-file`), a local metadata server
//! (`metadata-server`) or a printed token (`print-access-token`). Runs on the person's
//! machine; nothing here is part of the service.

pub mod auth0_token;
pub mod exchange;
pub mod login;
pub mod metadata_server;
pub mod oauth;
pub mod store;

use std::path::PathBuf;

/// Why a data-tool command failed, in words that say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No stored sign-in for the profile.
    #[error(
        "not logged in (profile `{profile}`): run `sts-bridge login --issuer URL --client-id ID \
         --audience API` first"
    )]
    NotLoggedIn {
        /// The profile asked for.
        profile: String,
    },
    /// The stored access token expired and there is no refresh token to renew it.
    #[error(
        "the sign-in of profile `{profile}` has expired and cannot be renewed (no refresh \
         token): run `sts-bridge login` again"
    )]
    LoginExpired {
        /// The profile asked for.
        profile: String,
    },
    /// The issuer refused the stored refresh token.
    #[error(
        "the identity provider no longer accepts the stored sign-in ({description}): it was \
         revoked, has expired or was already used; run `sts-bridge login` again"
    )]
    RefreshRevoked {
        /// The issuer's `error_description`.
        description: String,
    },
    /// The person (or the issuer) turned the sign-in down.
    #[error("the sign-in was denied at the identity provider ({0})")]
    Denied(String),
    /// The code shown was not confirmed in time.
    #[error("the sign-in code expired before it was confirmed; run `sts-bridge login` again")]
    DeviceCodeExpired,
    /// The issuer answered with an OAuth error.
    #[error("the identity provider refused: {error}: {description}")]
    Issuer {
        /// OAuth `error`.
        error: String,
        /// OAuth `error_description`.
        description: String,
    },
    /// The issuer could not be reached or answered nonsense.
    #[error("cannot use the identity provider at {url}: {cause}")]
    IssuerUnreachable {
        /// What was asked.
        url: String,
        /// What went wrong.
        cause: String,
    },
    /// sts-bridge refused the exchange.
    #[error("sts-bridge refused the exchange (HTTP {status} {error}): {description}")]
    ServerRefused {
        /// HTTP status.
        status: u16,
        /// OAuth `error`.
        error: String,
        /// sts-bridge's `error_description`.
        description: String,
    },
    /// sts-bridge could not be reached.
    #[error("cannot reach sts-bridge at {url}: {cause}")]
    ServerUnreachable {
        /// What was asked.
        url: String,
        /// What went wrong.
        cause: String,
    },
    /// A stored file could not be read or written.
    #[error("{}: {cause}", path.display())]
    Store {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        cause: String,
    },
    /// Arguments that cannot work.
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// A short, stable code for the executable-sourced failure answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotLoggedIn { .. } => "not_logged_in",
            Self::LoginExpired { .. } => "login_expired",
            Self::RefreshRevoked { .. } => "invalid_grant",
            Self::Denied(_) => "access_denied",
            Self::DeviceCodeExpired => "expired_token",
            Self::Issuer { .. } => "issuer_error",
            Self::IssuerUnreachable { .. } => "issuer_unreachable",
            Self::ServerRefused { .. } => "server_refused",
            Self::ServerUnreachable { .. } => "server_unreachable",
            Self::Store { .. } => "store_error",
            Self::Usage(_) => "usage",
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An HTTP client for the issuer and sts-bridge: no redirects (a token endpoint that
/// redirects is misconfigured, and following would resend secrets), bounded waits.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// The body of `response`, read only while it stays within `max` bytes, so a server that
/// answers without end cannot fill this process's memory.
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("answer over {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| crate::causes::chain(&e))?
    {
        if body.len() + chunk.len() > max {
            return Err(format!("answer over {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
