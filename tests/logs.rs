//! Captures every log line of a full run (exchanges, cache hits, refusals, Google errors,
//! admin calls) at the most verbose level, and proves no token appears in it.

#[path = "api/db.rs"]
#[allow(dead_code)]
mod db;
#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "common/log_capture.rs"]
mod log_capture;

use helpers::*;
use log_capture::Capture;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use sts_bridge::devstack::MintRequest;

/// The process-wide log capture (the subscriber is global, so both tests share it and each
/// looks only for its own lines).
fn capture() -> Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let sink = capture.clone();
            sts_bridge::telemetry::init_with_writer("json", "trace", move || sink.clone());
            capture
        })
        .clone()
}

impl Capture {
    fn lines(&self) -> Vec<Value> {
        let log = self.text();
        log.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
            .collect()
    }
}

#[tokio::test]
async fn the_log_names_why_an_issuer_is_unreachable() {
    let capture = capture();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
    let discovery = url.clone();
    let _app = start_app(Arc::new(db::TestDb::sqlite()), move |s| {
        s.issuers[0].discovery_url = Some(discovery);
    })
    .await;
    let expected = format!("discovery at {url} failed");
    for _ in 0..100 {
        let found = capture.lines().into_iter().find(|l| {
            l["message"] == "signing keys not loaded"
                && l["error"].as_str().is_some_and(|e| e.contains(&expected))
        });
        if let Some(line) = found {
            let error = line["error"].as_str().unwrap();
            assert!(error.contains("onnection refused"), "{error}");
            assert_eq!(line["level"], "WARN");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no log line names the refused connection to {url}");
}

#[tokio::test]
async fn no_token_appears_in_the_logs_of_a_full_run() {
    let capture = capture();

    let app = spawn_app().await;
    let subject_token = app.token_for("auth0|alice");
    let admin = app.issuer.mint(&MintRequest {
        sub: "auth0|admin".into(),
        permissions: vec!["sts:admin".into()],
        ..Default::default()
    });
    let mut google_tokens = Vec::new();
    for _ in 0..2 {
        let response = app
            .http
            .post(format!("{}/v1/token", app.address))
            .header("x-request-id", "log-test-1")
            .form(&[
                ("grant_type", GRANT),
                ("audience", "bigquery"),
                ("subject_token", subject_token.as_str()),
                ("subject_token_type", JWT),
            ])
            .send()
            .await
            .unwrap();
        let (status, body) = status_json(response).await;
        assert_eq!(status, 200);
        google_tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    let mut claims = app.issuer.claims(&MintRequest {
        sub: "auth0|bob".into(),
        ..Default::default()
    });
    claims["exp"] = json!(jsonwebtoken::get_current_timestamp() - 600);
    let expired = app.issuer.sign(&app.issuer.current_kid(), &claims);
    assert_eq!(app.exchange(&expired).await.status(), 400);
    let bob = app.token_for("auth0|bob");
    app.google.fail_next(
        400,
        json!({"error": "invalid_grant", "error_description": "The token was rejected."}),
    );
    assert_eq!(app.exchange(&bob).await.status(), 400);
    let response = app
        .http
        .post(format!("{}/admin/v1/revocations", app.address))
        .bearer_auth(&admin)
        .json(&json!({"subject": "auth0|carol", "until": "2099-01-01T00:00:00Z", "reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = app
        .http
        .get(format!("{}/admin/v1/issuances", app.address))
        .bearer_auth(&subject_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // gcloud's introspection of a handed-out credential, with its public client.
    let response = app
        .http
        .post(format!("{}/v1/introspect", app.address))
        .basic_auth(
            sts_bridge::config::CLOUD_SDK_CLIENT_ID,
            Some(sts_bridge::config::CLOUD_SDK_CLIENT_SECRET),
        )
        .form(&[("token", google_tokens[0].as_str())])
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!((status, &body["active"]), (200, &json!(true)), "{body}");

    // Assertion mode: neither the assertion nor the signing key may show up either.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("bridge.pem");
    let key = key_file.clone();
    let bridge = spawn_app_with_google(move |s, google| {
        sts_bridge::devstack::use_assertion_mode(s, google, &key).unwrap()
    })
    .await;
    let dave = bridge.token_for("auth0|dave");
    assert_eq!(bridge.exchange(&dave).await.status(), 200);
    let calls = bridge.google.calls();
    let assertion = calls
        .last()
        .unwrap()
        .field("subject_token")
        .unwrap()
        .to_owned();
    let pem = std::fs::read_to_string(&key_file).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let log = capture.text();
    let lines = capture.lines();
    assert!(lines.len() > 20, "only {} log lines captured", lines.len());
    let issued: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "exchange issued" && l["subject"] != "auth0|dave")
        .collect();
    assert_eq!(issued.len(), 2, "one summary line per hand-out");
    let mut server_ids = std::collections::HashSet::new();
    for line in &issued {
        assert_eq!(line["span"]["request_id"], "log-test-1");
        // Beside the caller's id, which repeats, the server's own, which does not.
        let server_id = line["span"]["server_request_id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(server_id).is_ok(), "{server_id}");
        server_ids.insert(server_id.to_owned());
        assert_eq!(line["span"]["client_addr"], "127.0.0.1");
        assert_eq!(line["subject"], "auth0|alice");
        assert_eq!(line["target_name"], "bigquery");
        assert!(line["latency_ms"].is_u64());
    }
    assert_eq!(server_ids.len(), 2);
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "exchange refused")
        .collect();
    assert_eq!(refused.len(), 2);
    // The expired token names nobody; Google's refusal of bob's valid token does.
    assert!(refused[0]["span"].get("subject").is_none());
    assert_eq!(refused[1]["span"]["subject"], "auth0|bob");
    assert_eq!(refused[1]["error"], "invalid_grant");
    // The log names the client the record names (the token's azp here).
    let records = app
        .broker
        .audit()
        .store
        .list_issuances(&sts_bridge::audit::IssuanceQuery {
            subject: Some("auth0|bob".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    let recorded = records[0]
        .client_id
        .as_deref()
        .expect("a client in the record");
    assert_eq!(recorded, sts_bridge::devstack::DEV_CLIENT);
    assert_eq!(refused[1]["span"]["client"], recorded);
    for line in &issued {
        assert_eq!(line["client"], recorded);
        assert_eq!(line["span"]["client"], recorded);
    }
    assert_eq!(issued[0]["source"], "sts");
    assert_eq!(issued[1]["source"], "cache");

    let mut secrets: Vec<&str> = vec![&subject_token, &admin, &expired, &bob, &dave, &assertion];
    secrets.extend(pem.lines().filter(|l| !l.starts_with("-----")));
    secrets.extend(google_tokens.iter().map(String::as_str));
    for secret in secrets {
        assert!(!log.contains(secret), "a token appears in the log");
        for part in secret.split('.').filter(|p| p.len() > 16) {
            assert!(!log.contains(part), "part of a token appears in the log");
        }
    }
}

#[tokio::test]
async fn each_breaker_state_change_is_one_log_line() {
    let capture = capture();
    let app = spawn_app_with(|s| {
        s.issuers[0].jwks_refresh_secs = 1;
        s.jwks.breaker.failure_threshold = 1;
        s.jwks.breaker.cool_down_secs = 1;
    })
    .await;
    let upstream = format!("jwks:{}", app.issuer.issuer());
    app.issuer.fail_jwks(Some(503));
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    app.issuer.fail_jwks(None);

    // Closed again once a probe finds the issuer back.
    let state_line = format!("sts_bridge_upstream_breaker_state{{upstream=\"{upstream}\"}}");
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = app.get("/metrics").await.text().await.unwrap();
        if metrics.lines().any(|l| l == format!("{state_line} 0")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let transitions: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("sts_bridge_upstream_breaker_transitions_total{")
                && l.contains(&format!("upstream=\"{upstream}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let lines: Vec<Value> = capture
        .lines()
        .into_iter()
        .filter(|l| l["upstream"] == upstream.as_str())
        .collect();

    assert!(transitions >= 3.0, "open, half-open, closed: {transitions}");
    assert_eq!(lines.len() as f64, transitions, "{lines:?}");
    assert_eq!(lines[0]["to"], "open");
    assert_eq!(lines[0]["level"], "WARN");
    assert_eq!(lines.last().unwrap()["to"], "closed");
    for pair in lines.windows(2) {
        assert_eq!(pair[0]["to"], pair[1]["from"], "{pair:?}");
    }
}
