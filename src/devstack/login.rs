//! The dev issuer's interactive sign-in, shaped like Auth0's: the device authorization flow
//! (`/oauth/device/code`, polling `/oauth/token`), the authorization code flow with PKCE
//! (`/authorize` on a loopback redirect), refresh tokens that rotate, and revocation.
//! Nobody types a password here: a test (or `sts-bridge dev`) decides who signs in.

use super::issuer::{MintRequest, State, DEV_AUDIENCE};
use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Grant type of a device-flow poll (RFC 8628).
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Most sign-ins kept at once; the dev issuer is not a place to fill memory.
const MAX_PENDING: usize = 1024;

/// What the tests and `sts-bridge dev` can change about sign-in.
pub(super) struct LoginSettings {
    /// Lifetime of the access tokens issued by these flows.
    pub access_ttl_secs: u64,
    /// Lifetime of a device code.
    pub device_ttl_secs: u64,
    /// Polling interval asked of device-flow clients (Auth0 says 5).
    pub interval_secs: u64,
    /// Who signs in at once, with no one approving: device flow and `/authorize`.
    pub auto_approve: Option<MintRequest>,
    /// Polls still to be answered `slow_down` whatever their pace.
    pub forced_slow_downs: usize,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            access_ttl_secs: 3600,
            device_ttl_secs: 900,
            interval_secs: 1,
            auto_approve: None,
            forced_slow_downs: 0,
        }
    }
}

enum Decision {
    Pending,
    Approved(MintRequest),
    Denied,
}

struct Device {
    user_code: String,
    request: Requested,
    expires: Instant,
    last_poll: Option<Instant>,
    decision: Decision,
}

/// What the client asked for when the sign-in started.
#[derive(Clone)]
struct Requested {
    client_id: String,
    audience: String,
    scope: String,
}

struct Grant {
    request: Requested,
    person: MintRequest,
}

struct Code {
    request: Requested,
    person: MintRequest,
    redirect_uri: String,
    challenge: String,
    expires: Instant,
}

/// Sign-ins under way and the refresh tokens alive.
#[derive(Default)]
pub(super) struct LoginState {
    pub settings: Mutex<LoginSettings>,
    devices: Mutex<HashMap<String, Device>>,
    refresh_tokens: Mutex<HashMap<String, Grant>>,
    codes: Mutex<HashMap<String, Code>>,
    /// User codes in the order their sign-ins began.
    user_codes: Mutex<Vec<String>>,
}

impl LoginState {
    /// Approves (`Some(person)`) or denies (`None`) the sign-in showing `user_code`;
    /// false when no such sign-in is pending.
    pub fn decide(&self, user_code: &str, person: Option<MintRequest>) -> bool {
        let mut devices = self.devices.lock().expect("devices");
        let Some(device) = devices.values_mut().find(|d| d.user_code == user_code) else {
            return false;
        };
        device.decision = match person {
            Some(p) => Decision::Approved(p),
            None => Decision::Denied,
        };
        true
    }

    /// User codes of every device sign-in begun so far, oldest first.
    pub fn user_codes(&self) -> Vec<String> {
        self.user_codes.lock().expect("user codes").clone()
    }

    /// Whether `token` is a refresh token that would be accepted now.
    pub fn refresh_token_alive(&self, token: &str) -> bool {
        self.refresh_tokens
            .lock()
            .expect("refresh tokens")
            .contains_key(token)
    }
}

/// Registers the sign-in routes.
pub(super) fn routes(app: &mut web::ServiceConfig) {
    app.route("/oauth/device/code", web::post().to(device_code))
        .route("/oauth/token", web::post().to(token))
        .route("/oauth/revoke", web::post().to(revoke))
        .route("/authorize", web::get().to(authorize))
        .route("/activate", web::get().to(activate))
        .route("/dev/device/approve", web::post().to(approve_route))
        .route("/dev/device/deny", web::post().to(deny_route));
}

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Auth0's user codes: two groups of four letters without easily confused ones.
fn user_code() -> String {
    const LETTERS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        code.push(LETTERS[fastrand::usize(..LETTERS.len())] as char);
    }
    code
}

