//! `firebase` targets: a Firebase custom token for the caller, signed through IAM
//! Credentials `signJwt` with the service's own identity or with a configured key file,
//! verified by Python's google-auth the way Firebase Authentication checks it.

use crate::helpers::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use sts_bridge::broker::FIREBASE_AUDIENCE;
use sts_bridge::config::{
    FirebaseSettings, IdentityAttribute, PolicySettings, Settings, TargetKind, TargetSettings,
};
use sts_bridge::devstack::{GoogleStandIn, MintRequest, DEV_CLIENT};

const TARGET: &str = "firestore";
const BRIDGE_SA: &str = "sts-bridge@dev-project.iam.gserviceaccount.com";
const SIGNER_SA: &str = "firebase-signer@dev-project.iam.gserviceaccount.com";

fn target(key_file: Option<PathBuf>) -> TargetSettings {
    TargetSettings {
        name: TARGET.into(),
        kind: TargetKind::Firebase,
        policy: PolicySettings {
            clients: vec![DEV_CLIENT.into()],
            ..PolicySettings::default()
        },
        firebase: Some(FirebaseSettings {
            service_account: SIGNER_SA.into(),
            claims: [
                ("permissions".to_owned(), IdentityAttribute::Permissions),
                ("roles".to_owned(), IdentityAttribute::Roles),
            ]
            .into(),
            lifetime_secs: 3600,
            key_file,
        }),
        ..TargetSettings::default()
    }
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
}

/// The bridge's own identity from a key file, allowed to sign as the signer account.
async fn spawn(dir: &Path, tweak: impl FnOnce(&mut Settings, &GoogleStandIn)) -> TestApp {
    let dir = dir.to_owned();
    spawn_app_with_google(move |s, google| {
        let own = dir.join("own-key.json");
        write_json(&own, &google.service_account_key_file(BRIDGE_SA));
        google.grant_token_creator(SIGNER_SA, BRIDGE_SA);
        s.google.credentials_file = Some(own);
        s.targets.push(target(None));
        tweak(s, google);
    })
    .await
}

fn token_for(app: &TestApp, sub: &str) -> String {
    app.issuer.mint(&MintRequest {
        sub: sub.into(),
        permissions: vec!["read:reports".into(), "write:notes".into()],
        roles: vec!["analyst".into()],
        ..Default::default()
    })
}

async fn ask(app: &TestApp, token: &str, requested: &str) -> reqwest::Response {
    app.post_form(&[
        ("grant_type", GRANT),
        ("audience", TARGET),
        ("requested_token_type", requested),
        ("subject_token", token),
        ("subject_token_type", JWT),
    ])
    .await
}

/// Runs the verifier on `token` against the signer's key; (success, stdout, stderr).
fn run_verifier(
    app: &TestApp,
    dir: &Path,
    python: &Path,
    token: &str,
    uid: &str,
) -> (bool, String, String) {
    let (kid, public_key_pem) = app.google.signing_key(SIGNER_SA);
    let expectations = dir.join("expect.json");
    write_json(
        &expectations,
        &json!({
            "token": token,
            "kid": kid,
            "public_key_pem": public_key_pem,
            "service_account": SIGNER_SA,
            "uid": uid,
            "claims": {"permissions": ["read:reports", "write:notes"], "roles": ["analyst"]},
        }),
    );
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/verify_firebase_token.py");
    let output = Command::new(python)
        .arg(script)
        .arg(&expectations)
        .output()
        .expect("python runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs google-auth's verification; `None` when Python is not set up outside CI. A token
/// whose payload was altered after signing must fail the same check.
fn verify_with_google_auth(app: &TestApp, dir: &Path, token: &str, uid: &str) -> Option<Value> {
    let python = crate::python::python()?;
    let (ok, stdout, stderr) = run_verifier(app, dir, &python, token, uid);
    assert!(ok, "google-auth refused the token: {stderr}");
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_payload = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
        payload["claims"]["permissions"] = json!(["read:reports", "write:notes", "admin"]);
        engine.encode(payload.to_string())
    };
    parts[1] = &forged_payload;
    let (forged_ok, _, forged_err) = run_verifier(app, dir, &python, &parts.join("."), uid);
    assert!(!forged_ok, "a forged token passed");
    assert!(forged_err.contains("signature"), "{forged_err}");
    Some(serde_json::from_str(&stdout).expect("JSON line"))
}

#[tokio::test]
async fn google_auth_verifies_the_custom_token_signed_through_sign_jwt() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), |_, _| {}).await;

    let response = ask(&app, &token_for(&app, "auth0|alice"), JWT).await;

    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], JWT);
    assert_eq!(body["token_type"], "N_A");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((3500..=3600).contains(&expires_in), "{expires_in}");
    let calls = app.google.iam_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "signJwt");
    assert_eq!(calls[0].service_account, SIGNER_SA);
    let custom = body["access_token"].as_str().unwrap();
    if let Some(payload) = verify_with_google_auth(&app, dir.path(), custom, "auth0|alice") {
        assert_eq!(payload["aud"], FIREBASE_AUDIENCE);
    }
}

