//! The Google stand-in's IAM Credentials API (`generateAccessToken`, `signJwt`) and OAuth
//! token endpoint for service-account keys (the JWT-bearer grant), in Google's wire format,
//! errors included.

use super::google::{GoogleStandIn, IssuedToken, State};
use actix_web::{web, HttpRequest, HttpResponse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use time::macros::format_description;
use time::OffsetDateTime;

/// Longest `lifetime` generateAccessToken grants without the org policy that extends it.
const MAX_ACCESS_TOKEN_SECS: u64 = 3600;
/// Latest `exp` signJwt accepts, from now.
const MAX_SIGNED_JWT_SECS: i64 = 12 * 3600;
/// Google's OAuth endpoint refuses assertions valid for longer than this.
const MAX_ASSERTION_SECS: i64 = 3600;
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const IAM_SCOPE: &str = "https://www.googleapis.com/auth/iam";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// One call the IAM Credentials stand-in received.
#[derive(Debug, Clone)]
pub struct IamCall {
    /// `generateAccessToken` or `signJwt`.
    pub method: String,
    /// The service account in the path.
    pub service_account: String,
    /// The bearer token the call carried.
    pub bearer: Option<String>,
    /// The JSON body.
    pub body: Value,
}

/// A service account's signing key and who may act as it.
#[derive(Default)]
struct ServiceAccount {
    /// Members granted `roles/iam.serviceAccountTokenCreator` on it; `*` is anyone holding
    /// a token of the stand-in.
    token_creators: Vec<String>,
    key: Option<Arc<SaKey>>,
}

/// A service account's RSA key: Google's (for signJwt) or a downloaded key file's.
struct SaKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_pem: String,
    private_pem: String,
}

impl SaKey {
    fn generate() -> Self {
        let private =
            RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key generation");
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding")
            .to_string();
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public key PEM");
        Self {
            kid: uuid::Uuid::new_v4().simple().to_string(),
            encoding: EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("RSA key"),
            decoding: DecodingKey::from_rsa_pem(public_pem.as_bytes()).expect("RSA key"),
            public_pem,
            private_pem,
        }
    }
}

/// The IAM part of the stand-in's state.
#[derive(Default)]
pub(super) struct IamState {
    accounts: Mutex<HashMap<String, ServiceAccount>>,
    calls: Mutex<Vec<IamCall>>,
    failures: Mutex<VecDeque<(u16, Value)>>,
}

/// Google's error body for an HTTP status: `{"error":{"code","message","status"}}`.
pub fn google_error_body(code: u16, message: &str) -> Value {
    let status = match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    json!({ "error": { "code": code, "message": message, "status": status } })
}

fn google_error(code: u16, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("status"))
        .json(google_error_body(code, message))
}

impl GoogleStandIn {
    /// Creates `email` as a service account nobody may impersonate yet.
    pub fn add_service_account(&self, email: &str) {
        let mut accounts = self.state().iam.accounts.lock().expect("lock");
        accounts.entry(email.to_owned()).or_default();
    }

    /// Grants `member` (a subject, a service account email, or `*`) the Token Creator
    /// role on service account `email`, creating it when missing.
    pub fn grant_token_creator(&self, email: &str, member: &str) {
        let mut accounts = self.state().iam.accounts.lock().expect("lock");
        let account = accounts.entry(email.to_owned()).or_default();
        account.token_creators.push(member.to_owned());
    }

    /// Answers the next IAM Credentials call with `status` and `body`.
    pub fn fail_iam_next(&self, status: u16, body: Value) {
        self.state()
            .iam
            .failures
            .lock()
            .expect("lock")
            .push_back((status, body));
    }

    /// Every IAM Credentials call received so far.
    pub fn iam_calls(&self) -> Vec<IamCall> {
        self.state().iam.calls.lock().expect("lock").clone()
    }

    /// The public key (SPKI PEM) and key id `email` signs with, creating the account's key
    /// when it has none.
    pub fn signing_key(&self, email: &str) -> (String, String) {
        let key = key_of(&self.state().iam, email);
        (key.kid.clone(), key.public_pem.clone())
    }

    /// A downloaded key file of service account `email` (created when missing), whose
    /// `token_uri` is the stand-in's OAuth endpoint.
    pub fn service_account_key_file(&self, email: &str) -> Value {
        let key = key_of(&self.state().iam, email);
        json!({
            "type": "service_account",
            "project_id": email.split('@').nth(1).and_then(|d| d.split('.').next()).unwrap_or("dev"),
            "private_key_id": key.kid,
            "private_key": key.private_pem,
            "client_email": email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.oauth_token_url(),
        })
    }
}

