//! A local stand-in for Google STS (`POST /v1/token`) that checks requests the way Google
//! does, answers in Google's wire format (errors included), and records what it received.

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpRequest, HttpResponse};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const SUBJECT_TYPES: &[&str] = &[
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:saml2",
];

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct StsCall {
    /// Form fields in the order sent.
    pub form: Vec<(String, String)>,
    /// `Content-Type` header.
    pub content_type: Option<String>,
}

impl StsCall {
    /// The value of form field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A token the stand-in issued, and for whom.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// `sub` of the subject token it was exchanged for.
    pub subject: String,
    /// Audience (provider) it was issued for.
    pub audience: String,
}

/// A workforce provider that trusts sts-bridge alone: assertions must come from
/// `issuer`, name `client_id` as `aud`, and verify with one of the uploaded keys.
#[derive(Debug, Clone)]
pub struct BridgeTrust {
    /// The bridge's issuer URL (the provider's `--issuer-uri`).
    pub issuer: String,
    /// The provider's `--client-id`.
    pub client_id: String,
    /// The uploaded JWKS (`--jwk-json-path`).
    pub jwks: JwkSet,
}

/// A way the stand-in misbehaves on one call, as Google does under load or in an outage.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answers `status` with Google's JSON error `body`, and `Retry-After` when given.
    Status(u16, Value, Option<u64>),
    /// Answers normally, after the delay.
    Slow(Duration),
    /// Closes the connection without a complete answer.
    Drop,
}

/// Google's limit on `exp - iat`.
const MAX_LIFETIME_SECS: u64 = 48 * 3600;
/// Clock skew Google tolerates on `iat`.
const SKEW_SECS: u64 = 60;

#[derive(Default)]
struct State {
    bridges: Mutex<HashMap<String, BridgeTrust>>,
    calls: Mutex<Vec<StsCall>>,
    failures: Mutex<VecDeque<(u16, Value, Option<u64>)>>,
    delay: Mutex<Duration>,
    expires_in: Mutex<i64>,
    issued: Mutex<HashMap<String, IssuedToken>>,
    /// Calls being answered now, and the most ever at once.
    in_flight: Mutex<(usize, usize)>,
    /// Faults applied in turn, call after call (`None`: answer normally).
    chaos: Mutex<Vec<Option<Fault>>>,
}

/// A running Google STS stand-in.
#[derive(Clone)]
pub struct GoogleStandIn {
    state: Arc<State>,
    handle: ServerHandle,
    addr: SocketAddr,
}

impl GoogleStandIn {
    /// Starts the stand-in on `listener` (loopback only).
    pub fn start(listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        *state.expires_in.lock().expect("lock") = 3599;
        let handle = super::serve(listener, state.clone(), |app| {
            app.route("/v1/token", web::post().to(token));
        })?;
        Ok(Self {
            state,
            handle,
            addr,
        })
    }

    /// The token endpoint URL.
    pub fn token_url(&self) -> String {
        format!("http://{}/v1/token", self.addr)
    }

    /// Every request received so far.
    pub fn calls(&self) -> Vec<StsCall> {
        self.state.calls.lock().expect("lock").clone()
    }

    /// Number of requests received so far.
    pub fn call_count(&self) -> usize {
        self.state.calls.lock().expect("lock").len()
    }

    /// Who a token was issued for, if the stand-in issued it.
    pub fn issued(&self, access_token: &str) -> Option<IssuedToken> {
        self.state
            .issued
            .lock()
            .expect("lock")
            .get(access_token)
            .cloned()
    }

    /// Answers the next request with `status` and `body` instead of a token.
    pub fn fail_next(&self, status: u16, body: Value) {
        self.fail_next_with_retry_after(status, body, None);
    }

    /// Like [`Self::fail_next`], with a `Retry-After` of `secs` when given (as Google's
    /// 429 and 503 answers carry).
    pub fn fail_next_with_retry_after(&self, status: u16, body: Value, secs: Option<u64>) {
        self.state
            .failures
            .lock()
            .expect("lock")
            .push_back((status, body, secs));
    }

    /// Misbehaves in turn, call after call, as `faults` says (`None`: answer normally);
    /// an empty list ends it.
    pub fn set_chaos(&self, faults: Vec<Option<Fault>>) {
        *self.state.chaos.lock().expect("lock") = faults;
    }

