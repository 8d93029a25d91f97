//! Admin API: issuance listing and revocations, for holders of the admin permission.

use super::body::{self, BodyRules};
use super::cursor::CursorKey;
use super::error::ApiError;
use super::AppState;
use crate::audit::{AdminAction, AuditError, IssuanceQuery, Revocation, ANY_ISSUER};
use crate::config::AdminSettings;
use crate::identity::{Identity, IdentityError};
use crate::telemetry::RequestId;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const REALM: &str = "sts-bridge-admin";
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;
/// Largest revocation body accepted.
const MAX_REVOCATION_BYTES: usize = 4 * 1024;

/// The administrator making the call, once the token and permission are checked.
async fn authorize(req: &HttpRequest, state: &AppState) -> Result<Identity, ApiError> {
    let permission = &state.admin.permission;
    let raw = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| {
            ApiError::bearer(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                format!(
                    "send an access token carrying the {permission} permission as a Bearer token"
                ),
                format!(r#"Bearer realm="{REALM}""#),
            )
        })?;
    let identity = match state.broker.validator().validate(raw).await {
        Ok(identity) => identity,
        Err(e @ IdentityError::KeysUnavailable(_)) => {
            return Err(ApiError::unavailable(e.to_string(), state.retry_after_secs))
        }
        Err(e) => {
            state.broker.metrics().token_rejected(e.reason());
            return Err(ApiError::bearer(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                e.to_string(),
                format!(r#"Bearer realm="{REALM}", error="invalid_token""#),
            ));
        }
    };
    if let Some(refusal) = pinned_refusal(&state.admin, &identity) {
        return Err(ApiError::bearer(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            refusal,
            format!(r#"Bearer realm="{REALM}", error="invalid_token""#),
        ));
    }
    // Only the RBAC permissions claim counts: a scope can be asked for by anyone when the
    // API does not restrict it.
    if !identity.permissions.contains(permission) {
        return Err(ApiError::bearer(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("the token lacks the {permission} permission"),
            format!(r#"Bearer realm="{REALM}", error="insufficient_scope", scope="{permission}""#),
        ));
    }
    if let Some(r) = state
        .broker
        .audit()
        .revocations
        .active_for(&identity.issuer, &identity.subject)
    {
        // RFC 6750 §3.1: the token of a revoked principal is an invalid token.
        return Err(ApiError::bearer(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            format!(
                "subject {} is revoked until {}",
                r.subject,
                r.until.format(&Rfc3339).unwrap_or_default()
            ),
            format!(r#"Bearer realm="{REALM}", error="invalid_token""#),
        ));
    }
    Ok(identity)
}

/// Why `identity` may not administer when `admin.issuer` or `admin.audiences` pin who may.
fn pinned_refusal(admin: &AdminSettings, identity: &Identity) -> Option<String> {
    if let Some(issuer) = admin.issuer.as_ref().filter(|i| **i != identity.issuer) {
        return Some(format!(
            "admin tokens must be issued by {issuer}, not {}",
            identity.issuer
        ));
    }
    let audience_ok = admin.audiences.is_empty()
        || identity
            .audiences
            .iter()
            .any(|a| admin.audiences.contains(a));
    (!audience_ok).then(|| {
        format!(
            "admin tokens must be issued for one of the audiences {}",
            admin.audiences.join(", ")
        )
    })
}

/// The trusted issuer a revocation names: the one given, or the only one trusted.
fn issuer_named(state: &AppState, given: Option<String>) -> Result<String, ApiError> {
    match (given, state.issuers.as_slice()) {
        (Some(issuer), trusted) if trusted.contains(&issuer) => Ok(issuer),
        (None, [only]) => Ok(only.clone()),
        (Some(_), trusted) => Err(ApiError::invalid_request(format!(
            "issuer must be one of the trusted issuers: {}",
            trusted.join(", ")
        ))),
        (None, trusted) => Err(ApiError::invalid_request(format!(
            "issuer is required, since several issuers are trusted: {}",
            trusted.join(", ")
        ))),
    }
}

fn store_error(e: AuditError, retry_after: u64) -> ApiError {
    match e {
        AuditError::InvalidQuery(text) => ApiError::invalid_request(text),
        other => ApiError::unavailable(
            format!("{other}; try again in {retry_after} s"),
            retry_after,
        ),
    }
}

async fn record(
    state: &AppState,
    req: &HttpRequest,
    admin: &Identity,
    action: &'static str,
    subject: Option<String>,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    state
        .broker
        .audit()
        .store
        .record_admin_action(&AdminAction {
            at: OffsetDateTime::now_utc(),
            request_id,
            actor: admin.subject.clone(),
            action,
            subject,
            detail: detail.to_string(),
        })
        .await
        .map_err(|e| store_error(e, state.retry_after_secs))
}

/// Records a listing call with its query string.
async fn record_listing(
    state: &AppState,
    req: &HttpRequest,
    admin: &Identity,
    action: &'static str,
    subject: Option<String>,
) -> Result<(), ApiError> {
    let detail = json!({ "query": req.query_string() });
    record(state, req, admin, action, subject, detail).await
}

fn parse_time(name: &str, value: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        ApiError::invalid_request(format!(
            "{name} must be an RFC 3339 time such as 2026-01-31T12:00:00Z"
        ))
    })
}

fn parse_query(query: &str, key: &CursorKey) -> Result<IssuanceQuery, ApiError> {
    let page = parse_page(query, &["subject", "target", "since", "until"])?;
    let mut q = IssuanceQuery {
        limit: page.limit,
        before_id: page
            .cursor
            .map(|c| decode_id(key, ISSUANCES, &c))
            .transpose()?,
        ..Default::default()
    };
    for (name, value) in page.filters {
        match name {
            "subject" => q.subject = Some(value),
            "target" => q.target = Some(value),
            "since" => q.since = Some(parse_time("since", &value)?),
            _ => q.until = Some(parse_time("until", &value)?),
        }
    }
    Ok(q)
}

fn parse_limit(value: &str) -> Result<i64, ApiError> {
    value
        .parse()
        .ok()
        .filter(|l| (1..=MAX_LIMIT).contains(l))
        .ok_or_else(|| {
            ApiError::invalid_request(format!("limit must be between 1 and {MAX_LIMIT}"))
        })
}

/// What a listing's query asks for.
struct Page<'a> {
    limit: i64,
    cursor: Option<String>,
    filters: Vec<(&'a str, String)>,
}

/// The query's parameters; one given twice is refused, as it would be ambiguous.
fn unique_params(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut params: Vec<(String, String)> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if params.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::invalid_request(format!(
                "parameter {} is given more than once",
                name.chars().take(64).collect::<String>()
            )));
        }
        params.push((name.into_owned(), value.into_owned()));
    }
    Ok(params)
}

