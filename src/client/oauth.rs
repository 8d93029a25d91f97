//! The identity provider as an OAuth 2.0 authorization server: its endpoints from OIDC
//! discovery, and the `oauth2` client that talks to them.

use super::store::{Profile, Session};
use super::{now_secs, ClientError};
use crate::secret::Token;
use oauth2::basic::{BasicClient, BasicTokenResponse};
use oauth2::{
    AuthUrl, ClientId, DeviceAuthorizationUrl, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    HttpClientError, RefreshToken, RequestTokenError, RevocationUrl, StandardErrorResponse,
    TokenResponse, TokenUrl,
};
use serde::Deserialize;

/// The endpoints an issuer's discovery document names.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoints {
    /// Where tokens are issued and refreshed.
    pub token_endpoint: String,
    /// Where a device sign-in starts (RFC 8628), when the issuer offers one.
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    /// Where a browser sign-in starts.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Where a refresh token is revoked (RFC 7009), when the issuer offers it.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
}

/// The OAuth client for one issuer, with the endpoints it may or may not have.
pub type OAuthClient =
    BasicClient<EndpointMaybeSet, EndpointMaybeSet, EndpointNotSet, EndpointMaybeSet, EndpointSet>;

/// The issuer's discovery document URL, accepting it with or without Auth0's trailing slash.
fn discovery_url(issuer: &str) -> Result<url::Url, ClientError> {
    let parsed = url::Url::parse(issuer)
        .map_err(|e| ClientError::Usage(format!("issuer `{issuer}` is not a URL: {e}")))?;
    if !crate::config::is_secure_url(&parsed) {
        return Err(ClientError::Usage(format!(
            "issuer `{issuer}` must use https (plain http only on loopback addresses)"
        )));
    }
    let base = issuer.trim_end_matches('/');
    url::Url::parse(&format!("{base}/.well-known/openid-configuration"))
        .map_err(|e| ClientError::Usage(e.to_string()))
}

/// Fetches the issuer's endpoints from its discovery document.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Endpoints, ClientError> {
    let url = discovery_url(issuer)?;
    let unreachable = |cause: String| ClientError::IssuerUnreachable {
        url: url.to_string(),
        cause,
    };
    let response = http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| unreachable(crate::causes::chain(&e)))?;
    if !response.status().is_success() {
        return Err(unreachable(format!("answered HTTP {}", response.status())));
    }
    let bytes = super::read_capped(response, 256 * 1024)
        .await
        .map_err(unreachable)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| unreachable(format!("not an OpenID discovery document: {e}")))
}

fn endpoint_url(name: &str, value: &str) -> Result<url::Url, ClientError> {
    let url = url::Url::parse(value)
        .map_err(|e| ClientError::Usage(format!("the issuer's {name} `{value}`: {e}")))?;
    if crate::config::is_secure_url(&url) {
        Ok(url)
    } else {
        Err(ClientError::Usage(format!(
            "the issuer's {name} `{value}` must use https"
        )))
    }
}

/// The OAuth client of `profile` at `endpoints`; a public client (no secret), as a CLI is.
pub fn client(profile: &Profile, endpoints: &Endpoints) -> Result<OAuthClient, ClientError> {
    let optional = |name: &str, value: &Option<String>| {
        value.as_deref().map(|v| endpoint_url(name, v)).transpose()
    };
    Ok(BasicClient::new(ClientId::new(profile.client_id.clone()))
        .set_auth_uri_option(
            optional("authorization_endpoint", &endpoints.authorization_endpoint)?
                .map(AuthUrl::from_url),
        )
        .set_device_authorization_url_option(
            optional(
                "device_authorization_endpoint",
                &endpoints.device_authorization_endpoint,
            )?
            .map(DeviceAuthorizationUrl::from_url),
        )
        .set_revocation_url_option(
            optional("revocation_endpoint", &endpoints.revocation_endpoint)?
                .map(RevocationUrl::from_url),
        )
        .set_token_uri(TokenUrl::from_url(endpoint_url(
            "token_endpoint",
            &endpoints.token_endpoint,
        )?)))
}

