//! The shared cache tier: replicas on one Redis make one upstream call per credential,
//! keep serving when Redis goes away, and leave nothing readable in it.

use crate::helpers::*;
use crate::metrics::{sample, scrape, wait_for_metric};
use crate::records::admin_token;
use crate::redis::{CuttableProxy, TestRedis};
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sts_bridge::config::Settings;
use tokio::task::JoinSet;

fn shared<'a>(redis: &'a TestRedis, addr: &'a str) -> impl FnOnce(&mut Settings) + 'a {
    move |s: &mut Settings| {
        redis.configure(s, addr);
        // Two hundred requests of one subject from one address are the point here.
        s.limits.enabled = false;
    }
}

async fn access_token(app: &TestApp, token: &str) -> String {
    let (status, body) = status_json(app.exchange(token).await).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

const TIER2_UP: &str = "sts_bridge_cache_tier2_up";

/// Waits until `app` reaches Redis (its first probe may have been too slow on a loaded
/// machine; the next one follows within a second).
async fn until_tier2_up(app: &TestApp) {
    wait_for_metric(app, TIER2_UP, 1.0, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn two_replicas_answer_two_hundred_cold_requests_with_one_upstream_call_and_one_token() {
    let Some(redis) = TestRedis::connect().await else {
        return;
    };
    let Some(a) = spawn_app_on(Backend::Postgres, shared(&redis, &redis.addr)).await else {
        return;
    };
    until_tier2_up(&a).await;
    let b = spawn_replica(&a, shared(&redis, &redis.addr)).await;
    until_tier2_up(&b).await;
    // Google answers slowly, so every request arrives while the first exchange runs.
    a.google.set_delay(Duration::from_millis(300));
    let token = a.token_for("auth0|alice");
    let (a, b) = (Arc::new(a), Arc::new(b));

    let mut tasks = JoinSet::new();
    for i in 0..200 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        let token = token.clone();
        tasks.spawn(async move { access_token(&app, &token).await });
    }
    let tokens: HashSet<String> = tasks.join_all().await.into_iter().collect();

    assert_eq!(tokens.len(), 1, "replicas handed out different credentials");
    assert_eq!(a.google.call_count(), 1, "upstream calls");
    // Every credential handed out has its record; only one of them came from Google.
    let records = a.newest_records(1000).await;
    assert_eq!(records.len(), 200);
    let fresh = records
        .iter()
        .filter(|r| r.source.as_deref() == Some("sts"))
        .count();
    assert_eq!(fresh, 1, "records of fresh exchanges");
    assert!(records
        .iter()
        .all(|r| matches!(r.source.as_deref(), Some("sts" | "cache"))));
}

#[tokio::test]
async fn a_credential_another_replica_obtained_is_served_as_cached_and_recorded() {
    let Some(redis) = TestRedis::connect().await else {
        return;
    };
    let a = spawn_app_with(shared(&redis, &redis.addr)).await;
    until_tier2_up(&a).await;
    let b = spawn_replica(&a, shared(&redis, &redis.addr)).await;
    until_tier2_up(&b).await;
    let token = a.token_for("auth0|alice");

    let first = access_token(&a, &token).await;
    let second = access_token(&b, &token).await;

    assert_eq!(first, second);
    assert_eq!(a.google.call_count(), 1);
    let records = b.newest_records(1000).await;
    let sources: Vec<_> = records.iter().map(|r| r.source.clone()).collect();
    assert_eq!(
        sources,
        vec![Some("cache".to_owned()), Some("sts".to_owned())],
        "newest first"
    );
    let metrics = scrape(&b).await;
    assert_eq!(
        sample(
            &metrics,
            "sts_bridge_cache_tier2_lookups_total",
            &[("result", "hit")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn redis_holds_no_token_subject_or_issuer_in_clear() {
    let Some(redis) = TestRedis::connect().await else {
        return;
    };
    let app = spawn_app_with(shared(&redis, &redis.addr)).await;
    until_tier2_up(&app).await;
    let mut secrets = vec![app.issuer.issuer()];
    for sub in ["auth0|alice", "auth0|bob", "auth0|carol"] {
        let token = app.token_for(sub);
        secrets.push(access_token(&app, &token).await);
        secrets.push(token);
        secrets.push(sub.to_owned());
        secrets.push(sub.split('|').next_back().unwrap().to_owned());
    }

    let entries = redis.entries().await;
    assert_eq!(redis.value_keys().await.len(), 3, "one value per subject");
    for (key, value) in &entries {
        for secret in &secrets {
            assert!(!key.contains(secret.as_str()), "key {key} holds {secret}");
            let needle = secret.as_bytes();
            assert!(
                !value.windows(needle.len()).any(|w| w == needle),
                "value of {key} holds {secret}"
            );
        }
    }
}

#[tokio::test]
async fn a_revoke_removes_the_subjects_credentials_from_redis() {
    let Some(redis) = TestRedis::connect().await else {
        return;
    };
    let app = spawn_app_with(shared(&redis, &redis.addr)).await;
    until_tier2_up(&app).await;
    access_token(&app, &app.token_for("auth0|alice")).await;
    access_token(&app, &app.token_for("auth0|bob")).await;
    assert_eq!(redis.value_keys().await.len(), 2);

    let response = app
        .http
        .post(format!("{}/admin/v1/revocations", app.address))
        .bearer_auth(admin_token(&app))
        .json(&json!({"subject": "auth0|alice", "until": "2099-01-01T00:00:00Z", "reason": "left"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // Bob's entry stays; Alice's is gone.
    assert_eq!(redis.value_keys().await.len(), 1);
    let b = spawn_replica(&app, shared(&redis, &redis.addr)).await;
    until_tier2_up(&b).await;
    access_token(&b, &b.token_for("auth0|bob")).await;
    assert_eq!(
        app.google.call_count(),
        2,
        "bob's credential came from Redis"
    );
}

#[tokio::test]
async fn redis_cut_mid_run_fails_no_request_and_the_tier_recovers() {
    let Some(redis) = TestRedis::connect().await else {
        return;
    };
    let proxy = CuttableProxy::start(&redis.addr).await;
    let app = Arc::new(spawn_app_with(shared(&redis, &proxy.addr)).await);
    until_tier2_up(&app).await;

    // A steady stream of cold requests (a new subject each), so every one asks Redis.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for worker in 0..4 {
        let (app, stop) = (app.clone(), stop.clone());
        tasks.spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let token = app.token_for(&format!("auth0|w{worker}-{n}"));
                let response = app.exchange(&token).await;
                if response.status() != 200 {
                    failures.push(response.text().await.unwrap_or_default());
                }
                n += 1;
            }
            (n, failures)
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    wait_for_metric(&app, TIER2_UP, 0.0, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    until_tier2_up(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let results = tasks.join_all().await;

    let served: usize = results.iter().map(|(n, _)| n).sum();
    let failures: Vec<&String> = results.iter().flat_map(|(_, f)| f).collect();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(served > 20, "only {served} requests ran");
    let metrics = scrape(&app).await;
    assert!(
        sample(
            &metrics,
            "sts_bridge_cache_tier2_fallbacks_total",
            &[("reason", "down")]
        )
        .unwrap_or(0.0)
            > 0.0,
        "requests during the cut went around Redis"
    );
    // Back in use: a new credential is shared again.
    let before = redis.value_keys().await.len();
    access_token(&app, &app.token_for("auth0|after")).await;
    assert_eq!(redis.value_keys().await.len(), before + 1);
}

#[tokio::test]
async fn a_hung_redis_costs_each_request_at_most_the_timeout_and_the_tier_recovers() {
    let Some(redis) = TestRedis::connect().await else {
        return;
    };
    let proxy = CuttableProxy::start(&redis.addr).await;
    let app = spawn_app_with(|s| {
        redis.configure(s, &proxy.addr);
        s.cache.redis_timeout_ms = 200;
    })
    .await;
    until_tier2_up(&app).await;
    access_token(&app, &app.token_for("auth0|before")).await;

    // Connections stay open and silent: only the command timeout notices.
    proxy.stall();
    for i in 0..10 {
        let started = Instant::now();
        access_token(&app, &app.token_for(&format!("auth0|hung-{i}"))).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "request {i} took {:?}",
            started.elapsed()
        );
    }
    let metrics = scrape(&app).await;
    assert_eq!(sample(&metrics, TIER2_UP, &[]), Some(0.0));
    assert!(
        sample(
            &metrics,
            "sts_bridge_cache_tier2_fallbacks_total",
            &[("reason", "timeout")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // The silent connection is given up, not waited on for ever.
    proxy.restore();
    until_tier2_up(&app).await;
    let before = redis.value_keys().await.len();
    access_token(&app, &app.token_for("auth0|after")).await;
    assert_eq!(redis.value_keys().await.len(), before + 1);
}

#[tokio::test]
async fn a_replica_waits_for_another_replicas_exchange_only_as_long_as_configured() {
    let Some(redis) = TestRedis::connect().await else {
        return;
    };
    let short_wait = |s: &mut Settings| {
        redis.configure(s, &redis.addr);
        s.cache.redis_lock_wait_ms = 200;
    };
    let a = spawn_app_with(short_wait).await;
    until_tier2_up(&a).await;
    let b = spawn_replica(&a, short_wait).await;
    until_tier2_up(&b).await;
    // The first exchange outlasts the wait: the second replica gives up and exchanges.
    a.google.set_delay(Duration::from_millis(1000));
    let token = a.token_for("auth0|alice");

    let started = Instant::now();
    let (first, second) = tokio::join!(access_token(&a, &token), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        access_token(&b, &token).await
    });

    assert!(!first.is_empty() && !second.is_empty());
    assert_eq!(a.google.call_count(), 2);
    assert!(started.elapsed() < Duration::from_secs(3));
    let metrics = scrape(&b).await;
    let gave_up: f64 = ["timeout", "abandoned"]
        .iter()
        .filter_map(|o| {
            sample(
                &metrics,
                "sts_bridge_cache_tier2_lock_waits_total",
                &[("outcome", o)],
            )
        })
        .sum();
    assert_eq!(gave_up, 1.0);
}