/// `limit`, `cursor` and the filters a listing accepts; anything else is refused.
fn parse_page<'a>(query: &str, filters: &[&'a str]) -> Result<Page<'a>, ApiError> {
    let (mut limit, mut cursor, mut given) = (DEFAULT_LIMIT, None, Vec::new());
    for (name, value) in unique_params(query)? {
        match name.as_str() {
            "limit" => limit = parse_limit(&value)?,
            "cursor" => cursor = Some(value),
            other => match filters.iter().find(|f| **f == other) {
                Some(filter) => given.push((*filter, value)),
                None => {
                    let mut known = vec!["limit", "cursor"];
                    known.extend_from_slice(filters);
                    return Err(ApiError::invalid_request(format!(
                        "unknown parameter {}; use {}",
                        other.chars().take(64).collect::<String>(),
                        known.join(", ")
                    )));
                }
            },
        }
    }
    Ok(Page {
        limit,
        cursor,
        filters: given,
    })
}

/// A page's `next_cursor`: present only when the page is full.
fn next_cursor<T>(items: &[T], limit: i64, cursor: impl Fn(&T) -> String) -> Option<String> {
    (items.len() as i64 == limit)
        .then(|| items.last().map(cursor))
        .flatten()
}

const ISSUANCES: &str = "issuances";
const REVOCATIONS: &str = "revocations";
const ADMIN_ACTIONS: &str = "admin-actions";

