//! `POST /v1/token`: Google STS's wire format (RFC 8693 token exchange).

use super::body::{self, BodyRules};
use super::error::ApiError;
use super::strict_json::{self, StrictJsonError};
use super::AppState;
use crate::broker::{BrokerError, ExchangeRequest, Issued, RequestContext};
use crate::config::{ClientSettings, PublicClientSettings, TargetKind};
use crate::rfc8693::{SUBJECT_TOKEN_TYPES, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT};
use crate::secret::{fingerprint, Token};
use crate::telemetry::{RequestId, ServerRequestId};
use actix_web::http::{header, StatusCode};
use actix_web::HttpMessage;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::Serialize;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest `options` value accepted.
const MAX_OPTIONS_BYTES: usize = 1024;

const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The request's fields, whichever encoding carried them.
#[derive(Default)]
struct Fields {
    grant_type: Option<String>,
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    audience: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
    requested_token_type: Option<String>,
    options: Option<String>,
    actor_token: Option<String>,
    actor_token_type: Option<String>,
    /// One bit per parameter already given (the bits `slot` assigns).
    seen: u16,
}

/// The snake_case name of a wire parameter (JSON may use Google's camelCase).
fn canonical(name: &str) -> Option<&'static str> {
    Some(match name {
        "grant_type" | "grantType" => "grant_type",
        "subject_token" | "subjectToken" => "subject_token",
        "subject_token_type" | "subjectTokenType" => "subject_token_type",
        "audience" => "audience",
        "resource" => "resource",
        "scope" => "scope",
        "requested_token_type" | "requestedTokenType" => "requested_token_type",
        "options" => "options",
        "actor_token" | "actorToken" => "actor_token",
        "actor_token_type" | "actorTokenType" => "actor_token_type",
        _ => return None,
    })
}

impl Fields {
    /// The field a canonical parameter name fills, and the bit that marks it given.
    fn slot(&mut self, name: &'static str) -> (u16, &mut Option<String>) {
        match name {
            "grant_type" => (1 << 0, &mut self.grant_type),
            "subject_token" => (1 << 1, &mut self.subject_token),
            "subject_token_type" => (1 << 2, &mut self.subject_token_type),
            "audience" => (1 << 3, &mut self.audience),
            "resource" => (1 << 4, &mut self.resource),
            "scope" => (1 << 5, &mut self.scope),
            "requested_token_type" => (1 << 6, &mut self.requested_token_type),
            "options" => (1 << 7, &mut self.options),
            "actor_token" => (1 << 8, &mut self.actor_token),
            _ => (1 << 9, &mut self.actor_token_type),
        }
    }

    /// Sets a field once; RFC 6749 §3.2 forbids repeating a parameter. Unknown parameters
    /// are ignored, as RFC 6749 asks.
    fn set(&mut self, name: &str, value: String) -> Result<(), ApiError> {
        let Some(name) = canonical(name) else {
            return Ok(());
        };
        let (bit, _) = self.slot(name);
        if self.seen & bit != 0 {
            return Err(ApiError::invalid_request(format!(
                "parameter {name} is given more than once"
            )));
        }
        self.seen |= bit;
        // A token file's trailing newline is harmless: a JWT never contains whitespace.
        let value = match value.trim_ascii() {
            trimmed if name == "subject_token" && trimmed.len() != value.len() => {
                trimmed.to_owned()
            }
            _ => value,
        };
        // Control characters have no place in any parameter, and must not reach the records.
        if has_control(&value) {
            return Err(ApiError::invalid_request(format!(
                "parameter {name} contains control characters"
            )));
        }
        // Clients drop empty fields; an empty one counts as absent.
        if !value.is_empty() {
            *self.slot(name).1 = Some(value);
        }
        Ok(())
    }
}

/// Whether `text` holds a control character (Unicode category Cc); a byte scan for the
/// ASCII that every real parameter is, a character scan otherwise.
fn has_control(text: &str) -> bool {
    if text.is_ascii() {
        text.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        text.chars().any(char::is_control)
    }
}

#[derive(Serialize)]
struct Success<'a> {
    access_token: &'a str,
    issued_token_type: &'static str,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

