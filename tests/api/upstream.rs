//! Google misbehaving: the circuit breaker, and a chaos run under concurrent load.

use crate::helpers::*;
use crate::metrics::{sample, scrape};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use sts_bridge::audit::IssuanceQuery;
use sts_bridge::devstack::{Fault, MintRequest};
use tokio::task::JoinSet;

fn unavailable() -> Value {
    json!({"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}})
}

fn quota() -> Value {
    json!({"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}})
}

fn breaker_state(metrics: &str) -> Option<f64> {
    sample(
        metrics,
        "sts_bridge_upstream_breaker_state",
        &[("upstream", "google_sts")],
    )
}

#[tokio::test]
async fn an_open_google_breaker_answers_503_at_once_and_cached_credentials_are_still_served() {
    let app = spawn_app_with(|s| {
        s.google.max_attempts = 1;
        s.google.breaker.failure_threshold = 2;
        s.google.breaker.cool_down_secs = 2;
    })
    .await;
    let alice = app.token_for("auth0|alice");
    assert_eq!(app.exchange(&alice).await.status(), 200);
    assert_eq!(breaker_state(&scrape(&app).await), Some(0.0));

    // Google goes down: two failed calls open the breaker.
    app.google
        .set_chaos(vec![Some(Fault::Status(503, unavailable(), None))]);
    for sub in ["auth0|bob", "auth0|carol"] {
        let response = app.exchange(&app.token_for(sub)).await;
        assert_error(response, 503, "temporarily_unavailable").await;
    }
    let calls = app.google.call_count();
    assert_eq!(calls, 3);

    // Now refused at once, with the time until the probe, and Google is not called.
    let response = app.exchange(&app.token_for("auth0|dave")).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let text = assert_error(response, 503, "temporarily_unavailable").await;
    assert!(text.contains("failed repeatedly"), "{text}");
    assert_eq!(
        app.google.call_count(),
        calls,
        "an open breaker called Google"
    );

    // Alice's credential is still valid and still served.
    let (status, body) = status_json(app.exchange(&alice).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.google.call_count(), calls);

    let metrics = scrape(&app).await;
    assert_eq!(breaker_state(&metrics), Some(1.0), "open");
    let opened = [("upstream", "google_sts"), ("state", "open")];
    assert_eq!(
        sample(
            &metrics,
            "sts_bridge_upstream_breaker_transitions_total",
            &opened
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "sts_bridge_upstream_breaker_rejections_total",
            &[("upstream", "google_sts")]
        ),
        Some(1.0)
    );

    // Google is back: after the cool-down one probe closes the breaker.
    app.google.set_chaos(Vec::new());
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100)).await;
    let (status, body) = status_json(app.exchange(&app.token_for("auth0|dave")).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.google.call_count(), calls + 1);
    let metrics = scrape(&app).await;
    assert_eq!(breaker_state(&metrics), Some(0.0), "closed again");
    for state in ["half_open", "closed"] {
        let labels = [("upstream", "google_sts"), ("state", state)];
        assert_eq!(
            sample(
                &metrics,
                "sts_bridge_upstream_breaker_transitions_total",
                &labels
            ),
            Some(1.0),
            "{state}"
        );
    }
}

#[tokio::test]
async fn a_failed_probe_keeps_the_breaker_open() {
    let app = spawn_app_with(|s| {
        s.google.max_attempts = 1;
        s.google.breaker.failure_threshold = 1;
        s.google.breaker.cool_down_secs = 1;
    })
    .await;
    app.google
        .set_chaos(vec![Some(Fault::Status(503, unavailable(), None))]);
    let response = app.exchange(&app.token_for("auth0|bob")).await;
    assert_error(response, 503, "temporarily_unavailable").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The probe fails: open again, and the next caller is refused without a call.
    let response = app.exchange(&app.token_for("auth0|bob")).await;
    assert_error(response, 503, "temporarily_unavailable").await;
    assert_eq!(app.google.call_count(), 2);
    let response = app.exchange(&app.token_for("auth0|bob")).await;
    let text = assert_error(response, 503, "temporarily_unavailable").await;
    assert!(text.contains("failed repeatedly"), "{text}");
    assert_eq!(app.google.call_count(), 2);
    let metrics = scrape(&app).await;
    assert_eq!(breaker_state(&metrics), Some(1.0));
    let opened = [("upstream", "google_sts"), ("state", "open")];
    assert_eq!(
        sample(
            &metrics,
            "sts_bridge_upstream_breaker_transitions_total",
            &opened
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn background_refreshes_share_the_bound_on_calls_in_flight() {
    let app = Arc::new(
        spawn_app_with(|s| {
            s.google.max_concurrent_calls = 2;
            s.cache.refresh_margin_secs = 1800;
        })
        .await,
    );
    // Every credential is inside the refresh margin as soon as it is cached.
    app.google.set_expires_in(1700);
    let warm: Vec<String> = (0..6)
        .map(|i| app.token_for(&format!("auth0|warm{i}")))
        .collect();
    for token in &warm {
        assert_eq!(app.exchange(token).await.status(), 200);
    }
    app.google.set_delay(Duration::from_millis(150));

    // Six background refreshes and six misses at once.
    let mut tasks = JoinSet::new();
    for (i, token) in warm.into_iter().enumerate() {
        let cold = app.token_for(&format!("auth0|cold{i}"));
        for token in [token, cold] {
            let app = app.clone();
            tasks.spawn(async move { app.exchange(&token).await.status().as_u16() });
        }
    }
    assert!(tasks.join_all().await.iter().all(|s| *s == 200));
    let refreshed = |metrics: &str| {
        sample(
            metrics,
            "sts_bridge_cache_refreshes_total",
            &[("result", "ok")],
        )
    };
    let mut metrics = scrape(&app).await;
    for _ in 0..100 {
        if refreshed(&metrics) == Some(6.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = scrape(&app).await;
    }

    assert_eq!(refreshed(&metrics), Some(6.0), "six background refreshes");
    assert_eq!(
        app.google.call_count(),
        18,
        "6 warm-ups, 6 refreshes, 6 misses"
    );
    assert_eq!(app.google.max_in_flight(), 2, "google.max_concurrent_calls");
}

/// Google alternates 503, 429 with `Retry-After`, slow answers past the call timeout and
/// dropped connections while many people exchange at once.
#[tokio::test]
async fn under_chaos_nobody_gets_anothers_credential_and_every_credential_has_its_record() {
    let app = Arc::new(
        spawn_app_with(|s| {
            s.google.timeout_ms = 400;
            s.google.deadline_ms = 4000;
            s.google.max_attempts = 4;
            s.google.max_concurrent_calls = 8;
            s.google.breaker.failure_threshold = 6;
            s.google.breaker.window_secs = 2;
            s.google.breaker.cool_down_secs = 1;
        })
        .await,
    );
    app.google.set_chaos(vec![
        Some(Fault::Status(503, unavailable(), None)),
        None,
        Some(Fault::Status(429, quota(), Some(1))),
        Some(Fault::Slow(Duration::from_millis(700))),
        None,
        Some(Fault::Drop),
        Some(Fault::Slow(Duration::from_millis(50))),
        None,
    ]);

    let mut tasks = JoinSet::new();
    for i in 0..40 {
        for group in ["analysts", "admins"] {
            let app = app.clone();
            let sub = format!("auth0|user{i}");
            let token = app.issuer.mint(&MintRequest {
                sub: sub.clone(),
                groups: vec![group.into()],
                ..Default::default()
            });
            tasks.spawn(async move {
                let response = app.exchange(&token).await;
                let retry_after = response.headers().contains_key("retry-after");
                let (status, body) = status_json(response).await;
                (sub, status, body, retry_after)
            });
        }
    }
    let answers = tasks.join_all().await;

    let store = &app.broker.audit().store;
    let rows = store
        .list_issuances(&IssuanceQuery {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("rows readable");
    let mut issued = 0;
    for (sub, status, body, retry_after) in &answers {
        match status {
            200 => {
                issued += 1;
                let token = body["access_token"].as_str().expect("access_token");
                let minted_for = app.google.issued(token).expect("a token Google issued");
                assert_eq!(&minted_for.subject, sub, "{sub} got another's credential");
                let fingerprint = sts_bridge::secret::fingerprint(token.as_bytes());
                assert!(
                    rows.iter().any(|r| r.subject == *sub
                        && r.outcome == "issued"
                        && r.token_sha256.as_deref() == Some(fingerprint.as_str())),
                    "no record of {sub}'s credential"
                );
            }
            503 => {
                assert_eq!(body["error"], "temporarily_unavailable", "{body}");
                assert!(retry_after, "503 without Retry-After: {body}");
                assert!(body.get("access_token").is_none());
            }
            other => panic!("{sub}: unexpected {other}: {body}"),
        }
    }
    assert!(issued > 0, "chaos let nothing through: {answers:?}");
    assert!(app.google.call_count() >= 80, "{}", app.google.call_count());
    let metrics = scrape(&app).await;
    let state = breaker_state(&metrics).expect("breaker state exported");
    assert!([0.0, 1.0, 2.0].contains(&state), "{state}");
    eprintln!(
        "chaos: {issued} of {} issued, {} calls to Google, breaker state {state}",
        answers.len(),
        app.google.call_count()
    );
}
