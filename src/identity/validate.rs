//! JWT validation (RFC 8725): one function from raw token + key sets + expectations to an
//! [`Identity`] or an [`IdentityError`] whose message says what to fix.

use super::{Identity, IdentityError, KeySet};
use crate::config::IssuerSettings;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
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
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<Value>,
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
    /// A validator for `issuers`, each with its key set.
    pub fn new(issuers: Vec<(IssuerSettings, Arc<KeySet>)>) -> Self {
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
        Self { issuers }
    }

    /// The key sets, for readiness and start-up loading.
    pub fn key_sets(&self) -> impl Iterator<Item = (&str, &Arc<KeySet>)> {
        self.issuers
            .iter()
            .map(|i| (i.settings.issuer.as_str(), &i.keys))
    }

    /// Validates `raw` and returns who it names.
    pub async fn validate(&self, raw: &str) -> Result<Identity, IdentityError> {
        let token = raw.trim_ascii();
        check_shape(token)?;
        let header_json = decode_segment(token.split('.').next().unwrap_or_default(), "header")?;
        let alg_name = header_json
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| IdentityError::Malformed("header has no `alg`".into()))?
            .to_owned();
        if header_json.get("crit").is_some() {
            return Err(IdentityError::Rejected(
                "header",
                "token header lists critical extensions (`crit`), which are not supported".into(),
            ));
        }
        check_typ(&header_json)?;
        let issuer = self.issuer_of(token)?;
        let alg = issuer
            .algorithms
            .iter()
            .copied()
            .find(|a| format!("{a:?}") == alg_name)
            .ok_or_else(|| {
                IdentityError::Rejected(
                    "algorithm",
                    format!(
                        "signing algorithm {} is not accepted; accepted: {}",
                        printable(&alg_name),
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
        let key = match issuer.keys.key(kid).await {
            Some(key) => key,
            None if !issuer.keys.is_loaded() => {
                return Err(IdentityError::KeysUnavailable(
                    issuer.settings.issuer.clone(),
                ))
            }
            None => {
                return Err(IdentityError::Rejected(
                    "key",
                    format!(
                        "token is signed with key id {}, which issuer {} does not publish",
                        printable(kid),
                        issuer.settings.issuer
                    ),
                ))
            }
        };
        if key.family != alg.family() {
            return Err(IdentityError::Rejected(
                "algorithm",
                format!("key {} cannot verify {alg_name} signatures", printable(kid)),
            ));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = issuer.settings.leeway_secs;
        validation.validate_nbf = true;
        validation.validate_aud = false; // checked below, with a message naming both values
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(describe_decode_error)?;
        let digest = claims_digest(&data.claims, issuer.settings.cache_key_claims.as_deref());
        let claims: VerifiedClaims = serde_json::from_value(Value::Object(data.claims))
            .map_err(|_| IdentityError::Malformed("claims have the wrong shape".into()))?;
        let mut identity = check_claims(&issuer.settings, claims)?;
        identity.claims_digest = digest;
        Ok(identity)
    }

    fn issuer_of(&self, token: &str) -> Result<&TrustedIssuer, IdentityError> {
        let peek: Peek = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| IdentityError::Malformed("payload is not a JSON object".into()))?;
        let iss = match peek.iss {
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
            .find(|i| i.settings.issuer == iss)
            .ok_or_else(|| {
                let expected: Vec<&str> = self
                    .issuers
                    .iter()
                    .map(|i| i.settings.issuer.as_str())
                    .collect();
                IdentityError::Rejected(
                    "issuer",
                    format!(
                        "token issuer {} is not trusted; expected {}",
                        printable(&iss),
                        expected.join(" or ")
                    ),
                )
            })
    }
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

fn describe_decode_error(e: jsonwebtoken::errors::Error) -> IdentityError {
    let (reason, text) = match e.kind() {
        ErrorKind::ExpiredSignature => (
            "expired",
            "subject token has expired; get a new one from the issuer",
        ),
        ErrorKind::ImmatureSignature => (
            "not_yet_valid",
            "subject token is not valid yet (`nbf` is in the future)",
        ),
        ErrorKind::InvalidSignature => ("signature", "token signature does not verify"),
        ErrorKind::InvalidAlgorithm => ("algorithm", "token algorithm does not match its key"),
        ErrorKind::MissingRequiredClaim(claim) => {
            return IdentityError::Rejected("claims", format!("token has no `{claim}` claim"));
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            return IdentityError::Malformed(format!("claim `{claim}` has the wrong type"));
        }
        ErrorKind::Json(_) => {
            return IdentityError::Malformed("claims have the wrong shape".into());
        }
        _ => return IdentityError::Malformed("token could not be decoded".into()),
    };
    IdentityError::Rejected(reason, text.into())
}

fn check_claims(
    settings: &IssuerSettings,
    claims: VerifiedClaims,
) -> Result<Identity, IdentityError> {
    if claims.iss != settings.issuer {
        return Err(IdentityError::Rejected(
            "issuer",
            format!(
                "token issuer {} is not trusted; expected {}",
                printable(&claims.iss),
                settings.issuer
            ),
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
