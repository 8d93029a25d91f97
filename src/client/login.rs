//! `sts-bridge login` and `logout`: the device authorization flow (RFC 8628) when the issuer
//! offers it, else (or with `--browser`) the authorization code flow with PKCE on a loopback
//! redirect (RFC 8252).

use super::oauth::{self, OAuthClient};
use super::store::{self, Profile};
use super::{http_client, ClientError};
use oauth2::basic::BasicTokenResponse;
use oauth2::{
    AuthorizationCode, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope,
    StandardDeviceAuthorizationResponse,
};
use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Scopes asked for: `offline_access` is what makes Auth0 hand out a refresh token.
const SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// How long the browser sign-in may take.
const BROWSER_WAIT: Duration = Duration::from_secs(300);
/// Largest request head accepted on the loopback redirect.
const MAX_REDIRECT_HEAD: usize = 8 * 1024;

/// What `login` was asked to do.
pub struct LoginOptions {
    /// Profile to store the sign-in as.
    pub profile: String,
    /// Issuer URL; the stored profile's when absent.
    pub issuer: Option<String>,
    /// OAuth client id; the stored profile's when absent.
    pub client_id: Option<String>,
    /// API identifier (Auth0 `audience`); the stored profile's when absent.
    pub audience: Option<String>,
    /// Use the browser (PKCE) even when the issuer offers the device flow.
    pub browser: bool,
}

/// The profile from the flags, completed from the stored one.
fn resolve_profile(opts: &LoginOptions) -> Result<Profile, ClientError> {
    let stored = store::load(&opts.profile).ok().flatten().map(|s| s.profile);
    let issuer = opts
        .issuer
        .clone()
        .or_else(|| stored.as_ref().map(|p| p.issuer.clone()));
    let client_id = opts
        .client_id
        .clone()
        .or_else(|| stored.as_ref().map(|p| p.client_id.clone()));
    let audience = opts
        .audience
        .clone()
        .or_else(|| stored.as_ref().and_then(|p| p.audience.clone()));
    match (issuer, client_id) {
        (Some(issuer), Some(client_id)) => Ok(Profile {
            issuer,
            client_id,
            audience,
        }),
        _ => Err(ClientError::Usage(format!(
            "no stored profile `{}`: give --issuer and --client-id (and --audience, the API \
             identifier sts-bridge accepts) the first time",
            opts.profile
        ))),
    }
}

/// Signs the person in and stores the result.
pub async fn login(opts: LoginOptions) -> Result<(), ClientError> {
    store::check_profile_name(&opts.profile)?;
    let profile = resolve_profile(&opts)?;
    let http = http_client();
    let endpoints = oauth::discover(&http, &profile.issuer).await?;
    let client = oauth::client(&profile, &endpoints)?;
    let response = if endpoints.device_authorization_endpoint.is_some() && !opts.browser {
        device_flow(&http, &client, &profile, &endpoints.token_endpoint).await?
    } else if endpoints.authorization_endpoint.is_some() {
        browser_flow(&http, &client, &profile, &endpoints.token_endpoint).await?
    } else {
        return Err(ClientError::Usage(format!(
            "the issuer {} offers neither a device authorization endpoint nor an \
             authorization endpoint",
            profile.issuer
        )));
    };
    let session = oauth::session_from(&profile, &response, None);
    let path = store::save(&opts.profile, &session)?;
    if session.refresh_token.is_none() {
        eprintln!(
            "note: the identity provider gave no refresh token (in Auth0, allow offline access \
             for the API); log in again when the sign-in expires"
        );
    }
    println!(
        "Logged in to {} (profile `{}`); stored in {}",
        profile.issuer,
        opts.profile,
        path.display()
    );
    Ok(())
}

fn scopes() -> impl Iterator<Item = Scope> {
    SCOPES.iter().map(|s| Scope::new((*s).to_owned()))
}

