//! `POST /v1/introspect`: RFC 7662 token introspection in Google STS's shape, for the
//! credentials this service handed out. gcloud calls it to name the account of an
//! `external_account` file.

use super::body::{self, BodyRules};
use super::error::ApiError;
use super::token::{authenticate_client, check_address_limit};
use super::AppState;
use crate::audit::StoredIssuance;
use crate::config::TargetKind;
use crate::secret::fingerprint;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use time::OffsetDateTime;

/// Largest request body accepted: a token and a hint.
const MAX_BODY_BYTES: usize = 8 * 1024;
/// Longest token looked up; Google's access tokens are far shorter.
const MAX_TOKEN_BYTES: usize = 4096;

/// What Google STS's introspection answers for an active token.
#[derive(Serialize)]
struct Active {
    active: bool,
    username: String,
    sub: String,
    exp: i64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
}

/// Handles `POST /v1/introspect`.
pub async fn introspect(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let address = state.proxies.client(req.peer_addr(), req.headers());
    check_address_limit(&state, address)
        .await
        .map_err(|refusal| refusal.error)?;
    let rules = BodyRules {
        max_bytes: MAX_BODY_BYTES,
        timeout: state.body_timeout,
    };
    let body = body::read(&req, payload, &rules).await?;
    if body::media_type(&req, "application/x-www-form-urlencoded")
        != "application/x-www-form-urlencoded"
    {
        return Err(ApiError::invalid_request_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as application/x-www-form-urlencoded (RFC 7662)",
        ));
    }
    let token = token_field(&body)?;
    let client = authenticate_client(&req, &state.clients, &state.public_clients)?;
    if state.require_client_auth && client.confidential().is_none() {
        return Err(ApiError::invalid_client(
            "this server requires HTTP Basic authentication as a confidential client",
        ));
    }
    let issued = match token {
        Some(token) => state
            .broker
            .audit()
            .store
            .issued_by_fingerprint(&fingerprint(token.as_bytes()))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "introspection could not read the issuance records");
                ApiError::unavailable(
                    "the issuance records cannot be read now; try again",
                    state.retry_after_secs,
                )
            })?,
        None => None,
    };
    let answer = issued.and_then(|record| active(&state, record));
    state.broker.metrics().introspection(answer.is_some());
    tracing::info!(
        active = answer.is_some(),
        client = client.id().unwrap_or("-"),
        "token introspected"
    );
    let response = HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(match answer {
            Some(active) => serde_json::to_value(active).unwrap_or_default(),
            None => serde_json::json!({ "active": false }),
        });
    Ok(response)
}

/// The `token` parameter (`token_type_hint` and unknown parameters are ignored, as RFC
/// 7662 allows); `None` for one too long to be any credential of ours.
fn token_field(body: &[u8]) -> Result<Option<String>, ApiError> {
    let mut token = None;
    for (name, value) in url::form_urlencoded::parse(body) {
        if name != "token" {
            continue;
        }
        if token.is_some() {
            return Err(ApiError::invalid_request(
                "parameter token is given more than once",
            ));
        }
        token = Some(value.into_owned());
    }
    match token {
        None => Err(ApiError::invalid_request("parameter token is missing")),
        Some(t) if t.is_empty() => Err(ApiError::invalid_request("parameter token is missing")),
        Some(t) if t.len() > MAX_TOKEN_BYTES => Ok(None),
        Some(t) => Ok(Some(t)),
    }
}

/// The answer for a record of a credential still valid, for a subject not revoked; `None`
/// otherwise. Firebase custom tokens are not OAuth access tokens and are never active: the
/// target's kind decides, since a cached custom token is recorded as `cache` like any other.
/// A target no longer configured answers inactive too.
fn active(state: &AppState, record: StoredIssuance) -> Option<Active> {
    let expires_at = record.expires_at?;
    if expires_at <= OffsetDateTime::now_utc() {
        return None;
    }
    match state.broker.target_name(&record.target) {
        Some((_, kind)) if kind != TargetKind::Firebase => {}
        _ => return None,
    }
    let revocations = &state.broker.audit().revocations;
    if revocations
        .active_for(&record.issuer, &record.subject)
        .is_some()
    {
        return None;
    }
    // The account the token acts as: the impersonated service account, else the person's
    // workforce principal.
    let username = record
        .service_account
        .clone()
        .or(record.google_principal.clone())
        .unwrap_or_else(|| record.subject.clone());
    Some(Active {
        active: true,
        username,
        sub: record.subject,
        exp: expires_at.unix_timestamp(),
        scope: record.scopes,
        client_id: record.claimed_client.or(record.client_id),
    })
}
