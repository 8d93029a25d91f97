use crate::helpers::*;
use serde_json::Value;
use std::time::Duration;
use sts_bridge::devstack::MintRequest;
use tokio::task::JoinSet;

fn alice_claims(app: &TestApp) -> Value {
    app.issuer.claims(&MintRequest {
        sub: "auth0|alice".into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn key_published_later_is_accepted_after_one_refetch() {
    let app = spawn_app_with(|s| s.issuers[0].jwks_min_refetch_secs = 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let kid = app.issuer.add_key(false);
    let token = app.issuer.sign(&kid, &alice_claims(&app));
    let before = app.issuer.jwks_requests();

    // Not published yet: one refetch, still unknown.
    assert_error(app.exchange(&token).await, 400, "invalid_grant").await;
    assert_eq!(app.issuer.jwks_requests(), before + 1);

    // Published, but the interval has not passed: no refetch, still refused.
    app.issuer.publish(&kid);
    assert_error(app.exchange(&token).await, 400, "invalid_grant").await;
    assert_eq!(app.issuer.jwks_requests(), before + 1);

    // After the interval, one refetch finds it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = status_json(app.exchange(&token).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.issuer.jwks_requests(), before + 2);

    // The old key keeps working without further fetches.
    let (status, _) = status_json(app.exchange(&app.token_for("auth0|bob")).await).await;
    assert_eq!(status, 200);
    assert_eq!(app.issuer.jwks_requests(), before + 2);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_triggers_at_most_one_refetch_per_interval() {
    let app = std::sync::Arc::new(spawn_app().await); // 60 s interval
    let kids: Vec<String> = (0..5).map(|_| app.issuer.add_key(false)).collect();
    let before = app.issuer.jwks_requests();

    let mut tasks = JoinSet::new();
    for i in 0..50 {
        let app = app.clone();
        let token = app.issuer.sign(&kids[i % kids.len()], &alice_claims(&app));
        tasks.spawn(async move { status_json(app.exchange(&token).await).await.0 });
    }
    let statuses = tasks.join_all().await;

    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");
    assert!(
        app.issuer.jwks_requests() - before <= 1,
        "{} refetches",
        app.issuer.jwks_requests() - before
    );
    assert_eq!(app.google.call_count(), 0);
}

#[tokio::test]
async fn readiness_reports_loaded_keys() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    let (status, body) = status_json(response).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn while_the_issuer_is_unreachable_the_service_is_not_ready_and_fails_closed() {
    let app = start_app(std::sync::Arc::new(TestDb::sqlite()), |s| {
        s.issuers[0].discovery_url =
            Some("http://127.0.0.1:9/.well-known/openid-configuration".into());
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let response = app.get("/readyz").await;
    let (status, body) = status_json(response).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "not_ready");

    let response = app.exchange(&app.token_for("auth0|alice")).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, 503, "temporarily_unavailable").await;
    assert_eq!(app.google.call_count(), 0);
}

#[tokio::test]
async fn a_withdrawn_key_stops_being_trusted_after_the_scheduled_refresh() {
    let app = spawn_app_with(|s| s.issuers[0].jwks_refresh_secs = 1).await;
    let old_kid = app.issuer.current_kid();
    let old_token = app.token_for("auth0|alice");
    let (status, _) = status_json(app.exchange(&old_token).await).await;
    assert_eq!(status, 200);

    app.issuer.add_key(true);
    app.issuer.withdraw(&old_kid);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let text = assert_error(app.exchange(&old_token).await, 400, "invalid_grant").await;
    assert!(text.contains("does not publish"), "{text}");
    let (status, _) = status_json(app.exchange(&app.token_for("auth0|alice")).await).await;
    assert_eq!(status, 200, "a token signed with the new key is accepted");
}

/// Polls /readyz until its reason mentions `needle` (the first fetch may still be running).
async fn not_ready_reason_containing(app: &TestApp, needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let (status, body) = status_json(app.get("/readyz").await).await;
        assert_eq!(status, 503, "{body}");
        last = body["reason"].as_str().unwrap_or_default().to_owned();
        if last.contains(needle) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never named {needle:?}; last reason: {last}");
}

#[tokio::test]
async fn readiness_names_a_refused_connection_to_the_issuer() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // bound and released: nothing listens there now
    let url = format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
    let discovery = url.clone();
    let app = start_app(std::sync::Arc::new(TestDb::sqlite()), move |s| {
        s.issuers[0].discovery_url = Some(discovery);
    })
    .await;

    let reason = not_ready_reason_containing(&app, "onnection refused").await;
    assert!(reason.contains(&app.issuer.issuer()), "{reason}");
    assert!(
        reason.contains(&format!("discovery at {url} failed")),
        "{reason}"
    );
}

#[tokio::test]
async fn readiness_names_what_is_wrong_with_the_discovery_document() {
    // An issuer whose discovery document lacks jwks_uri.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request).await;
            let body = format!(
                r#"{{"issuer":"http://127.0.0.1:{port}/","authorization_endpoint":"http://127.0.0.1:{port}/authorize","response_types_supported":["code"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}}"#
            );
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
        }
    });
    let app = start_app(std::sync::Arc::new(TestDb::sqlite()), move |s| {
        s.issuers[0].discovery_url = Some(format!(
            "http://127.0.0.1:{port}/.well-known/openid-configuration"
        ));
    })
    .await;

    let reason = not_ready_reason_containing(&app, "not an OpenID provider configuration").await;
    assert!(reason.contains("missing field `jwks_uri`"), "{reason}");
}
