//! `sts-bridge auth0-token`: the person's access token, renewed when less than a minute is
//! left, printed in the answer format of Google's executable-sourced credentials.

use super::store::{self, Session};
use super::{http_client, now_secs, oauth, ClientError};
use serde_json::{json, Value};

/// Token type the executable-sourced format gives for a JWT.
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Renew when less than this is left: google-auth must still be able to exchange it.
pub const MIN_LEFT_SECS: i64 = 60;

/// The stored sign-in of `profile` with an access token valid `min_left` seconds more,
/// renewed (and the renewal stored) when needed.
pub async fn fresh_session(profile: &str, min_left: i64) -> Result<Session, ClientError> {
    let session = store::load(profile)?.ok_or_else(|| ClientError::NotLoggedIn {
        profile: profile.into(),
    })?;
    if session.expires_at - now_secs() >= min_left {
        return Ok(session);
    }
    let _lock = store::lock_renewal(profile).await?;
    // Another process may have renewed it while this one waited for the lock.
    let session = store::load(profile)?.ok_or_else(|| ClientError::NotLoggedIn {
        profile: profile.into(),
    })?;
    if session.expires_at - now_secs() >= min_left {
        return Ok(session);
    }
    if session.refresh_token.is_none() {
        return Err(ClientError::LoginExpired {
            profile: profile.into(),
        });
    }
    let renewed = oauth::refresh(&http_client(), &session).await?;
    // Rotation made the old refresh token useless: the new one must be kept.
    store::save(profile, &renewed)?;
    Ok(renewed)
}

/// The executable-sourced answer for `result`.
pub fn executable_answer(result: &Result<Session, ClientError>) -> Value {
    match result {
        Ok(session) => json!({
            "version": 1,
            "success": true,
            "token_type": JWT,
            "id_token": session.access_token.expose(),
            "expiration_time": session.expires_at,
        }),
        Err(e) => json!({
            "version": 1,
            "success": false,
            "code": e.code(),
            "message": e.to_string(),
        }),
    }
}
