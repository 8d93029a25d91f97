//! A local, Auth0-shaped issuer: discovery, JWKS with rotation, and token minting.

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpRequest, HttpResponse};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// API identifier (`aud`) of tokens minted for sts-bridge.
pub const DEV_AUDIENCE: &str = "https://sts-bridge.dev/api";
/// `azp` of every token the dev issuer mints unless `extra` overrides it.
pub const DEV_CLIENT: &str = "dev-client";
/// Namespaced claim the dev issuer puts groups in, as Auth0 Actions do.
pub const DEV_GROUPS_CLAIM: &str = "https://sts-bridge.dev/groups";
/// Namespaced claim the dev issuer puts roles in.
pub const DEV_ROLES_CLAIM: &str = "https://sts-bridge.dev/roles";

/// One signing key and its public forms.
struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
    public_pem: String,
    published: bool,
}

impl SigningKey {
    /// A P-256 key for ES256.
    fn generate_ec(kid: String, published: bool) -> Self {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let private = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
        let pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding");
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).expect("EC key");
        let public_pem = private
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public key PEM");
        Self::new(kid, Algorithm::ES256, encoding, public_pem, published)
    }

    /// A 2048-bit RSA key for RS256.
    fn generate(kid: String, published: bool) -> Self {
        let private =
            RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key generation");
        let pem = private
            .to_pkcs1_pem(LineEnding::LF)
            .expect("PKCS#1 encoding");
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA key");
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public key PEM");
        Self::new(kid, Algorithm::RS256, encoding, public_pem, published)
    }

    /// The key with its JWK (named `kid`) derived from the private key.
    fn new(
        kid: String,
        algorithm: Algorithm,
        encoding: EncodingKey,
        public_pem: String,
        published: bool,
    ) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).expect("JWK");
        jwk.common.key_id = Some(kid.clone());
        Self {
            kid,
            algorithm,
            encoding,
            jwk,
            public_pem,
            published,
        }
    }
}

/// What a minted token says; unset fields get Auth0-like defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MintRequest {
    /// `sub`, e.g. `auth0|alice`.
    pub sub: String,
    /// RBAC permissions.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Groups, in the namespaced groups claim.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Roles, in the namespaced roles claim.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: Option<String>,
    /// Lifetime in seconds (default 3600).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Further claims, set last so they may replace any of the above (`azp`, `gty`, ...).
    #[serde(default)]
    pub extra: serde_json::Map<String, Value>,
}

pub(super) struct State {
    pub(super) url: String,
    /// Interactive sign-in: device flow, PKCE, refresh tokens.
    pub(super) login: super::login::LoginState,
    keys: Mutex<Vec<SigningKey>>,
    jwks_requests: AtomicUsize,
    discovery_requests: AtomicUsize,
    /// `Host` and path of each key-set request, in order.
    jwks_hosts: Mutex<Vec<String>>,
    /// Status every key-set request is answered with instead of the keys.
    jwks_failure: Mutex<Option<u16>>,
    /// Keys published as given, after the generated ones.
    raw_jwks: Mutex<Vec<Value>>,
    /// `jwks_uri` the discovery document names instead of the default.
    jwks_uri: Mutex<Option<String>>,
}

/// A running dev issuer. Dropping the handle does not stop it; call [`DevIssuer::stop`].
#[derive(Clone)]
pub struct DevIssuer {
    state: Arc<State>,
    handle: ServerHandle,
    addr: SocketAddr,
}

