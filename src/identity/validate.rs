//! JWT validation (RFC 8725): one function from raw token + key sets + expectations to an
//! [`Identity`] or an [`IdentityError`] whose message says what to fix.

use super::token_cache::{TokenCache, TokenCacheLimits, TokenDigest, Verified};
use super::{Identity, IdentityError, KeySet, VerifyingKey};
use crate::config::IssuerSettings;
use crate::metrics::Metrics;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::str::FromStr;
use std::sync::Arc;

/// Largest subject token accepted; Auth0 access tokens are around 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Most groups, roles or permissions taken from one token.
const MAX_CLAIM_VALUES: usize = 256;

struct TrustedIssuer {
    settings: IssuerSettings,
    algorithms: Vec<Algorithm>,
    keys: Arc<KeySet>,
}

/// Validates subject tokens against the configured issuers.
pub struct Validator {
    issuers: Vec<TrustedIssuer>,
    cache: Option<TokenCache>,
    metrics: Arc<Metrics>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct VerifiedClaims {
    iss: String,
    sub: String,
    aud: Option<Audience>,
    exp: f64,
    iat: Option<f64>,
    azp: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl Validator {
    /// A validator for `issuers`, each with its key set; `cache` keeps validated tokens.
    pub fn new(
        issuers: Vec<(IssuerSettings, Arc<KeySet>)>,
        cache: Option<TokenCacheLimits>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let issuers = issuers
            .into_iter()
            .map(|(settings, keys)| {
                let algorithms = settings
                    .algorithms
                    .iter()
                    .filter_map(|a| Algorithm::from_str(a).ok())
                    .collect();
                TrustedIssuer {
                    settings,
                    algorithms,
                    keys,
                }
            })
            .collect();
        Self {
            issuers,
            cache: cache.map(TokenCache::new),
            metrics,
        }
    }

    /// The key sets, for readiness and start-up loading.
    pub fn key_sets(&self) -> impl Iterator<Item = (&str, &Arc<KeySet>)> {
        self.issuers
            .iter()
            .map(|i| (i.settings.issuer.as_str(), &i.keys))
    }

    /// Validates `raw` and returns who it names. A token validated before is taken from
    /// the cache while its `exp` (with leeway) has not passed and its key is still published.
    pub async fn validate(&self, raw: &str) -> Result<Identity, IdentityError> {
        let token = raw.trim_ascii();
        check_shape(token)?;
        let Some(cache) = &self.cache else {
            return self.verify(token).await.map(|v| v.identity);
        };
        let digest = TokenDigest::of(token);
        if let Some(hit) = cache.get(&digest).await {
            let issuer = &self.issuers[hit.issuer];
            if hit.in_force(issuer.settings.leeway_secs)
                && issuer.keys.publishes(&hit.kid, &hit.key_material)
            {
                self.metrics.validated_token_lookup(true);
                return Ok(hit.identity.clone());
            }
            cache.invalidate(&digest).await;
        }
        self.metrics.validated_token_lookup(false);
        let verified = Arc::new(self.verify(token).await?);
        cache.insert(digest, verified.clone()).await;
        Ok(verified.identity.clone())
    }

    /// Full validation: signature, times, claims. Each segment is decoded once.
    async fn verify(&self, token: &str) -> Result<Verified, IdentityError> {
        let Unverified {
            header_b64,
            payload_b64,
            signature_b64,
            header: header_json,
            mut payload,
        } = decode_unverified(token)?;
        // decode_unverified has checked that `alg` is a string.
        let alg_name = header_json
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (index, issuer) = self.issuer_of(&payload)?;
        if issuer.settings.require_at_jwt {
            check_at_jwt(&header_json)?;
        }
        let named = Algorithm::from_str(alg_name).ok();
        let alg = issuer
            .algorithms
            .iter()
            .copied()
            .find(|a| Some(*a) == named)
            .ok_or_else(|| {
                IdentityError::Rejected(
                    "algorithm",
                    format!(
                        "signing algorithm {} is not accepted; accepted: {}",
                        printable(alg_name),
                        issuer.settings.algorithms.join(", ")
                    ),
                )
            })?;
        let kid = header_json
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                IdentityError::Rejected("key", "token header has no key id (`kid`)".into())
            })?;
        let key = self.key(issuer, kid).await?;
        if key.family != alg.family() || !key.supports(alg) {
            return Err(IdentityError::Rejected(
                "algorithm",
                format!(
                    "key {} cannot verify {alg_name} signatures (the issuer publishes it for another algorithm)",
                    printable(kid)
                ),
            ));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| IdentityError::Malformed("signature is not base64url".into()))?;
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        if !key.verify(alg, signed.as_bytes(), &signature) {
            return Err(IdentityError::Rejected(
                "signature",
                "token signature does not verify".into(),
            ));
        }
        check_times(&mut payload, issuer.settings.leeway_secs)?;
        let digest = claims_digest(&payload, issuer.settings.cache_key_claims.as_deref());
        let claims: VerifiedClaims = serde_json::from_value(Value::Object(payload))
            .map_err(|_| IdentityError::Malformed("claims have the wrong shape".into()))?;
        let mut identity = check_claims(&issuer.settings, claims)?;
        identity.claims_digest = digest;
        Ok(Verified {
            identity,
            issuer: index,
            kid: key.kid.clone(),
            key_material: key.material,
        })
    }

