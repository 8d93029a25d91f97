//! The service mends itself: a dead record writer is restarted (and the service reports
//! itself not ready meanwhile), and replicas on one database take turns at the purge.

use crate::helpers::*;
use crate::metrics::{sample, scrape};
use crate::records::old_record;
use serde_json::Value;
use std::time::Duration;
use sts_bridge::audit::{IssuanceQuery, Store};
use sts_bridge::secret::fingerprint;

/// Polls /readyz until its status is `want`; returns the last body.
async fn readiness_becomes(app: &TestApp, want: u16) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, body) = status_json(app.get("/readyz").await).await;
        if status == want {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never answered {want}; last body: {last}");
}

#[tokio::test]
async fn a_dead_record_writer_fails_readiness_refuses_cleanly_and_is_restarted() {
    // Long enough that the dead spell is seen; the restart itself is what is awaited.
    let app = spawn_app_with(|s| s.audit.writer_restart_backoff_ms = 3_000).await;
    let before = app.records().await.len();

    app.broker.audit().writer.panic_on_next_batch();
    let response = app.exchange(&app.token_for("auth0|alice")).await;
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = status_json(response).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body.get("access_token").is_none(), "{body}");

    let not_ready = readiness_becomes(&app, 503).await;
    let reason = not_ready["reason"].as_str().unwrap();
    assert!(
        reason.contains("issuance writer stopped") && reason.contains("injected fault"),
        "{reason}"
    );
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(&metrics, "sts_bridge_audit_writer_up", &[]),
        Some(0.0)
    );

    // While it is down a caller is told so at once, and gets nothing.
    let description = assert_error(
        app.exchange(&app.token_for("auth0|bob")).await,
        503,
        "temporarily_unavailable",
    )
    .await;
    assert!(description.contains("writer has stopped"), "{description}");
    assert_eq!(
        app.records().await.len(),
        before,
        "a refused hand-out left a row"
    );

    readiness_becomes(&app, 200).await;
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(&metrics, "sts_bridge_audit_writer_up", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "sts_bridge_audit_writer_restarts_total", &[]),
        Some(1.0)
    );

    let (status, body) = status_json(app.exchange(&app.token_for("auth0|carol")).await).await;
    assert_eq!(status, 200, "{body}");
    let rows = app.records().await;
    assert_eq!(rows.len(), before + 1);
    assert_eq!(rows[0].subject, "auth0|carol");
    assert_eq!(
        rows[0].token_sha256.as_deref(),
        Some(fingerprint(body["access_token"].as_str().unwrap().as_bytes()).as_str())
    );
}

async fn subjects(store: &Store) -> Vec<String> {
    let mut subjects: Vec<String> = store
        .list_issuances(&IssuanceQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.subject)
        .collect();
    subjects.sort();
    subjects
}

#[tokio::test]
async fn one_replica_at_a_time_purges_a_shared_postgres_database() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let url = db.url.as_deref();
    let nowhere = db.sqlite_path();
    let first = Store::connect(url, &nowhere, 2).await.unwrap();
    let second = Store::connect(url, &nowhere, 2).await.unwrap();
    first.migrate().await.unwrap();
    let old: Vec<_> = (0..5)
        .map(|i| old_record(&format!("auth0|old-{i}"), 40))
        .collect();
    first.insert_issuances(&old).await.unwrap();
    first
        .insert_issuances(&[old_record("auth0|recent", 1)])
        .await
        .unwrap();
    let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(30);

    let purging = first
        .try_purge_lock()
        .await
        .unwrap()
        .expect("nobody purges yet");
    assert!(second.try_purge_lock().await.unwrap().is_none());
    assert_eq!(second.purge_expired(cutoff, 2).await.unwrap(), None);
    assert_eq!(
        subjects(&second).await.len(),
        6,
        "the skipped purge deleted rows"
    );

    purging.release().await;
    assert_eq!(second.purge_expired(cutoff, 2).await.unwrap(), Some(5));
    assert_eq!(subjects(&first).await, vec!["auth0|recent".to_owned()]);

    // A holder that goes away without releasing (its task aborted) frees the lock too.
    let abandoned = second.try_purge_lock().await.unwrap().expect("released");
    drop(abandoned);
    let mut freed = None;
    for _ in 0..100 {
        freed = first.try_purge_lock().await.unwrap();
        if freed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed.is_some(), "a dropped purge lock was never freed");
}
