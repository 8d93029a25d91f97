//! A local stand-in for Google STS (`POST /v1/token`) that checks requests the way Google
//! does, answers in Google's wire format (errors included), and records what it received.

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpRequest, HttpResponse};
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

#[derive(Default)]
struct State {
    calls: Mutex<Vec<StsCall>>,
    failures: Mutex<VecDeque<(u16, Value)>>,
    delay: Mutex<Duration>,
    expires_in: Mutex<i64>,
    issued: Mutex<HashMap<String, IssuedToken>>,
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
        self.state
            .failures
            .lock()
            .expect("lock")
            .push_back((status, body));
    }

    /// Delays every answer (to make concurrent requests overlap).
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().expect("lock") = delay;
    }

    /// Lifetime of the tokens issued from now on.
    pub fn set_expires_in(&self, secs: i64) {
        *self.state.expires_in.lock().expect("lock") = secs;
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

async fn token(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let call = StsCall {
        form,
        content_type: req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    state.calls.lock().expect("lock").push(call.clone());
    let delay = *state.delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some((status, body)) = state.failures.lock().expect("lock").pop_front() {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
            .json(body);
    }
    match check(&call) {
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
        Err((error, description)) => google_error(400, error, description),
    }
}

/// An RFC 6749 error code and Google's wording.
type Refusal = (&'static str, &'static str);

/// Google's checks, in Google's words; returns the subject and audience on success.
fn check(call: &StsCall) -> Result<(String, String), Refusal> {
    let bad = |error: &'static str, text: &'static str| (error, text);
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