fn key_of(iam: &IamState, email: &str) -> Arc<SaKey> {
    let mut accounts = iam.accounts.lock().expect("lock");
    let account = accounts.entry(email.to_owned()).or_default();
    account
        .key
        .get_or_insert_with(|| Arc::new(SaKey::generate()))
        .clone()
}

pub(super) fn routes(app: &mut web::ServiceConfig) {
    app.route(
        "/v1/projects/{project}/serviceAccounts/{name}",
        web::post().to(iam_call),
    )
    .route("/oauth2/token", web::post().to(oauth_token));
}

#[derive(Deserialize)]
struct GenerateAccessToken {
    #[serde(default)]
    scope: Vec<String>,
    lifetime: Option<String>,
    #[serde(default)]
    delegates: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct SignJwt {
    payload: Option<String>,
    #[serde(default)]
    delegates: Option<Vec<String>>,
}

async fn iam_call(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<State>,
) -> HttpResponse {
    let (project, name) = path.into_inner();
    let Some((email, method)) = name.rsplit_once(':') else {
        return google_error(404, "Method not found.");
    };
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.iam.calls.lock().expect("lock").push(IamCall {
        method: method.to_owned(),
        service_account: email.to_owned(),
        bearer: bearer.clone(),
        body: parsed.clone(),
    });
    if let Some((status, body)) = state.iam.failures.lock().expect("lock").pop_front() {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
            .json(body);
    }
    if project != "-" {
        return google_error(
            400,
            "The project in the resource name must be the wildcard character \"-\".",
        );
    }
    let Some(caller) = bearer
        .as_deref()
        .and_then(|t| state.issued.lock().expect("lock").get(t).cloned())
    else {
        return google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.");
    };
    // IAM Credentials takes only tokens that may call it.
    if !caller
        .scopes
        .iter()
        .any(|s| s == CLOUD_PLATFORM || s == IAM_SCOPE)
    {
        return HttpResponse::Forbidden().json(json!({ "error": {
            "code": 403,
            "message": "Request had insufficient authentication scopes.",
            "status": "PERMISSION_DENIED",
            "details": [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT" }],
        }}));
    }
    match method {
        "generateAccessToken" => match serde_json::from_value(parsed) {
            Ok(call) => generate_access_token(&state, &caller.subject, email, call),
            Err(e) => google_error(400, &format!("Invalid JSON payload received. {e}")),
        },
        "signJwt" => match serde_json::from_value(parsed) {
            Ok(call) => sign_jwt(&state, &caller.subject, email, call),
            Err(e) => google_error(400, &format!("Invalid JSON payload received. {e}")),
        },
        _ => google_error(404, "Method not found."),
    }
}

/// Google's permission check along the delegation chain: each link must be a Token
/// Creator on the next, ending at `email`.
fn check_chain(
    iam: &IamState,
    caller: &str,
    email: &str,
    delegates: &[String],
    permission: &str,
) -> Result<(), (u16, String)> {
    let accounts = iam.accounts.lock().expect("lock");
    let mut chain = Vec::with_capacity(delegates.len() + 1);
    for d in delegates {
        let Some(sa) = d.strip_prefix("projects/-/serviceAccounts/") else {
            return Err((
                400,
                format!("Invalid form of delegate: {d}. It must be projects/-/serviceAccounts/{{ACCOUNT_EMAIL_OR_UNIQUEID}}."),
            ));
        };
        chain.push(sa);
    }
    chain.push(email);
    let mut member = caller;
    for sa in chain {
        let Some(account) = accounts.get(sa) else {
            return Err((404, format!("Not found; Gaia id not found for email {sa}")));
        };
        if !account
            .token_creators
            .iter()
            .any(|m| m == "*" || m == member)
        {
            return Err((
                403,
                format!("Permission '{permission}' denied on resource (or it may not exist)."),
            ));
        }
        member = sa;
    }
    Ok(())
}

fn generate_access_token(
    state: &State,
    caller: &str,
    email: &str,
    call: GenerateAccessToken,
) -> HttpResponse {
    if call.scope.is_empty() {
        return google_error(400, "Scope required.");
    }
    let call_scopes = call.scope.clone();
    let lifetime = match call.lifetime.as_deref() {
        None => MAX_ACCESS_TOKEN_SECS,
        Some(l) => match l.strip_suffix('s').and_then(|n| n.parse::<u64>().ok()) {
            Some(secs) if (1..=MAX_ACCESS_TOKEN_SECS).contains(&secs) => secs,
            _ => return google_error(
                400,
                "The lifetime must be between 1s and 3600s, a number of seconds followed by 's'.",
            ),
        },
    };
    let delegates = call.delegates.unwrap_or_default();
    if let Err(refusal) = check_chain(
        &state.iam,
        caller,
        email,
        &delegates,
        "iam.serviceAccounts.getAccessToken",
    ) {
        return google_error(refusal.0, &refusal.1);
    }
    let access_token = format!("ya29.standin.sa.{}", uuid::Uuid::new_v4().simple());
    state.issued.lock().expect("lock").insert(
        access_token.clone(),
        IssuedToken {
            subject: email.to_owned(),
            audience: "iamcredentials".into(),
            impersonated_by: Some(caller.to_owned()),
            scopes: call_scopes,
        },
    );
    let expire = OffsetDateTime::now_utc() + time::Duration::seconds(lifetime as i64);
    let expire_time = expire
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .expect("formattable");
    HttpResponse::Ok().json(json!({ "accessToken": access_token, "expireTime": expire_time }))
}

fn sign_jwt(state: &State, caller: &str, email: &str, call: SignJwt) -> HttpResponse {
    let delegates = call.delegates.unwrap_or_default();
    if let Err(refusal) = check_chain(
        &state.iam,
        caller,
        email,
        &delegates,
        "iam.serviceAccounts.signJwt",
    ) {
        return google_error(refusal.0, &refusal.1);
    }
    let Some(claims) = call
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .filter(Value::is_object)
    else {
        return google_error(400, "Invalid JWT payload: it must be a JSON object.");
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    match claims.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp <= now + MAX_SIGNED_JWT_SECS => {}
        _ => {
            return google_error(
                400,
                "Invalid JWT payload: exp must be present and at most 12 hours in the future.",
            )
        }
    }
    let key = key_of(&state.iam, email);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    let signed = jsonwebtoken::encode(&header, &claims, &key.encoding).expect("signable");
    HttpResponse::Ok().json(json!({ "keyId": key.kid, "signedJwt": signed }))
}

/// The claims of an assertion signed by the key of the service account it names as `iss`.
/// Google's client libraries encode with or without base64 padding; both verify.
fn verify_key_assertion(iam: &IamState, assertion: &str) -> Option<AssertionClaims> {
    use base64::Engine;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let mut parts = assertion.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&engine.decode(header).ok()?).ok()?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return None;
    }
    let claims: AssertionClaims = serde_json::from_slice(&engine.decode(payload).ok()?).ok()?;
    let key = iam
        .accounts
        .lock()
        .expect("lock")
        .get(&claims.iss)?
        .key
        .clone()?;
    let message = &assertion[..assertion.rfind('.')?];
    jsonwebtoken::crypto::verify(
        signature.trim_end_matches('='),
        message.as_bytes(),
        &key.decoding,
        Algorithm::RS256,
    )
    .ok()
    .filter(|ok| *ok)?;
    Some(claims)
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    aud: String,
    scope: Option<String>,
    iat: i64,
    exp: i64,
}

