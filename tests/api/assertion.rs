//! Assertion mode: the bridge signs its own JWT for the person, and a provider that trusts
//! only the bridge refuses the caller's Auth0 token.

use crate::helpers::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use sts_bridge::assertion::{generate_file, generate_pem, KeyAlgorithm, SigningKey};
use sts_bridge::config::{AssertionKeySettings, AssertionSettings, KeyState};
use sts_bridge::devstack::{
    self, MintRequest, CLOUD_PLATFORM, DEV_BRIDGE_CLIENT_ID, DEV_BRIDGE_KID, DEV_PROVIDER,
    DEV_USER_PROJECT,
};
use sts_bridge::secret::fingerprint;

/// An app whose dev target is in assertion mode, with a fresh key in `dir`.
async fn spawn_bridge_app(dir: &Path) -> TestApp {
    let key = dir.join("bridge.pem");
    spawn_app_with_google(move |s, google| {
        devstack::use_assertion_mode(s, google, &key).expect("assertion mode");
    })
    .await
}

fn person(groups: &[&str], email: &str) -> MintRequest {
    MintRequest {
        sub: "auth0|alice".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        extra: [
            ("email".to_owned(), email.into()),
            ("name".to_owned(), "Alice Example".into()),
        ]
        .into_iter()
        .collect(),
        permissions: vec!["read:bigquery".into()],
        roles: vec!["analyst".into()],
        ..Default::default()
    }
}

async fn access_token(app: &TestApp, subject_token: &str) -> String {
    let (status, body) = status_json(app.exchange(subject_token).await).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// The subject token of the last request the stand-in received.
fn last_subject_token(app: &TestApp) -> String {
    let calls = app.google.calls();
    let last = calls.last().expect("a call to Google STS");
    last.field("subject_token").unwrap().to_owned()
}

/// Posts `subject_token` straight to the stand-in, as someone skipping the bridge would.
async fn post_to_google_directly(app: &TestApp, subject_token: &str) -> reqwest::Response {
    let options = format!(r#"{{"userProject":"{DEV_USER_PROJECT}"}}"#);
    app.http
        .post(app.google.token_url())
        .form(&[
            ("grant_type", GRANT),
            ("requested_token_type", ACCESS_TOKEN),
            ("subject_token_type", JWT),
            ("audience", DEV_PROVIDER),
            ("scope", CLOUD_PLATFORM),
            ("options", &options),
            ("subject_token", subject_token),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_raw_auth0_token_is_refused_by_the_provider_while_the_bridge_exchange_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_bridge_app(dir.path()).await;
    let token = app.token_for("auth0|alice");

    let text = assert_error(
        post_to_google_directly(&app, &token).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(
        text.contains("does not match the expected issuer"),
        "{text}"
    );

    let google_token = access_token(&app, &token).await;
    let issued = app
        .google
        .issued(&google_token)
        .expect("issued by the stand-in");
    assert_eq!(issued.subject, "auth0|alice");
    assert_eq!(issued.audience, DEV_PROVIDER);
    assert_ne!(
        last_subject_token(&app),
        token,
        "the Auth0 token went to Google"
    );
}

#[tokio::test]
async fn the_assertion_google_receives_has_exactly_the_expected_claims() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_bridge_app(dir.path()).await;
    let token = app
        .issuer
        .mint(&person(&["eng", "data"], "alice@example.com"));

    let google_token = access_token(&app, &token).await;
    let assertion = last_subject_token(&app);

    // Signed with the published key, named in the header.
    let header = jsonwebtoken::decode_header(&assertion).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(DEV_BRIDGE_KID));
    let jwks: JwkSet = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let key = DecodingKey::from_jwk(jwks.find(DEV_BRIDGE_KID).unwrap()).unwrap();
    let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[DEV_BRIDGE_CLIENT_ID]);
    validation.set_issuer(&[app.address.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(&assertion, &key, &validation)
        .unwrap()
        .claims;

    let names: BTreeSet<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["iss", "sub", "aud", "iat", "exp", "jti", "groups", "email", "name"]),
        "{claims}"
    );
    assert_eq!(claims["iss"], app.address.as_str());
    assert_eq!(claims["sub"], "auth0|alice");
    assert_eq!(claims["aud"], DEV_BRIDGE_CLIENT_ID);
    assert_eq!(claims["groups"], serde_json::json!(["data", "eng"]));
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["name"], "Alice Example");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 300, "the configured lifetime");
    let now = jsonwebtoken::get_current_timestamp();
    assert!(iat <= now && iat + 10 >= now, "iat {iat} now {now}");
    uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).expect("jti is a UUID");

    // The record names the person's Google principal and fingerprints Google's token only.
    let rows = app.records().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].google_principal.as_deref(),
        Some("principal://iam.googleapis.com/locations/global/workforcePools/dev-pool/subject/auth0|alice")
    );
    assert_eq!(
        rows[0].token_sha256.as_deref(),
        Some(fingerprint(google_token.as_bytes()).as_str())
    );
    let stored = serde_json::to_string(&rows).unwrap();
    assert!(!stored.contains(&assertion) && !stored.contains(&fingerprint(assertion.as_bytes())));
}

