//! RFC 8693 actor tokens: a service acting for a person presents its own
//! client-credentials token; targets may require one from listed clients.

use crate::helpers::*;
use serde_json::{json, Value};
use sts_bridge::devstack::{self, MintRequest};

const ETL: &str = "etl-service";

fn machine_token(app: &TestApp, client: &str) -> String {
    let Value::Object(extra) = json!({ "azp": client }) else {
        unreachable!()
    };
    app.issuer.mint(&MintRequest {
        sub: format!("{client}@clients"),
        extra,
        ..Default::default()
    })
}

async fn exchange_with_actor(
    app: &TestApp,
    subject: &str,
    actor: Option<&str>,
) -> reqwest::Response {
    let mut fields = vec![
        ("grant_type", GRANT),
        ("audience", devstack::DEV_TARGET),
        ("subject_token", subject),
        ("subject_token_type", JWT),
    ];
    if let Some(actor) = actor {
        fields.push(("actor_token", actor));
        fields.push(("actor_token_type", JWT));
    }
    app.post_form(&fields).await
}

async fn spawn_requiring_etl() -> TestApp {
    spawn_app_with(|s| s.targets[0].policy.actor_clients = vec![ETL.into()]).await
}

#[tokio::test]
async fn a_required_actor_from_an_allowed_client_is_accepted_and_recorded() {
    let app = spawn_requiring_etl().await;
    let alice = app.token_for("auth0|alice");
    let actor = machine_token(&app, ETL);
    let (status, body) = status_json(exchange_with_actor(&app, &alice, Some(&actor)).await).await;
    assert_eq!(status, 200, "{body}");
    let rows = app.records().await;
    assert_eq!(rows[0].subject, "auth0|alice");
    assert_eq!(rows[0].actor.as_deref(), Some("etl-service@clients"));
}

#[tokio::test]
async fn a_missing_actor_is_refused_when_the_target_requires_one() {
    let app = spawn_requiring_etl().await;
    let alice = app.token_for("auth0|alice");
    let text = assert_error(
        exchange_with_actor(&app, &alice, None).await,
        403,
        "access_denied",
    )
    .await;
    assert!(
        text.contains("actor_clients") && text.contains(ETL),
        "{text}"
    );
    assert_eq!(app.google.call_count(), 0);
}

#[tokio::test]
async fn an_actor_from_another_client_or_a_person_is_refused() {
    let app = spawn_requiring_etl().await;
    let alice = app.token_for("auth0|alice");
    let other = machine_token(&app, "billing-job");
    let response = exchange_with_actor(&app, &alice, Some(&other)).await;
    let text = assert_error(response, 403, "unauthorized_client").await;
    assert!(text.contains("billing-job"), "{text}");

    let person = app.token_for("auth0|bob");
    let response = exchange_with_actor(&app, &alice, Some(&person)).await;
    let text = assert_error(response, 403, "access_denied").await;
    assert!(text.contains("client-credentials"), "{text}");
    assert_eq!(app.google.call_count(), 0);
}

#[tokio::test]
async fn an_actor_token_that_does_not_validate_is_an_invalid_grant() {
    let app = spawn_app().await;
    let alice = app.token_for("auth0|alice");
    let response = exchange_with_actor(&app, &alice, Some("not-a-jwt")).await;
    let text = assert_error(response, 400, "invalid_grant").await;
    assert!(text.starts_with("actor_token:"), "{text}");
    let response = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", devstack::DEV_TARGET),
            ("subject_token", alice.as_str()),
            ("subject_token_type", JWT),
            ("actor_token", alice.as_str()),
        ])
        .await;
    let text = assert_error(response, 400, "invalid_request").await;
    assert!(text.contains("actor_token_type"), "{text}");
}

#[tokio::test]
async fn the_actor_is_part_of_the_cache_key() {
    let app = spawn_app().await;
    let alice = app.token_for("auth0|alice");
    let etl = machine_token(&app, ETL);
    let billing = machine_token(&app, "billing-job");
    for actor in [None, Some(&etl), Some(&etl), Some(&billing)] {
        let response = exchange_with_actor(&app, &alice, actor.map(String::as_str)).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        app.google.call_count(),
        3,
        "none, etl and billing each get their own credential; etl's second call is cached"
    );
}
