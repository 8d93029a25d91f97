//! Never send Google what it refuses: checked before the call, answered as Google would.

use crate::helpers::*;
use serde_json::json;
use sts_bridge::devstack::{MintRequest, DEV_TARGET};

#[tokio::test]
async fn a_token_google_would_refuse_is_refused_here_without_an_upstream_call() {
    let app = spawn_app().await;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = app.issuer.claims(&MintRequest {
        sub: "auth0|alice".into(),
        ..Default::default()
    });
    let mut no_iat = claims.clone();
    no_iat.as_object_mut().unwrap().remove("iat");
    let mut long_lived = claims.clone();
    long_lived["iat"] = json!(now);
    long_lived["exp"] = json!(now + 49 * 3600);
    for (claims, says) in [(no_iat, "`iat`"), (long_lived, "48 h")] {
        let token = app.issuer.sign(&app.issuer.current_kid(), &claims);
        let text = assert_error(app.exchange(&token).await, 400, "invalid_grant").await;
        assert!(text.contains(says), "{text}");
    }
    assert_eq!(app.google.call_count(), 0);
    // Exactly 48 hours is still accepted.
    let mut limit = claims;
    limit["iat"] = json!(now);
    limit["exp"] = json!(now + 48 * 3600);
    let token = app.issuer.sign(&app.issuer.current_kid(), &limit);
    assert_eq!(app.exchange(&token).await.status(), 200);
    assert_eq!(app.google.call_count(), 1);
}

#[tokio::test]
async fn options_still_encoded_after_two_decodes_is_invalid_request() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    for options in [
        // Encoded three times over (and once more by the form).
        "%25257B%252522userProject%252522%25253A%252522dev-project%252522%25257D",
        r#"{"userProject":"dev%2Dproject"}"#,
    ] {
        let response = app
            .post_form(&[
                ("grant_type", GRANT),
                ("audience", DEV_TARGET),
                ("subject_token", &token),
                ("subject_token_type", JWT),
                ("options", options),
            ])
            .await;
        assert_error(response, 400, "invalid_request").await;
    }
    assert_eq!(app.google.call_count(), 0);
}
