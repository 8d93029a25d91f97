//! One issuer's signing keys: found through OIDC discovery, refetched on an unknown `kid`
//! at most once per interval, and kept when a fetch fails.

use aws_lc_rs::signature::{self as lc, ParsedPublicKey, VerificationAlgorithm};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use openidconnect::core::CoreProviderMetadata;
use rsa::pkcs1::EncodeRsaPublicKey;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use crate::metrics::Metrics;

/// A public key from the issuer's JWKS, parsed once per algorithm it can verify, so a
/// request pays for the signature check only.
#[derive(Clone)]
pub struct VerifyingKey {
    /// Family of algorithms it can verify (RSA, EC, ...).
    pub family: AlgorithmFamily,
    /// SHA-256 of the key material: tells a re-published `kid` with another key apart.
    pub material: [u8; 32],
    parsed: Arc<[(Algorithm, ParsedPublicKey)]>,
}

impl VerifyingKey {
    /// Whether `signature` (raw bytes) over `message` verifies with this key under `alg`;
    /// false also when the key cannot verify `alg` at all.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.parsed
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }

    fn from_jwk(jwk: &Jwk) -> Result<Option<Self>, String> {
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
                    _ => return Err("unsupported curve".into()),
                };
                // SEC 1 uncompressed point: 0x04 || x || y.
                let mut point = vec![4u8];
                point.extend(b64(&ec.x)?);
                point.extend(b64(&ec.y)?);
                (AlgorithmFamily::Ec, point, algorithms)
            }
            _ => return Ok(None),
        };
        let parsed = algorithms
            .iter()
            .map(|(alg, lc_alg)| {
                ParsedPublicKey::new(*lc_alg, &bytes)
                    .map(|key| (*alg, key))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self {
            family,
            material: Sha256::digest(&bytes).into(),
            parsed: parsed.into(),
        }))
    }
}

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

fn b64(value: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| "key parameter is not base64url".to_string())
}

/// PKCS#1 `RSAPublicKey` DER from the JWK's modulus and exponent.
fn rsa_public_der(n: &str, e: &str) -> Result<Vec<u8>, String> {
    let n = rsa::BigUint::from_bytes_be(&b64(n)?);
    let e = rsa::BigUint::from_bytes_be(&b64(e)?);
    let key = rsa::RsaPublicKey::new(n, e).map_err(|e| e.to_string())?;
    let der = key.to_pkcs1_der().map_err(|e| e.to_string())?;
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
    http: reqwest::Client,
    min_refetch: Duration,
    metrics: Arc<Metrics>,
    loaded: RwLock<Loaded>,
    /// Time of the last fetch attempt; the mutex also makes concurrent refetches wait for one.
    last_attempt: Mutex<Option<Instant>>,
}

/// Upper bound on a discovery document or key set, so a hostile issuer cannot exhaust memory.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

impl KeySet {
    /// A key set with nothing loaded yet.
    pub fn new(
        issuer: String,
        discovery_url: Option<String>,
        http: reqwest::Client,
        min_refetch: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let discovery_url = discovery_url.unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            )
        });
        Self {
            issuer,
            discovery_url,
            http,
            min_refetch,
            metrics,
            loaded: RwLock::new(Loaded::default()),
            last_attempt: Mutex::new(None),
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
        if let Err(e) = self.fetch().await {
            tracing::warn!(issuer = %self.issuer, error = %e, "key set refetch failed; keeping the last good keys");
        }
        self.lookup(kid)
    }

    /// Loads the key set now, whatever the interval; used at start-up.
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        let mut last = self.last_attempt.lock().await;
        *last = Some(Instant::now());
        self.fetch().await
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

    async fn fetch(&self) -> Result<usize, FetchError> {
        let result = self.fetch_keys().await;
        self.loaded.write().expect("key set lock").last_error =
            result.as_ref().err().map(ToString::to_string);
        self.metrics
            .jwks_refresh(&self.issuer, result.is_ok(), self.key_count());
        result
    }

    async fn fetch_keys(&self) -> Result<usize, FetchError> {
        let jwks_uri = match self.cached_jwks_uri() {
            Some(uri) => uri,
            None => self.discover().await?,
        };
        let bytes = get_bounded(&self.http, &jwks_uri, "jwks", &self.metrics)
            .await
            .map_err(|reason| FetchError::Jwks {
                url: jwks_uri.clone(),
                reason,
            })?;
        let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| FetchError::Jwks {
            url: jwks_uri.clone(),
            reason: format!("not a JWK set: {e}"),
        })?;
        let keys = usable_keys(&set);
        if keys.is_empty() {
            return Err(FetchError::Jwks {
                url: jwks_uri,
                reason: "no usable signing key (RSA or EC with a kid)".into(),
            });
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
        let bytes = get_bounded(&self.http, &self.discovery_url, "discovery", &self.metrics)
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
        Ok(metadata.jwks_uri().url().to_string())
    }
}

/// Keys that can verify signatures: RSA or EC, with a `kid`, not marked for encryption.
fn usable_keys(set: &JwkSet) -> HashMap<String, VerifyingKey> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        match VerifyingKey::from_jwk(jwk) {
            Ok(Some(key)) => {
                keys.insert(kid, key);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(kid = %kid, error = %e, "skipping unusable key"),
        }
    }
    keys
}

async fn get_bounded(
    http: &reqwest::Client,
    url: &str,
    upstream: &str,
    metrics: &Metrics,
) -> Result<Vec<u8>, String> {
    let started = Instant::now();
    let sent = http.get(url).send().await;
    let code = match &sent {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => crate::metrics::transport_error(e).to_owned(),
    };
    metrics.upstream(upstream, &code, started.elapsed());
    let mut response = sent.map_err(|e| crate::causes::chain(&e))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| crate::causes::chain(&e))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