    async fn key(&self, issuer: &TrustedIssuer, kid: &str) -> Result<VerifyingKey, IdentityError> {
        match issuer.keys.key(kid).await {
            Some(key) => Ok(key),
            None if !issuer.keys.is_loaded() => Err(IdentityError::KeysUnavailable(
                issuer.settings.issuer.clone(),
            )),
            None => Err(IdentityError::Rejected(
                "key",
                format!(
                    "token is signed with key id {}, which issuer {} does not publish",
                    printable(kid),
                    issuer.settings.issuer
                ),
            )),
        }
    }

    fn issuer_of(
        &self,
        payload: &Map<String, Value>,
    ) -> Result<(usize, &TrustedIssuer), IdentityError> {
        let iss = match payload.get("iss") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(IdentityError::Malformed("`iss` is not a string".into())),
            None => {
                return Err(IdentityError::Rejected(
                    "issuer",
                    "token has no issuer (`iss`)".into(),
                ))
            }
        };
        self.issuers
            .iter()
            .enumerate()
            .find(|(_, i)| &i.settings.issuer == iss)
            .ok_or_else(|| {
                // The caller is not authenticated yet: the trusted issuers are not named.
                // A missing or extra trailing slash is the usual mistake, and saying so
                // tells nothing the caller did not send.
                let slash = self
                    .issuers
                    .iter()
                    .any(|i| i.settings.issuer.trim_end_matches('/') == iss.trim_end_matches('/'));
                let hint = if slash {
                    "; a trusted issuer differs from it by a trailing slash only"
                } else {
                    ""
                };
                IdentityError::Rejected(
                    "issuer",
                    format!("token issuer {} is not trusted{hint}", printable(iss)),
                )
            })
    }
}

/// `exp` (required) and `nbf` (optional), with `leeway` seconds either way (RFC 7519 §4.1.4-5).
fn check_times(payload: &mut Map<String, Value>, leeway: u64) -> Result<(), IdentityError> {
    for claim in ["exp", "iss", "sub"] {
        if !payload.contains_key(claim) {
            return Err(IdentityError::Rejected(
                "claims",
                format!("token has no `{claim}` claim"),
            ));
        }
    }
    let number = |claim: &str| -> Result<Option<f64>, IdentityError> {
        match payload.get(claim) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                IdentityError::Malformed(format!("claim `{claim}` has the wrong type"))
            }),
        }
    };
    let now = jsonwebtoken::get_current_timestamp() as f64;
    let leeway = leeway as f64;
    if number("exp")?.is_some_and(|exp| exp < now - leeway) {
        return Err(IdentityError::Rejected(
            "expired",
            "subject token has expired; get a new one from the issuer".into(),
        ));
    }
    if number("nbf")?.is_some_and(|nbf| nbf > now + leeway) {
        return Err(IdentityError::Rejected(
            "not_yet_valid",
            "subject token is not valid yet (`nbf` is in the future)".into(),
        ));
    }
    Ok(())
}

fn check_shape(token: &str) -> Result<(), IdentityError> {
    if token.is_empty() {
        return Err(IdentityError::Malformed("subject_token is empty".into()));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(IdentityError::Malformed(format!(
            "subject token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    match token.split('.').count() {
        3 => Ok(()),
        5 => Err(IdentityError::Malformed(
            "encrypted tokens (JWE) are not accepted; send the signed access token".into(),
        )),
        _ => Err(IdentityError::Malformed(
            "not a JWT (expected three dot-separated parts)".into(),
        )),
    }
}

/// A token split into its segments, the header checked and the JSON of both decoded, not
/// yet verified.
pub(crate) struct Unverified<'a> {
    header_b64: &'a str,
    payload_b64: &'a str,
    signature_b64: &'a str,
    header: Map<String, Value>,
    payload: Map<String, Value>,
}

/// Everything done to a token before an issuer or a key is looked up, so everything any
/// caller can reach without a valid signature.
pub(crate) fn decode_unverified(token: &str) -> Result<Unverified<'_>, IdentityError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdentityError::Malformed(
            "not a JWT (expected three dot-separated parts)".into(),
        ));
    };
    let header = decode_segment(header_b64, "header")?;
    if !header.get("alg").is_some_and(Value::is_string) {
        return Err(IdentityError::Malformed("header has no `alg`".into()));
    }
    if header.get("crit").is_some() {
        return Err(IdentityError::Rejected(
            "header",
            "token header lists critical extensions (`crit`), which are not supported".into(),
        ));
    }
    check_typ(&header)?;
    let payload = decode_segment(payload_b64, "payload")?;
    Ok(Unverified {
        header_b64,
        payload_b64,
        signature_b64,
        header,
        payload,
    })
}

