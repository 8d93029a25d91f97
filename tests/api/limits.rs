//! Inbound limits: per-subject and per-address rates, bounded refusal records, the request
//! timeout and the store's statement timeout.

use crate::helpers::*;
use crate::metrics::{sample, scrape};
use reqwest::Response;
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sts_bridge::config::RateSettings;

/// Asserts a 429 `slow_down` with a whole-second `Retry-After` of at least 1 and at most
/// `max_secs`; returns the description.
async fn assert_rate_limited(response: Response, max_secs: u64) -> String {
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("Retry-After on a 429")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(
        (1..=max_secs).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_error(response, 429, "slow_down").await
}

fn rate(per_minute: u32, burst: u32) -> RateSettings {
    RateSettings { per_minute, burst }
}

#[tokio::test]
async fn a_subject_over_its_rate_gets_429_with_retry_after_and_others_are_served() {
    let app = spawn_app_with(|s| s.limits.per_subject = rate(1, 2)).await;
    let alice = app.token_for("auth0|alice");
    for _ in 0..2 {
        assert_eq!(app.exchange(&alice).await.status(), 200);
    }
    let description = assert_rate_limited(app.exchange(&alice).await, 60).await;
    assert!(description.contains("this subject"), "{description}");
    // The limit is Alice's, not the address's nor the service's.
    assert_eq!(
        app.exchange(&app.token_for("auth0|bob")).await.status(),
        200
    );

    let metrics = scrape(&app).await;
    assert_eq!(
        sample(
            &metrics,
            "sts_bridge_rate_limited_total",
            &[("scope", "subject")]
        ),
        Some(1.0)
    );
    let refused: Vec<_> = app
        .records()
        .await
        .into_iter()
        .filter(|r| r.outcome == "refused")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].subject, "auth0|alice");
    assert_eq!(refused[0].error_code.as_deref(), Some("slow_down"));
}

#[tokio::test]
async fn an_address_over_its_rate_gets_429_before_anything_else_is_read() {
    let app = spawn_app_with(|s| s.limits.per_client_address = rate(1, 3)).await;
    let token = app.token_for("auth0|alice");
    assert_eq!(app.exchange(&token).await.status(), 200);
    // Malformed requests spend the allowance too: they cost the service as much.
    assert_eq!(app.post_form(&[("grant_type", GRANT)]).await.status(), 400);
    assert_eq!(app.exchange(&token).await.status(), 200);
    let description = assert_rate_limited(app.exchange(&token).await, 60).await;
    assert!(description.contains("this address"), "{description}");
    // Not even a well-formed body is looked at once the address is over its rate.
    assert_rate_limited(app.post_form(&[("grant_type", "nonsense")]).await, 60).await;

    let metrics = scrape(&app).await;
    assert_eq!(
        sample(
            &metrics,
            "sts_bridge_rate_limited_total",
            &[("scope", "client_address")]
        ),
        Some(2.0)
    );
    // A refusal before any token was validated leaves no record.
    assert_eq!(app.records().await.len(), 2);
}

#[tokio::test]
async fn rate_limits_can_be_switched_off() {
    let app = spawn_app_with(|s| {
        s.limits.enabled = false;
        s.limits.per_subject = rate(1, 1);
        s.limits.per_client_address = rate(1, 1);
    })
    .await;
    let token = app.token_for("auth0|alice");
    for _ in 0..3 {
        assert_eq!(app.exchange(&token).await.status(), 200);
    }
}

#[tokio::test]
async fn one_subjects_refusal_records_are_bounded_and_the_rest_counted() {
    let app = spawn_app_with(|s| s.limits.refusal_records_per_subject = rate(1, 3)).await;
    let token = app.token_for("auth0|mallory");
    for _ in 0..10 {
        let response = app
            .post_form(&[
                ("grant_type", GRANT),
                ("audience", "no-such-target"),
                ("subject_token", token.as_str()),
                ("subject_token_type", JWT),
            ])
            .await;
        // Every refusal is still answered as such.
        assert_error(response, 400, "invalid_target").await;
    }
    // Another subject's refusals are recorded on their own allowance.
    let response = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", "no-such-target"),
            ("subject_token", app.token_for("auth0|bob").as_str()),
            ("subject_token_type", JWT),
        ])
        .await;
    assert_error(response, 400, "invalid_target").await;

    let rows = app.records().await;
    let of = |subject: &str| rows.iter().filter(|r| r.subject == subject).count();
    assert_eq!((of("auth0|mallory"), of("auth0|bob")), (3, 1));
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(&metrics, "sts_bridge_refusal_records_dropped_total", &[]),
        Some(7.0)
    );
    // A credential is always recorded, whatever the refusals before it.
    assert_eq!(app.exchange(&token).await.status(), 200);
    let rows = app.records().await;
    assert!(rows
        .iter()
        .any(|r| r.subject == "auth0|mallory" && r.outcome == "issued"));
}

#[tokio::test]
async fn an_exchange_past_the_request_timeout_gets_503_instead_of_hanging() {
    let app = spawn_app_with(|s| s.http.request_timeout_ms = 500).await;
    app.google.set_delay(Duration::from_secs(5));
    let started = Instant::now();
    let response = app.exchange(&app.token_for("auth0|alice")).await;
    let took = started.elapsed();
    assert!(response.headers().contains_key("retry-after"));
    let description = assert_error(response, 503, "temporarily_unavailable").await;
    assert!(description.contains("500 ms"), "{description}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(&metrics, "sts_bridge_request_timeouts_total", &[]),
        Some(1.0)
    );
}

on_both_backends!(a_statement_stuck_on_a_lock_fails_in_time_with_503);

/// Another session holds the write lock on the records; the app's insert must give up
/// after the statement timeout, long before the commit timeout.
async fn a_statement_stuck_on_a_lock_fails_in_time_with_503(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let db = Arc::new(db);
    let app = spawn_app_on_db(db.clone(), |s| {
        s.audit.statement_timeout_ms = 300;
        s.audit.commit_timeout_ms = 30_000;
    })
    .await;
    let token = app.token_for("auth0|alice");
    let lock = Lock::take(&db).await;

    let started = Instant::now();
    let response = app.exchange(&token).await;
    let took = started.elapsed();
    let description = assert_error(response, 503, "temporarily_unavailable").await;
    assert!(
        description.contains("issuance store is unavailable"),
        "{description}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");

    lock.release().await;
    assert_eq!(app.exchange(&token).await.status(), 200);
}

enum Lock {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

impl Lock {
    async fn take(db: &TestDb) -> Self {
        match &db.url {
            Some(url) => {
                let mut conn = PgConnection::connect(url).await.unwrap();
                conn.execute("BEGIN; LOCK TABLE issuances IN ACCESS EXCLUSIVE MODE")
                    .await
                    .unwrap();
                Lock::Postgres(conn)
            }
            None => {
                let url = format!("sqlite://{}", db.sqlite_path().display());
                let mut conn = SqliteConnection::connect(&url).await.unwrap();
                conn.execute("BEGIN IMMEDIATE").await.unwrap();
                Lock::Sqlite(conn)
            }
        }
    }

    async fn release(self) {
        match self {
            Lock::Postgres(mut c) => c.execute("ROLLBACK").await.map(|_| ()),
            Lock::Sqlite(mut c) => c.execute("ROLLBACK").await.map(|_| ()),
        }
        .unwrap();
    }
}
