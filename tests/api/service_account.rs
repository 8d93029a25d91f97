//! `workforce` targets with a `service_account`: the federated identity impersonates it
//! through IAM Credentials, and its token is what the caller receives.

use crate::helpers::*;
use crate::metrics::{sample, scrape};
use serde_json::json;
use sts_bridge::config::Settings;
use sts_bridge::devstack::{google_error_body, CLOUD_PLATFORM, DEV_PROVIDER, DEV_TARGET};

const SA: &str = "bq-reader@dev-project.iam.gserviceaccount.com";
const HOP: &str = "hop@dev-project.iam.gserviceaccount.com";

fn impersonating(s: &mut Settings) {
    s.targets[0].service_account = Some(SA.into());
}

#[tokio::test]
async fn the_caller_gets_the_service_accounts_token_obtained_with_the_federated_one() {
    let app = spawn_app_with(impersonating).await;
    app.google.grant_token_creator(SA, "auth0|alice");

    let (status, body) = status_json(app.exchange(&app.token_for("auth0|alice")).await).await;

    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let issued = app.google.issued(token).expect("issued by the stand-in");
    assert_eq!(issued.subject, SA);
    assert_eq!(issued.impersonated_by.as_deref(), Some("auth0|alice"));
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((3500..=3600).contains(&expires_in), "{expires_in}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);

    let calls = app.google.iam_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "generateAccessToken");
    assert_eq!(calls[0].service_account, SA);
    let federated = app
        .google
        .issued(calls[0].bearer.as_deref().unwrap())
        .expect("the bearer is a federated token");
    assert_eq!(federated.subject, "auth0|alice");
    assert_eq!(federated.audience, DEV_PROVIDER);
    assert_eq!(
        calls[0].body,
        json!({"scope": [CLOUD_PLATFORM], "lifetime": "3600s", "delegates": []})
    );
}

#[tokio::test]
async fn every_hand_out_is_recorded_with_the_person_and_the_service_account() {
    let app = spawn_app_with(impersonating).await;
    app.google.grant_token_creator(SA, "auth0|alice");
    let token = app.token_for("auth0|alice");

    let first = app.exchange(&token).await;
    assert_eq!(first.status(), 200);
    let second = app.exchange(&token).await;
    assert_eq!(second.status(), 200);

    assert_eq!(app.google.iam_calls().len(), 1, "second one from the cache");
    let records = app.records().await;
    assert_eq!(records.len(), 2);
    let sources: Vec<_> = records.iter().map(|r| r.source.clone().unwrap()).collect();
    assert_eq!(sources, ["cache", "impersonation"]);
    for r in &records {
        assert_eq!(r.subject, "auth0|alice");
        assert_eq!(r.service_account.as_deref(), Some(SA));
        assert_eq!(r.outcome, "issued");
        assert_eq!(r.target, DEV_TARGET);
    }
}

#[tokio::test]
async fn the_delegation_chain_is_sent_and_checked_link_by_link() {
    let app = spawn_app_with(|s| {
        impersonating(s);
        s.targets[0].delegates = vec![HOP.into()];
        s.targets[0].token_lifetime_secs = 900;
        // The refusal below is not to be answered again from memory.
        s.google.refusal_memory_secs = 0;
    })
    .await;
    app.google.add_service_account(SA);
    app.google.grant_token_creator(HOP, "auth0|alice");
    let token = app.token_for("auth0|alice");

    // The hop may not yet act as the target account.
    let description = assert_error(app.exchange(&token).await, 403, "access_denied").await;
    assert!(description.contains("PERMISSION_DENIED"), "{description}");

    app.google.grant_token_creator(SA, HOP);
    let (status, body) = status_json(app.exchange(&app.token_for("auth0|alice")).await).await;
    assert_eq!(status, 200, "{body}");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((850..=900).contains(&expires_in), "{expires_in}");
    let call = app.google.iam_calls().pop().unwrap();
    assert_eq!(
        call.body["delegates"],
        json!([format!("projects/-/serviceAccounts/{HOP}")])
    );
    assert_eq!(call.body["lifetime"], "900s");
}

#[tokio::test]
async fn permission_denied_is_refused_with_access_denied_and_googles_reason() {
    let app = spawn_app_with(impersonating).await;
    app.google.add_service_account(SA);

    let description = assert_error(
        app.exchange(&app.token_for("auth0|alice")).await,
        403,
        "access_denied",
    )
    .await;

    assert!(description.contains("PERMISSION_DENIED"), "{description}");
    assert!(
        description.contains("iam.serviceAccounts.getAccessToken"),
        "{description}"
    );
    let records = app.records().await;
    assert_eq!(records[0].outcome, "refused");
    assert_eq!(records[0].error_code.as_deref(), Some("access_denied"));
    assert_eq!(records[0].service_account.as_deref(), Some(SA));
}

#[tokio::test]
async fn an_unknown_service_account_is_refused_with_invalid_target_and_googles_reason() {
    let app = spawn_app_with(impersonating).await;

    let description = assert_error(
        app.exchange(&app.token_for("auth0|alice")).await,
        400,
        "invalid_target",
    )
    .await;

    assert!(description.contains("NOT_FOUND"), "{description}");
    assert!(description.contains(SA), "{description}");
}

