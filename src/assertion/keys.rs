//! The bridge's own signing keys: loading PEM files, generating new ones, and their public
//! halves in the exact JWK form Google's workforce OIDC providers accept as uploaded keys.

use super::AssertionError;
use crate::config::{AssertionKeySettings, KeyState};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use std::fmt;
use std::io::Write;
use std::path::Path;

/// Size of generated RSA keys; Google requires at least 2048 bits.
const RSA_BITS: usize = 2048;

/// The two algorithms Google's workforce OIDC providers accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl KeyAlgorithm {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Rs256 => "RS256",
            KeyAlgorithm::Es256 => "ES256",
        }
    }

    fn jose(self) -> Algorithm {
        match self {
            KeyAlgorithm::Rs256 => Algorithm::RS256,
            KeyAlgorithm::Es256 => Algorithm::ES256,
        }
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS256" => Ok(KeyAlgorithm::Rs256),
            "ES256" => Ok(KeyAlgorithm::Es256),
            other => Err(format!(
                "`{other}` is not accepted by Google's workforce providers; use ES256 or RS256"
            )),
        }
    }
}

/// A public key as Google's provider takes it: `kty`, `alg`, `use`, `kid`, then `n`/`e`
/// (RSA) or `x`/`y`/`crv` (EC), and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PublicJwk {
    /// `RSA` or `EC`.
    pub kty: String,
    /// `RS256` or `ES256`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Key id, as the assertion header names it.
    pub kid: String,
    /// RSA modulus.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub n: Option<String>,
    /// RSA exponent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub e: Option<String>,
    /// EC x coordinate.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub y: Option<String>,
    /// EC curve, `P-256`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub crv: Option<String>,
}

/// `{"keys": [...]}`, the document `--jwk-json-path` and Terraform's `jwks_json` take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PublicJwks {
    /// The published keys.
    pub keys: Vec<PublicJwk>,
}

/// One of the bridge's keys, loaded. `Debug` never shows the private half.
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    /// Rotation state.
    pub state: KeyState,
    /// Algorithm the key signs with.
    pub algorithm: KeyAlgorithm,
    encoding: EncodingKey,
    public: PublicJwk,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("state", &self.state)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads the PEM file a key entry names (PKCS#8, or PKCS#1 / SEC1 as OpenSSL writes them).
    pub fn load(settings: &AssertionKeySettings) -> Result<Self, AssertionError> {
        let key_error = |problem: String| AssertionError::Key {
            kid: settings.kid.clone(),
            problem,
        };
        let pem = std::fs::read_to_string(&settings.file)
            .map_err(|e| key_error(format!("cannot read {}: {e}", settings.file.display())))?;
        Self::from_pem(&settings.kid, settings.state, &pem).map_err(key_error)
    }

    /// A key from its PEM text.
    pub fn from_pem(kid: &str, state: KeyState, pem: &str) -> Result<Self, String> {
        if let Ok(ec) =
            p256::SecretKey::from_pkcs8_pem(pem).or_else(|_| p256::SecretKey::from_sec1_pem(pem))
        {
            return Ok(Self::ec(kid, state, &ec));
        }
        if let Ok(rsa) = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
        {
            return Self::rsa(kid, state, &rsa);
        }
        Err("not a P-256 (ES256) or RSA (RS256) private key in PEM form".into())
    }

    fn ec(kid: &str, state: KeyState, key: &p256::SecretKey) -> Self {
        let der = key.to_pkcs8_der().expect("PKCS#8 encoding of a valid key");
        let point = key.public_key().to_encoded_point(false);
        let b64 = |bytes: Option<&[u8]>| bytes.map(|b| URL_SAFE_NO_PAD.encode(b));
        let public = PublicJwk {
            x: b64(point.x().map(|x| &x[..])),
            y: b64(point.y().map(|y| &y[..])),
            crv: Some("P-256".into()),
            ..PublicJwk::bare("EC", KeyAlgorithm::Es256, kid)
        };
        Self {
            kid: kid.to_owned(),
            state,
            algorithm: KeyAlgorithm::Es256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            public,
        }
    }

    fn rsa(kid: &str, state: KeyState, key: &rsa::RsaPrivateKey) -> Result<Self, String> {
        if key.size() * 8 < RSA_BITS {
            return Err(format!("RSA keys must have at least {RSA_BITS} bits"));
        }
        let der = key.to_pkcs1_der().map_err(|e| e.to_string())?;
        let public = PublicJwk {
            n: Some(URL_SAFE_NO_PAD.encode(key.n().to_bytes_be())),
            e: Some(URL_SAFE_NO_PAD.encode(key.e().to_bytes_be())),
            ..PublicJwk::bare("RSA", KeyAlgorithm::Rs256, kid)
        };
        Ok(Self {
            kid: kid.to_owned(),
            state,
            algorithm: KeyAlgorithm::Rs256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            public,
        })
    }

    /// The public half, in Google's uploaded-key form.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// Signs `claims` with this key, naming it in the header.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, AssertionError> {
        let mut header = jsonwebtoken::Header::new(self.algorithm.jose());
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| AssertionError::Signing(e.to_string()))
    }
}

impl PublicJwk {
    fn bare(kty: &str, alg: KeyAlgorithm, kid: &str) -> Self {
        Self {
            kty: kty.into(),
            alg: alg.as_str().into(),
            use_: "sig".into(),
            kid: kid.into(),
            n: None,
            e: None,
            x: None,
            y: None,
            crv: None,
        }
    }
}

/// A new private key in PKCS#8 PEM.
pub fn generate_pem(algorithm: KeyAlgorithm) -> Result<String, String> {
    let mut rng = rsa::rand_core::OsRng;
    let pem = match algorithm {
        KeyAlgorithm::Es256 => p256::SecretKey::random(&mut rng).to_pkcs8_pem(LineEnding::LF),
        KeyAlgorithm::Rs256 => rsa::RsaPrivateKey::new(&mut rng, RSA_BITS)
            .map_err(|e| e.to_string())?
            .to_pkcs8_pem(LineEnding::LF),
    };
    pem.map(|p| p.to_string()).map_err(|e| e.to_string())
}

/// Writes a new key to `path`, readable by its owner only; an existing file is never
/// overwritten (it may be a key Google still trusts).
pub fn generate_file(algorithm: KeyAlgorithm, path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let pem = generate_pem(algorithm)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "{} already exists; refusing to overwrite a key (choose another --out)",
                path.display()
            ),
            _ => format!("cannot create {}: {e}", path.display()),
        })?;
    file.write_all(pem.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ec_key_publishes_only_googles_fields() {
        let pem = generate_pem(KeyAlgorithm::Es256).unwrap();
        let key = SigningKey::from_pem("k1", KeyState::Active, &pem).unwrap();
        let json = serde_json::to_value(key.public_jwk()).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        fields.sort();
        assert_eq!(fields, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(json["crv"], "P-256");
        assert_eq!(json["alg"], "ES256");
    }

    #[test]
    fn a_short_rsa_key_is_refused() {
        let small = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let pem = small.to_pkcs1_pem(LineEnding::LF).unwrap();
        let err = SigningKey::from_pem("k", KeyState::Active, &pem).unwrap_err();
        assert!(err.contains("2048"), "{err}");
    }

    #[test]
    fn something_else_than_a_key_is_refused() {
        assert!(SigningKey::from_pem("k", KeyState::Active, "hello").is_err());
    }
}
