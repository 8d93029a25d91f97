//! Revocations that hold: none leaves after the revoke returned, keyed by issuer and
//! subject, without the administrator's reason in what the caller reads.

use crate::helpers::*;
use crate::records::admin_token;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sts_bridge::devstack::MintRequest;
use tokio::task::JoinSet;

async fn revoke(app: &TestApp, body: serde_json::Value) -> reqwest::Response {
    app.http
        .post(format!("{}/admin/v1/revocations", app.address))
        .bearer_auth(admin_token(app))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_revoke_racing_a_hundred_exchanges_lets_none_through_after_it_returned() {
    let app = Arc::new(spawn_app().await);
    // Each request carries its own claim, so each waits for Google on its own: requests
    // that passed the first revocation check before the revoke are still in flight after.
    app.google.set_delay(Duration::from_millis(300));
    let started = Instant::now();
    let served = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..100u64 {
        let app = app.clone();
        let served = served.clone();
        let Ok(serde_json::Value::Object(extra)) =
            serde_json::from_value::<serde_json::Value>(json!({ "n": i }))
        else {
            unreachable!()
        };
        let token = app.issuer.mint(&MintRequest {
            sub: "auth0|alice".into(),
            extra,
            ..Default::default()
        });
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(15 * i)).await;
            let response = app.exchange(&token).await;
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            let completed = Instant::now();
            if status == 200 {
                served.fetch_add(1, Ordering::SeqCst);
            }
            (status, body, completed)
        });
    }
    // Revoke once the first credentials have left, with many requests still waiting for
    // Google (launched over 1.5 s, each waiting 300 ms).
    let wait_from = Instant::now();
    while served.load(Ordering::SeqCst) == 0 {
        assert!(
            wait_from.elapsed() < Duration::from_secs(20),
            "nothing was served"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let response = revoke(
        &app,
        json!({"subject": "auth0|alice", "until": "2099-01-01T00:00:00Z", "reason": "laptop stolen"}),
    )
    .await;
    let revoke_returned = Instant::now();
    assert_eq!(response.status(), 201);
    let results = tasks.join_all().await;

    let mut refused_after = 0;
    for (status, body, completed) in &results {
        match status {
            200 => assert!(
                *completed < revoke_returned,
                "a credential left {:?} after the revoke returned",
                *completed - revoke_returned
            ),
            403 => {
                assert!(
                    body.contains("revoked until 2099-01-01T00:00:00Z"),
                    "{body}"
                );
                assert!(!body.contains("laptop stolen"), "the reason leaked: {body}");
                refused_after += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        refused_after > 0,
        "no request was refused; elapsed {:?}",
        started.elapsed()
    );
    let ok = results.iter().filter(|r| r.0 == 200).count();
    assert!(
        ok > 0,
        "no request finished before the revoke; the race was not run"
    );
}

#[tokio::test]
async fn a_revocation_names_the_issuer_and_spares_the_same_subject_elsewhere() {
    let app = spawn_app().await;
    let response = revoke(
        &app,
        json!({"issuer": "https://other-tenant.example/", "subject": "auth0|alice",
               "until": "2099-01-01T00:00:00Z", "reason": "x"}),
    )
    .await;
    let description = assert_error(response, 400, "invalid_request").await;
    assert!(description.contains(&app.issuer.issuer()), "{description}");

    let response = revoke(
        &app,
        json!({"subject": "auth0|alice", "until": "2099-01-01T00:00:00Z", "reason": "x"}),
    )
    .await;
    let (status, body) = status_json(response).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["issuer"],
        app.issuer.issuer(),
        "the only issuer is the default"
    );
    assert_error(
        app.exchange(&app.token_for("auth0|alice")).await,
        403,
        "access_denied",
    )
    .await;
}