#[tokio::test]
async fn a_configured_key_file_signs_without_iam_credentials_and_hashes_a_long_subject() {
    let dir = tempfile::tempdir().unwrap();
    let signer_key = dir.path().join("signer-key.json");
    let key = signer_key.clone();
    let app = spawn(dir.path(), move |s, google| {
        write_json(&key, &google.service_account_key_file(SIGNER_SA));
        s.targets[1] = target(Some(key));
    })
    .await;
    let long_subject = format!("oidc|{}", "a".repeat(140));

    let (status, body) = status_json(ask(&app, &token_for(&app, &long_subject), JWT).await).await;

    assert_eq!(status, 200, "{body}");
    assert!(app.google.iam_calls().is_empty());
    let uid = sts_bridge::broker::uid_for(&long_subject);
    assert!(uid.len() <= 128 && uid.starts_with("sha256:"), "{uid}");
    let custom = body["access_token"].as_str().unwrap();
    verify_with_google_auth(&app, dir.path(), custom, &uid);
    drop(signer_key);
}

#[tokio::test]
async fn every_custom_token_is_recorded_with_the_person_and_the_signing_account() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), |_, _| {}).await;
    let token = token_for(&app, "auth0|alice");

    assert_eq!(ask(&app, &token, JWT).await.status(), 200);
    assert_eq!(ask(&app, &token, JWT).await.status(), 200);

    let records = app.records().await;
    let rows: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.subject.as_str(),
                r.service_account.as_deref(),
                r.source.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("auth0|alice", Some(SIGNER_SA), Some("cache")),
            ("auth0|alice", Some(SIGNER_SA), Some("signing")),
        ]
    );
    assert_eq!(app.google.iam_calls().len(), 1);
}

#[tokio::test]
async fn a_custom_token_never_introspects_as_active_even_when_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), |_, _| {}).await;
    let token = token_for(&app, "auth0|alice");
    let mut custom_tokens = Vec::new();
    for _ in 0..2 {
        let response = ask(&app, &token, JWT).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        custom_tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        custom_tokens[0], custom_tokens[1],
        "the second came from the cache"
    );

    let answer: Value = app
        .http
        .post(format!("{}/v1/introspect", app.address))
        .form(&[("token", custom_tokens[0].as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"active": false}));
}

#[tokio::test]
async fn a_firebase_target_refuses_to_make_an_access_token_and_others_a_jwt() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), |_, _| {}).await;
    let token = token_for(&app, "auth0|alice");

    let description = assert_error(
        ask(&app, &token, ACCESS_TOKEN).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(description.contains(JWT), "{description}");
    let workforce = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", sts_bridge::devstack::DEV_TARGET),
            ("requested_token_type", JWT),
            ("subject_token", &token),
            ("subject_token_type", JWT),
        ])
        .await;
    let description = assert_error(workforce, 400, "invalid_request").await;
    assert!(description.contains(ACCESS_TOKEN), "{description}");
    assert!(app.google.iam_calls().is_empty());
    assert_eq!(app.google.call_count(), 0);
}

#[tokio::test]
async fn claims_over_firebases_limit_are_refused_and_nothing_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), |_, _| {}).await;
    let token = app.issuer.mint(&MintRequest {
        sub: "auth0|hoarder".into(),
        permissions: (0..80).map(|i| format!("read:collection-{i:04}")).collect(),
        ..Default::default()
    });

    let description = assert_error(ask(&app, &token, JWT).await, 400, "invalid_request").await;

    assert!(description.contains("1000"), "{description}");
    assert!(app.google.iam_calls().is_empty());
    assert_eq!(app.records().await[0].outcome, "refused");
}

/// Postgres accepts the `signing` source and the service account column.
#[tokio::test]
async fn a_key_file_signed_custom_token_is_recorded_in_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signer-key.json");
    let signer = key.clone();
    let Some(app) = spawn_app_on(Backend::Postgres, move |s| {
        s.targets.push(target(Some(signer)));
    })
    .await
    else {
        return;
    };
    write_json(&key, &app.google.service_account_key_file(SIGNER_SA));

    let response = ask(&app, &token_for(&app, "auth0|alice"), JWT).await;

    assert_eq!(response.status(), 200);
    let record = &app.records().await[0];
    assert_eq!(record.source.as_deref(), Some("signing"));
    assert_eq!(record.service_account.as_deref(), Some(SIGNER_SA));
    assert_eq!(record.subject, "auth0|alice");
}

#[tokio::test]
async fn the_targets_policy_decides_before_anything_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), |s, _| {
        s.targets[1].policy.any_permissions = vec!["admin:notes".into()];
    })
    .await;

    let description = assert_error(
        ask(&app, &token_for(&app, "auth0|alice"), JWT).await,
        403,
        "access_denied",
    )
    .await;

    assert!(description.contains("admin:notes"), "{description}");
    assert!(app.google.iam_calls().is_empty());
    let record = &app.records().await[0];
    assert_eq!(record.outcome, "refused");
    assert_eq!(record.service_account.as_deref(), Some(SIGNER_SA));
}