/// An Auth0-shaped error answer, before it becomes a response.
struct Refusal {
    status: u16,
    code: &'static str,
    description: &'static str,
}

fn refuse(status: u16, code: &'static str, description: &'static str) -> Refusal {
    Refusal {
        status,
        code,
        description,
    }
}

impl From<Refusal> for HttpResponse {
    fn from(r: Refusal) -> Self {
        error(r.status, r.code, r.description)
    }
}

/// An Auth0-shaped error answer.
fn error(status: u16, code: &str, description: &str) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status).expect("status");
    HttpResponse::build(status).json(json!({"error": code, "error_description": description}))
}

fn requested(form: &HashMap<String, String>) -> Result<Requested, Refusal> {
    let client_id = form
        .get("client_id")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| refuse(401, "unauthorized_client", "Unknown client."))?;
    Ok(Requested {
        client_id: client_id.clone(),
        audience: form
            .get("audience")
            .cloned()
            .unwrap_or_else(|| DEV_AUDIENCE.into()),
        scope: form.get("scope").cloned().unwrap_or_default(),
    })
}

async fn device_code(
    state: web::Data<State>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let request = match requested(&form) {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    let login = &state.login;
    let (ttl, interval, auto) = {
        let s = login.settings.lock().expect("settings");
        (s.device_ttl_secs, s.interval_secs, s.auto_approve.clone())
    };
    let mut devices = login.devices.lock().expect("devices");
    devices.retain(|_, d| d.expires > Instant::now());
    if devices.len() >= MAX_PENDING {
        return error(429, "too_many_requests", "Too many sign-ins under way.");
    }
    let device_code = random_secret();
    let user_code = user_code();
    devices.insert(
        device_code.clone(),
        Device {
            user_code: user_code.clone(),
            request,
            expires: Instant::now() + Duration::from_secs(ttl),
            last_poll: None,
            decision: auto.map_or(Decision::Pending, Decision::Approved),
        },
    );
    {
        // Kept for tests to approve by code; only the newest ones matter.
        let mut codes = login.user_codes.lock().expect("user codes");
        if codes.len() >= MAX_PENDING {
            codes.remove(0);
        }
        codes.push(user_code.clone());
    }
    let verification = format!("{}activate", state.url);
    HttpResponse::Ok().json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification,
        "verification_uri_complete": format!("{verification}?user_code={user_code}"),
        "expires_in": ttl,
        "interval": interval,
    }))
}

async fn token(state: web::Data<State>, form: web::Form<HashMap<String, String>>) -> HttpResponse {
    let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
    let granted = match grant_type {
        DEVICE_GRANT => poll_device(&state, &form),
        "refresh_token" => use_refresh_token(&state, &form),
        "authorization_code" => redeem_code(&state, &form),
        _ => Err(refuse(
            403,
            "unsupported_grant_type",
            "Grant type not allowed for the client.",
        )),
    };
    match granted {
        Ok(grant) => issue(&state, grant),
        Err(refusal) => refusal.into(),
    }
}