/// The row id a signed cursor of `listing` continues before.
fn decode_id(key: &CursorKey, listing: &str, cursor: &str) -> Result<i64, ApiError> {
    key.open(listing, cursor)?
        .parse()
        .map_err(|_| ApiError::invalid_request("cursor is not one this server returned"))
}

/// `GET /admin/v1/issuances`: newest first, cursor-paginated.
pub async fn list_issuances(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let admin = authorize(&req, &state).await?;
    let query = parse_query(req.query_string(), &state.cursor_key)?;
    record_listing(
        &state,
        &req,
        &admin,
        "list_issuances",
        query.subject.clone(),
    )
    .await?;
    let items = state
        .broker
        .audit()
        .store
        .list_issuances(&query)
        .await
        .map_err(|e| store_error(e, state.retry_after_secs))?;
    let next_cursor = next_cursor(&items, query.limit, |i| {
        state.cursor_key.seal(ISSUANCES, &i.id.to_string())
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "items": items, "next_cursor": next_cursor })))
}

/// `GET /admin/v1/revocations`: the revocations in force, by issuer and subject, paged.
pub async fn list_revocations(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let admin = authorize(&req, &state).await?;
    let Page { limit, cursor, .. } = parse_page(req.query_string(), &[])?;
    let after = cursor
        .map(|c| decode_revocation_cursor(&state.cursor_key, &c))
        .transpose()?;
    record_listing(&state, &req, &admin, "list_revocations", None).await?;
    let items = state
        .broker
        .audit()
        .store
        .list_revocations(OffsetDateTime::now_utc(), after, limit)
        .await
        .map_err(|e| store_error(e, state.retry_after_secs))?;
    let next = next_cursor(&items, limit, |r| {
        state
            .cursor_key
            .seal(REVOCATIONS, &json!([r.issuer, r.subject]).to_string())
    });
    let items: Vec<_> = items
        .iter()
        .map(|r| {
            json!({
                "issuer": r.issuer,
                "subject": r.subject,
                "until": r.until.format(&Rfc3339).unwrap_or_default(),
                "reason": r.reason,
                "created_at": r.created_at.format(&Rfc3339).unwrap_or_default(),
                "created_by": r.created_by,
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "items": items, "next_cursor": next })))
}

/// The (issuer, subject) a revocation page continues after.
fn decode_revocation_cursor(key: &CursorKey, cursor: &str) -> Result<(String, String), ApiError> {
    serde_json::from_str(&key.open(REVOCATIONS, cursor)?)
        .map_err(|_| ApiError::invalid_request("cursor is not one this server returned"))
}

/// `GET /admin/v1/admin-actions`: what administrators did, newest first, paged.
pub async fn list_admin_actions(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let admin = authorize(&req, &state).await?;
    let Page {
        limit,
        cursor,
        filters,
    } = parse_page(req.query_string(), &["actor"])?;
    let before = cursor
        .map(|c| decode_id(&state.cursor_key, ADMIN_ACTIONS, &c))
        .transpose()?;
    let actor = filters
        .into_iter()
        .find(|(f, _)| *f == "actor")
        .map(|(_, v)| v);
    // Recorded before reading, so the listing shows its own call too.
    record_listing(&state, &req, &admin, "list_admin_actions", None).await?;
    let items = state
        .broker
        .audit()
        .store
        .list_admin_actions(actor.as_deref(), before, limit)
        .await
        .map_err(|e| store_error(e, state.retry_after_secs))?;
    let next = next_cursor(&items, limit, |a| {
        state.cursor_key.seal(ADMIN_ACTIONS, &a.id.to_string())
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "items": items, "next_cursor": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default, deserialize_with = "present_string")]
    issuer: Option<String>,
    subject: String,
    until: String,
    reason: String,
}

