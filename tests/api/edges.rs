//! Strict at the edges: bodies bounded in size and time, encodings and media types checked
//! before parsing.

use crate::helpers::*;
use crate::records::admin_token;
use std::time::{Duration, Instant};
use sts_bridge::devstack::{DEV_TARGET, DEV_USER_PROJECT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` (request line and headers, without the blank line) and `body` on a fresh
/// connection, then returns everything the server writes until it closes the connection
/// (or `wait` passes).
async fn raw(app: &TestApp, head: &str, body: &[u8], wait: Duration) -> (String, bool) {
    let addr = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("{head}\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(wait, stream.read_to_end(&mut answer))
        .await
        .is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

#[tokio::test]
async fn a_body_that_never_completes_is_answered_408_and_its_connection_closed() {
    let app = spawn_app_with(|s| s.http.body_timeout_ms = 300).await;
    let started = Instant::now();
    let (answer, closed) = raw(
        &app,
        "POST /v1/token HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100",
        b"grant_type=",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"invalid_request""#), "{answer}");
    assert!(closed, "the connection stays open: {answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_announced_body_over_the_limit_is_refused_413_before_it_is_sent() {
    let app = spawn_app().await;
    for expect in ["", "\r\nExpect: 100-continue"] {
        // Nothing of the body is sent: the answer must come from the headers alone.
        let (answer, closed) = raw(
            &app,
            &format!("POST /v1/token HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000000{expect}"),
            b"",
            Duration::from_secs(5),
        )
        .await;
        let status = answer
            .split("\r\n")
            .find(|l| l.starts_with("HTTP/1.1 ") && !l.starts_with("HTTP/1.1 100"))
            .unwrap_or_default();
        assert!(status.starts_with("HTTP/1.1 413"), "{expect:?}: {answer}");
        assert!(answer.contains("larger than"), "{answer}");
        assert!(closed, "{expect:?}: the connection stays open");
    }
}

#[tokio::test]
async fn a_compressed_body_is_refused_with_415() {
    let app = spawn_app().await;
    for encoding in ["gzip", "br", "identity, gzip"] {
        let response = app
            .http
            .post(format!("{}/v1/token", app.address))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Content-Encoding", encoding)
            .body("grant_type=x")
            .send()
            .await
            .unwrap();
        let text = assert_error(response, 415, "invalid_request").await;
        assert!(text.contains("Content-Encoding"), "{text}");
    }
    // Identity is no encoding at all.
    let response = app
        .http
        .post(format!("{}/v1/token", app.address))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Content-Encoding", "identity")
        .body("grant_type=x")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "unsupported_grant_type").await;
}

#[tokio::test]
async fn a_revocation_must_be_json_and_small_and_its_limits_show_only_after_authentication() {
    let app = spawn_app().await;
    let url = format!("{}/admin/v1/revocations", app.address);
    let big = vec![b'x'; 100_000];
    // Unauthenticated: the answer is about the token, whatever the body.
    let response = app.http.post(&url).body(big.clone()).send().await.unwrap();
    assert_error(response, 401, "invalid_token").await;

    let token = admin_token(&app);
    let form = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .form(&[("subject", "auth0|x")])
        .send()
        .await
        .unwrap();
    let text = assert_error(form, 415, "invalid_request").await;
    assert!(text.contains("application/json"), "{text}");

    let large = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(large.headers()["cache-control"], "no-store");
    assert_error(large, 413, "invalid_request").await;
}

/// Posts `body` verbatim as JSON to /v1/token.
async fn post_raw_json(app: &TestApp, body: String) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/token", app.address))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_json_key_given_twice_is_refused_inside_options_too() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    let head =
        format!(r#""grant_type":"{GRANT}","subject_token":"{token}","subject_token_type":"{JWT}""#);
    let cases = [
        (
            format!(r#"{{{head},"audience":"nope","audience":"{DEV_TARGET}"}}"#),
            "audience",
        ),
        (
            format!(
                r#"{{{head},"audience":"{DEV_TARGET}","options":{{"userProject":"x","userProject":"{DEV_USER_PROJECT}"}}}}"#
            ),
            "userProject",
        ),
        (
            format!(
                r#"{{{head},"audience":"{DEV_TARGET}","options":"{{\"userProject\":\"x\",\"userProject\":\"{DEV_USER_PROJECT}\"}}"}}"#
            ),
            "userProject",
        ),
    ];
    for (body, key) in cases {
        let text = assert_error(post_raw_json(&app, body).await, 400, "invalid_request").await;
        assert!(
            text.contains(key) && text.contains("more than once"),
            "{text}"
        );
    }
    assert_eq!(app.google.call_count(), 0);
    // The same request without the repeat is served.
    let body = format!(
        r#"{{{head},"audience":"{DEV_TARGET}","options":{{"userProject":"{DEV_USER_PROJECT}"}}}}"#
    );
    assert_eq!(post_raw_json(&app, body).await.status(), 200);
}

/// GETs an admin `path` with an admin token.
async fn admin_get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.address))
        .bearer_auth(admin_token(app))
        .send()
        .await
        .unwrap()
}

/// Revokes `subject` until 2099.
async fn revoke(app: &TestApp, subject: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/admin/v1/revocations", app.address))
        .bearer_auth(admin_token(app))
        .json(&serde_json::json!({
            "subject": subject, "until": "2099-01-01T00:00:00Z", "reason": "test",
        }))
        .send()
        .await
        .unwrap()
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn admin_cursors_the_server_did_not_sign_are_refused_on_every_listing() {
    let app =
        spawn_app_with(|s| s.admin.cursor_secret = Some("a shared cursor secret".into())).await;
    for i in 0..3 {
        assert_eq!(
            app.exchange(&app.token_for(&format!("auth0|u{i}")))
                .await
                .status(),
            200
        );
        assert_eq!(revoke(&app, &format!("auth0|r{i}")).await.status(), 201);
    }
    let forged = [
        ("/admin/v1/issuances", b64("before:2")),
        ("/admin/v1/admin-actions", b64("before:2")),
        ("/admin/v1/revocations", b64(r#"["x","auth0|r0"]"#)),
    ];
    for (path, cursor) in forged {
        let text = assert_error(
            admin_get(&app, &format!("{path}?cursor={cursor}")).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(text.contains("cursor"), "{path}: {text}");
    }
    // A real cursor works on its own listing only, and on a replica sharing the secret.
    let (status, body) = status_json(admin_get(&app, "/admin/v1/issuances?limit=1").await).await;
    assert_eq!(status, 200, "{body}");
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let next = admin_get(
        &app,
        &format!("/admin/v1/issuances?limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(next.status(), 200);
    let other = admin_get(&app, &format!("/admin/v1/admin-actions?cursor={cursor}")).await;
    assert_error(other, 400, "invalid_request").await;
    let replica = spawn_replica(&app, |s| {
        s.admin.cursor_secret = Some("a shared cursor secret".into())
    })
    .await;
    let there = admin_get(
        &replica,
        &format!("/admin/v1/issuances?limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(there.status(), 200);
    let stranger = spawn_replica(&app, |_| {}).await;
    let there = admin_get(
        &stranger,
        &format!("/admin/v1/issuances?limit=1&cursor={cursor}"),
    )
    .await;
    assert_error(there, 400, "invalid_request").await;
}

#[tokio::test]
async fn an_admin_query_parameter_given_twice_is_refused() {
    let app = spawn_app().await;
    for path in [
        "/admin/v1/issuances?limit=1&limit=2",
        "/admin/v1/issuances?subject=a&subject=b",
        "/admin/v1/revocations?limit=1&limit=1",
        "/admin/v1/admin-actions?actor=a&actor=b",
    ] {
        let text = assert_error(admin_get(&app, path).await, 400, "invalid_request").await;
        assert!(text.contains("more than once"), "{path}: {text}");
    }
    assert_eq!(revoke(&app, "auth0|x").await.status(), 201);
    let issuer = app.issuer.issuer();
    let lift = app
        .http
        .delete(format!("{}/admin/v1/revocations/auth0%7Cx", app.address))
        .query(&[("issuer", issuer.as_str()), ("issuer", "https://other/")])
        .bearer_auth(admin_token(&app))
        .send()
        .await
        .unwrap();
    assert_error(lift, 400, "invalid_request").await;
}

#[tokio::test]
async fn every_admin_answer_carries_no_store_and_errors_are_json() {
    let app = spawn_app().await;
    let created = revoke(&app, "auth0|x").await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let lifted = app
        .http
        .delete(format!("{}/admin/v1/revocations/auth0%7Cx", app.address))
        .bearer_auth(admin_token(&app))
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 204);
    assert_eq!(lifted.headers()["cache-control"], "no-store");
    let url = |p: &str| format!("{}{p}", app.address);
    let answers = [
        (
            app.http
                .put(url("/admin/v1/revocations"))
                .send()
                .await
                .unwrap(),
            405,
        ),
        (admin_get(&app, "/admin/v1/nothing-here").await, 404),
        (
            app.http
                .get(url("/admin/v1/issuances"))
                .send()
                .await
                .unwrap(),
            401,
        ),
        (admin_get(&app, "/admin/v1/issuances?limit=0").await, 400),
    ];
    for (response, status) in answers {
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["cache-control"], "no-store", "{status}");
        let (_, body) = status_json(response).await;
        assert!(
            body["error"].is_string() && body["error_description"].is_string(),
            "{body}"
        );
    }
}

/// Three refusals a caller with a valid token can provoke: an unknown audience, a scope
/// outside the target's list, another billing project. Returns their descriptions.
async fn configuration_refusals(app: &TestApp) -> Vec<String> {
    let token = app.token_for("auth0|alice");
    let mut texts = Vec::new();
    let base = [
        ("grant_type", GRANT),
        ("subject_token", token.as_str()),
        ("subject_token_type", JWT),
    ];
    let asks: [&[(&str, &str)]; 3] = [
        &[("audience", "no-such-target")],
        &[
            ("audience", DEV_TARGET),
            ("scope", "https://www.googleapis.com/auth/gmail.send"),
        ],
        &[
            ("audience", DEV_TARGET),
            ("options", r#"{"userProject":"someone-elses"}"#),
        ],
    ];
    for (ask, code) in asks
        .iter()
        .zip(["invalid_target", "invalid_scope", "invalid_request"])
    {
        let fields: Vec<_> = base.iter().chain(ask.iter()).copied().collect();
        texts.push(assert_error(app.post_form(&fields).await, 400, code).await);
    }
    texts
}

#[tokio::test]
async fn refusals_name_no_other_target_billing_project_or_scopes_unless_verbose() {
    let second_target = |s: &mut sts_bridge::config::Settings| {
        let mut finance = s.targets[0].clone();
        finance.name = "finance-restricted".into();
        finance.provider = finance.provider.replace("providers/", "providers/finance-");
        s.targets.push(finance);
    };
    let quiet = spawn_app_with(|s| {
        second_target(s);
        s.http.verbose_errors = false;
    })
    .await;
    let secrets = [
        "finance-restricted",
        DEV_USER_PROJECT,
        "auth/cloud-platform",
    ];
    for text in configuration_refusals(&quiet).await {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in: {text}");
        }
    }
    assert_eq!(quiet.google.call_count(), 0);
    // The dev stack is verbose: the same refusals say what would have been accepted.
    let verbose = spawn_app_with(second_target).await;
    let texts = configuration_refusals(&verbose).await.join("\n");
    for secret in secrets {
        assert!(texts.contains(secret), "{secret} not in: {texts}");
    }
}