async fn device_flow(
    http: &reqwest::Client,
    client: &OAuthClient,
    profile: &Profile,
    token_url: &str,
) -> Result<BasicTokenResponse, ClientError> {
    let mut request = client
        .exchange_device_code()
        .map_err(|e| ClientError::Usage(e.to_string()))?
        .add_scopes(scopes());
    if let Some(audience) = &profile.audience {
        request = request.add_extra_param("audience", audience.clone());
    }
    let details: StandardDeviceAuthorizationResponse = request
        .request_async(http)
        .await
        .map_err(|e| oauth::token_error(&profile.issuer, e))?;
    eprintln!(
        "To sign in, open {} and enter the code {}",
        details.verification_uri().as_str(),
        details.user_code().secret()
    );
    if let Some(complete) = details.verification_uri_complete() {
        eprintln!("(or open {})", complete.secret());
    }
    eprint!("Waiting for you to confirm ");
    let _ = std::io::stderr().flush();
    let polled = client
        .exchange_device_access_token(&details)
        .request_async(
            http,
            |wait| async move {
                eprint!(".");
                let _ = std::io::stderr().flush();
                tokio::time::sleep(wait).await;
            },
            None,
        )
        .await;
    eprintln!();
    polled.map_err(|e| oauth::token_error(token_url, e))
}

async fn browser_flow(
    http: &reqwest::Client,
    client: &OAuthClient,
    profile: &Profile,
    token_url: &str,
) -> Result<BasicTokenResponse, ClientError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| ClientError::Usage(format!("cannot listen on loopback: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| ClientError::Usage(e.to_string()))?
        .port();
    let redirect = RedirectUrl::new(format!("http://127.0.0.1:{port}/callback"))
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .map_err(|e| ClientError::Usage(e.to_string()))?
        .add_scopes(scopes())
        .set_pkce_challenge(challenge)
        .set_redirect_uri(Cow::Borrowed(&redirect));
    if let Some(audience) = &profile.audience {
        request = request.add_extra_param("audience", audience.clone());
    }
    let (url, csrf) = request.url();
    eprintln!("To sign in, open this address in your browser:\n  {url}");
    eprintln!(
        "Waiting for the browser to come back to {}",
        redirect.as_str()
    );
    let code = tokio::time::timeout(BROWSER_WAIT, await_redirect(&listener, csrf.secret()))
        .await
        .map_err(|_| ClientError::Denied("no answer from the browser within 5 minutes".into()))??;
    client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .set_redirect_uri(Cow::Borrowed(&redirect))
        .request_async(http)
        .await
        .map_err(|e| oauth::token_error(token_url, e))
}

/// Serves the loopback redirect until the issuer sends the browser back with a code (or an
/// error) for our `state`.
async fn await_redirect(
    listener: &tokio::net::TcpListener,
    state: &str,
) -> Result<String, ClientError> {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REDIRECT_HEAD {
            // A connection that sends nothing must not hold up the browser's.
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => head.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&head);
        let target = line
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let Some(query) = target.strip_prefix("/callback?") else {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let params: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
        if params.get("state").map(String::as_str) != Some(state) {
            respond(&mut stream, "This answer is not for the sign-in under way.").await;
            continue;
        }
        if let Some(code) = params.get("code") {
            respond(&mut stream, "Signed in. You can close this tab.").await;
            return Ok(code.clone());
        }
        let error = params.get("error").cloned().unwrap_or_default();
        let description = params.get("error_description").cloned().unwrap_or_default();
        respond(
            &mut stream,
            "The sign-in did not complete; see the terminal.",
        )
        .await;
        return Err(ClientError::Denied(format!("{error}: {description}")));
    }
}

async fn respond(stream: &mut tokio::net::TcpStream, text: &str) {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}

/// Forgets the sign-in of `profile`, revoking its refresh token first where the issuer
/// allows.
pub async fn logout(profile: &str) -> Result<(), ClientError> {
    let Some(session) = store::remove(profile)? else {
        println!("Not logged in (profile `{profile}`); nothing to remove");
        return Ok(());
    };
    match oauth::revoke(&http_client(), &session).await {
        Ok(true) => println!("Logged out (profile `{profile}`); the refresh token was revoked"),
        Ok(false) => println!("Logged out (profile `{profile}`)"),
        Err(e) => println!(
            "Logged out (profile `{profile}`); the stored sign-in is removed, but revoking it \
             at the identity provider failed: {e}"
        ),
    }
    Ok(())
}
