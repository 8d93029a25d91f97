//! Revocations pushed between replicas on one Postgres database: a revoke or lift on one
//! replica holds on the others within a second, with the poll set far too long to explain
//! it, and a listener cut off catches up on what it missed once it is back.

use crate::helpers::*;
use crate::metrics::{sample, scrape, wait_for_metric};
use crate::records::admin_token;
use serde_json::json;
use std::time::{Duration, Instant};
use sts_bridge::audit::LISTENER_APPLICATION_NAME;

/// Far longer than any of these tests: only the push can explain what they see.
const POLL_SECS: u64 = 600;
const TEN_SECONDS: Duration = Duration::from_secs(10);

const ALICE: &str = "auth0|alice";

async fn revoke(app: &TestApp, subject: &str) {
    let response = app
        .http
        .post(format!("{}/admin/v1/revocations", app.address))
        .bearer_auth(admin_token(app))
        .json(&json!({"subject": subject, "until": "2099-01-01T00:00:00Z", "reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

async fn lift(app: &TestApp, subject: &str) {
    let response = app
        .http
        .delete(format!(
            "{}/admin/v1/revocations/{}",
            app.address,
            subject.replace('|', "%7C")
        ))
        .bearer_auth(admin_token(app))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    sample(&scrape(app).await, name, &[]).unwrap_or(0.0)
}

/// How long until an exchange of `token` on `app` answers `status`; panics after `limit`.
/// Asks every 25 ms, well within the per-subject rate limit.
async fn time_until_status(app: &TestApp, token: &str, status: u16, limit: Duration) -> Duration {
    let from = Instant::now();
    loop {
        let got = app.exchange(token).await.status().as_u16();
        if got == status {
            return from.elapsed();
        }
        assert!(
            from.elapsed() < limit,
            "still {got} after {:?}, expected {status}",
            from.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_revoke_and_a_lift_on_one_replica_hold_on_another_within_a_second() {
    let Some(replicas) = spawn_replicas(Backend::Postgres, 2, |s| {
        s.audit.revocation_poll_secs = POLL_SECS;
    })
    .await
    else {
        return;
    };
    let (a, b) = (&replicas[0], &replicas[1]);
    for app in [a, b] {
        wait_for_metric(app, "sts_bridge_revocation_listener_up", 1.0, TEN_SECONDS).await;
    }
    let token = b.token_for(ALICE);
    assert_eq!(b.exchange(&token).await.status(), 200);
    assert_eq!(b.exchange(&token).await.status(), 200);
    assert_eq!(
        b.google.call_count(),
        1,
        "the second answer came from B's cache"
    );

    revoke(a, ALICE).await;
    let took = time_until_status(b, &token, 403, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(1),
        "B refused only after {took:?}"
    );
    let description = assert_error(b.exchange(&token).await, 403, "access_denied").await;
    assert!(description.contains("revoked until"), "{description}");

    lift(a, ALICE).await;
    let took = time_until_status(b, &token, 200, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(1),
        "B served again only after {took:?}"
    );
    assert_eq!(
        b.google.call_count(),
        2,
        "B's cached credential was dropped by the revoke: the lift needs a fresh exchange"
    );
    assert_eq!(
        metric(b, "sts_bridge_revocation_notifications_total").await,
        2.0,
        "B heard the revoke and the lift"
    );
}

#[tokio::test]
async fn a_listener_cut_off_reconnects_and_applies_the_revocation_it_missed() {
    // Long enough that the revoke below is surely made while B's listener is away.
    const RETRY_MS: u64 = 3_000;
    let Some(replicas) = spawn_replicas(Backend::Postgres, 2, |s| {
        s.audit.revocation_poll_secs = POLL_SECS;
        s.audit.revocation_push_retry_ms = RETRY_MS;
    })
    .await
    else {
        return;
    };
    let (a, b) = (&replicas[0], &replicas[1]);
    for app in [a, b] {
        wait_for_metric(app, "sts_bridge_revocation_listener_up", 1.0, TEN_SECONDS).await;
    }
    let token = b.token_for(ALICE);
    assert_eq!(b.exchange(&token).await.status(), 200);

    let db_url = b.db.url.clone().expect("a Postgres database");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db_url)
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(LISTENER_APPLICATION_NAME)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        killed,
        vec![true, true],
        "one listener connection per replica"
    );
    wait_for_metric(b, "sts_bridge_revocation_listener_up", 0.0, TEN_SECONDS).await;
    let cut_off = Instant::now();

    revoke(a, ALICE).await;
    assert_eq!(
        b.exchange(&token).await.status(),
        200,
        "B learnt of the revocation while its listener was away"
    );
    assert!(
        cut_off.elapsed() < Duration::from_millis(RETRY_MS),
        "the revoke took too long to be made while B was away; the test proves nothing"
    );

    wait_for_metric(b, "sts_bridge_revocation_listener_up", 1.0, TEN_SECONDS).await;
    let took = time_until_status(b, &token, 403, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(1),
        "B refused only {took:?} after its listener came back"
    );
    assert_eq!(
        metric(b, "sts_bridge_revocation_notifications_total").await,
        0.0,
        "the revocation was read from the table, not heard"
    );
    assert_eq!(
        metric(b, "sts_bridge_revocation_listener_reconnects_total").await,
        1.0
    );
    let description = assert_error(b.exchange(&token).await, 403, "access_denied").await;
    assert!(description.contains("revoked until"), "{description}");
}