impl DevIssuer {
    /// Starts the issuer on `listener` (loopback only) with one published key.
    pub fn start(listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            url: format!("http://{addr}/"),
            keys: Mutex::new(vec![SigningKey::generate("dev-key-1".into(), true)]),
            jwks_requests: AtomicUsize::new(0),
            discovery_requests: AtomicUsize::new(0),
            jwks_hosts: Mutex::new(Vec::new()),
            jwks_failure: Mutex::new(None),
            raw_jwks: Mutex::new(Vec::new()),
            jwks_uri: Mutex::new(None),
            login: Default::default(),
        });
        let handle = super::serve(listener, state.clone(), |app| {
            app.route(
                "/.well-known/openid-configuration",
                web::get().to(discovery),
            )
            .route("/.well-known/jwks.json", web::get().to(jwks))
            .route("/keys/jwks.json", web::get().to(jwks))
            .route("/dev/token", web::post().to(mint_route))
            .configure(super::login::routes);
        })?;
        Ok(Self {
            state,
            handle,
            addr,
        })
    }

    /// The issuer identifier, with Auth0's trailing slash.
    pub fn issuer(&self) -> String {
        self.state.url.clone()
    }

    /// Socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_requests(&self) -> usize {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// How many times the discovery document was fetched.
    pub fn discovery_requests(&self) -> usize {
        self.state.discovery_requests.load(Ordering::SeqCst)
    }

    /// `Host` header and path of every key-set request so far (`127.0.0.1:PORT/keys/…`).
    pub fn jwks_request_hosts(&self) -> Vec<String> {
        self.state.jwks_hosts.lock().expect("hosts").clone()
    }

    /// Answers every key-set request with `status` (and an Auth0-like error body) from
    /// now on; `None` serves the keys again.
    pub fn fail_jwks(&self, status: Option<u16>) {
        *self.state.jwks_failure.lock().expect("failure") = status;
    }

    /// Publishes `jwk` as given, beside the generated keys (a weak, odd or hostile key).
    pub fn publish_raw_jwk(&self, jwk: Value) {
        self.state.raw_jwks.lock().expect("raw keys").push(jwk);
    }

    /// The JWK of key `kid`, as the key set would publish it.
    pub fn jwk_of(&self, kid: &str) -> Value {
        let keys = self.state.keys.lock().expect("keys");
        let key = keys.iter().find(|k| k.kid == kid).expect("known kid");
        serde_json::to_value(&key.jwk).expect("JWK as JSON")
    }

    /// Makes the discovery document name `uri` as `jwks_uri` (the issuer moved its keys);
    /// `/keys/jwks.json` on this issuer serves the same set as the default path.
    pub fn set_jwks_uri(&self, uri: Option<String>) {
        *self.state.jwks_uri.lock().expect("jwks_uri") = uri;
    }

    /// Mints an access token signed with the newest published key.
    pub fn mint(&self, req: &MintRequest) -> String {
        self.sign(&self.current_kid(), &self.claims(req))
    }

    /// Auth0-shaped claims for `req`, valid from now.
    pub fn claims(&self, req: &MintRequest) -> Value {
        self.state.claims(req)
    }

    /// Signs `claims` with key `kid` (RS256 or ES256, as the key is), published or not.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        self.state.sign(kid, claims)
    }

    /// Signs with the key named by `header.kid`, using `header` as is.
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        self.state.sign_with_header(header, claims)
    }

    /// The kid of the newest published key.
    pub fn current_kid(&self) -> String {
        self.state.current_kid()
    }

    /// PEM of the current public key (what an HMAC key-confusion attack would use).
    pub fn public_key_pem(&self) -> String {
        let keys = self.state.keys.lock().expect("keys");
        let kid = self.state.current_kid_locked(&keys);
        keys.iter()
            .find(|k| k.kid == kid)
            .expect("key")
            .public_pem
            .clone()
    }

    /// Generates a new key, published in the JWKS now or later; returns its kid.
    pub fn add_key(&self, publish: bool) -> String {
        self.add(SigningKey::generate, publish)
    }

    /// Generates a P-256 (ES256) key, published in the JWKS now or later; returns its kid.
    pub fn add_ec_key(&self, publish: bool) -> String {
        self.add(SigningKey::generate_ec, publish)
    }

    fn add(&self, generate: fn(String, bool) -> SigningKey, publish: bool) -> String {
        let mut keys = self.state.keys.lock().expect("keys");
        let kid = format!("dev-key-{}", keys.len() + 1);
        keys.push(generate(kid.clone(), publish));
        kid
    }

    /// Publishes a key added earlier.
    pub fn publish(&self, kid: &str) {
        self.set_published(kid, true);
    }

    /// Takes a key out of the JWKS (as an issuer does with a leaked key).
    pub fn withdraw(&self, kid: &str) {
        self.set_published(kid, false);
    }

    fn set_published(&self, kid: &str, published: bool) {
        let mut keys = self.state.keys.lock().expect("keys");
        if let Some(k) = keys.iter_mut().find(|k| k.kid == kid) {
            k.published = published;
        }
    }

    /// Approves the device sign-in showing `user_code` as `person`; false when no such
    /// sign-in is waiting.
    pub fn approve_device(&self, user_code: &str, person: MintRequest) -> bool {
        self.state.login.decide(user_code, Some(person))
    }

    /// Denies the device sign-in showing `user_code` (the person pressed "Cancel").
    pub fn deny_device(&self, user_code: &str) -> bool {
        self.state.login.decide(user_code, None)
    }

    /// User codes of every device sign-in begun so far, oldest first.
    pub fn device_user_codes(&self) -> Vec<String> {
        self.state.login.user_codes()
    }

    /// Signs `person` in at once, with no approval, in the device flow and at
    /// `/authorize`; `None` waits for [`DevIssuer::approve_device`] (and refuses `/authorize`).
    pub fn auto_approve(&self, person: Option<MintRequest>) {
        self.state
            .login
            .settings
            .lock()
            .expect("settings")
            .auto_approve = person;
    }

    /// Lifetime of the access tokens that sign-in and refresh hand out (default 3600 s).
    pub fn set_login_token_ttl(&self, secs: u64) {
        self.state
            .login
            .settings
            .lock()
            .expect("settings")
            .access_ttl_secs = secs;
    }

    /// Lifetime of new device codes (default 900 s).
    pub fn set_device_code_ttl(&self, secs: u64) {
        self.state
            .login
            .settings
            .lock()
            .expect("settings")
            .device_ttl_secs = secs;
    }

    /// Answers the next `polls` device-flow polls with `slow_down`.
    pub fn force_slow_down(&self, polls: usize) {
        self.state
            .login
            .settings
            .lock()
            .expect("settings")
            .forced_slow_downs = polls;
    }

    /// Whether `refresh_token` would be accepted now (each is good for one use).
    pub fn refresh_token_alive(&self, refresh_token: &str) -> bool {
        self.state.login.refresh_token_alive(refresh_token)
    }

    /// Stops the server.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

