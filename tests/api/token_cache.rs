//! The validated-token cache: a repeated token skips the signature check, yet revocation,
//! key withdrawal and expiry still apply on every request.

use crate::helpers::*;
use crate::metrics::{sample, scrape};
use crate::records::revoke;
use std::time::Duration;
use sts_bridge::devstack::MintRequest;

const LOOKUPS: &str = "sts_bridge_validated_token_cache_total";

async fn lookups(app: &TestApp) -> (Option<f64>, Option<f64>) {
    let body = scrape(app).await;
    (
        sample(&body, LOOKUPS, &[("result", "hit")]),
        sample(&body, LOOKUPS, &[("result", "miss")]),
    )
}

async fn exchange_ok(app: &TestApp, token: &str) {
    let (status, body) = status_json(app.exchange(token).await).await;
    assert_eq!(status, 200, "{body}");
}

/// Exchanges `token` twice, so the second exchange is the first cache hit.
async fn exchange_until_cached(app: &TestApp, token: &str) {
    exchange_ok(app, token).await;
    exchange_ok(app, token).await;
    assert_eq!(lookups(app).await.0, Some(1.0), "the token is cached");
}

#[tokio::test]
async fn a_repeated_token_is_a_cache_hit_and_a_new_token_a_miss() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    exchange_ok(&app, &token).await;
    exchange_ok(&app, &token).await;
    exchange_ok(&app, &token).await;
    assert_eq!(lookups(&app).await, (Some(2.0), Some(1.0)));

    exchange_ok(&app, &app.token_for("auth0|bob")).await;
    assert_eq!(lookups(&app).await, (Some(2.0), Some(2.0)));
}

#[tokio::test]
async fn with_the_cache_off_every_request_is_fully_validated() {
    let app = spawn_app_with(|s| s.cache.validated_tokens.enabled = false).await;
    let token = app.token_for("auth0|alice");
    exchange_ok(&app, &token).await;
    exchange_ok(&app, &token).await;
    assert_eq!(lookups(&app).await, (None, None));
}

#[tokio::test]
async fn a_cached_token_whose_key_is_withdrawn_is_refused_on_the_next_request() {
    let app = spawn_app_with(|s| s.issuers[0].jwks_refresh_secs = 1).await;
    let old_kid = app.issuer.current_kid();
    let token = app.token_for("auth0|alice");
    exchange_until_cached(&app, &token).await;

    app.issuer.add_key(true);
    app.issuer.withdraw(&old_kid);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let text = assert_error(app.exchange(&token).await, 400, "invalid_grant").await;
    assert!(text.contains("does not publish"), "{text}");
    assert_eq!(
        lookups(&app).await.0,
        Some(1.0),
        "no hit after the withdrawal"
    );
}

#[tokio::test]
async fn a_revoked_subject_is_refused_although_its_token_is_cached() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");
    exchange_until_cached(&app, &token).await;

    assert_eq!(revoke(&app, "auth0|alice").await.status(), 201);
    let text = assert_error(app.exchange(&token).await, 403, "access_denied").await;
    assert!(text.contains("revoked"), "{text}");
    assert_eq!(
        lookups(&app).await.0,
        Some(2.0),
        "the refused request was a cache hit"
    );
}

#[tokio::test]
async fn a_cached_token_is_refused_once_it_expires() {
    let app = spawn_app_with(|s| s.issuers[0].leeway_secs = 0).await;
    let token = app.issuer.mint(&MintRequest {
        sub: "auth0|alice".into(),
        ttl_secs: Some(2),
        ..Default::default()
    });
    exchange_until_cached(&app, &token).await;

    tokio::time::sleep(Duration::from_millis(3100)).await;
    let text = assert_error(app.exchange(&token).await, 400, "invalid_grant").await;
    assert!(text.contains("expired"), "{text}");
}

#[tokio::test]
async fn a_token_is_kept_no_longer_than_the_configured_cap() {
    let app = spawn_app_with(|s| s.cache.validated_tokens.max_secs = 1).await;
    let token = app.token_for("auth0|alice");
    exchange_ok(&app, &token).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    exchange_ok(&app, &token).await;
    assert_eq!(lookups(&app).await, (None, Some(2.0)));
}