/// A session from a token response; keeps `previous_refresh` when the issuer does not
/// rotate refresh tokens.
pub fn session_from(
    profile: &Profile,
    response: &BasicTokenResponse,
    previous_refresh: Option<Token>,
) -> Session {
    let expires_in = response
        .expires_in()
        .map(|d| d.as_secs().min(i64::MAX as u64 / 2) as i64)
        // Auth0 always says; without it, assume the shortest lifetime worth caching.
        .unwrap_or(60);
    Session {
        profile: profile.clone(),
        access_token: Token::new(response.access_token().secret().clone()),
        expires_at: now_secs() + expires_in,
        refresh_token: response
            .refresh_token()
            .map(|r| Token::new(r.secret().clone()))
            .or(previous_refresh),
    }
}

/// Turns the issuer's answer into the error a person can act on.
pub fn token_error<T: std::fmt::Display + oauth2::ErrorResponseType>(
    url: &str,
    err: RequestTokenError<HttpClientError<reqwest::Error>, StandardErrorResponse<T>>,
) -> ClientError {
    match err {
        RequestTokenError::ServerResponse(e) => {
            let error = e.error().to_string();
            let description = e.error_description().cloned().unwrap_or_default();
            match error.as_str() {
                "invalid_grant" => ClientError::RefreshRevoked { description },
                "access_denied" => ClientError::Denied(if description.is_empty() {
                    error
                } else {
                    description
                }),
                "expired_token" => ClientError::DeviceCodeExpired,
                _ => ClientError::Issuer { error, description },
            }
        }
        RequestTokenError::Request(e) => ClientError::IssuerUnreachable {
            url: url.into(),
            cause: crate::causes::chain(&e),
        },
        RequestTokenError::Parse(e, _) => ClientError::IssuerUnreachable {
            url: url.into(),
            cause: format!("unexpected answer: {e}"),
        },
        RequestTokenError::Other(e) => ClientError::IssuerUnreachable {
            url: url.into(),
            cause: e,
        },
    }
}

/// Renews `session` with its refresh token and returns the renewed session (with the new
/// refresh token when the issuer rotated it).
pub async fn refresh(http: &reqwest::Client, session: &Session) -> Result<Session, ClientError> {
    let Some(refresh_token) = &session.refresh_token else {
        return Err(ClientError::LoginExpired {
            profile: String::new(),
        });
    };
    let endpoints = discover(http, &session.profile.issuer).await?;
    let client = client(&session.profile, &endpoints)?;
    let response = client
        .exchange_refresh_token(&RefreshToken::new(refresh_token.expose().to_owned()))
        .request_async(http)
        .await
        .map_err(|e| token_error(&endpoints.token_endpoint, e))?;
    Ok(session_from(
        &session.profile,
        &response,
        Some(refresh_token.clone()),
    ))
}

/// Revokes `session`'s refresh token at the issuer (RFC 7009), when it offers revocation;
/// true when the issuer confirmed. Sent by hand: the `oauth2` client refuses plain-http
/// revocation endpoints even on loopback, where the dev issuer lives.
pub async fn revoke(http: &reqwest::Client, session: &Session) -> Result<bool, ClientError> {
    let Some(refresh_token) = &session.refresh_token else {
        return Ok(false);
    };
    let endpoints = discover(http, &session.profile.issuer).await?;
    let Some(endpoint) = &endpoints.revocation_endpoint else {
        return Ok(false);
    };
    let url = endpoint_url("revocation_endpoint", endpoint)?;
    let unreachable = |cause: String| ClientError::IssuerUnreachable {
        url: endpoint.clone(),
        cause,
    };
    let response = http
        .post(url)
        .form(&[
            ("client_id", session.profile.client_id.as_str()),
            ("token", refresh_token.expose()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .map_err(|e| unreachable(crate::causes::chain(&e)))?;
    if response.status().is_success() {
        return Ok(true);
    }
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    Err(ClientError::Issuer {
        error: body["error"]
            .as_str()
            .map_or_else(|| format!("HTTP {status}"), str::to_owned),
        description: body["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}