/// The shape checks and header decoding of [`Validator::validate`], for the fuzzer.
#[cfg(feature = "fuzzing")]
pub fn parse_unverified(raw: &str) -> Result<(), IdentityError> {
    let token = raw.trim_ascii();
    check_shape(token)?;
    decode_unverified(token).map(|_| ())
}

fn decode_segment(segment: &str, what: &str) -> Result<Map<String, Value>, IdentityError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| IdentityError::Malformed(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| IdentityError::Malformed(format!("{what} is not a JSON object")))
}

/// Access tokens are `JWT` or `at+jwt` (RFC 9068); anything else is another kind of token.
fn check_typ(header: &Map<String, Value>) -> Result<(), IdentityError> {
    match header.get("typ") {
        None => Ok(()),
        Some(Value::String(t))
            if ["jwt", "at+jwt", "application/at+jwt"]
                .contains(&t.to_ascii_lowercase().as_str()) =>
        {
            Ok(())
        }
        Some(t) => Err(IdentityError::Rejected(
            "token_type",
            format!(
                "token type {} is not an access token (expected JWT or at+jwt)",
                printable(&t.to_string())
            ),
        )),
    }
}

/// RFC 9068 §2.1: an access token says `at+jwt`; an ID token (`JWT` or no `typ`) is not one.
fn check_at_jwt(header: &Map<String, Value>) -> Result<(), IdentityError> {
    let typ = header
        .get("typ")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if ["at+jwt", "application/at+jwt"].contains(&typ.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    Err(IdentityError::Rejected(
        "token_type",
        format!(
            "this issuer's access tokens carry `typ: at+jwt` (RFC 9068) and this token's is {}; send the access token, not an ID token",
            if typ.is_empty() {
                "absent".to_owned()
            } else {
                printable(typ)
            }
        ),
    ))
}

fn check_claims(
    settings: &IssuerSettings,
    claims: VerifiedClaims,
) -> Result<Identity, IdentityError> {
    if claims.iss != settings.issuer {
        return Err(IdentityError::Rejected(
            "issuer",
            format!("token issuer {} is not trusted", printable(&claims.iss)),
        ));
    }
    let audiences = match claims.aud {
        Some(Audience::One(a)) => vec![a],
        Some(Audience::Many(v)) => v,
        None => {
            return Err(IdentityError::Rejected(
                "audience",
                "token has no audience (`aud`)".into(),
            ))
        }
    };
    if !audiences.iter().any(|a| settings.audiences.contains(a)) {
        let got: Vec<String> = audiences.iter().take(5).map(|a| printable(a)).collect();
        return Err(IdentityError::Rejected(
            "audience",
            format!(
                "token audience {} does not match the expected {}",
                if got.is_empty() {
                    "(empty)".to_string()
                } else {
                    got.join(", ")
                },
                settings.audiences.join(" or ")
            ),
        ));
    }
    let now = jsonwebtoken::get_current_timestamp() as f64;
    if let Some(iat) = claims.iat {
        if iat > now + settings.leeway_secs as f64 {
            return Err(IdentityError::Rejected(
                "issued_in_future",
                format!(
                    "token was issued {} s in the future (`iat`); check the issuer's clock",
                    (iat - now) as i64
                ),
            ));
        }
    }
    if claims.sub.is_empty() || claims.sub.len() > 255 || claims.sub.chars().any(char::is_control) {
        return Err(IdentityError::Rejected(
            "claims",
            "token subject (`sub`) must be 1-255 printable characters".into(),
        ));
    }
    let groups = string_list(&claims.extra, settings.groups_claim.as_deref(), "groups")?;
    let grant_types = string_list(&claims.extra, Some("gty"), "gty")?;
    let roles = string_list(&claims.extra, settings.roles_claim.as_deref(), "roles")?;
    if claims.permissions.len() > MAX_CLAIM_VALUES {
        return Err(IdentityError::Rejected(
            "claims",
            format!("token carries more than {MAX_CLAIM_VALUES} permissions"),
        ));
    }
    let scopes = claims
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_ascii_whitespace()
        .take(MAX_CLAIM_VALUES)
        .map(str::to_owned)
        .collect();
    Ok(Identity {
        issuer: claims.iss,
        subject: claims.sub,
        client_id: claims.azp.or(claims.client_id),
        audiences,
        scopes,
        permissions: claims.permissions,
        groups,
        roles,
        grant_types,
        email: short_string(
            &claims.extra,
            settings.email_claim.as_deref().unwrap_or("email"),
        ),
        name: short_string(
            &claims.extra,
            settings.name_claim.as_deref().unwrap_or("name"),
        ),
        expires_at: claims.exp.max(0.0) as u64,
        claims_digest: [0; 32],
    })
}

/// Claims that change with every token of the same person and that Google's attribute
/// mapping has no business with.
const TIME_CLAIMS: &[&str] = &["exp", "iat", "nbf", "auth_time", "jti"];

/// SHA-256 over `claims` in key order, without the time claims; only `only` when given.
fn claims_digest(claims: &Map<String, Value>, only: Option<&[String]>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut names: Vec<&String> = claims
        .keys()
        .filter(|k| match only {
            Some(list) => list.contains(k),
            None => !TIME_CLAIMS.contains(&k.as_str()),
        })
        .collect();
    names.sort();
    let mut hasher = Sha256::new();
    for name in names {
        let value = serde_json::to_vec(&claims[name]).unwrap_or_default();
        for part in [name.as_bytes(), &value] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    }
    hasher.finalize().into()
}

/// A string claim of printable text, at most 256 characters; anything else counts as absent.
fn short_string(extra: &Map<String, Value>, claim: &str) -> Option<String> {
    extra
        .get(claim)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.chars().count() <= 256 && !s.chars().any(char::is_control))
        .map(str::to_owned)
}