/// Handles `POST /v1/token`.
pub async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let mut target: Option<(Arc<str>, TargetKind)> = None;
    let bounded = tokio::time::timeout(
        state.request_timeout,
        exchange(&req, payload, &state, &mut target),
    );
    let metrics = state.broker.metrics();
    let result = match bounded.await {
        Ok(result) => result,
        Err(_) => {
            metrics.request_timeout();
            Err(timed_out(&state))
        }
    };
    let target = target
        .as_ref()
        .map_or(("unknown", "unknown"), |(name, kind)| (name, kind.as_str()));
    match result {
        Ok(issued) => {
            metrics.exchange(
                target,
                issued.source.as_str(),
                "issued",
                "",
                started.elapsed(),
            );
            log_issued(&issued, started);
            Ok(success(&issued))
        }
        Err(refusal) => {
            let code = refusal.error.code();
            metrics.exchange(target, "none", "refused", code, started.elapsed());
            log_refusal(&state, &refusal);
            Err(refusal.error)
        }
    }
}

/// Validation failures found before the signature was verified: anyone can send those.
const UNVERIFIED: &[&str] = &[
    "malformed",
    "header",
    "algorithm",
    "key",
    "issuer",
    "signature",
];

/// A refused exchange: what the caller is told, and what the log says.
pub(super) struct Refusal {
    pub(super) error: ApiError,
    reason: String,
    /// Refused before a token's signature was verified: anyone can cause as many as they like.
    malformed: bool,
    /// Refused by a rate limit: logged at a bounded rate too.
    rate_limited: bool,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self {
            malformed: true,
            ..Refusal::plain(error, false)
        }
    }
}

/// The answer to an exchange cut off by the request timeout. Its body may be unread, so
/// the connection is closed.
fn timed_out(state: &AppState) -> Refusal {
    let error = ApiError::unavailable(
        format!(
            "the exchange did not complete within {} ms; try again in {} s",
            state.request_timeout.as_millis(),
            state.retry_after_secs
        ),
        state.retry_after_secs,
    )
    .closing();
    Refusal::plain(error, false)
}

/// Takes one exchange of the client address's allowance.
pub(super) async fn check_address_limit(
    state: &AppState,
    client: Option<IpAddr>,
) -> Result<(), Refusal> {
    let (Some(limit), Some(ip)) = (&state.address_limit, client) else {
        return Ok(());
    };
    let Err(wait) = limit.check(super::client_addr::limit_key(ip)).await else {
        return Ok(());
    };
    state.broker.metrics().rate_limited("client_address");
    let secs = crate::ratelimit::retry_after_secs(wait);
    // The body is left unread, so the connection cannot carry another request.
    let error = ApiError::rate_limited(
        format!("too many exchanges from this address; try again in {secs} s"),
        secs,
    )
    .closing();
    Err(Refusal::plain(error, true))
}

impl Refusal {
    /// A refusal that is not a malformed request (those are logged at a bounded rate).
    fn plain(error: ApiError, rate_limited: bool) -> Self {
        Self {
            reason: error.to_string(),
            error,
            malformed: false,
            rate_limited,
        }
    }

    fn from_broker(e: &BrokerError, state: &AppState) -> Self {
        let malformed = matches!(
            e,
            BrokerError::Identity(i) | BrokerError::Actor(i) if UNVERIFIED.contains(&i.reason())
        );
        Self {
            error: ApiError::from_broker(e, state.retry_after_secs, state.verbose_errors),
            reason: e.to_string(),
            malformed,
            rate_limited: matches!(e, BrokerError::RateLimited { .. }),
        }
    }
}

/// Logs a refusal; those before a token's signature was verified are counted and logged at a
/// bounded rate. `reason` is recorded as a string so the text format quotes it: it holds
/// values the caller chose (`kid`, `iss`), which must not pass for other fields.
fn log_refusal(state: &AppState, refusal: &Refusal) {
    let code = refusal.error.code();
    if !refusal.malformed && !refusal.rate_limited {
        tracing::info!(
            outcome = "refused",
            error = code,
            reason = refusal.reason.as_str(),
            "exchange refused"
        );
        return;
    }
    let metrics = state.broker.metrics();
    let (kind, message) = if refusal.malformed {
        metrics.malformed_request(code);
        ("malformed_request", "malformed request refused")
    } else {
        ("rate_limited", "exchange refused by a rate limit")
    };
    match state.malformed_log.admit() {
        Some(suppressed) => tracing::info!(
            outcome = "refused",
            error = code,
            reason = refusal.reason.as_str(),
            suppressed,
            "{message}"
        ),
        None => metrics.log_line_suppressed(kind),
    }
}

