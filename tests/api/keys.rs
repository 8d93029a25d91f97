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

fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    crate::metrics::sample(body, name, labels).unwrap_or(0.0)
}

/// Waits until `done` holds, up to `secs` seconds.
async fn eventually(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 20 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

#[tokio::test]
async fn the_scheduled_refresh_runs_discovery_again_and_follows_a_key_set_moved_on_the_issuers_host(
) {
    let app = spawn_app_with(|s| s.issuers[0].jwks_refresh_secs = 1).await;
    let discoveries = app.issuer.discovery_requests();
    app.issuer
        .set_jwks_uri(Some(format!("{}keys/jwks.json", app.issuer.issuer())));

    let moved = eventually(5, || {
        app.issuer
            .jwks_request_hosts()
            .iter()
            .any(|h| h.ends_with("/keys/jwks.json"))
    })
    .await;
    assert!(moved, "{:?}", app.issuer.jwks_request_hosts());
    assert!(app.issuer.discovery_requests() > discoveries);
    let (status, body) = status_json(app.exchange(&app.token_for("auth0|alice")).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_key_set_moved_to_another_host_is_not_followed_unless_allowed() {
    for allowed in [false, true] {
        let app = spawn_app_with(|s| {
            s.issuers[0].jwks_refresh_secs = 1;
            if allowed {
                s.issuers[0].jwks_allowed_hosts = vec!["localhost".into()];
            }
        })
        .await;
        let elsewhere = format!(
            "http://localhost:{}/.well-known/jwks.json",
            app.issuer.addr().port()
        );
        app.issuer.set_jwks_uri(Some(elsewhere));
        let before = scrape_refresh_errors(&app).await;

        let refreshed = eventually(5, || app.issuer.discovery_requests() >= 4).await;
        assert!(refreshed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fetched_there = app
            .issuer
            .jwks_request_hosts()
            .iter()
            .any(|h| h.starts_with("localhost:"));
        assert_eq!(
            fetched_there,
            allowed,
            "{:?}",
            app.issuer.jwks_request_hosts()
        );
        if !allowed {
            assert!(scrape_refresh_errors(&app).await > before);
        }
        // Either way the last good keys keep serving.
        let (status, body) = status_json(app.exchange(&app.token_for("auth0|alice")).await).await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn scrape_refresh_errors(app: &TestApp) -> f64 {
    let body = crate::metrics::scrape(app).await;
    metric(
        &body,
        "sts_bridge_jwks_refreshes_total",
        &[("issuer", &app.issuer.issuer()), ("result", "error")],
    )
}

#[tokio::test]
async fn keys_for_encryption_for_another_alg_or_under_2048_bits_never_verify_and_spoil_nothing() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let app = spawn_app_with(|s| s.issuers[0].jwks_min_refetch_secs = 1).await;
    let enc = app.issuer.add_key(false);
    let mut jwk = app.issuer.jwk_of(&enc);
    jwk["use"] = "enc".into();
    app.issuer.publish_raw_jwk(jwk);
    let other_alg = app.issuer.add_key(false);
    let mut jwk = app.issuer.jwk_of(&other_alg);
    jwk["alg"] = "PS256".into();
    app.issuer.publish_raw_jwk(jwk);
    let mut modulus = vec![0xc5u8; 128];
    modulus[127] = 0x01;
    app.issuer.publish_raw_jwk(serde_json::json!({
        "kty": "RSA", "kid": "weak-1024", "use": "sig", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(&modulus), "e": "AQAB",
    }));
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The first unknown kid refetches the set; none of the three keys is taken.
    let claims = alice_claims(&app);
    let text = assert_error(
        app.exchange(&app.issuer.sign(&enc, &claims)).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(text.contains("does not publish"), "{text}");
    let text = assert_error(
        app.exchange(&app.issuer.sign(&other_alg, &claims)).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(
        text.contains("cannot verify RS256 signatures"),
        "RS256 with a PS256 key: {text}"
    );
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(app.issuer.current_kid());
    let signed = app.issuer.sign_with_header(&header, &claims);
    let mut parts: Vec<&str> = signed.split('.').collect();
    let weak_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"weak-1024","typ":"at+jwt"}"#);
    parts[0] = &weak_header;
    let text = assert_error(app.exchange(&parts.join(".")).await, 400, "invalid_grant").await;
    assert!(text.contains("does not publish"), "{text}");

    let body = crate::metrics::scrape(&app).await;
    let issuer = app.issuer.issuer();
    for reason in ["use", "weak"] {
        let labels = [("issuer", issuer.as_str()), ("reason", reason)];
        assert!(
            metric(&body, "sts_bridge_jwks_keys_skipped_total", &labels) >= 1.0,
            "{reason}"
        );
    }
    // The issuer's good key still works.
    let (status, body) = status_json(app.exchange(&app.token_for("auth0|bob")).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn keys_older_than_their_maximum_age_fail_readiness_with_the_cause_and_still_verify() {
    let app = spawn_app_with(|s| {
        s.issuers[0].jwks_refresh_secs = 1;
        s.issuers[0].jwks_max_age_secs = 2;
        // The cause stays the issuer's own answer, not the breaker's.
        s.jwks.breaker.failure_threshold = 1000;
    })
    .await;
    app.issuer.fail_jwks(Some(503));

    let mut reason = String::new();
    for _ in 0..200 {
        let (status, body) = status_json(app.get("/readyz").await).await;
        if status == 503 {
            reason = body["reason"].as_str().unwrap_or_default().to_owned();
            if reason.contains("older than their maximum age") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reason.contains("older than their maximum age"), "{reason}");
    assert!(reason.contains(&app.issuer.issuer()), "{reason}");
    assert!(reason.contains("HTTP 503"), "the cause is named: {reason}");
    let (status, body) = status_json(app.exchange(&app.token_for("auth0|alice")).await).await;
    assert_eq!(status, 200, "the last good keys still verify: {body}");

    app.issuer.fail_jwks(None);
    let mut ready = false;
    for _ in 0..100 {
        if app.get("/readyz").await.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "ready again once the keys are refreshed");
}

#[tokio::test]
async fn an_issuer_that_keeps_failing_is_not_called_while_its_breaker_is_open() {
    let app = spawn_app_with(|s| {
        s.issuers[0].jwks_refresh_secs = 1;
        s.jwks.breaker.failure_threshold = 2;
        s.jwks.breaker.cool_down_secs = 60;
    })
    .await;
    let upstream = format!("jwks:{}", app.issuer.issuer());
    app.issuer.fail_jwks(Some(503));
    let mut open = false;
    for _ in 0..100 {
        let body = crate::metrics::scrape(&app).await;
        if metric(
            &body,
            "sts_bridge_upstream_breaker_state",
            &[("upstream", &upstream)],
        ) == 1.0
        {
            open = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(open, "the issuer's breaker never opened");
    let fetches = app.issuer.jwks_requests() + app.issuer.discovery_requests();

    // Two scheduled refreshes and a token with an unknown kid: no call reaches the issuer.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let bob = app.token_for("auth0|bob");
    let kid = app.issuer.add_key(true);
    let token = app.issuer.sign(&kid, &alice_claims(&app));
    assert_error(app.exchange(&token).await, 400, "invalid_grant").await;
    assert_eq!(
        app.issuer.jwks_requests() + app.issuer.discovery_requests(),
        fetches
    );
    let body = crate::metrics::scrape(&app).await;
    assert!(
        metric(
            &body,
            "sts_bridge_upstream_breaker_rejections_total",
            &[("upstream", &upstream)]
        ) >= 2.0
    );
    // Known keys keep verifying.
    let (status, body) = status_json(app.exchange(&bob).await).await;
    assert_eq!(status, 200, "{body}");
}