/// Google's OAuth endpoint for service-account keys: the RFC 7523 JWT-bearer grant,
/// whose assertion must verify with the key the file holds.
async fn oauth_token(body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let oauth_error = |error: &str, description: &str| {
        HttpResponse::BadRequest().json(json!({ "error": error, "error_description": description }))
    };
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return oauth_error("unsupported_grant_type", "Invalid grant_type: ");
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let Some(claims) = verify_key_assertion(&state.iam, assertion) else {
        return oauth_error("invalid_grant", "Invalid JWT Signature.");
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if claims.exp - claims.iat > MAX_ASSERTION_SECS || claims.iat > now + 60 || claims.exp < now {
        return oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.");
    }
    let token_uri = format!(
        "http://{}/oauth2/token",
        state
            .addr
            .lock()
            .expect("lock")
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    if claims.aud != token_uri {
        return oauth_error("invalid_grant", "Invalid JWT: audience does not match.");
    }
    if claims.scope.as_deref().unwrap_or_default().is_empty() {
        return oauth_error(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    let access_token = format!("ya29.standin.adc.{}", uuid::Uuid::new_v4().simple());
    state.issued.lock().expect("lock").insert(
        access_token.clone(),
        IssuedToken {
            subject: claims.iss,
            audience: "oauth2".into(),
            impersonated_by: None,
            scopes: super::google::split_scopes(claims.scope.as_deref().unwrap_or_default()),
        },
    );
    HttpResponse::Ok().json(json!({
        "access_token": access_token,
        "expires_in": 3599,
        "token_type": "Bearer",
    }))
}