async fn exchange(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    target: &mut Option<(Arc<str>, TargetKind)>,
) -> Result<Issued, Refusal> {
    let address = state.proxies.client(req.peer_addr(), req.headers());
    if let Some(ip) = address {
        tracing::Span::current().record("client_addr", tracing::field::display(ip));
    }
    check_address_limit(state, address).await?;
    let rules = BodyRules {
        max_bytes: MAX_BODY_BYTES,
        timeout: state.body_timeout,
    };
    let body = body::read(req, payload, &rules).await?;
    let fields = parse_fields(req, &body)?;
    let client = authenticate_client(req, &state.clients, &state.public_clients)?;
    // A public client proves nothing: the span names the client the record names.
    if let Some(id) = client.confidential() {
        tracing::Span::current().record("client", id);
    }
    if state.require_client_auth && client.confidential().is_none() {
        return Err(ApiError::invalid_client(
            "this server requires HTTP Basic authentication as a confidential client; add client_id and client_secret to the credential file",
        )
        .into());
    }
    let mut exchange = build_request(fields)?;
    *target = state.broker.target_name(&exchange.audience);
    exchange.context = request_context(req, address, &client);
    state
        .broker
        .exchange(exchange)
        .await
        .map_err(|e| Refusal::from_broker(&e, state))
}

fn success(issued: &Issued) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(Success {
            access_token: issued.access_token.expose(),
            issued_token_type: issued.issued_token_type,
            // RFC 8693 §2.2.1: a token that is not an access token has no token type.
            token_type: if issued.issued_token_type == TOKEN_TYPE_ACCESS_TOKEN {
                "Bearer"
            } else {
                "N_A"
            },
            expires_in: issued.expires_in,
            scope: issued.scope.as_deref(),
        })
}

fn log_issued(issued: &Issued, started: Instant) {
    tracing::info!(
        outcome = "issued",
        subject = %issued.identity.subject,
        client = issued.client_id.as_deref().unwrap_or("-"),
        target_name = %issued.target,
        kind = issued.kind.as_str(),
        service_account = issued.service_account.as_deref().unwrap_or("-"),
        source = issued.source.as_str(),
        expires_in = issued.expires_in,
        token_sha256 = %issued.access_token.fingerprint(),
        latency_ms = started.elapsed().as_millis() as u64,
        "exchange issued"
    );
}

fn parse_fields(req: &HttpRequest, body: &[u8]) -> Result<Fields, ApiError> {
    match body::media_type(req, "application/x-www-form-urlencoded").as_str() {
        "application/x-www-form-urlencoded" => parse_form(body),
        "application/json" => parse_json(body),
        _ => Err(ApiError::invalid_request_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as application/x-www-form-urlencoded or application/json",
        )),
    }
}

fn parse_form(body: &[u8]) -> Result<Fields, ApiError> {
    let mut fields = Fields::default();
    for (name, value) in url::form_urlencoded::parse(body) {
        fields.set(&name, value.into_owned())?;
    }
    Ok(fields)
}

fn parse_json(body: &[u8]) -> Result<Fields, ApiError> {
    let object = strict_json::object(body).map_err(|e| json_refusal(e, "the body"))?;
    let mut fields = Fields::default();
    for (name, value) in object {
        let text = match value {
            Value::String(s) => s,
            Value::Null => continue,
            // Google's JSON API also takes `options` as an object.
            Value::Object(_) if name == "options" => value.to_string(),
            _ => {
                if canonical(&name).is_none() {
                    continue;
                }
                return Err(ApiError::invalid_request(format!(
                    "parameter {name} must be a string"
                )));
            }
        };
        fields.set(&name, text)?;
    }
    Ok(fields)
}

/// A JSON body or `options` that is not an object with unique keys.
fn json_refusal(e: StrictJsonError, what: &str) -> ApiError {
    match e {
        StrictJsonError::Repeated(key) => {
            ApiError::invalid_request(format!("{what} gives the key {key} more than once"))
        }
        StrictJsonError::NotAnObject if what == "options" => ApiError::invalid_request(
            r#"options must be a JSON object such as {"userProject":"123"}"#,
        ),
        StrictJsonError::NotAnObject => {
            ApiError::invalid_request(format!("{what} is not a JSON object"))
        }
    }
}