#[tokio::test]
async fn each_exchange_gets_a_fresh_assertion_with_its_own_jti() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_bridge_app(dir.path()).await;
    access_token(&app, &app.token_for("auth0|alice")).await;
    let first = last_subject_token(&app);
    access_token(&app, &app.token_for("auth0|bob")).await;
    let second = last_subject_token(&app);
    let jti = |t: &str| {
        jsonwebtoken::dangerous::insecure_decode_claims::<Value>(t).unwrap()["jti"].clone()
    };
    assert_ne!(jti(&first), jti(&second));
}

#[tokio::test]
async fn the_cache_is_shared_across_claims_google_never_sees_and_split_by_passed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_bridge_app(dir.path()).await;
    let base = person(&["eng"], "alice@example.com");
    let first = access_token(&app, &app.issuer.mint(&base)).await;

    // Permissions and roles are not passed to Google: same credential, no new call.
    let mut other_unpassed = base.clone();
    other_unpassed.permissions = vec!["write:everything".into()];
    other_unpassed.roles = vec!["admin".into()];
    assert_eq!(
        access_token(&app, &app.issuer.mint(&other_unpassed)).await,
        first
    );
    assert_eq!(app.google.call_count(), 1);

    // Each passed attribute, changed alone, gets a credential of its own.
    let mut other_group = base.clone();
    other_group.groups = vec!["eng".into(), "finance".into()];
    let mut other_email = base.clone();
    other_email.extra["email"] = "alice@elsewhere.example".into();
    let mut other_name = base.clone();
    other_name.extra["name"] = "Alice Other".into();
    let mut seen = vec![first];
    for (i, changed) in [other_group, other_email, other_name].iter().enumerate() {
        let token = access_token(&app, &app.issuer.mint(changed)).await;
        assert!(!seen.contains(&token), "change {i} reused a credential");
        assert_eq!(app.google.call_count(), i + 2);
        seen.push(token);
    }
}

fn key_file(dir: &Path, name: &str, alg: KeyAlgorithm) -> PathBuf {
    let path = dir.join(name);
    generate_file(alg, &path).unwrap();
    path
}

fn bridge(keys: &[(&str, &Path, KeyState)]) -> AssertionSettings {
    AssertionSettings {
        issuer: "https://sts-bridge.example.test".into(),
        keys: keys
            .iter()
            .map(|(kid, file, state)| AssertionKeySettings {
                kid: kid.to_string(),
                file: file.to_path_buf(),
                state: *state,
            })
            .collect(),
    }
}

/// One rotation step: upload the JWKS of `assertion` to the provider (as `sts-bridge jwks`
/// prints it), then start a replica with that configuration next to the running ones.
async fn roll_out(first: &TestApp, assertion: AssertionSettings) -> TestApp {
    let trust = devstack::bridge_trust(&assertion, DEV_BRIDGE_CLIENT_ID).unwrap();
    first.google.upload_jwks(DEV_PROVIDER, trust.jwks);
    spawn_replica(first, move |s| devstack::assertion_target(s, assertion)).await
}

