use crate::helpers::*;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The value of the sample `name{labels…}`, whatever the label order.
pub fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| {
            l.starts_with(&format!("{name}{{"))
                || (labels.is_empty() && l.starts_with(&format!("{name} ")))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// Waits until the unlabelled metric `name` on `app` reads `value` (absent reads 0);
/// panics after `within`.
pub async fn wait_for_metric(app: &TestApp, name: &str, value: f64, within: Duration) {
    let started = std::time::Instant::now();
    while sample(&scrape(app).await, name, &[]).unwrap_or(0.0) != value {
        assert!(started.elapsed() < within, "{name} never became {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_count_exchanges_cache_upstream_and_audit_without_subjects_or_tokens() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    assert_eq!(app.exchange(&token).await.status(), 200);
    assert_eq!(app.exchange(&token).await.status(), 200);
    let mut expired = app.issuer.claims(&sts_bridge::devstack::MintRequest {
        sub: "auth0|alice".into(),
        ..Default::default()
    });
    expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 600);
    let expired = app.issuer.sign(&app.issuer.current_kid(), &expired);
    assert_eq!(app.exchange(&expired).await.status(), 400);
    let unknown = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", "nope"),
            ("subject_token", &token),
            ("subject_token_type", JWT),
        ])
        .await;
    assert_eq!(unknown.status(), 400);

    let body = scrape(&app).await;

    let exchanges = "sts_bridge_exchanges_total";
    assert_eq!(
        sample(
            &body,
            exchanges,
            &[
                ("target", "bigquery"),
                ("source", "sts"),
                ("outcome", "issued")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            exchanges,
            &[
                ("target", "bigquery"),
                ("source", "cache"),
                ("outcome", "issued")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            exchanges,
            &[
                ("target", "bigquery"),
                ("outcome", "refused"),
                ("error", "invalid_grant")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            exchanges,
            &[("target", "unknown"), ("error", "invalid_target")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "sts_bridge_token_rejections_total",
            &[("reason", "expired")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "sts_bridge_cache_lookups_total",
            &[("result", "miss")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "sts_bridge_cache_lookups_total",
            &[("result", "hit")]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&body, "sts_bridge_cache_entries", &[]), Some(1.0));
    assert_eq!(
        sample(
            &body,
            "sts_bridge_upstream_requests_total",
            &[("upstream", "google_sts"), ("code", "200")]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &body,
            "sts_bridge_upstream_requests_total",
            &[("upstream", "jwks"), ("code", "200")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &body,
            "sts_bridge_jwks_refreshes_total",
            &[("result", "ok")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(
            &body,
            "sts_bridge_jwks_keys",
            &[("issuer", &app.issuer.issuer())]
        ),
        Some(1.0)
    );
    // Two hand-outs and one recorded refusal (the unknown audience); the expired token is not recorded.
    assert_eq!(
        sample(
            &body,
            "sts_bridge_audit_rows_total",
            &[("result", "written")]
        ),
        Some(3.0)
    );
    assert!(sample(&body, "sts_bridge_audit_batch_rows_count", &[]).unwrap() >= 1.0);
    assert_eq!(
        sample(&body, "sts_bridge_audit_queue_depth", &[]),
        Some(0.0)
    );
    assert!(
        sample(
            &body,
            "sts_bridge_exchange_duration_seconds_count",
            &[("outcome", "issued")]
        )
        .unwrap()
            >= 2.0
    );
    assert_eq!(
        sample(
            &body,
            "sts_bridge_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    assert!(!body.contains("alice"), "a subject appears in a label");
    for secret in [token.as_str(), expired.as_str()] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!body.contains(signature), "a token appears in the metrics");
    }
    assert!(
        !body.contains("ya29."),
        "a Google token appears in the metrics"
    );
}

#[tokio::test]
async fn metrics_pass_promtool_check() {
    let app = spawn_app().await;
    assert_eq!(
        app.exchange(&app.token_for("auth0|alice")).await.status(),
        200
    );
    let body = scrape(&app).await;

    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") => {
            panic!("promtool is required in CI (Debian package `prometheus`): {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED promtool check: {promtool}: {e}; install the Debian package `prometheus`"
            );
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool found problems:\n{report}"
    );
    assert!(report.trim().is_empty(), "promtool warnings:\n{report}");
}