fn poll_device(state: &State, form: &HashMap<String, String>) -> Result<Grant, Refusal> {
    let code = form.get("device_code").map(String::as_str).unwrap_or("");
    let login = &state.login;
    let forced_slow_down = {
        let mut s = login.settings.lock().expect("settings");
        let forced = s.forced_slow_downs > 0;
        s.forced_slow_downs = s.forced_slow_downs.saturating_sub(1);
        (forced, s.interval_secs)
    };
    let mut devices = login.devices.lock().expect("devices");
    let Some(device) = devices.get_mut(code) else {
        return Err(refuse(
            403,
            "invalid_grant",
            "Invalid or expired device code.",
        ));
    };
    if device.expires <= Instant::now() {
        devices.remove(code);
        return Err(refuse(403, "expired_token", "The device code has expired."));
    }
    let now = Instant::now();
    let too_soon = device
        .last_poll
        .is_some_and(|last| now.duration_since(last) < Duration::from_secs(forced_slow_down.1));
    device.last_poll = Some(now);
    if forced_slow_down.0 || too_soon {
        return Err(refuse(
            429,
            "slow_down",
            "You are polling faster than allowed. Try again later.",
        ));
    }
    match &device.decision {
        Decision::Pending => Err(refuse(
            403,
            "authorization_pending",
            "User has yet to authorize device code.",
        )),
        Decision::Denied => {
            devices.remove(code);
            Err(refuse(
                403,
                "access_denied",
                "User has canceled the interaction",
            ))
        }
        Decision::Approved(person) => {
            let grant = Grant {
                request: device.request.clone(),
                person: person.clone(),
            };
            devices.remove(code);
            Ok(grant)
        }
    }
}

fn use_refresh_token(state: &State, form: &HashMap<String, String>) -> Result<Grant, Refusal> {
    let token = form.get("refresh_token").map(String::as_str).unwrap_or("");
    // Rotation: a refresh token works once; the answer carries its successor.
    let grant = state
        .login
        .refresh_tokens
        .lock()
        .expect("refresh tokens")
        .remove(token)
        .ok_or_else(|| refuse(403, "invalid_grant", "Unknown or invalid refresh token."))?;
    if form.get("client_id") != Some(&grant.request.client_id) {
        return Err(refuse(
            403,
            "invalid_grant",
            "Unknown or invalid refresh token.",
        ));
    }
    Ok(grant)
}

fn redeem_code(state: &State, form: &HashMap<String, String>) -> Result<Grant, Refusal> {
    let code = form.get("code").map(String::as_str).unwrap_or("");
    let redeemed = state.login.codes.lock().expect("codes").remove(code);
    let Some(redeemed) = redeemed.filter(|c| c.expires > Instant::now()) else {
        return Err(refuse(403, "invalid_grant", "Invalid authorization code"));
    };
    if form.get("redirect_uri") != Some(&redeemed.redirect_uri)
        || form.get("client_id") != Some(&redeemed.request.client_id)
    {
        return Err(refuse(
            403,
            "invalid_grant",
            "Redirect URI or client does not match the authorization request.",
        ));
    }
    let verifier = form.get("code_verifier").map(String::as_str).unwrap_or("");
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != redeemed.challenge {
        return Err(refuse(
            403,
            "invalid_grant",
            "Failed to verify code verifier",
        ));
    }
    Ok(Grant {
        request: redeemed.request,
        person: redeemed.person,
    })
}

/// Mints the access token of `grant`, and a fresh refresh token when `offline_access` was
/// asked for, as Auth0 does.
fn issue(state: &State, grant: Grant) -> HttpResponse {
    let ttl = state
        .login
        .settings
        .lock()
        .expect("settings")
        .access_ttl_secs;
    let mut person = grant.person.clone();
    person.ttl_secs = Some(ttl);
    person
        .extra
        .insert("azp".into(), grant.request.client_id.clone().into());
    person.extra.insert(
        "aud".into(),
        json!([grant.request.audience, format!("{}userinfo", state.url)]),
    );
    let access_token = state.sign(&state.current_kid(), &state.claims(&person));
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": grant.request.scope,
    });
    if grant
        .request
        .scope
        .split(' ')
        .any(|s| s == "offline_access")
    {
        let refresh = random_secret();
        body["refresh_token"] = refresh.clone().into();
        let mut tokens = state.login.refresh_tokens.lock().expect("refresh tokens");
        if tokens.len() < MAX_PENDING {
            tokens.insert(refresh, grant);
        }
    }
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}

