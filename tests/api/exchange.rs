use crate::helpers::*;
use serde_json::json;
use std::collections::BTreeSet;
use sts_bridge::devstack::{BIGQUERY, CLOUD_PLATFORM, DEV_PROVIDER, DEV_TARGET};

#[tokio::test]
async fn valid_exchange_returns_googles_token_and_google_saw_the_documented_form() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");

    let response = app.exchange(&token).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let (_, body) = status_json(response).await;
    let access_token = body["access_token"].as_str().unwrap();
    let issued = app
        .google
        .issued(access_token)
        .expect("token came from Google");
    assert_eq!(issued.subject, "auth0|alice");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_u64().expect("integer expires_in");
    assert!((3500..=3599).contains(&expires_in), "{expires_in}");
    // No scope was requested, so the target's default is reported back.
    assert_eq!(body["scope"], CLOUD_PLATFORM);

    let calls = app.google.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let names: BTreeSet<&str> = call.form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "grant_type",
            "audience",
            "scope",
            "requested_token_type",
            "subject_token",
            "subject_token_type",
            "options"
        ])
    );
    assert_eq!(call.field("grant_type"), Some(GRANT));
    assert_eq!(call.field("audience"), Some(DEV_PROVIDER));
    assert_eq!(call.field("scope"), Some(CLOUD_PLATFORM));
    assert_eq!(call.field("requested_token_type"), Some(ACCESS_TOKEN));
    assert_eq!(call.field("subject_token"), Some(token.as_str()));
    assert_eq!(call.field("subject_token_type"), Some(JWT));
    let options: serde_json::Value = serde_json::from_str(call.field("options").unwrap()).unwrap();
    assert_eq!(options, json!({"userProject": "dev-project"}));
}

#[tokio::test]
async fn full_provider_resource_selects_the_target_and_requested_scopes_are_passed_on() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    let scope = format!("{BIGQUERY} {CLOUD_PLATFORM}");

    let response = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", DEV_PROVIDER),
            ("scope", &scope),
            ("requested_token_type", ACCESS_TOKEN),
            ("subject_token", &token),
            ("subject_token_type", JWT),
        ])
        .await;

    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("scope").is_none(),
        "scope echoed although unchanged: {body}"
    );
    let calls = app.google.calls();
    let sent: BTreeSet<&str> = calls[0].field("scope").unwrap().split(' ').collect();
    assert_eq!(sent, BTreeSet::from([BIGQUERY, CLOUD_PLATFORM]));
}

#[tokio::test]
async fn scope_outside_the_targets_list_is_invalid_scope_and_nothing_goes_upstream() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");

    let response = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", DEV_TARGET),
            (
                "scope",
                "https://www.googleapis.com/auth/devstorage.full_control",
            ),
            ("subject_token", &token),
            ("subject_token_type", JWT),
        ])
        .await;

    let text = assert_error(response, 400, "invalid_scope").await;
    assert!(
        text.contains("devstorage.full_control is not allowed for target bigquery"),
        "{text}"
    );
    assert_eq!(app.google.call_count(), 0);
}

#[tokio::test]
async fn unknown_audience_is_invalid_target_naming_the_known_targets() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    for audience in [
        "warehouse",
        "//iam.googleapis.com/locations/global/workforcePools/other/providers/x",
    ] {
        let response = app
            .post_form(&[
                ("grant_type", GRANT),
                ("audience", audience),
                ("subject_token", &token),
                ("subject_token_type", JWT),
            ])
            .await;
        let text = assert_error(response, 400, "invalid_target").await;
        assert!(
            text.contains(audience) && text.contains("bigquery"),
            "{text}"
        );
    }
    assert_eq!(app.google.call_count(), 0);
}

/// Google refuses alice's first exchange; returns the description the caller got.
async fn refused_by_google(app: &TestApp, token: &str) -> String {
    app.google.fail_next(
        400,
        json!({"error": "invalid_grant", "error_description": "The audience in ID Token [x] does not match the expected audience."}),
    );
    let text = assert_error(app.exchange(token).await, 400, "invalid_grant").await;
    assert!(
        text.contains("does not match the expected audience"),
        "{text}"
    );
    text
}