    /// The most calls the stand-in was answering at one time.
    pub fn max_in_flight(&self) -> usize {
        self.state.in_flight.lock().expect("lock").1
    }

    /// Delays every answer (to make concurrent requests overlap).
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().expect("lock") = delay;
    }

    /// Lifetime of the tokens issued from now on.
    pub fn set_expires_in(&self, secs: i64) {
        *self.state.expires_in.lock().expect("lock") = secs;
    }

    /// Makes `provider` trust the bridge alone, as `create-oidc --issuer-uri --client-id
    /// --jwk-json-path` does; a raw Auth0 token sent to it is then refused.
    pub fn trust_bridge(&self, provider: &str, trust: BridgeTrust) {
        self.state
            .bridges
            .lock()
            .expect("lock")
            .insert(provider.to_owned(), trust);
    }

    /// Replaces the keys `provider` trusts (an `update-oidc --jwk-json-path` during rotation).
    pub fn upload_jwks(&self, provider: &str, jwks: JwkSet) {
        if let Some(trust) = self.state.bridges.lock().expect("lock").get_mut(provider) {
            trust.jwks = jwks;
        }
    }

    /// Stops the server.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn google_error(status: u16, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status")).json(
        json!({
            "error": error,
            "error_description": description,
        }),
    )
}

#[derive(Deserialize)]
struct SubjectClaims {
    sub: Option<String>,
    exp: Option<f64>,
}

/// Counts a call in flight while it lives.
struct InFlight<'a>(&'a Mutex<(usize, usize)>);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a Mutex<(usize, usize)>) -> Self {
        let mut c = counter.lock().expect("lock");
        c.0 += 1;
        c.1 = c.1.max(c.0);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("lock").0 -= 1;
    }
}

async fn token(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let _in_flight = InFlight::enter(&state.in_flight);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let call = StsCall {
        form,
        content_type: req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let number = {
        let mut calls = state.calls.lock().expect("lock");
        calls.push(call.clone());
        calls.len() - 1
    };
    let fault = {
        let chaos = state.chaos.lock().expect("lock");
        (!chaos.is_empty())
            .then(|| chaos[number % chaos.len()].clone())
            .flatten()
    };
    match fault {
        Some(Fault::Status(status, body, retry_after)) => {
            state
                .failures
                .lock()
                .expect("lock")
                .push_front((status, body, retry_after));
        }
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Drop) => return dropped_connection(),
        None => {}
    }
    let delay = *state.delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let failure = state.failures.lock().expect("lock").pop_front();
    if let Some((status, body, retry_after)) = failure {
        let mut response =
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"));
        if let Some(secs) = retry_after {
            response.insert_header(("Retry-After", secs.to_string()));
        }
        return response.json(body);
    }
    let bridge = call
        .field("audience")
        .and_then(|a| state.bridges.lock().expect("lock").get(a).cloned());
    match check(&call, bridge.as_ref()) {
        Ok((subject, audience)) => {
            let access_token = format!("ya29.standin.{}", uuid::Uuid::new_v4().simple());
            state
                .issued
                .lock()
                .expect("lock")
                .insert(access_token.clone(), IssuedToken { subject, audience });
            let expires_in = *state.expires_in.lock().expect("lock");
            HttpResponse::Ok().json(json!({
                "access_token": access_token,
                "issued_token_type": ACCESS_TOKEN,
                "token_type": "Bearer",
                "expires_in": expires_in,
            }))
        }
        Err((error, description)) => google_error(400, error, &description),
    }
}

/// A response whose body fails before its first byte: the server closes the connection
/// and the client sees it drop without an answer.
fn dropped_connection() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(FailingBody)
}

struct FailingBody;

impl actix_web::body::MessageBody for FailingBody {
    type Error = std::io::Error;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Stream
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<web::Bytes, Self::Error>>> {
        std::task::Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection dropped by the stand-in",
        ))))
    }
}

