use crate::helpers::*;
use serde_json::json;
use sha2::Digest;
use sts_bridge::config::ClientSettings;
use sts_bridge::devstack::{DEV_PROVIDER, DEV_TARGET};

#[tokio::test]
async fn json_body_with_camel_case_keys_is_accepted() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    let response = app
        .post_json(&json!({
            "grantType": GRANT,
            "audience": DEV_PROVIDER,
            "requestedTokenType": ACCESS_TOKEN,
            "subjectToken": token,
            "subjectTokenType": JWT,
            "options": "{\"userProject\":\"dev-project\"}",
        }))
        .await;
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    assert!(app
        .google
        .issued(body["access_token"].as_str().unwrap())
        .is_some());
}

#[tokio::test]
async fn json_body_with_snake_case_keys_is_accepted() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    let response = app
        .post_json(&json!({
            "grant_type": GRANT,
            "audience": DEV_TARGET,
            "subject_token": token,
            "subject_token_type": JWT,
        }))
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn options_percent_encoded_twice_are_decoded() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    // What Python's google-auth sends: quote(json.dumps(...)), then form-encoded again.
    let options = "%7B%22userProject%22%3A%20%22dev-project%22%7D";
    let response = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", DEV_PROVIDER),
            ("requested_token_type", ACCESS_TOKEN),
            ("subject_token", &token),
            ("subject_token_type", JWT),
            ("options", options),
        ])
        .await;
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    let calls = app.google.calls();
    assert_eq!(
        calls[0].field("options"),
        Some(r#"{"userProject":"dev-project"}"#)
    );
}

#[tokio::test]
async fn a_user_project_other_than_the_targets_is_refused() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    let response = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", DEV_TARGET),
            ("subject_token", &token),
            ("subject_token_type", JWT),
            ("options", r#"{"userProject":"someone-elses"}"#),
        ])
        .await;
    let text = assert_error(response, 400, "invalid_request").await;
    assert!(
        text.contains("someone-elses") && text.contains("dev-project"),
        "{text}"
    );
    assert_eq!(app.google.call_count(), 0);
}

#[tokio::test]
async fn other_grant_types_are_unsupported() {
    let app = spawn_app().await;
    let response = app
        .post_form(&[
            ("grant_type", "client_credentials"),
            ("audience", DEV_TARGET),
        ])
        .await;
    let text = assert_error(response, 400, "unsupported_grant_type").await;
    assert!(text.contains("token-exchange"), "{text}");
}

#[tokio::test]
async fn missing_fields_are_named() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[
                ("grant_type", GRANT),
                ("audience", DEV_TARGET),
                ("subject_token_type", JWT),
            ],
            "subject_token is required",
        ),
        (
            &[
                ("grant_type", GRANT),
                ("audience", DEV_TARGET),
                ("subject_token", &token),
            ],
            "subject_token_type is required",
        ),
        (
            &[
                ("grant_type", GRANT),
                ("subject_token", &token),
                ("subject_token_type", JWT),
            ],
            "audience is required",
        ),
    ];
    for (fields, expected) in cases {
        let text = assert_error(app.post_form(fields).await, 400, "invalid_request").await;
        assert!(text.contains(expected), "{text}");
    }
}

#[tokio::test]
async fn repeated_parameters_are_refused() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/v1/token", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type={GRANT}&audience=bigquery&audience=other"
        ))
        .send()
        .await
        .unwrap();
    let text = assert_error(response, 400, "invalid_request").await;
    assert!(text.contains("audience"), "{text}");
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let app = spawn_app().await;
    let response = app
        .post_form(&[
            ("grant_type", GRANT),
            ("subject_token", &"a".repeat(70 * 1024)),
        ])
        .await;
    assert_error(response, 413, "invalid_request").await;
}

#[tokio::test]
async fn unsupported_content_type_is_refused() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/v1/token", app.address))
        .header("content-type", "text/plain")
        .body("grant_type=x")
        .send()
        .await
        .unwrap();
    assert_error(response, 415, "invalid_request").await;
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = app.get("/healthz").await;
    assert_eq!(response.headers()["x-request-id"].len(), 36);
}

fn client(id: &str, secret: &str) -> ClientSettings {
    let digest = sha2::Sha256::digest(secret.as_bytes());
    ClientSettings {
        id: id.into(),
        secret_sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        azp: vec![],
        targets: vec![],
    }
}

