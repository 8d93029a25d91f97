//! What Google STS refuses in a subject token, checked before the token is sent: Google
//! would answer `invalid_grant` and spend a call of the project's quota on it.

use super::GoogleError;
use crate::config::FORWARDED_ALGORITHMS;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

/// Google refuses a token whose `exp` is more than this after its `iat`.
pub const MAX_LIFETIME_SECS: u64 = 48 * 3600;

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Times {
    iat: Option<f64>,
    exp: Option<f64>,
}

/// `Ok` when Google would accept the (already validated) `token` as a subject token.
pub fn check(token: &str) -> Result<(), GoogleError> {
    let refuse = |why: String| Err(GoogleError::WouldRefuse(why));
    let mut parts = token.split('.');
    let (Some(header), Some(claims)) = (parts.next(), parts.next()) else {
        return refuse("the subject token is not a JWT".into());
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok();
    let header: Option<Header> = decode(header).and_then(|b| serde_json::from_slice(&b).ok());
    let times: Option<Times> = decode(claims).and_then(|b| serde_json::from_slice(&b).ok());
    let (Some(header), Some(times)) = (header, times) else {
        return refuse("the subject token is not a JWT".into());
    };
    if !FORWARDED_ALGORITHMS.contains(&header.alg.as_str()) {
        return refuse(format!(
            "Google accepts only {} subject tokens, not {}",
            FORWARDED_ALGORITHMS.join(" or "),
            header.alg.chars().take(16).collect::<String>()
        ));
    }
    let Some(iat) = times.iat else {
        return refuse("the subject token has no `iat` claim, which Google requires".into());
    };
    if let Some(exp) = times.exp {
        if exp - iat > MAX_LIFETIME_SECS as f64 {
            return refuse(format!(
                "the subject token is valid for {} h (`exp` - `iat`); Google accepts at most 48 h",
                ((exp - iat) / 3600.0) as u64
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: serde_json::Value, claims: serde_json::Value) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn google_acceptable_tokens_pass_and_others_name_the_reason() {
        use serde_json::json;
        let rs = json!({"alg": "RS256"});
        assert!(check(&token(rs.clone(), json!({"iat": 0, "exp": 3600}))).is_ok());
        assert!(check(&token(
            json!({"alg": "ES256"}),
            json!({"iat": 0, "exp": 48 * 3600})
        ))
        .is_ok());
        let cases = [
            (
                json!({"alg": "PS256"}),
                json!({"iat": 0, "exp": 60}),
                "PS256",
            ),
            (rs.clone(), json!({"exp": 60}), "iat"),
            (rs, json!({"iat": 0, "exp": 48 * 3600 + 1}), "48 h"),
        ];
        for (header, claims, says) in cases {
            let Err(GoogleError::WouldRefuse(why)) = check(&token(header, claims)) else {
                panic!("accepted");
            };
            assert!(why.contains(says), "{why}");
        }
    }
}