/// An RFC 6749 error code and Google's wording.
type Refusal = (&'static str, String);

/// Google's checks, in Google's words; returns the subject and audience on success. A
/// provider that trusts the bridge verifies the assertion; any other accepts a well-formed,
/// unexpired token from its issuer (signatures are the bridge's concern there).
fn check(call: &StsCall, bridge: Option<&BridgeTrust>) -> Result<(String, String), Refusal> {
    let bad = |error: &'static str, text: &'static str| (error, text.to_owned());
    if call.field("grant_type") != Some(GRANT_TYPE) {
        return Err(bad(
            "unsupported_grant_type",
            "Invalid value for \"grant_type\".",
        ));
    }
    if call.field("requested_token_type") != Some(ACCESS_TOKEN) {
        return Err(bad(
            "invalid_request",
            "Invalid value for \"requested_token_type\".",
        ));
    }
    let subject_type = call.field("subject_token_type").unwrap_or_default();
    if !SUBJECT_TYPES.contains(&subject_type) {
        return Err(bad(
            "invalid_request",
            "Invalid value for \"subject_token_type\".",
        ));
    }
    let audience = call.field("audience").unwrap_or_default();
    if crate::google::provider::parse_workforce_provider(audience).is_none() {
        return Err(bad(
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.",
        ));
    }
    if call.field("scope").unwrap_or_default().is_empty() {
        return Err(bad("invalid_scope", "Scope(s) must be provided."));
    }
    let project = call
        .field("options")
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .and_then(|o| {
            o.get("userProject")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    if project.is_none() {
        return Err(bad(
            "invalid_request",
            "The workforce pool user project must be provided in options.userProject.",
        ));
    }
    if let Some(trust) = bridge {
        let subject = verify_assertion(call.field("subject_token").unwrap_or_default(), trust)?;
        return Ok((subject, audience.to_owned()));
    }
    let claims: SubjectClaims = call
        .field("subject_token")
        .filter(|t| !t.contains(char::is_whitespace))
        .and_then(|t| jsonwebtoken::dangerous::insecure_decode_claims(t).ok())
        .ok_or_else(|| bad("invalid_grant", "The incoming token is malformed."))?;
    let now = jsonwebtoken::get_current_timestamp() as f64;
    if claims.exp.is_none_or(|exp| exp < now) {
        return Err(bad("invalid_grant", "The token has expired."));
    }
    let subject = claims
        .sub
        .ok_or_else(|| bad("invalid_grant", "The incoming token has no subject."))?;
    Ok((subject, audience.to_owned()))
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Value>,
    iat: Option<u64>,
    exp: Option<u64>,
}

/// What Google checks of an assertion from an issuer with uploaded keys, in Google's words.
fn verify_assertion(token: &str, trust: &BridgeTrust) -> Result<String, Refusal> {
    let bad = |text: String| ("invalid_grant", text);
    let malformed = || bad("The incoming token is malformed.".into());
    let header = jsonwebtoken::decode_header(token).map_err(|_| malformed())?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
        return Err(bad(format!(
            "The ID Token is signed with an unsupported algorithm {:?}; only RS256 and ES256 are supported.",
            header.alg
        )));
    }
    let claims: AssertionClaims =
        jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| malformed())?;
    let issuer = claims.iss.clone().unwrap_or_default();
    if issuer != trust.issuer {
        return Err(bad(format!(
            "The issuer in ID Token {issuer} does not match the expected issuer {}.",
            trust.issuer
        )));
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| trust.jwks.find(kid))
        .and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
        .ok_or_else(|| bad("Unable to verify the ID Token signature: no key in the provider's JWKS matches its kid.".into()))?;
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|_| bad("Unable to verify the ID Token signature.".into()))?;
    let audiences: Vec<&str> = match &claims.aud {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(v)) => v.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !audiences.contains(&trust.client_id.as_str()) {
        return Err(bad(format!(
            "The audience in ID Token [{}] does not match the expected audience {}.",
            audiences.join(", "),
            trust.client_id
        )));
    }
    let now = jsonwebtoken::get_current_timestamp();
    let (Some(iat), Some(exp)) = (claims.iat, claims.exp) else {
        return Err(bad(
            "The ID Token must contain the iat and exp claims.".into()
        ));
    };
    if iat > now + SKEW_SECS {
        return Err(bad(format!("ID Token issued at {iat} is in the future.")));
    }
    if exp <= now {
        return Err(bad("The token has expired.".into()));
    }
    if exp.saturating_sub(iat) > MAX_LIFETIME_SECS {
        return Err(bad(
            "The ID Token lifetime (exp - iat) must not exceed 48 hours.".into(),
        ));
    }
    claims
        .sub
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("The incoming token has no subject.".into()))
}
