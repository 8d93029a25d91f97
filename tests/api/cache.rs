use crate::helpers::*;
use std::collections::HashSet;
use std::time::Duration;
use tokio::task::JoinSet;

async fn access_token_and_expiry(app: &TestApp, token: &str) -> (String, u64) {
    let (status, body) = status_json(app.exchange(token).await).await;
    assert_eq!(status, 200, "{body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["expires_in"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn second_identical_call_is_served_from_cache_with_the_remaining_lifetime() {
    let app = spawn_app().await;
    let token = app.token_for("auth0|alice");

    let (first, first_expiry) = access_token_and_expiry(&app, &token).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (second, second_expiry) = access_token_and_expiry(&app, &token).await;

    assert_eq!(first, second);
    assert_eq!(app.google.call_count(), 1, "second call went upstream");
    assert!(
        second_expiry < first_expiry,
        "{second_expiry} !< {first_expiry}"
    );
}

#[tokio::test]
async fn a_new_token_for_the_same_person_reuses_the_cached_credential() {
    let app = spawn_app().await;
    let (first, _) = access_token_and_expiry(&app, &app.token_for("auth0|alice")).await;
    let (second, _) = access_token_and_expiry(&app, &app.token_for("auth0|alice")).await;
    assert_eq!(first, second);
    assert_eq!(app.google.call_count(), 1);
}

#[tokio::test]
async fn hundred_concurrent_cold_requests_for_one_subject_make_one_upstream_call() {
    let app = spawn_app().await;
    app.google.set_delay(Duration::from_millis(300));
    let token = app.token_for("auth0|alice");
    let app = std::sync::Arc::new(app);

    let mut tasks = JoinSet::new();
    for _ in 0..100 {
        let (app, token) = (app.clone(), token.clone());
        tasks.spawn(async move { access_token_and_expiry(&app, &token).await.0 });
    }
    let tokens: HashSet<String> = tasks.join_all().await.into_iter().collect();

    assert_eq!(tokens.len(), 1, "callers received different credentials");
    assert_eq!(app.google.call_count(), 1);
}

#[tokio::test]
async fn two_subjects_concurrently_each_get_only_their_own_credential() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.google.set_delay(Duration::from_millis(100));
    let mut tasks = JoinSet::new();
    for i in 0..40 {
        let sub = if i % 2 == 0 {
            "auth0|alice"
        } else {
            "auth0|bob"
        };
        let (app, token) = (app.clone(), app.token_for(sub));
        tasks.spawn(async move {
            let (access, _) = access_token_and_expiry(&app, &token).await;
            (sub, access)
        });
    }
    let results = tasks.join_all().await;

    for (sub, access) in &results {
        let issued = app.google.issued(access).expect("issued by Google");
        assert_eq!(
            issued.subject, *sub,
            "{sub} received a credential of {}",
            issued.subject
        );
    }
    let distinct: HashSet<&String> = results.iter().map(|(_, a)| a).collect();
    assert_eq!(distinct.len(), 2);
    assert_eq!(app.google.call_count(), 2);
}

#[tokio::test]
async fn changed_group_membership_does_not_reuse_the_old_credential() {
    let app = spawn_app().await;
    let mint = |groups: Vec<String>| {
        app.issuer.mint(&sts_bridge::devstack::MintRequest {
            sub: "auth0|alice".into(),
            groups,
            ..Default::default()
        })
    };
    let (analyst, _) = access_token_and_expiry(&app, &mint(vec!["analysts".into()])).await;
    let (admin, _) = access_token_and_expiry(&app, &mint(vec!["admins".into()])).await;
    assert_ne!(analyst, admin);
    assert_eq!(app.google.call_count(), 2);
}