fn build_request(f: Fields) -> Result<ExchangeRequest, ApiError> {
    match f.grant_type.as_deref() {
        None => return Err(ApiError::invalid_request("grant_type is required")),
        Some(GRANT_TYPE_TOKEN_EXCHANGE) => {}
        Some(other) => {
            return Err(ApiError::unsupported_grant_type(format!(
                "grant_type {} is not supported; use {GRANT_TYPE_TOKEN_EXCHANGE}",
                other.chars().take(100).collect::<String>()
            )))
        }
    }
    let subject_token = f
        .subject_token
        .ok_or_else(|| ApiError::invalid_request("subject_token is required"))?;
    match f.subject_token_type.as_deref() {
        None => return Err(ApiError::invalid_request("subject_token_type is required")),
        Some(t) if SUBJECT_TOKEN_TYPES.contains(&t) => {}
        Some(t) => {
            return Err(ApiError::invalid_request(format!(
                "subject_token_type {} is not supported; use one of {}",
                t.chars().take(100).collect::<String>(),
                SUBJECT_TOKEN_TYPES.join(", ")
            )))
        }
    }
    let wants_jwt = match f.requested_token_type.as_deref() {
        None => None,
        Some(TOKEN_TYPE_ACCESS_TOKEN) => Some(false),
        Some(TOKEN_TYPE_JWT) => Some(true),
        Some(_) => {
            return Err(ApiError::invalid_request(format!(
                "requested_token_type must be {TOKEN_TYPE_ACCESS_TOKEN} (or {TOKEN_TYPE_JWT} for a Firebase target)"
            )))
        }
    };
    let actor_token = match (f.actor_token, f.actor_token_type.as_deref()) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ApiError::invalid_request(
                "actor_token_type is required with actor_token",
            ))
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid_request(
                "actor_token_type was sent without actor_token",
            ))
        }
        (Some(token), Some(t)) if SUBJECT_TOKEN_TYPES.contains(&t) => Some(Token::new(token)),
        (Some(_), Some(t)) => {
            return Err(ApiError::invalid_request(format!(
                "actor_token_type {} is not supported; use one of {}",
                t.chars().take(100).collect::<String>(),
                SUBJECT_TOKEN_TYPES.join(", ")
            )))
        }
    };
    let audience = match (f.audience, f.resource) {
        (Some(a), Some(r)) if a != r => {
            return Err(ApiError::invalid_request(
                "audience and resource name different targets; send one of them",
            ))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            return Err(ApiError::invalid_request(
                "audience is required: a target name or the workforce provider resource",
            ))
        }
    };
    let user_project = match f.options {
        Some(raw) => decode_options(&raw)?,
        None => None,
    };
    Ok(ExchangeRequest {
        subject_token: Token::new(subject_token),
        audience,
        scopes: f
            .scope
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect(),
        user_project,
        actor_token,
        wants_jwt,
        context: RequestContext::default(),
    })
}

/// What the issuance record keeps about the HTTP request, each value bounded.
fn request_context(req: &HttpRequest, address: Option<IpAddr>, client: &Client) -> RequestContext {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect::<String>())
    };
    RequestContext {
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        server_request_id: req
            .extensions()
            .get::<ServerRequestId>()
            .map(|r| r.0.clone()),
        client_addr: address.map(|ip| ip.to_string()),
        user_agent: header("user-agent"),
        api_client: header("x-goog-api-client"),
        client_id: client.confidential().map(str::to_owned),
        claimed_client: match client {
            Client::Public(id) => Some(id.clone()),
            _ => None,
        },
    }
}

/// `options` is JSON, percent-encoded once (Go, Node) or twice (Python's google-auth)
/// before form encoding; this sees it after one decode. Returns `userProject`.
fn decode_options(raw: &str) -> Result<Option<String>, ApiError> {
    if raw.len() > MAX_OPTIONS_BYTES {
        return Err(ApiError::invalid_request(format!(
            "options is longer than {MAX_OPTIONS_BYTES} bytes"
        )));
    }
    let mut text = raw.trim().to_owned();
    for _ in 0..2 {
        if text.starts_with('{') {
            break;
        }
        text = percent_encoding::percent_decode_str(&text)
            .decode_utf8()
            .map_err(|_| ApiError::invalid_request("options is not UTF-8"))?
            .trim()
            .to_owned();
    }
    if !text.starts_with('{') && text.contains('%') {
        return Err(ApiError::invalid_request(
            "options is still percent-encoded after two decodes; encode it once or twice",
        ));
    }
    let object = strict_json::object(text.as_bytes()).map_err(|e| json_refusal(e, "options"))?;
    match object.get("userProject") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(p)) if is_project(p) => Ok(Some(p.clone())),
        Some(_) => Err(ApiError::invalid_request(
            "options.userProject must be a project number or id",
        )),
    }
}