#[tokio::test]
async fn resource_exhausted_is_temporarily_unavailable_with_retry_after() {
    // One attempt: what the caller sees once the retries are spent.
    let app = spawn_app_with(|s| {
        impersonating(s);
        s.google.max_attempts = 1;
    })
    .await;
    app.google.grant_token_creator(SA, "auth0|alice");
    app.google.fail_iam_next(
        429,
        google_error_body(
            429,
            "Quota exceeded for quota metric 'Generate credentials'.",
        ),
    );

    let response = app.exchange(&app.token_for("auth0|alice")).await;

    assert_eq!(response.headers()["retry-after"], "5");
    let description = assert_error(response, 503, "temporarily_unavailable").await;
    assert!(description.contains("RESOURCE_EXHAUSTED"), "{description}");
    // Not a refusal: the next request tries again and gets the token.
    let response = app.exchange(&app.token_for("auth0|alice")).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn googles_passing_failures_are_retried_and_the_caller_gets_the_token() {
    let app = spawn_app_with(impersonating).await;
    app.google.grant_token_creator(SA, "auth0|alice");
    app.google.fail_iam_next(
        503,
        google_error_body(503, "The service is currently unavailable."),
    );
    app.google.fail_iam_next(
        429,
        google_error_body(
            429,
            "Quota exceeded for quota metric 'Generate credentials'.",
        ),
    );

    let (status, body) = status_json(app.exchange(&app.token_for("auth0|alice")).await).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.google.iam_calls().len(),
        3,
        "two failures, then the token"
    );
}

#[tokio::test]
async fn a_federated_and_an_impersonated_credential_of_one_person_never_share_a_cache_entry() {
    let app = spawn_app_with(|s| {
        let mut other = s.targets[0].clone();
        other.name = "bigquery-sa".into();
        other.provider = DEV_PROVIDER.replace("providers/", "providers/sa-");
        other.service_account = Some(SA.into());
        s.targets.push(other);
    })
    .await;
    app.google.grant_token_creator(SA, "auth0|alice");
    let token = app.token_for("auth0|alice");

    let (_, plain) = status_json(app.exchange(&token).await).await;
    let (status, sa) = status_json(
        app.post_form(&[
            ("grant_type", GRANT),
            ("audience", "bigquery-sa"),
            ("requested_token_type", ACCESS_TOKEN),
            ("subject_token", &token),
            ("subject_token_type", JWT),
        ])
        .await,
    )
    .await;

    assert_eq!(status, 200, "{sa}");
    let plain = app
        .google
        .issued(plain["access_token"].as_str().unwrap())
        .unwrap();
    let sa = app
        .google
        .issued(sa["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(plain.subject, "auth0|alice");
    assert_eq!(sa.subject, SA);
}

#[tokio::test]
async fn the_federated_token_may_call_iam_and_the_service_account_token_has_the_callers_scopes() {
    let app = spawn_app_with(impersonating).await;
    app.google.grant_token_creator(SA, "auth0|alice");
    let token = app.token_for("auth0|alice");

    let response = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", DEV_TARGET),
            ("scope", sts_bridge::devstack::BIGQUERY),
            ("requested_token_type", ACCESS_TOKEN),
            ("subject_token", &token),
            ("subject_token_type", JWT),
        ])
        .await;

    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    // Google refuses IAM Credentials calls with a token of BigQuery's scope only.
    assert_eq!(app.google.calls()[0].field("scope"), Some(CLOUD_PLATFORM));
    let call = app.google.iam_calls().pop().unwrap();
    assert_eq!(call.body["scope"], json!([sts_bridge::devstack::BIGQUERY]));
    let issued = app
        .google
        .issued(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(issued.scopes, [sts_bridge::devstack::BIGQUERY]);
}

#[tokio::test]
async fn iam_credentials_failing_repeatedly_opens_its_own_breaker_and_sts_stays_closed() {
    let app = spawn_app_with(|s| {
        impersonating(s);
        s.google.max_attempts = 1;
        s.google.breaker.failure_threshold = 2;
        s.google.breaker.cool_down_secs = 1;
    })
    .await;
    app.google.grant_token_creator(SA, "auth0|alice");
    let unavailable = || google_error_body(503, "The service is currently unavailable.");
    app.google.fail_iam_next(503, unavailable());
    app.google.fail_iam_next(503, unavailable());
    for _ in 0..2 {
        let response = app.exchange(&app.token_for("auth0|alice")).await;
        assert_error(response, 503, "temporarily_unavailable").await;
    }
    let iam_calls = app.google.iam_calls().len();
    assert_eq!(iam_calls, 2);

    // Refused at once, with the time until the probe; IAM Credentials is not called.
    let response = app.exchange(&app.token_for("auth0|alice")).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let text = assert_error(response, 503, "temporarily_unavailable").await;
    assert!(text.contains("IAM Credentials"), "{text}");
    assert!(text.contains("failed repeatedly"), "{text}");
    assert_eq!(app.google.iam_calls().len(), iam_calls);

    let metrics = scrape(&app).await;
    let state = |upstream| {
        sample(
            &metrics,
            "sts_bridge_upstream_breaker_state",
            &[("upstream", upstream)],
        )
    };
    assert_eq!(state("iam_credentials"), Some(1.0), "open");
    assert_eq!(state("google_sts"), Some(0.0), "STS answered every call");

    // After the cool-down one probe goes through and closes it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = status_json(app.exchange(&app.token_for("auth0|alice")).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.google.iam_calls().len(), iam_calls + 1);
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(
            &metrics,
            "sts_bridge_upstream_breaker_state",
            &[("upstream", "iam_credentials")]
        ),
        Some(0.0),
        "closed again"
    );
}