/// A field that may be left out but, when sent, must be a string (not `null`).
fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// `POST /admin/v1/revocations`: refuse a subject until a time and purge its credentials.
pub async fn revoke(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let admin = authorize(&req, &state).await?;
    // Only now is the body read: an unauthenticated caller learns nothing of the limits.
    if body::media_type(&req, "") != "application/json" {
        return Err(ApiError::invalid_request_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the revocation as application/json",
        ));
    }
    let rules = BodyRules {
        max_bytes: MAX_REVOCATION_BYTES,
        timeout: state.body_timeout,
    };
    let body = body::read(&req, payload, &rules).await?;
    let body: RevokeBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::invalid_request(
            r#"send JSON {"issuer": "...", "subject": "...", "until": "RFC 3339 time", "reason": "..."}"#,
        )
    })?;
    let until = parse_time("until", &body.until)?;
    let now = OffsetDateTime::now_utc();
    if until <= now || until > now + time::Duration::days(36_525) {
        return Err(ApiError::invalid_request(
            "until must be in the future and within a hundred years",
        ));
    }
    if body.subject.is_empty()
        || body.subject.len() > 255
        || body.reason.is_empty()
        || body.reason.len() > 500
    {
        return Err(ApiError::invalid_request(
            "subject must be 1-255 characters and reason 1-500",
        ));
    }
    let issuer = issuer_named(&state, body.issuer)?;
    let revocation = Revocation {
        issuer,
        subject: body.subject,
        until,
        reason: body.reason,
        created_at: now,
        created_by: admin.subject.clone(),
    };
    let audit = state.broker.audit();
    audit
        .store
        .upsert_revocation(&revocation)
        .await
        .map_err(|e| store_error(e, state.retry_after_secs))?;
    // In force as soon as it is stored, whatever happens to the action record.
    audit.revocations.insert(revocation.clone());
    state
        .broker
        .purge_subject(&revocation.issuer, &revocation.subject);
    state.broker.purge_shared_subject(&revocation.subject).await;
    record(
        &state,
        &req,
        &admin,
        "revoke",
        Some(revocation.subject.clone()),
        json!({ "issuer": revocation.issuer, "until": body.until, "reason": revocation.reason }),
    )
    .await?;
    Ok(HttpResponse::Created().json(json!({
        "issuer": revocation.issuer,
        "subject": revocation.subject,
        "until": body.until,
        "reason": revocation.reason,
        "created_by": revocation.created_by,
    })))
}

/// `DELETE /admin/v1/revocations/{subject}`: lift a revocation.
pub async fn lift(
    req: HttpRequest,
    subject: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let admin = authorize(&req, &state).await?;
    let subject = subject.into_inner();
    let issuer = match unique_params(req.query_string())?
        .into_iter()
        .find(|(name, _)| name == "issuer")
    {
        // Revocations made before they named an issuer hold for all and are lifted so.
        Some((_, value)) if value == ANY_ISSUER => ANY_ISSUER.to_owned(),
        Some((_, value)) => issuer_named(&state, Some(value))?,
        None => issuer_named(&state, None)?,
    };
    let audit = state.broker.audit();
    let existed = audit
        .store
        .delete_revocation(&issuer, &subject)
        .await
        .map_err(|e| store_error(e, state.retry_after_secs))?;
    if !existed {
        return Err(ApiError::with_status(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "subject {} is not revoked",
                subject.chars().take(255).collect::<String>()
            ),
        ));
    }
    audit.revocations.remove(&issuer, &subject);
    record(
        &state,
        &req,
        &admin,
        "lift_revocation",
        Some(subject.clone()),
        json!({ "issuer": issuer }),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