/// The key ids `app` publishes at its JWKS route.
async fn published_kids(app: &TestApp) -> Vec<String> {
    let jwks: JwkSet = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    jwks.keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect()
}

/// Exchanges a token of a new person (so the cache cannot answer) and returns the kid
/// that signed the assertion Google received.
async fn fresh_exchange_kid(app: &TestApp, n: &mut u32) -> String {
    *n += 1;
    access_token(app, &app.token_for(&format!("auth0|person{n}"))).await;
    jsonwebtoken::decode_header(last_subject_token(app))
        .unwrap()
        .kid
        .unwrap()
}

#[tokio::test]
async fn key_rotation_next_then_active_then_retired_fails_no_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let old = key_file(dir.path(), "old.pem", KeyAlgorithm::Es256);
    let new = key_file(dir.path(), "new.pem", KeyAlgorithm::Rs256);
    let mut n = 0;

    // 1. One active key; the provider has it.
    let stage1 = bridge(&[("old", &old, KeyState::Active)]);
    let v1 = spawn_app_with_google(move |s, google| {
        let trust = devstack::bridge_trust(&stage1, DEV_BRIDGE_CLIENT_ID).unwrap();
        google.trust_bridge(DEV_PROVIDER, trust);
        devstack::assertion_target(s, stage1);
    })
    .await;
    assert_eq!(fresh_exchange_kid(&v1, &mut n).await, "old");

    // 2. The new key is published as next (and uploaded); the old one still signs.
    let next = bridge(&[
        ("old", &old, KeyState::Active),
        ("new", &new, KeyState::Next),
    ]);
    let v2 = roll_out(&v1, next).await;
    assert_eq!(published_kids(&v2).await, ["old", "new"]);
    assert_eq!(fresh_exchange_kid(&v2, &mut n).await, "old");
    assert_eq!(fresh_exchange_kid(&v1, &mut n).await, "old");

    // 3. The new key signs; the old one stays published while its assertions live, and
    // replicas still on the old configuration keep working during the roll-out.
    let active = bridge(&[
        ("old", &old, KeyState::Retiring),
        ("new", &new, KeyState::Active),
    ]);
    let v3 = roll_out(&v1, active).await;
    assert_eq!(published_kids(&v3).await, ["old", "new"]);
    assert_eq!(fresh_exchange_kid(&v3, &mut n).await, "new");
    assert_eq!(fresh_exchange_kid(&v2, &mut n).await, "old");
    assert_eq!(fresh_exchange_kid(&v1, &mut n).await, "old");

    // 4. Once every replica signs with the new key and the old assertions expired, the
    // old key is dropped from the provider and the bridge.
    let retired = bridge(&[("new", &new, KeyState::Active)]);
    let v4 = roll_out(&v1, retired).await;
    assert_eq!(published_kids(&v4).await, ["new"]);
    assert_eq!(fresh_exchange_kid(&v4, &mut n).await, "new");
    assert_eq!(fresh_exchange_kid(&v3, &mut n).await, "new");
    let google_calls = v1.google.call_count();
    assert_eq!(
        google_calls as u32, n,
        "every exchange reached Google and succeeded"
    );

    // The provider now refuses what the old key signs: dropping it was effective.
    let text = assert_error(
        v1.exchange(&v1.token_for("auth0|late")).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(text.contains("kid"), "{text}");
}