/// A claim holding a string or an array of strings, bounded in count.
fn string_list(
    extra: &Map<String, Value>,
    claim: Option<&str>,
    what: &str,
) -> Result<Vec<String>, IdentityError> {
    let Some(value) = claim.and_then(|c| extra.get(c)) else {
        return Ok(Vec::new());
    };
    let list: Vec<String> = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| IdentityError::Malformed(format!("{what} claim holds a non-string")))?,
        _ => {
            return Err(IdentityError::Malformed(format!(
                "{what} claim is not a list of strings"
            )))
        }
    };
    if list.len() > MAX_CLAIM_VALUES {
        return Err(IdentityError::Rejected(
            "claims",
            format!("token carries more than {MAX_CLAIM_VALUES} {what}"),
        ));
    }
    Ok(list)
}

/// Quotes an attacker-chosen value for an error message: bounded and printable.
fn printable(value: &str) -> String {
    let clean: String = value
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    if clean.len() < value.len() {
        format!("{clean}…")
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::btree_map;
    use proptest::prelude::*;
    use serde_json::json;

    fn segment(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_token_text_is_answered_without_a_panic(
            raw in prop_oneof!["\\PC{0,300}", "[A-Za-z0-9_.-]{0,300}"]
        ) {
            let token = raw.trim_ascii();
            if check_shape(token).is_ok() {
                let _ = decode_unverified(token);
            }
        }

        #[test]
        fn any_header_json_is_answered_without_a_panic(
            header in btree_map("[a-z]{1,5}", "\\PC{0,20}", 0..6),
        ) {
            let token = format!("{}.{}.", segment(&json!(header)), segment(&json!({})));
            let _ = decode_unverified(&token);
        }

        #[test]
        fn an_access_token_header_and_payload_decode_as_sent(
            alg in prop_oneof![Just("RS256"), Just("ES256")],
            kid in "\\PC{0,30}",
            typ in proptest::option::of(prop_oneof![Just("JWT"), Just("at+jwt"), Just("application/at+jwt")]),
            claims in btree_map("[a-z]{1,10}", "\\PC{0,30}", 0..6),
        ) {
            let mut header = json!({ "alg": alg, "kid": kid });
            if let Some(typ) = typ {
                header["typ"] = json!(typ);
            }
            let payload = json!(claims);
            let token = format!("{}.{}.c2ln", segment(&header), segment(&payload));
            prop_assert!(check_shape(&token).is_ok());
            let decoded = decode_unverified(&token).unwrap();
            prop_assert_eq!(Value::Object(decoded.header), header);
            prop_assert_eq!(Value::Object(decoded.payload), payload);
            prop_assert_eq!(decoded.signature_b64, "c2ln");
        }

        #[test]
        fn an_id_token_type_is_refused_before_any_key_is_looked_up(
            typ in prop_oneof![Just("JOSE"), Just("id_token+jwt"), Just("dpop+jwt")],
        ) {
            let header = json!({ "alg": "RS256", "kid": "k", "typ": typ });
            let token = format!("{}.{}.c2ln", segment(&header), segment(&json!({})));
            prop_assert!(decode_unverified(&token).is_err());
        }
    }
}