/// A project number or id (`my-project`, `example.com:my-project`): nothing else, so a
/// value still percent-encoded is refused rather than passed on to Google.
fn is_project(p: &str) -> bool {
    (1..=64).contains(&p.len())
        && p.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':')
        })
}

/// Who a caller said it was with HTTP Basic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Client {
    /// No `Authorization` header.
    Anonymous,
    /// A configured client that proved its secret.
    Confidential(String),
    /// A public client: its id and published secret prove nothing.
    Public(String),
}

impl Client {
    /// The id the caller named, proven or not.
    pub(super) fn id(&self) -> Option<&str> {
        match self {
            Client::Anonymous => None,
            Client::Confidential(id) | Client::Public(id) => Some(id),
        }
    }

    /// The id of a client that proved its secret.
    pub(super) fn confidential(&self) -> Option<&str> {
        match self {
            Client::Confidential(id) => Some(id),
            _ => None,
        }
    }
}

/// Checks HTTP Basic client authentication when it is sent.
pub(super) fn authenticate_client(
    req: &HttpRequest,
    clients: &[ClientSettings],
    public: &[PublicClientSettings],
) -> Result<Client, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(Client::Anonymous);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_client("the Authorization header is not readable"))?;
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return Err(ApiError::invalid_client(
            "only HTTP Basic client authentication is accepted on this endpoint",
        ));
    };
    let (id, secret) = decode_basic(encoded.trim()).ok_or_else(|| {
        ApiError::invalid_client("the Basic credentials are not base64 of id:secret")
    })?;
    if let Some(p) = public.iter().find(|p| p.id == id) {
        // The secret is published, so it proves nothing; another one means the caller is
        // not the software that ships with it, or has a broken file.
        return if constant_time_eq(p.secret.as_bytes(), secret.as_bytes()) {
            Ok(Client::Public(id))
        } else {
            Err(ApiError::invalid_client(
                "wrong client secret for this public client id; use the secret its software ships with",
            ))
        };
    }
    if clients.is_empty() {
        return Err(ApiError::invalid_client(
            "client authentication is not configured on this server; remove client_id and client_secret from the credential file",
        ));
    }
    let presented = fingerprint(secret.as_bytes());
    let known = clients.iter().find(|c| {
        c.id == id
            && constant_time_eq(
                c.secret_sha256.to_ascii_lowercase().as_bytes(),
                presented.as_bytes(),
            )
    });
    match known {
        Some(c) => Ok(Client::Confidential(c.id.clone())),
        None => Err(ApiError::invalid_client(
            "unknown client id or wrong client secret",
        )),
    }
}

/// Standard base64 (google-auth) or URL-safe (Rust clients), with or without padding.
fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let bytes = GeneralPurpose::new(&alphabet::STANDARD, config)
        .decode(encoded)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, config).decode(encoded))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The request parsing any caller reaches, for the fuzz targets. Each returns whether the