impl State {
    pub(super) fn current_kid(&self) -> String {
        let keys = self.keys.lock().expect("keys");
        self.current_kid_locked(&keys)
    }

    fn current_kid_locked(&self, keys: &[SigningKey]) -> String {
        keys.iter()
            .rev()
            .find(|k| k.published)
            .map(|k| k.kid.clone())
            .expect("a published key")
    }

    pub(super) fn sign(&self, kid: &str, claims: &Value) -> String {
        let algorithm = {
            let keys = self.keys.lock().expect("keys");
            keys.iter()
                .find(|k| k.kid == kid)
                .expect("known kid")
                .algorithm
        };
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        header.typ = Some("at+jwt".into());
        self.sign_with_header(&header, claims)
    }

    fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        let keys = self.keys.lock().expect("keys");
        let kid = header.kid.as_deref().expect("header names a kid");
        let key = keys.iter().find(|k| k.kid == kid).expect("known kid");
        jsonwebtoken::encode(header, claims, &key.encoding).expect("signing")
    }

    pub(super) fn claims(&self, req: &MintRequest) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        let machine = req.sub.ends_with("@clients");
        let mut claims = json!({
            "iss": self.url,
            "sub": req.sub,
            "aud": [DEV_AUDIENCE, format!("{}userinfo", self.url)],
            "iat": now,
            "exp": now + req.ttl_secs.unwrap_or(3600),
            "azp": DEV_CLIENT,
            "scope": req.scope.clone().unwrap_or_else(|| "openid profile".into()),
            "permissions": req.permissions,
            DEV_GROUPS_CLAIM: req.groups,
            DEV_ROLES_CLAIM: req.roles,
        });
        if machine {
            claims["gty"] = json!("client-credentials");
        }
        for (name, value) in &req.extra {
            claims[name] = value.clone();
        }
        claims
    }
}

async fn discovery(state: web::Data<State>) -> HttpResponse {
    state.discovery_requests.fetch_add(1, Ordering::SeqCst);
    let url = &state.url;
    let jwks_uri = state
        .jwks_uri
        .lock()
        .expect("jwks_uri")
        .clone()
        .unwrap_or_else(|| format!("{url}.well-known/jwks.json"));
    HttpResponse::Ok().json(json!({
        "issuer": url,
        "authorization_endpoint": format!("{url}authorize"),
        "token_endpoint": format!("{url}oauth/token"),
        "device_authorization_endpoint": format!("{url}oauth/device/code"),
        "revocation_endpoint": format!("{url}oauth/revoke"),
        "code_challenge_methods_supported": ["S256", "plain"],
        "jwks_uri": jwks_uri,
        "response_types_supported": ["code", "token", "id_token", "code token", "code id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["HS256", "RS256", "PS256"],
        "scopes_supported": ["openid", "profile", "offline_access", "email"],
    }))
}

async fn jwks(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    state.jwks_requests.fetch_add(1, Ordering::SeqCst);
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    state
        .jwks_hosts
        .lock()
        .expect("hosts")
        .push(format!("{host}{}", req.path()));
    if let Some(status) = *state.jwks_failure.lock().expect("failure") {
        let status = actix_web::http::StatusCode::from_u16(status).expect("status");
        return HttpResponse::build(status).json(json!({
            "error": "temporarily_unavailable",
            "error_description": "Service unavailable",
        }));
    }
    let keys = state.keys.lock().expect("keys");
    let set = JwkSet {
        keys: keys
            .iter()
            .filter(|k| k.published)
            .map(|k| k.jwk.clone())
            .collect(),
    };
    let mut set = serde_json::to_value(set).expect("JWKS as JSON");
    if let Some(Value::Array(published)) = set.get_mut("keys") {
        published.extend(state.raw_jwks.lock().expect("raw keys").iter().cloned());
    }
    HttpResponse::Ok().json(set)
}

async fn mint_route(state: web::Data<State>, req: web::Json<MintRequest>) -> HttpResponse {
    if req.sub.is_empty() {
        return HttpResponse::BadRequest().json(json!({
            "error": "invalid_request",
            "error_description": "sub is required",
        }));
    }
    let token = state.sign(&state.current_kid(), &state.claims(&req));
    HttpResponse::Ok().json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": req.ttl_secs.unwrap_or(3600),
    }))
}
