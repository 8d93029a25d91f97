use crate::helpers::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sts_bridge::devstack::MintRequest;

fn alice_claims(app: &TestApp) -> Value {
    app.issuer.claims(&MintRequest {
        sub: "auth0|alice".into(),
        ..Default::default()
    })
}

/// Refused with `invalid_grant` naming `expected`; nothing sent upstream, nothing cached.
async fn assert_refused(app: &TestApp, token: &str, expected: &str) {
    let text = assert_error(app.exchange(token).await, 400, "invalid_grant").await;
    assert!(
        text.contains(expected),
        "description {text:?} lacks {expected:?}"
    );
    assert!(!text.contains(token), "the token was echoed");
    assert_eq!(app.google.call_count(), 0, "a refused token went upstream");
    // Nothing was cached for alice: a valid token now makes the first upstream call.
    let (status, _) = status_json(app.exchange(&app.token_for("auth0|alice")).await).await;
    assert_eq!(status, 200);
    assert_eq!(app.google.call_count(), 1);
}

fn signed(app: &TestApp, claims: &Value) -> String {
    app.issuer.sign(&app.issuer.current_kid(), claims)
}

#[tokio::test]
async fn expired_token_is_refused_with_invalid_grant() {
    let app = spawn_app().await;
    let mut claims = alice_claims(&app);
    let now = jsonwebtoken::get_current_timestamp();
    claims["iat"] = json!(now - 7200);
    claims["exp"] = json!(now - 120);
    assert_refused(&app, &signed(&app, &claims), "expired").await;
}

#[tokio::test]
async fn not_yet_valid_token_is_refused_with_invalid_grant() {
    let app = spawn_app().await;
    let mut claims = alice_claims(&app);
    claims["nbf"] = json!(jsonwebtoken::get_current_timestamp() + 600);
    assert_refused(&app, &signed(&app, &claims), "not valid yet").await;
}

#[tokio::test]
async fn token_issued_in_the_future_is_refused() {
    let app = spawn_app().await;
    let mut claims = alice_claims(&app);
    claims["iat"] = json!(jsonwebtoken::get_current_timestamp() + 600);
    assert_refused(&app, &signed(&app, &claims), "in the future").await;
}

#[tokio::test]
async fn wrong_issuer_is_refused_without_naming_the_trusted_issuers() {
    let app = spawn_app().await;
    let mut claims = alice_claims(&app);
    claims["iss"] = json!("https://evil.example/");
    let token = signed(&app, &claims);
    assert_refused(
        &app,
        &token,
        "token issuer https://evil.example/ is not trusted",
    )
    .await;
    let text = assert_error(app.exchange(&token).await, 400, "invalid_grant").await;
    assert!(
        !text.contains(&app.issuer.issuer()) && !text.contains("127.0.0.1"),
        "an unauthenticated caller learns a trusted issuer: {text}"
    );
}

#[tokio::test]
async fn issuer_without_trailing_slash_is_refused_with_a_hint() {
    let app = spawn_app().await;
    let mut claims = alice_claims(&app);
    let issuer = app.issuer.issuer();
    claims["iss"] = json!(issuer.trim_end_matches('/'));
    assert_refused(
        &app,
        &signed(&app, &claims),
        "is not trusted; a trusted issuer differs from it by a trailing slash only",
    )
    .await;
}

#[tokio::test]
async fn wrong_audience_is_refused_naming_expected_and_got() {
    let app = spawn_app().await;
    let mut claims = alice_claims(&app);
    claims["aud"] = json!("https://a.example/api");
    assert_refused(
        &app,
        &signed(&app, &claims),
        "token audience https://a.example/api does not match the expected https://sts-bridge.dev/api",
    )
    .await;
}

#[tokio::test]
async fn audience_as_a_plain_string_is_accepted() {
    let app = spawn_app().await;
    let mut claims = alice_claims(&app);
    claims["aud"] = json!("https://sts-bridge.dev/api");
    let (status, body) = status_json(app.exchange(&signed(&app, &claims)).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let app = spawn_app().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(alice_claims(&app).to_string());
    let token = format!("{header}.{payload}.");
    assert_refused(&app, &token, "signing algorithm none is not accepted").await;
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let app = spawn_app().await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(app.issuer.current_kid());
    let key = EncodingKey::from_secret(app.issuer.public_key_pem().as_bytes());
    let token = jsonwebtoken::encode(&header, &alice_claims(&app), &key).unwrap();
    assert_refused(&app, &token, "signing algorithm HS256 is not accepted").await;
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let app = spawn_app().await;
    let kid = app.issuer.add_key(false);
    let token = app.issuer.sign(&kid, &alice_claims(&app));
    assert_refused(&app, &token, "does not publish").await;
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let app = spawn_app().await;
    let token = signed(&app, &alice_claims(&app));
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = alice_claims(&app);
    claims["sub"] = json!("auth0|mallory");
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    assert_refused(&app, &parts.join("."), "signature does not verify").await;
}

#[tokio::test]
async fn garbage_is_refused_as_malformed() {
    let app = spawn_app().await;
    assert_refused(&app, "not-a-jwt", "not a JWT").await;
}

#[tokio::test]
async fn token_with_trailing_newline_is_accepted() {
    let app = spawn_app().await;
    let token = format!("{}\n", app.token_for("auth0|alice"));
    let (status, body) = status_json(app.exchange(&token).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn es256_tokens_are_accepted_when_the_issuer_allows_es256() {
    let app = spawn_app_with(|s| {
        s.issuers[0].algorithms = vec!["RS256".into(), "ES256".into()];
        s.issuers[0].jwks_min_refetch_secs = 1;
    })
    .await;
    let kid = app.issuer.add_ec_key(true);
    let token = app.issuer.sign(&kid, &alice_claims(&app));
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        Algorithm::ES256
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let (status, body) = status_json(app.exchange(&token).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn es256_tokens_are_refused_when_only_rs256_is_configured() {
    let app = spawn_app().await;
    // The algorithm is refused before any key lookup, published or not.
    let kid = app.issuer.add_ec_key(false);
    let token = app.issuer.sign(&kid, &alice_claims(&app));
    assert_refused(
        &app,
        &token,
        "signing algorithm ES256 is not accepted; accepted: RS256",
    )
    .await;
}

#[tokio::test]
async fn an_issuer_requiring_at_jwt_refuses_id_tokens_and_tokens_without_that_typ() {
    let app = spawn_app_with(|s| s.issuers[0].require_at_jwt = true).await;
    let claims = alice_claims(&app);
    let with_typ = |typ: Option<&str>| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(app.issuer.current_kid());
        header.typ = typ.map(str::to_owned);
        app.issuer.sign_with_header(&header, &claims)
    };
    for typ in [Some("JWT"), None] {
        let text = assert_error(app.exchange(&with_typ(typ)).await, 400, "invalid_grant").await;
        assert!(text.contains("at+jwt"), "{typ:?}: {text}");
    }
    assert_eq!(app.google.call_count(), 0);
    for typ in ["at+jwt", "application/at+jwt"] {
        let (status, body) = status_json(app.exchange(&with_typ(Some(typ))).await).await;
        assert_eq!(status, 200, "{typ}: {body}");
    }
}

#[tokio::test]
async fn without_require_at_jwt_a_token_typed_jwt_is_accepted() {
    let app = spawn_app().await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(app.issuer.current_kid());
    header.typ = Some("JWT".into());
    let token = app.issuer.sign_with_header(&header, &alice_claims(&app));
    let (status, body) = status_json(app.exchange(&token).await).await;
    assert_eq!(status, 200, "{body}");
}
