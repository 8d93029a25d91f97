//! Per-target policy, seen from a caller: who is let through, who is refused with which
//! error, what is recorded, and how long a credential is said to last.

use crate::helpers::*;
use serde_json::{json, Value};
use sts_bridge::audit::IssuanceQuery;
use sts_bridge::config::PolicySettings;
use sts_bridge::devstack::{MintRequest, DEV_CLIENT};

fn mint(app: &TestApp, groups: &[&str], extra: Value) -> String {
    let Value::Object(extra) = extra else {
        panic!("extra claims must be an object")
    };
    app.issuer.mint(&MintRequest {
        sub: "auth0|alice".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        extra,
        ..Default::default()
    })
}

fn analysts_only(settings: &mut sts_bridge::config::Settings) {
    settings.targets[0].policy = PolicySettings {
        any_groups: vec!["analysts".into()],
        clients: vec![DEV_CLIENT.into()],
        ..PolicySettings::default()
    };
}

async fn refusal_rows(app: &TestApp) -> Vec<(String, Option<String>, String)> {
    app.broker
        .audit()
        .store
        .list_issuances(&IssuanceQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("rows readable")
        .into_iter()
        .map(|r| (r.outcome, r.error_code, r.target))
        .collect()
}

#[tokio::test]
async fn a_member_of_the_required_group_gets_a_credential() {
    let app = spawn_app_with(analysts_only).await;
    let (status, body) =
        status_json(app.exchange(&mint(&app, &["analysts"], json!({}))).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.google.call_count(), 1);
}

#[tokio::test]
async fn a_caller_outside_the_required_groups_is_refused_with_the_rule_and_a_record() {
    let app = spawn_app_with(analysts_only).await;
    let response = app.exchange(&mint(&app, &["finance"], json!({}))).await;
    let description = assert_error(response, 403, "access_denied").await;
    assert!(
        description.contains("any_groups") && description.contains("analysts"),
        "{description}"
    );
    assert_eq!(
        app.google.call_count(),
        0,
        "a refused caller never reaches Google"
    );
    assert_eq!(
        refusal_rows(&app).await,
        vec![(
            "refused".into(),
            Some("access_denied".into()),
            "bigquery".into()
        )]
    );
}

#[tokio::test]
async fn a_token_from_another_client_is_refused_as_unauthorized_client() {
    let app = spawn_app_with(analysts_only).await;
    let token = mint(&app, &["analysts"], json!({ "azp": "someone-elses-app" }));
    let description = assert_error(app.exchange(&token).await, 403, "unauthorized_client").await;
    assert!(
        description.contains("someone-elses-app") && description.contains(DEV_CLIENT),
        "{description}"
    );
    assert_eq!(
        refusal_rows(&app).await[0].1.as_deref(),
        Some("unauthorized_client")
    );
}

#[tokio::test]
async fn machine_tokens_are_refused_unless_the_target_allows_them() {
    let app = spawn_app().await;
    let machine = app.token_for("reporting-job@clients");
    let description = assert_error(app.exchange(&machine).await, 403, "access_denied").await;
    assert!(description.contains("machine_tokens"), "{description}");

    let app = spawn_app_with(|s| s.targets[0].policy.machine_tokens = true).await;
    let machine = app.token_for("reporting-job@clients");
    let (status, body) = status_json(app.exchange(&machine).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_target_naming_nobody_refuses_everyone() {
    let app = spawn_app_with(|s| s.targets[0].policy = PolicySettings::default()).await;
    let description = assert_error(
        app.exchange(&app.token_for("auth0|alice")).await,
        403,
        "access_denied",
    )
    .await;
    assert!(description.contains("serves nobody"), "{description}");
}

#[tokio::test]
async fn expires_in_never_exceeds_the_targets_longest_lifetime() {
    let app = spawn_app_with(|s| s.targets[0].policy.max_lifetime_secs = 600).await;
    let (status, body) = status_json(app.exchange(&app.token_for("auth0|alice")).await).await;
    assert_eq!(status, 200, "{body}");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!(
        (590..=600).contains(&expires_in),
        "Google gave 3600 s; the cap is 600, got {expires_in}"
    );
    // The cached credential is capped the same way on the next call.
    let (_, body) = status_json(app.exchange(&app.token_for("auth0|alice")).await).await;
    assert!(body["expires_in"].as_u64().unwrap() <= 600, "{body}");
}
