//! One issuer's signing keys: found through OIDC discovery, refetched on an unknown `kid`
//! at most once per interval, and kept when a fetch fails.

use aws_lc_rs::signature::{self as lc, ParsedPublicKey, VerificationAlgorithm};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use openidconnect::core::CoreProviderMetadata;
use rsa::pkcs1::EncodeRsaPublicKey;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use crate::breaker::Breaker;
use crate::config::IssuerSettings;
use crate::metrics::Metrics;

/// A public key from the issuer's JWKS, parsed once per algorithm it can verify, so a
/// request pays for the signature check only.
#[derive(Clone)]
pub struct VerifyingKey {
    /// Family of algorithms it can verify (RSA, EC, ...).
    pub family: AlgorithmFamily,
    /// SHA-256 of the key material: tells a re-published `kid` with another key apart.
    pub material: [u8; 32],
    /// The key's `kid`, shared by every validated token the key verified.
    pub kid: Arc<str>,
    parsed: Arc<[(Algorithm, ParsedPublicKey)]>,
}

impl VerifyingKey {
    /// Whether the key may verify `alg` (its type allows it, and its `alg`, if any, is it).
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.parsed.iter().any(|(a, _)| *a == alg)
    }

    /// Whether `signature` (raw bytes) over `message` verifies with this key under `alg`;
    /// false also when the key cannot verify `alg` at all.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.parsed
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }

    /// The key `jwk` describes, parsed for the algorithms it may verify: only its `alg`
    /// when it names one, every algorithm of its type when not.
    fn from_jwk(jwk: &Jwk) -> Result<Self, Skipped> {
        let (family, bytes, algorithms): (_, Vec<u8>, &AlgorithmTable) = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => (
                AlgorithmFamily::Rsa,
                rsa_public_der(&rsa.n, &rsa.e)?,
                RSA_ALGORITHMS,
            ),
            AlgorithmParameters::EllipticCurve(ec) => {
                let algorithms = match ec.curve {
                    EllipticCurve::P256 => P256_ALGORITHMS,
                    EllipticCurve::P384 => P384_ALGORITHMS,
                    _ => return Err(Skipped::unsupported("unsupported curve")),
                };
                // SEC 1 uncompressed point: 0x04 || x || y.
                let mut point = vec![4u8];
                point.extend(b64(&ec.x)?);
                point.extend(b64(&ec.y)?);
                (AlgorithmFamily::Ec, point, algorithms)
            }
            _ => return Err(Skipped::unsupported("unsupported key type")),
        };
        let only = match jwk.common.key_algorithm {
            None => None,
            Some(named) => Some(Algorithm::from_str(&named.to_string()).map_err(|_| {
                Skipped::new("alg", format!("`alg` {named} is not a signature algorithm"))
            })?),
        };
        let parsed = algorithms
            .iter()
            .filter(|(alg, _)| only.is_none_or(|only| only == *alg))
            .map(|(alg, lc_alg)| {
                ParsedPublicKey::new(*lc_alg, &bytes)
                    .map(|key| (*alg, key))
                    .map_err(|e| Skipped::new("invalid", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if parsed.is_empty() {
            return Err(Skipped::new(
                "alg",
                format!("`alg` {} does not fit the key type", printable_alg(jwk)),
            ));
        }
        Ok(Self {
            family,
            material: Sha256::digest(&bytes).into(),
            kid: Arc::from(""),
            parsed: parsed.into(),
        })
    }
}

/// Why a published key is left out: a bounded reason for the metric, and words for the log.
#[derive(Debug)]
struct Skipped {
    reason: &'static str,
    detail: String,
}

impl Skipped {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    fn unsupported(detail: &str) -> Self {
        Self::new("unsupported", detail)
    }
}

fn printable_alg(jwk: &Jwk) -> String {
    jwk.common
        .key_algorithm
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// Least RSA modulus accepted (NIST SP 800-131A; Google's providers refuse less too).
const MIN_RSA_BITS: usize = 2048;

type AlgorithmTable = [(Algorithm, &'static dyn VerificationAlgorithm)];

const RSA_ALGORITHMS: &AlgorithmTable = &[
    (Algorithm::RS256, &lc::RSA_PKCS1_2048_8192_SHA256),
    (Algorithm::RS384, &lc::RSA_PKCS1_2048_8192_SHA384),
    (Algorithm::RS512, &lc::RSA_PKCS1_2048_8192_SHA512),
    (Algorithm::PS256, &lc::RSA_PSS_2048_8192_SHA256),
    (Algorithm::PS384, &lc::RSA_PSS_2048_8192_SHA384),
    (Algorithm::PS512, &lc::RSA_PSS_2048_8192_SHA512),
];

const P256_ALGORITHMS: &AlgorithmTable = &[(Algorithm::ES256, &lc::ECDSA_P256_SHA256_FIXED)];
const P384_ALGORITHMS: &AlgorithmTable = &[(Algorithm::ES384, &lc::ECDSA_P384_SHA384_FIXED)];

fn b64(value: &str) -> Result<Vec<u8>, Skipped> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| Skipped::new("invalid", "key parameter is not base64url"))
}

/// PKCS#1 `RSAPublicKey` DER from the JWK's modulus and exponent.
fn rsa_public_der(n: &str, e: &str) -> Result<Vec<u8>, Skipped> {
    let n = rsa::BigUint::from_bytes_be(&b64(n)?);
    if n.bits() < MIN_RSA_BITS {
        return Err(Skipped::new(
            "weak",
            format!(
                "RSA key of {} bits; at least {MIN_RSA_BITS} are required",
                n.bits()
            ),
        ));
    }
    let e = rsa::BigUint::from_bytes_be(&b64(e)?);
    let invalid = |e: String| Skipped::new("invalid", e);
    let key = rsa::RsaPublicKey::new(n, e).map_err(|e| invalid(e.to_string()))?;
    let der = key.to_pkcs1_der().map_err(|e| invalid(e.to_string()))?;
    Ok(der.as_bytes().to_vec())
}

/// Why keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Discovery document unreachable or malformed.
    #[error("discovery at {url} failed: {reason}")]
    Discovery {
        /// Discovery URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Not fetched: the issuer's breaker is open.
    #[error("keys of {issuer} not fetched: the issuer failed repeatedly, so it is not called for {secs} s")]
    Paused {
        /// The issuer.
        issuer: String,
        /// Seconds until the next probe.
        secs: u64,
    },
    /// JWKS unreachable or malformed.
    #[error("key set at {url} failed: {reason}")]
    Jwks {
        /// JWKS URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

#[derive(Default)]
struct Loaded {
    keys: HashMap<String, VerifyingKey>,
    jwks_uri: Option<String>,
    loaded_at: Option<Instant>,
    /// Why the latest fetch failed, cleared by the next success.
    last_error: Option<String>,
}

/// The key set of one issuer.
pub struct KeySet {
    issuer: String,
    discovery_url: String,
    /// Hosts a changed `jwks_uri` may move to: the issuer's own and the configured ones.
    allowed_hosts: Vec<String>,
    http: reqwest::Client,
    breaker: Arc<Breaker>,
    min_refetch: Duration,
    max_age: Duration,
    metrics: Arc<Metrics>,
    loaded: RwLock<Loaded>,
    /// Time of the last fetch attempt; the mutex also makes concurrent refetches wait for
    /// one, so an issuer never sees more than one fetch of this service at a time,
    /// scheduled refreshes included.
    last_attempt: Mutex<Option<Instant>>,
    /// Whether a request of the fetch under way found the issuer down (fetches are one
    /// at a time, under `last_attempt`).
    found_down: AtomicBool,
}

/// Upper bound on a discovery document or key set, so a hostile issuer cannot exhaust memory.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Most keys read from one key set; Auth0 publishes two or three.
const MAX_KEYS: usize = 100;

/// Why the keys on hand are not good enough to call the service ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysNotReady {
    /// No key set was ever loaded; the latest error, if any.
    NeverLoaded(Option<String>),
    /// The last good set is older than its maximum age; its age and the latest error.
    Stale(Duration, Option<String>),
}

impl KeySet {
    /// A key set of `issuer` with nothing loaded yet, fetched through `http` while
    /// `breaker` lets it.
    pub fn new(
        issuer: &IssuerSettings,
        http: reqwest::Client,
        breaker: Arc<Breaker>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let discovery_url = issuer.discovery_url.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                issuer.issuer.trim_end_matches('/')
            )
        });
        let mut allowed_hosts: Vec<String> = issuer
            .jwks_allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        if let Some(host) = host_of(&issuer.issuer) {
            allowed_hosts.push(host);
        }
        Self {
            issuer: issuer.issuer.clone(),
            discovery_url,
            allowed_hosts,
            http,
            breaker,
            min_refetch: issuer.jwks_min_refetch(),
            max_age: issuer.jwks_max_age(),
            metrics,
            loaded: RwLock::new(Loaded::default()),
            last_attempt: Mutex::new(None),
            found_down: AtomicBool::new(false),
        }
    }

    /// Whether a key set has been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded
            .read()
            .expect("key set lock")
            .loaded_at
            .is_some()
    }

    /// `Ok` when keys are loaded and the last good set is younger than its maximum age.
    pub fn readiness(&self) -> Result<(), KeysNotReady> {
        let loaded = self.loaded.read().expect("key set lock");
        match loaded.loaded_at {
            None => Err(KeysNotReady::NeverLoaded(loaded.last_error.clone())),
            Some(at) if at.elapsed() > self.max_age => {
                Err(KeysNotReady::Stale(at.elapsed(), loaded.last_error.clone()))
            }
            Some(_) => Ok(()),
        }
    }

    /// Number of usable keys.
    pub fn key_count(&self) -> usize {
        self.loaded.read().expect("key set lock").keys.len()
    }

    /// Whether the last loaded set still publishes `kid` with the key `material` (no fetch).
    pub fn publishes(&self, kid: &str, material: &[u8; 32]) -> bool {
        self.loaded
            .read()
            .expect("key set lock")
            .keys
            .get(kid)
            .is_some_and(|k| &k.material == material)
    }

    fn lookup(&self, kid: &str) -> Option<VerifyingKey> {
        self.loaded
            .read()
            .expect("key set lock")
            .keys
            .get(kid)
            .cloned()
    }

    /// The key named `kid`, refetching the set once if it is unknown and the last attempt
    /// is older than the minimum interval.
    pub async fn key(&self, kid: &str) -> Option<VerifyingKey> {
        if let Some(key) = self.lookup(kid) {
            return Some(key);
        }
        let mut last = self.last_attempt.lock().await;
        // Another caller may have refreshed while this one waited for the lock.
        if let Some(key) = self.lookup(kid) {
            return Some(key);
        }
        if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return None;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch(false).await {
            tracing::warn!(issuer = %self.issuer, error = %e, "key set refetch failed; keeping the last good keys");
        }
        self.lookup(kid)
    }

    /// Runs discovery again and loads the key set it names, whatever the interval; used at
    /// start-up and on the scheduled refresh, so a moved key set is followed.
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        let mut last = self.last_attempt.lock().await;
        *last = Some(Instant::now());
        self.fetch(true).await
    }

    /// The key set's URL (from discovery) and the ids of its usable keys, once loaded.
    pub fn loaded_keys(&self) -> (Option<String>, Vec<String>) {
        let loaded = self.loaded.read().expect("key set lock");
        let mut kids: Vec<String> = loaded.keys.keys().cloned().collect();
        kids.sort();
        (loaded.jwks_uri.clone(), kids)
    }

    /// Why the latest fetch failed, with its whole cause chain; `None` after a success.
    pub fn last_error(&self) -> Option<String> {
        self.loaded.read().expect("key set lock").last_error.clone()
    }

    /// One fetch, through the breaker: it counts as a failure when a request found the
    /// issuer down (no connection, timeout, 429, 5xx), as a success otherwise.
    async fn fetch(&self, discover: bool) -> Result<usize, FetchError> {
        let result = match self.breaker.admit() {
            Err(open) => Err(FetchError::Paused {
                issuer: self.issuer.clone(),
                secs: open.retry_after.as_secs(),
            }),
            Ok(mut admission) => {
                admission.sent();
                self.found_down.store(false, Ordering::Relaxed);
                let result = self.fetch_keys(discover).await;
                if self.found_down.load(Ordering::Relaxed) {
                    admission.failed();
                } else {
                    admission.succeeded();
                }
                result
            }
        };
        self.loaded.write().expect("key set lock").last_error =
            result.as_ref().err().map(ToString::to_string);
        self.metrics
            .jwks_refresh(&self.issuer, result.is_ok(), self.key_count());
        result
    }

    async fn fetch_keys(&self, discover: bool) -> Result<usize, FetchError> {
        let jwks_uri = match self.cached_jwks_uri().filter(|_| !discover) {
            Some(uri) => uri,
            None => self.discover().await?,
        };
        let fail = |reason: String| FetchError::Jwks {
            url: jwks_uri.clone(),
            reason,
        };
        let bytes = self.get("jwks", &jwks_uri).await.map_err(fail)?;
        let set: RawJwkSet =
            serde_json::from_slice(&bytes).map_err(|e| fail(format!("not a JWK set: {e}")))?;
        if set.keys.len() > MAX_KEYS {
            return Err(fail(format!("more than {MAX_KEYS} keys")));
        }
        let keys = self.usable_keys(set.keys);
        if keys.is_empty() {
            return Err(fail(
                "no usable signing key (RSA of 2048 bits or more, or EC, with a kid, not for encryption)".into(),
            ));
        }
        let count = keys.len();
        let mut loaded = self.loaded.write().expect("key set lock");
        loaded.keys = keys;
        loaded.jwks_uri = Some(jwks_uri);
        loaded.loaded_at = Some(Instant::now());
        tracing::info!(issuer = %self.issuer, keys = count, "key set loaded");
        Ok(count)
    }

    fn cached_jwks_uri(&self) -> Option<String> {
        self.loaded.read().expect("key set lock").jwks_uri.clone()
    }

    async fn discover(&self) -> Result<String, FetchError> {
        let fail = |reason: String| FetchError::Discovery {
            url: self.discovery_url.clone(),
            reason,
        };
        let bytes = self
            .get("discovery", &self.discovery_url)
            .await
            .map_err(fail)?;
        let metadata: CoreProviderMetadata = serde_json::from_slice(&bytes)
            .map_err(|e| fail(format!("not an OpenID provider configuration: {e}")))?;
        let jwks_uri = metadata.jwks_uri().url();
        if !crate::config::is_secure_url(jwks_uri) {
            return Err(fail(format!(
                "jwks_uri {jwks_uri} must use https (plain http only on loopback)"
            )));
        }
        if metadata.issuer().as_str() != self.issuer {
            return Err(fail(format!(
                "document names issuer {} but {} is configured",
                metadata.issuer().as_str(),
                self.issuer
            )));
        }
        let jwks_uri = jwks_uri.to_string();
        if let Some(old) = self.cached_jwks_uri().filter(|old| *old != jwks_uri) {
            let host = host_of(&jwks_uri).unwrap_or_default();
            if !self.allowed_hosts.contains(&host) {
                return Err(fail(format!(
                    "jwks_uri moved from {old} to {jwks_uri}, whose host is neither the issuer's nor in jwks_allowed_hosts; keeping the last good keys"
                )));
            }
            tracing::warn!(issuer = %self.issuer, from = %old, to = %jwks_uri, "the issuer's key set moved");
        }
        Ok(jwks_uri)
    }

    /// Keys that can verify signatures: RSA of 2048 bits or more or EC, with a `kid`, for
    /// signing (`use` absent or `sig`), parsed for their `alg` only when they name one.
    /// Each key left out is logged and counted; the others still load.
    fn usable_keys(&self, raw: Vec<serde_json::Value>) -> HashMap<String, VerifyingKey> {
        let mut keys = HashMap::new();
        for value in raw {
            let kid = value
                .get("kid")
                .and_then(serde_json::Value::as_str)
                .map(|k| k.chars().take(100).collect::<String>());
            let parsed = serde_json::from_value::<Jwk>(value)
                .map_err(|e| Skipped::new("invalid", format!("not a JWK: {e}")))
                .and_then(|jwk| {
                    match &jwk.common.public_key_use {
                        None | Some(PublicKeyUse::Signature) => {}
                        Some(_) => return Err(Skipped::new("use", "`use` is not `sig`")),
                    }
                    if jwk.common.key_id.is_none() {
                        return Err(Skipped::new("invalid", "no `kid`"));
                    }
                    VerifyingKey::from_jwk(&jwk)
                });
            match (parsed, kid) {
                (Ok(mut key), Some(kid)) => {
                    key.kid = Arc::from(kid.as_str());
                    keys.insert(kid, key);
                }
                (Ok(_), None) => {}
                (Err(skipped), kid) => {
                    self.metrics.jwks_key_skipped(&self.issuer, skipped.reason);
                    tracing::warn!(
                        issuer = %self.issuer,
                        kid = ?kid.unwrap_or_default(),
                        reason = skipped.reason,
                        detail = %skipped.detail,
                        "skipping a published key that cannot verify tokens"
                    );
                }
            }
        }
        keys
    }

    /// GETs `url`; `upstream` names it in the request metrics.
    async fn get(&self, upstream: &str, url: &str) -> Result<Vec<u8>, String> {
        let result = get_bounded(&self.http, url, upstream, &self.metrics).await;
        if let Err(GetError::Unavailable(_)) = &result {
            self.found_down.store(true, Ordering::Relaxed);
        }
        result.map_err(|e| match e {
            GetError::Unavailable(why) | GetError::Refused(why) => why,
        })
    }
}