#[tokio::test]
async fn googles_refusal_is_passed_on_and_remembered_briefly_without_another_call() {
    let app = spawn_app_with(|s| s.google.refusal_memory_secs = 1).await;
    let token = app.token_for("auth0|alice");
    let first = refused_by_google(&app, &token).await;
    // A client retrying in a loop gets the same answer without spending Google's quota.
    for _ in 0..5 {
        let again = assert_error(app.exchange(&token).await, 400, "invalid_grant").await;
        assert_eq!(again, first);
    }
    assert_eq!(app.google.call_count(), 1);
    // Another subject is not affected.
    assert_eq!(
        app.exchange(&app.token_for("auth0|bob")).await.status(),
        200
    );
    // Once the memory has passed, Google is asked again; no credential was cached.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(app.exchange(&token).await.status(), 200);
    assert_eq!(app.google.call_count(), 3);
}

#[tokio::test]
async fn with_no_refusal_memory_googles_refusal_is_not_kept() {
    let app = spawn_app_with(|s| s.google.refusal_memory_secs = 0).await;
    let token = app.token_for("auth0|alice");
    refused_by_google(&app, &token).await;
    assert_eq!(app.exchange(&token).await.status(), 200);
    assert_eq!(app.google.call_count(), 2);
}

#[tokio::test]
async fn google_server_errors_become_503_with_retry_after_once_the_attempts_are_spent() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    for _ in 0..3 {
        app.google.fail_next(503, unavailable());
    }

    let response = app.exchange(&token).await;

    assert_eq!(response.headers()["retry-after"], "5");
    assert_error(response, 503, "temporarily_unavailable").await;
    assert_eq!(app.google.call_count(), 3, "google.max_attempts calls");
}

fn unavailable() -> serde_json::Value {
    json!({"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}})
}

#[tokio::test]
async fn google_429_and_5xx_are_retried_after_backoff_or_googles_retry_after() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    app.google.fail_next(503, unavailable());
    app.google.fail_next_with_retry_after(
        429,
        json!({"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}}),
        Some(1),
    );
    let started = std::time::Instant::now();
    let (status, body) = status_json(app.exchange(&token).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.google.call_count(), 3);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After not honoured"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_is_not_waited_for() {
    let app = spawn_app_with(|s| s.google.deadline_ms = 2000).await;
    let token = app.token_for("auth0|alice");
    app.google
        .fail_next_with_retry_after(503, unavailable(), Some(30));
    let started = std::time::Instant::now();
    let response = app.exchange(&token).await;
    assert_error(response, 503, "temporarily_unavailable").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(app.google.call_count(), 1);
}

#[tokio::test]
async fn a_slow_google_is_given_up_on_at_the_exchange_deadline() {
    let app = spawn_app_with(|s| {
        s.google.timeout_ms = 5000;
        s.google.deadline_ms = 800;
    })
    .await;
    app.google.set_delay(std::time::Duration::from_secs(3));
    let started = std::time::Instant::now();
    let response = app.exchange(&app.token_for("auth0|alice")).await;
    let text = assert_error(response, 503, "temporarily_unavailable").await;
    assert!(text.contains("deadline"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test]
async fn google_timeout_becomes_503_with_retry_after() {
    let app = spawn_app_with(|s| s.google.timeout_ms = 300).await;
    app.google.set_delay(std::time::Duration::from_millis(1500));
    let token = app.token_for("auth0|alice");

    let response = app.exchange(&token).await;

    assert!(response.headers().contains_key("retry-after"));
    let text = assert_error(response, 503, "temporarily_unavailable").await;
    assert!(text.contains("timed out"), "{text}");
}

#[tokio::test]
async fn calls_to_google_beyond_the_concurrency_bound_wait_for_a_slot() {
    let app = spawn_app_with(|s| s.google.max_concurrent_calls = 1).await;
    app.google.set_delay(std::time::Duration::from_millis(600));
    let (alice, bob) = (app.token_for("auth0|alice"), app.token_for("auth0|bob"));
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(app.exchange(&alice), app.exchange(&bob));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    // One at a time: the second call began only once the first had answered.
    assert!(started.elapsed() >= std::time::Duration::from_millis(1200));
    assert_eq!(app.google.call_count(), 2);
}