#[tokio::test]
async fn inside_the_refresh_margin_callers_keep_the_valid_token_while_one_refresh_runs() {
    let app = std::sync::Arc::new(spawn_app().await);
    // Below the 300 s refresh margin, above the 60 s floor: every hit is inside the margin.
    app.google.set_expires_in(290);
    let token = app.token_for("auth0|alice");
    let (first, _) = access_token_and_expiry(&app, &token).await;
    app.google.set_expires_in(3599);
    app.google.set_delay(Duration::from_millis(300));

    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let (app, token) = (app.clone(), token.clone());
        tasks.spawn(async move { access_token_and_expiry(&app, &token).await });
    }
    for (access, expires_in) in tasks.join_all().await {
        assert_eq!(
            access, first,
            "a caller waited for the refresh instead of being served"
        );
        assert!(expires_in <= 290);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    assert_eq!(app.google.call_count(), 2, "exactly one background refresh");
    let (refreshed, expires_in) = access_token_and_expiry(&app, &token).await;
    assert_ne!(refreshed, first);
    assert!(expires_in > 3000);
}

/// A token for alice with the dev issuer's defaults plus `extra` claims.
fn alice_with(app: &TestApp, extra: serde_json::Value, ttl_secs: Option<u64>) -> String {
    let serde_json::Value::Object(extra) = extra else {
        panic!("extra claims must be an object")
    };
    app.issuer.mint(&sts_bridge::devstack::MintRequest {
        sub: "auth0|alice".into(),
        ttl_secs,
        extra,
        ..Default::default()
    })
}

#[tokio::test]
async fn a_token_differing_in_any_claim_google_could_map_gets_its_own_credential() {
    use serde_json::json;
    let app = spawn_app().await;
    let variants = [
        json!({}),
        json!({ "email": "alice@example.com" }),
        json!({ "email": "mallory@example.com" }),
        json!({ "name": "Alice" }),
        json!({ "https://sts-bridge.dev/department": "finance" }),
        json!({ "scope": "openid profile email" }),
        json!({ "permissions": ["bq:read"] }),
        json!({ "https://sts-bridge.dev/roles": ["engineer"] }),
        json!({ "org_id": "org_1" }),
    ];
    let mut tokens = HashSet::new();
    for (i, extra) in variants.iter().enumerate() {
        let (access, _) =
            access_token_and_expiry(&app, &alice_with(&app, extra.clone(), None)).await;
        assert_eq!(
            app.google.call_count(),
            i + 1,
            "{extra} reused another token's credential"
        );
        assert!(
            tokens.insert(access),
            "{extra} was handed another token's credential"
        );
    }
}

#[tokio::test]
async fn a_token_differing_only_in_time_claims_and_jti_reuses_the_credential() {
    use serde_json::json;
    let app = spawn_app().await;
    let now = jsonwebtoken::get_current_timestamp();
    let (first, _) = access_token_and_expiry(
        &app,
        &alice_with(
            &app,
            json!({ "jti": "a", "auth_time": now - 100 }),
            Some(3600),
        ),
    )
    .await;
    let (second, _) = access_token_and_expiry(
        &app,
        &alice_with(
            &app,
            json!({ "jti": "b", "auth_time": now - 50, "nbf": now - 10, "iat": now - 5 }),
            Some(1800),
        ),
    )
    .await;
    assert_eq!(first, second);
    assert_eq!(app.google.call_count(), 1);
}

#[tokio::test]
async fn an_issuers_explicit_cache_key_claims_decide_what_tells_tokens_apart() {
    use serde_json::json;
    let app = spawn_app_with(|s| s.issuers[0].cache_key_claims = Some(vec!["email".into()])).await;
    let token = |extra| alice_with(&app, extra, None);
    let (first, _) =
        access_token_and_expiry(&app, &token(json!({ "email": "a@x", "name": "A" }))).await;
    let (renamed, _) =
        access_token_and_expiry(&app, &token(json!({ "email": "a@x", "name": "B" }))).await;
    assert_eq!(
        first, renamed,
        "a claim outside cache_key_claims split the cache"
    );
    let (other_email, _) =
        access_token_and_expiry(&app, &token(json!({ "email": "b@x", "name": "A" }))).await;
    assert_ne!(first, other_email);
    assert_eq!(app.google.call_count(), 2);
}
