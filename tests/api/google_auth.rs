//! The real Python google-auth client, with an `external_account` credential file whose
//! `token_url` is sts-bridge, obtains the credential Google's stand-in issued.

use crate::helpers::*;
use crate::python::python;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use sts_bridge::devstack::{self, DEV_USER_PROJECT};

fn refresh(python: &PathBuf, credential_file: &std::path::Path) -> Result<Value, String> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/refresh_external_account.py");
    let output = Command::new(python)
        .arg(script)
        .arg(credential_file)
        // Keep the client on loopback whatever the environment says.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .output()
        .expect("python runs");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("JSON line"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test]
async fn python_google_auth_refreshes_an_external_account_credential_through_sts_bridge() {
    let Some(python) = python() else { return };
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("auth0.token");
    // Written like `echo "$TOKEN" > file`: with a trailing newline, which google-auth keeps.
    std::fs::write(&token_file, format!("{}\n", app.token_for("auth0|alice"))).unwrap();
    let credential_file = dir.path().join("external_account.json");
    let file = devstack::external_account_file(&app.address, &token_file, true);
    std::fs::write(&credential_file, file.to_string()).unwrap();

    let result = tokio::task::spawn_blocking(move || refresh(&python, &credential_file))
        .await
        .unwrap()
        .expect("google-auth refresh succeeds");

    let token = result["token"].as_str().expect("token");
    let issued = app
        .google
        .issued(token)
        .expect("the stand-in issued this token");
    assert_eq!(issued.subject, "auth0|alice");
    assert!(result["expiry"].is_string());
    // google-auth sent options percent-encoded twice; Google received the decoded project.
    let calls = app.google.calls();
    let options: Value = serde_json::from_str(calls[0].field("options").unwrap()).unwrap();
    assert_eq!(options["userProject"], DEV_USER_PROJECT);
}

#[tokio::test]
async fn python_google_auth_sees_our_error_description_when_refused() {
    let Some(python) = python() else { return };
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("auth0.token");
    let mut claims = app.issuer.claims(&sts_bridge::devstack::MintRequest {
        sub: "auth0|alice".into(),
        ..Default::default()
    });
    claims["aud"] = "https://other.example/api".into();
    std::fs::write(
        &token_file,
        app.issuer.sign(&app.issuer.current_kid(), &claims),
    )
    .unwrap();
    let credential_file = dir.path().join("external_account.json");
    let file = devstack::external_account_file(&app.address, &token_file, true);
    std::fs::write(&credential_file, file.to_string()).unwrap();

    let error = tokio::task::spawn_blocking(move || refresh(&python, &credential_file))
        .await
        .unwrap()
        .expect_err("refresh must fail");

    assert!(error.contains("invalid_grant"), "{error}");
    assert!(
        error.contains("does not match the expected https://sts-bridge.dev/api"),
        "{error}"
    );
    assert_eq!(app.google.call_count(), 0);
}
