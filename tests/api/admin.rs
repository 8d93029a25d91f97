//! Who may administer: `admin.issuer` and `admin.audiences` pin the admin tokens.

use crate::helpers::*;
use serde_json::{json, Value};
use std::net::TcpListener;
use sts_bridge::config::Settings;
use sts_bridge::devstack::{DevIssuer, MintRequest, DEV_AUDIENCE};

/// Adds `second` as a further trusted issuer, configured like the dev issuer.
fn trust(settings: &mut Settings, second: &DevIssuer) {
    let mut issuer = settings.issuers[0].clone();
    issuer.issuer = second.issuer();
    settings.issuers.push(issuer);
}

fn admin_token(issuer: &DevIssuer, extra: Value) -> String {
    let Value::Object(extra) = extra else {
        unreachable!()
    };
    issuer.mint(&MintRequest {
        sub: "auth0|admin".into(),
        permissions: vec!["sts:admin".into()],
        extra,
        ..Default::default()
    })
}

async fn list(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .get(format!("{}/admin/v1/issuances", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn admin_tokens_from_a_second_trusted_issuer_are_refused_when_admin_issuer_is_set() {
    let second = DevIssuer::start(TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    // Without the pin, any trusted issuer's admin may administer ...
    let open = spawn_app_with(|s| trust(s, &second)).await;
    assert_eq!(
        list(&open, &admin_token(&second, json!({}))).await.status(),
        200
    );

    // ... with it, only the pinned one.
    let pinned = spawn_app_with(|s| {
        trust(s, &second);
        s.admin.issuer = Some(s.issuers[0].issuer.clone());
    })
    .await;
    let response = list(&pinned, &admin_token(&second, json!({}))).await;
    let text = assert_error(response, 401, "invalid_token").await;
    assert!(text.contains(&pinned.issuer.issuer()), "{text}");
    let own = admin_token(&pinned.issuer, json!({}));
    assert_eq!(list(&pinned, &own).await.status(), 200);
    // The second issuer's people still exchange tokens as before.
    let person = second.mint(&MintRequest {
        sub: "auth0|bob".into(),
        ..Default::default()
    });
    assert_eq!(pinned.exchange(&person).await.status(), 200);
}

#[tokio::test]
async fn admin_tokens_must_carry_one_of_the_admin_audiences_when_set() {
    const ADMIN_API: &str = "https://sts-bridge.dev/admin";
    let app = spawn_app_with(|s| {
        s.issuers[0].audiences.push(ADMIN_API.into());
        s.admin.audiences = vec![ADMIN_API.into()];
    })
    .await;
    let user_api = admin_token(&app.issuer, json!({}));
    let text = assert_error(list(&app, &user_api).await, 401, "invalid_token").await;
    assert!(text.contains(ADMIN_API), "{text}");
    let admin_api = admin_token(&app.issuer, json!({ "aud": [DEV_AUDIENCE, ADMIN_API] }));
    assert_eq!(list(&app, &admin_api).await.status(), 200);
}

#[tokio::test]
async fn admin_and_metrics_on_their_own_listeners_are_not_on_the_public_port() {
    let app = spawn_app_with(|s| {
        s.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        s.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = admin_token(&app.issuer, json!({}));
    let admin_base = app.admin_address.clone().expect("admin listener");
    let metrics_base = app.metrics_address.clone().expect("metrics listener");
    assert_ne!(admin_base, metrics_base);

    // The public port answers exchanges only.
    assert_eq!(list(&app, &admin).await.status(), 404);
    assert_eq!(app.get("/metrics").await.status(), 404);
    assert_eq!(
        app.exchange(&app.token_for("auth0|alice")).await.status(),
        200
    );

    let on = |base: &str, path: &str| app.http.get(format!("{base}{path}"));
    let listed = on(&admin_base, "/admin/v1/issuances")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let metrics = on(&metrics_base, "/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("sts_bridge_exchanges_total"));
    // Each separate listener serves its own routes and the health checks, nothing else.
    for (base, path) in [
        (&admin_base, "/metrics"),
        (&metrics_base, "/admin/v1/issuances"),
    ] {
        assert_eq!(
            on(base, path).send().await.unwrap().status(),
            404,
            "{base}{path}"
        );
    }
    let token = app
        .http
        .post(format!("{admin_base}/v1/token"))
        .form(&[("grant_type", GRANT)])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 404);
    for base in [&admin_base, &metrics_base] {
        assert_eq!(on(base, "/readyz").send().await.unwrap().status(), 200);
    }
}