async fn revoke(state: web::Data<State>, form: web::Form<HashMap<String, String>>) -> HttpResponse {
    if let Some(token) = form.get("token") {
        state
            .login
            .refresh_tokens
            .lock()
            .expect("refresh tokens")
            .remove(token);
    }
    HttpResponse::Ok().finish()
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    scope: Option<String>,
    audience: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// Signs in the auto-approved person at once and sends the browser back with a code; in
/// the dev stack there is no one to ask.
async fn authorize(state: web::Data<State>, q: web::Query<AuthorizeQuery>) -> HttpResponse {
    let Ok(mut redirect) = url::Url::parse(&q.redirect_uri) else {
        return error(400, "invalid_request", "redirect_uri is not a URL");
    };
    if redirect.scheme() != "http" || !crate::config::is_loopback_host(&redirect) {
        return error(
            400,
            "invalid_request",
            "the dev issuer redirects only to loopback addresses",
        );
    }
    let (challenge, method) = (
        q.code_challenge.as_deref(),
        q.code_challenge_method.as_deref(),
    );
    let challenge = match (challenge, method) {
        _ if q.response_type != "code" => {
            return error(
                400,
                "unsupported_response_type",
                "response_type must be code",
            )
        }
        (Some(c), Some("S256")) if !c.is_empty() && c.len() <= 128 => c.to_owned(),
        _ => {
            return error(
                400,
                "invalid_request",
                "code_challenge with code_challenge_method=S256 is required",
            )
        }
    };
    let person = state
        .login
        .settings
        .lock()
        .expect("settings")
        .auto_approve
        .clone();
    {
        let mut pairs = redirect.query_pairs_mut();
        match person {
            Some(person) => {
                let code = random_secret();
                let mut codes = state.login.codes.lock().expect("codes");
                codes.retain(|_, c| c.expires > Instant::now());
                if codes.len() >= MAX_PENDING {
                    return error(429, "too_many_requests", "Too many sign-ins under way.");
                }
                codes.insert(
                    code.clone(),
                    Code {
                        request: Requested {
                            client_id: q.client_id.clone(),
                            audience: q.audience.clone().unwrap_or_else(|| DEV_AUDIENCE.into()),
                            scope: q.scope.clone().unwrap_or_default(),
                        },
                        person,
                        redirect_uri: q.redirect_uri.clone(),
                        challenge,
                        expires: Instant::now() + Duration::from_secs(60),
                    },
                );
                pairs.append_pair("code", &code);
            }
            None => {
                pairs
                    .append_pair("error", "access_denied")
                    .append_pair("error_description", "nobody is signed in to the dev issuer");
            }
        }
        if let Some(s) = &q.state {
            pairs.append_pair("state", s);
        }
    }
    HttpResponse::Found()
        .insert_header(("Location", redirect.as_str()))
        .finish()
}

async fn activate() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(
            "The dev issuer has no sign-in page: approve a code with\n\
         curl -X POST -H 'content-type: application/json' \
         -d '{\"user_code\":\"ABCD-EFGH\",\"sub\":\"auth0|alice\"}' <issuer>dev/device/approve\n",
        )
}

#[derive(Deserialize)]
struct Approval {
    user_code: String,
    #[serde(flatten)]
    person: MintRequest,
}

async fn approve_route(state: web::Data<State>, body: web::Json<Approval>) -> HttpResponse {
    let Approval { user_code, person } = body.into_inner();
    if person.sub.is_empty() {
        return error(400, "invalid_request", "sub is required");
    }
    decided(state.login.decide(&user_code, Some(person)))
}

#[derive(Deserialize)]
struct Denial {
    user_code: String,
}

async fn deny_route(state: web::Data<State>, body: web::Json<Denial>) -> HttpResponse {
    decided(state.login.decide(&body.user_code, None))
}

fn decided(found: bool) -> HttpResponse {
    if found {
        HttpResponse::NoContent().finish()
    } else {
        error(
            404,
            "invalid_request",
            "no sign-in is waiting for that user code",
        )
    }
}