/// Exchanges alice's token, authenticating as `basic` when given.
async fn exchange_as(app: &TestApp, basic: Option<(&str, &str)>) -> reqwest::Response {
    let token = app.token_for("auth0|alice");
    let mut request = app.http.post(format!("{}/v1/token", app.address));
    if let Some((user, secret)) = basic {
        request = request.basic_auth(user, Some(secret));
    }
    request
        .form(&[
            ("grant_type", GRANT),
            ("audience", DEV_TARGET),
            ("subject_token", token.as_str()),
            ("subject_token_type", JWT),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn with_require_client_auth_a_caller_without_basic_credentials_is_refused() {
    let app = spawn_app_with(|s| {
        s.clients = vec![client("notebooks", "pw")];
        s.require_client_auth = true;
    })
    .await;
    let text = assert_error(exchange_as(&app, None).await, 401, "invalid_client").await;
    assert!(text.contains("requires HTTP Basic"), "{text}");
    assert_eq!(app.google.call_count(), 0);
    assert_eq!(
        exchange_as(&app, Some(("notebooks", "pw"))).await.status(),
        200
    );
}

#[tokio::test]
async fn a_client_limited_to_other_azp_values_or_targets_is_refused_and_both_ids_are_recorded() {
    let app = spawn_app_with(|s| {
        let mut proxy = client("proxy", "pw");
        proxy.azp = vec![sts_bridge::devstack::DEV_CLIENT.into()];
        proxy.targets = vec![DEV_TARGET.into()];
        let mut other = client("other", "pw");
        other.azp = vec!["another-app".into()];
        s.clients = vec![proxy, other];
    })
    .await;
    let (status, body) = status_json(exchange_as(&app, Some(("proxy", "pw"))).await).await;
    assert_eq!(status, 200, "{body}");
    let text = assert_error(
        exchange_as(&app, Some(("other", "pw"))).await,
        403,
        "unauthorized_client",
    )
    .await;
    assert!(
        text.contains("clients.azp") && text.contains("another-app"),
        "{text}"
    );

    let rows = app
        .broker
        .audit()
        .store
        .list_issuances(&sts_bridge::audit::IssuanceQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<(Option<&str>, Option<&str>, &str)> = rows
        .iter()
        .map(|r| (r.client_id.as_deref(), r.azp.as_deref(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![
            (Some("other"), Some("dev-client"), "refused"),
            (Some("proxy"), Some("dev-client"), "issued"),
        ]
    );
}

#[tokio::test]
async fn basic_client_authentication_is_checked_when_sent() {
    let app = spawn_app_with(|s| s.clients = vec![client("notebooks", "s3cr%t:x")]).await;
    let ok = exchange_as(&app, Some(("notebooks", "s3cr%t:x"))).await;
    assert_eq!(ok.status(), 200);

    let response = exchange_as(&app, Some(("notebooks", "wrong"))).await;
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    assert_error(response, 401, "invalid_client").await;
}

#[tokio::test]
async fn basic_authentication_without_configured_clients_is_refused() {
    let app = spawn_app().await;
    let response = exchange_as(&app, Some(("someone", "secret"))).await;
    let text = assert_error(response, 401, "invalid_client").await;
    assert!(text.contains("not configured"), "{text}");
    assert_eq!(app.google.call_count(), 0);
}

#[tokio::test]
async fn wrong_methods_get_405_with_allow_and_unknown_paths_a_json_404() {
    let app = spawn_app().await;
    let response = app.get("/v1/token").await;
    assert_eq!(response.headers()["allow"], "POST");
    assert_error(response, 405, "invalid_request").await;
    let response = app
        .http
        .post(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    let response = app.get("/v2/token").await;
    assert_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn control_characters_and_repeated_empty_parameters_are_refused() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    let response = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", "big\u{0}query"),
            ("subject_token", &token),
            ("subject_token_type", JWT),
        ])
        .await;
    let text = assert_error(response, 400, "invalid_request").await;
    assert!(
        text.contains("audience contains control characters"),
        "{text}"
    );
    let response = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", "bigquery"),
            ("subject_token", ""),
            ("subject_token", &token),
            ("subject_token_type", JWT),
        ])
        .await;
    assert_error(response, 400, "invalid_request").await;
    assert_eq!(app.google.call_count(), 0);
}

#[tokio::test]
async fn the_token_google_receives_has_no_surrounding_whitespace() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    let (status, _) = status_json(app.exchange(&format!("  {token}\n")).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        app.google.calls()[0].field("subject_token"),
        Some(token.as_str())
    );
}
