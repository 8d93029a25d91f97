//! The service's own Google identity: Application Default Credentials through `gcp_auth`
//! (a key file named by `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application default
//! credentials, the metadata server, or `gcloud` itself), or a configured key file.

use super::GoogleError;
use crate::secret::Token;
use gcp_auth::{CustomServiceAccount, TokenProvider};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The scope IAM Credentials calls need.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Tokens of the service's own Google identity, found on first use so a service without
/// impersonating targets never looks for credentials.
pub struct OwnIdentity {
    key_file: Option<PathBuf>,
    provider: OnceCell<Arc<dyn TokenProvider>>,
}

impl OwnIdentity {
    /// From `key_file` when given, else from Application Default Credentials.
    pub fn new(key_file: Option<PathBuf>) -> Self {
        Self {
            key_file,
            provider: OnceCell::new(),
        }
    }

    /// A token of the service's own identity for IAM Credentials; `gcp_auth` caches it
    /// until shortly before it expires.
    pub async fn token(&self) -> Result<Token, GoogleError> {
        let provider = self
            .provider
            .get_or_try_init(|| async {
                match &self.key_file {
                    Some(path) => CustomServiceAccount::from_file(path)
                        .map(|p| Arc::new(p) as Arc<dyn TokenProvider>),
                    None => gcp_auth::provider().await,
                }
            })
            .await
            .map_err(|e| unavailable("no usable credentials were found", &e))?;
        let token = provider
            .token(&[CLOUD_PLATFORM])
            .await
            .map_err(|e| unavailable("a token could not be obtained", &e))?;
        Ok(Token::new(token.as_str()))
    }
}

/// `gcp_auth`'s errors name files and endpoints, never tokens.
fn unavailable(what: &str, e: &gcp_auth::Error) -> GoogleError {
    tracing::warn!(error = %e, "the service's own Google credentials: {what}");
    GoogleError::IamUnavailable(format!(
        "the service's own Google credentials (Application Default Credentials): {what}"
    ))
}