/// input was accepted; a panic is the finding.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use super::*;

    /// A form body, through to the exchange request.
    pub fn form(body: &[u8]) -> bool {
        parse_form(body).and_then(build_request).is_ok()
    }

    /// A JSON body, through to the exchange request.
    pub fn json(body: &[u8]) -> bool {
        parse_json(body).and_then(build_request).is_ok()
    }

    /// An `options` value as it is after the form decoding.
    pub fn options(raw: &str) -> bool {
        decode_options(raw).is_ok()
    }

    /// An `Authorization` header value, checked against one configured client.
    pub fn authorization(value: &[u8]) -> bool {
        let Ok(value) = header::HeaderValue::from_bytes(value) else {
            return false;
        };
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::AUTHORIZATION, value))
            .to_http_request();
        let clients = [ClientSettings {
            id: "client".into(),
            // SHA-256 of "secret".
            secret_sha256: "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
                .into(),
            azp: Vec::new(),
            targets: Vec::new(),
        }];
        authenticate_client(&req, &clients, &[PublicClientSettings::cloud_sdk()]).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_is_refused_when_repeated_and_others_are_not() {
        const PARAMETERS: [&str; 10] = [
            "grant_type",
            "subject_token",
            "subject_token_type",
            "audience",
            "resource",
            "scope",
            "requested_token_type",
            "options",
            "actor_token",
            "actor_token_type",
        ];
        for name in PARAMETERS {
            let mut fields = Fields::default();
            fields.set(name, "a".into()).unwrap();
            for other in PARAMETERS.iter().filter(|p| **p != name) {
                fields.set(other, "b".into()).unwrap();
            }
            assert!(fields.set(name, "c".into()).is_err(), "{name}");
        }
        // camelCase spellings are the same parameter.
        let mut fields = Fields::default();
        fields.set("subject_token", "a".into()).unwrap();
        assert!(fields.set("subjectToken", "a".into()).is_err());
    }

    #[test]
    fn control_characters_are_found_in_ascii_and_unicode_text() {
        for bad in ["a\u{0}b", "a\tb", "a\u{7f}", "é\u{85}", "\u{9f}"] {
            assert!(has_control(bad), "{bad:?}");
        }
        for good in ["eyJhbGciOi.x-y_z", "é ü", "\u{a0}"] {
            assert!(!has_control(good), "{good:?}");
        }
    }

    #[test]
    fn options_are_decoded_from_plain_single_and_double_encoding() {
        for raw in [
            r#"{"userProject":"123"}"#,
            "%7B%22userProject%22%3A%22123%22%7D",
            "%7B%22userProject%22%3A%20%22123%22%7D",
        ] {
            assert_eq!(decode_options(raw).unwrap(), Some("123".into()), "{raw}");
        }
    }

    #[test]
    fn options_that_are_not_json_are_refused() {
        assert!(decode_options("userProject=123").is_err());
        // Three encodings: still encoded after the two decodes google-auth needs.
        assert!(
            decode_options("%25257B%252522userProject%252522%25253A%252522123%252522%25257D")
                .is_err()
        );
        assert!(decode_options(r#"{"userProject":"%31%32%33"}"#).is_err());
    }

    #[test]
    fn basic_credentials_decode_in_every_base64_flavour() {
        // google-auth: "my-client:s3cr%t:x"; the secret keeps its '%' and second ':'.
        assert_eq!(
            decode_basic("bXktY2xpZW50OnMzY3IldDp4"),
            Some(("my-client".into(), "s3cr%t:x".into()))
        );
        // "a:~~~" has '+' in standard base64 and '-' in URL-safe, padded or not.
        for encoded in ["YTp+fn4=", "YTp+fn4", "YTp-fn4", "YTp-fn4="] {
            assert_eq!(
                decode_basic(encoded),
                Some(("a".into(), "~~~".into())),
                "{encoded}"
            );
        }
    }

    mod properties {
        use super::*;
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        use proptest::collection::{btree_map, vec};
        use proptest::prelude::*;
        use serde_json::json;

        const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

        /// What a caller asks for, in the shapes the parsers must carry through unchanged.
        #[derive(Debug, Clone)]
        struct Asked {
            token: String,
            audience: String,
            scopes: Vec<String>,
            project: Option<String>,
            /// How many times `options` is percent-encoded before the form encoding.
            encodings: usize,
        }

        fn asked() -> impl Strategy<Value = Asked> {
            (
                "[A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{0,40}",
                "\\PC{1,60}",
                vec("[a-z0-9:/._-]{1,30}", 0..4),
                proptest::option::of("[a-z][a-z0-9.:-]{0,30}"),
                0..=2usize,
            )
                .prop_map(|(token, audience, scopes, project, encodings)| Asked {
                    token,
                    audience,
                    scopes,
                    project,
                    encodings,
                })
        }

        fn encoded_times(text: &str, times: usize) -> String {
            (0..times).fold(text.to_owned(), |t, _| {
                utf8_percent_encode(&t, NON_ALPHANUMERIC).to_string()
            })
        }

        fn options_json(project: &str) -> String {
            json!({ "userProject": project }).to_string()
        }

        fn assert_carried(asked: &Asked, got: &ExchangeRequest) {
            assert_eq!(got.subject_token.expose(), asked.token);
            assert_eq!(got.audience, asked.audience);
            assert_eq!(got.scopes, asked.scopes);
            assert_eq!(got.user_project, asked.project);
            assert!(got.actor_token.is_none());
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn any_form_body_is_answered_without_a_panic(body in vec(any::<u8>(), 0..600)) {
                let _ = parse_form(&body).and_then(build_request);
            }

            #[test]
            fn any_json_body_is_answered_without_a_panic(body in vec(any::<u8>(), 0..600)) {
                let _ = parse_json(&body).and_then(build_request);
            }

            #[test]
            fn any_json_object_is_answered_without_a_panic(
                object in btree_map("[a-zA-Z_]{1,20}", "\\PC{0,40}", 0..10),
                nested in any::<bool>(),
            ) {
                let mut value = serde_json::to_value(&object).unwrap();
                if nested {
                    value["options"] = serde_json::to_value(&object).unwrap();
                }
                let _ = parse_json(value.to_string().as_bytes()).and_then(build_request);
            }

            #[test]
            fn any_options_value_is_answered_without_a_panic(
                raw in prop_oneof!["\\PC{0,1100}", "(%[0-9a-fA-F]{2}|%25|[{}\":a-z0-9 ]){0,200}"]
            ) {
                let _ = decode_options(&raw);
            }

            #[test]
            fn any_basic_credentials_are_answered_without_a_panic(encoded in "\\PC{0,200}") {
                let _ = decode_basic(&encoded);
            }

            #[test]
            fn a_form_request_round_trips(asked in asked()) {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", GRANT_TYPE_TOKEN_EXCHANGE)
                    .append_pair("subject_token", &asked.token)
                    .append_pair("subject_token_type", JWT_TYPE)
                    .append_pair("audience", &asked.audience)
                    .append_pair("scope", &asked.scopes.join(" "));
                if let Some(p) = &asked.project {
                    form.append_pair("options", &encoded_times(&options_json(p), asked.encodings));
                }
                let body = form.finish();
                let got = parse_form(body.as_bytes()).and_then(build_request);
                assert_carried(&asked, &got.unwrap());
            }

            #[test]
            fn a_json_request_round_trips(asked in asked(), camel in any::<bool>(), object in any::<bool>()) {
                let name = |snake: &'static str, camel_case: &'static str| if camel { camel_case } else { snake };
                let mut body = serde_json::Map::new();
                body.insert(name("grant_type", "grantType").into(), json!(GRANT_TYPE_TOKEN_EXCHANGE));
                body.insert(name("subject_token", "subjectToken").into(), json!(asked.token));
                body.insert(name("subject_token_type", "subjectTokenType").into(), json!(JWT_TYPE));
                body.insert("audience".into(), json!(asked.audience));
                body.insert("scope".into(), json!(asked.scopes.join(" ")));
                if let Some(p) = &asked.project {
                    let options = if object {
                        json!({ "userProject": p })
                    } else {
                        json!(encoded_times(&options_json(p), asked.encodings))
                    };
                    body.insert("options".into(), options);
                }
                let text = serde_json::to_vec(&body).unwrap();
                let got = parse_json(&text).and_then(build_request);
                assert_carried(&asked, &got.unwrap());
            }

            #[test]
            fn options_encoded_three_times_are_refused(project in "[a-z][a-z0-9-]{0,30}") {
                prop_assert!(decode_options(&encoded_times(&options_json(&project), 3)).is_err());
            }

            #[test]
            fn basic_credentials_round_trip(id in "[^:\\p{Cc}]{0,40}", secret in "\\PC{0,60}", url_safe in any::<bool>(), padded in any::<bool>()) {
                let engine = match (url_safe, padded) {
                    (false, true) => base64::engine::general_purpose::STANDARD,
                    (false, false) => base64::engine::general_purpose::STANDARD_NO_PAD,
                    (true, true) => base64::engine::general_purpose::URL_SAFE,
                    (true, false) => base64::engine::general_purpose::URL_SAFE_NO_PAD,
                };
                let encoded = engine.encode(format!("{id}:{secret}"));
                prop_assert_eq!(decode_basic(&encoded), Some((id, secret)));
            }
        }
    }
}