/// A key set as published, each key parsed on its own so one odd key spoils nothing else.
#[derive(serde::Deserialize)]
struct RawJwkSet {
    keys: Vec<serde_json::Value>,
}

/// The lower-cased host of `url`.
fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .host_str()
        .map(str::to_ascii_lowercase)
}

/// Why a GET failed: the upstream is down (counts against its breaker) or it answered
/// with something unusable.
enum GetError {
    Unavailable(String),
    Refused(String),
}

async fn get_bounded(
    http: &reqwest::Client,
    url: &str,
    upstream: &str,
    metrics: &Metrics,
) -> Result<Vec<u8>, GetError> {
    let started = Instant::now();
    let sent = http.get(url).send().await;
    let code = match &sent {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => crate::metrics::transport_error(e).to_owned(),
    };
    metrics.upstream(upstream, &code, started.elapsed());
    let mut response = sent.map_err(|e| GetError::Unavailable(crate::causes::chain(&e)))?;
    let status = response.status();
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(GetError::Unavailable(format!("HTTP {status}")));
    }
    if !status.is_success() {
        return Err(GetError::Refused(format!("HTTP {status}")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| GetError::Unavailable(crate::causes::chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(GetError::Refused(format!(
                "larger than {MAX_DOCUMENT_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