#[tokio::test]
async fn the_provider_refuses_assertions_google_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_bridge_app(dir.path()).await;
    let pem = std::fs::read_to_string(dir.path().join("bridge.pem")).unwrap();
    let key = SigningKey::from_pem(DEV_BRIDGE_KID, KeyState::Active, &pem).unwrap();
    let stranger = SigningKey::from_pem(
        DEV_BRIDGE_KID,
        KeyState::Active,
        &generate_pem(KeyAlgorithm::Es256).unwrap(),
    )
    .unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let good = serde_json::json!({
        "iss": app.address, "sub": "auth0|alice", "aud": DEV_BRIDGE_CLIENT_ID,
        "iat": now, "exp": now + 300, "jti": "1",
    });
    let with = |name: &str, value: Value| {
        let mut c = good.clone();
        c[name] = value;
        c
    };
    let without = |name: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(name);
        c
    };
    let cases = [
        (
            key.sign(&with("aud", "https://sts-bridge.dev/api".into()))
                .unwrap(),
            "audience",
        ),
        (
            key.sign(&with("iss", "https://elsewhere.example/".into()))
                .unwrap(),
            "issuer",
        ),
        (
            key.sign(&with("exp", (now + 48 * 3600 + 1).into()))
                .unwrap(),
            "48 hours",
        ),
        (key.sign(&without("iat")).unwrap(), "iat"),
        (key.sign(&without("sub")).unwrap(), "subject"),
        (key.sign(&with("exp", (now - 1).into())).unwrap(), "expired"),
        (stranger.sign(&good).unwrap(), "signature"),
    ];
    for (assertion, reason) in cases {
        let response = post_to_google_directly(&app, &assertion).await;
        let text = assert_error(response, 400, "invalid_grant").await;
        assert!(text.contains(reason), "expected {reason}: {text}");
    }
    let (status, body) =
        status_json(post_to_google_directly(&app, &key.sign(&good).unwrap()).await).await;
    assert_eq!(
        status, 200,
        "the same assertion, correct, is accepted: {body}"
    );
}

#[tokio::test]
async fn a_reload_cannot_put_a_target_in_assertion_mode_without_keys_loaded_at_start() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "bridge.pem", KeyAlgorithm::Es256);
    let path = dir.path().join("sts-bridge.toml");
    let text = format!(
        r#"
[[issuers]]
issuer = "{issuer}"
audiences = ["{audience}"]
[[targets]]
name = "{target}"
kind = "workforce"
provider = "{provider}"
user_project = "{project}"
allowed_scopes = ["{scope}"]
default_scopes = ["{scope}"]
mode = "assertion"
assertion = {{ client_id = "{client_id}" }}
policy = {{ clients = ["{client}"] }}
[assertion]
issuer = "https://sts-bridge.example.test"
keys = [{{ kid = "k1", file = "{key}", state = "active" }}]
[google]
sts_url = "{sts_url}"
"#,
        issuer = app.issuer.issuer(),
        audience = devstack::DEV_AUDIENCE,
        target = devstack::DEV_TARGET,
        provider = DEV_PROVIDER,
        project = DEV_USER_PROJECT,
        scope = CLOUD_PLATFORM,
        client_id = DEV_BRIDGE_CLIENT_ID,
        client = devstack::DEV_CLIENT,
        key = key.display(),
        sts_url = app.google.token_url(),
    );
    std::fs::write(&path, text).unwrap();

    let err = app.reloader.reload(&path).unwrap_err().to_string();
    assert!(
        err.contains("targets[0].mode") && err.contains("restart"),
        "{err}"
    );

    // Nothing changed: the target still passes the caller's token through.
    let token = app.token_for("auth0|alice");
    access_token(&app, &token).await;
    assert_eq!(last_subject_token(&app), token);
}

#[tokio::test]
async fn an_assertion_never_outlives_the_callers_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_bridge_app(dir.path()).await;
    let token = app.issuer.mint(&MintRequest {
        sub: "auth0|alice".into(),
        ttl_secs: Some(120),
        ..Default::default()
    });
    let token_exp =
        jsonwebtoken::dangerous::insecure_decode_claims::<Value>(&token).unwrap()["exp"].clone();

    access_token(&app, &token).await;
    let assertion = last_subject_token(&app);
    let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(&assertion).unwrap();
    assert_eq!(
        claims["exp"], token_exp,
        "the configured 300 s would outlive the token"
    );
}
