//! Public clients (the Cloud SDK's), `POST /v1/introspect` and scope narrowing: what gcloud
//! needs of a token endpoint besides the exchange itself.

use crate::helpers::*;
use crate::records::{admin_token, old_record};
use base64::Engine;
use serde_json::{json, Value};
use sts_bridge::config::{ClientSettings, CLOUD_SDK_CLIENT_ID, CLOUD_SDK_CLIENT_SECRET};
use sts_bridge::devstack::{self, CLOUD_PLATFORM};
use sts_bridge::secret::fingerprint;

on_both_backends!(
    a_handed_out_credential_is_introspected_as_active_with_its_principal,
    introspection_answers_inactive_for_unknown_expired_and_revoked_credentials,
);

/// The scopes gcloud asks for on every exchange.
const GCLOUD_SCOPES: &str = "openid https://www.googleapis.com/auth/userinfo.email \
    https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/appengine.admin \
    https://www.googleapis.com/auth/sqlservice.login https://www.googleapis.com/auth/compute";

/// The `Authorization` value gcloud sends: its public client id and secret.
fn basic(id: &str, secret: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    format!("Basic {encoded}")
}

fn cloud_sdk() -> String {
    basic(CLOUD_SDK_CLIENT_ID, CLOUD_SDK_CLIENT_SECRET)
}

/// The exchange gcloud makes for an `external_account` file without impersonation.
async fn gcloud_exchange(app: &TestApp, authorization: &str, scope: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/token", app.address))
        .header("authorization", authorization)
        .form(&[
            ("grant_type", GRANT),
            ("audience", devstack::DEV_PROVIDER),
            ("requested_token_type", ACCESS_TOKEN),
            ("scope", scope),
            ("subject_token", &app.token_for("auth0|alice")),
            ("subject_token_type", JWT),
        ])
        .send()
        .await
        .unwrap()
}

async fn introspect(app: &TestApp, authorization: Option<&str>, token: &str) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/v1/introspect", app.address))
        .form(&[("token", token), ("token_type_hint", ACCESS_TOKEN)]);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

fn narrowing(settings: &mut sts_bridge::config::Settings) {
    settings.targets[0].narrow_scopes = true;
}

#[tokio::test]
async fn the_cloud_sdk_public_client_is_accepted_and_recorded_as_claimed() {
    let app = spawn_app().await;
    let (status, body) =
        status_json(gcloud_exchange(&app, &cloud_sdk(), CLOUD_PLATFORM).await).await;
    assert_eq!(status, 200, "{body}");

    let records = app.records().await;
    let record = &records[0];
    assert_eq!(record.outcome, "issued");
    assert_eq!(
        record.claimed_client.as_deref(),
        Some(CLOUD_SDK_CLIENT_ID),
        "the public client is recorded as claimed"
    );
    assert_eq!(
        record.client_id.as_deref(),
        Some(devstack::DEV_CLIENT),
        "client_id keeps the token's azp: the public client proved nothing"
    );
}

#[tokio::test]
async fn the_public_client_id_with_another_secret_is_refused() {
    let app = spawn_app().await;
    let response =
        gcloud_exchange(&app, &basic(CLOUD_SDK_CLIENT_ID, "guess"), CLOUD_PLATFORM).await;
    assert!(response.headers().contains_key("www-authenticate"));
    let description = assert_error(response, 401, "invalid_client").await;
    assert!(description.contains("public client"), "{description}");
    assert_eq!(app.google.call_count(), 0);
}

#[tokio::test]
async fn a_public_client_does_not_satisfy_require_client_auth() {
    let app = spawn_app_with(|s| {
        s.clients = vec![ClientSettings {
            id: "pipeline".into(),
            // SHA-256 of "secret".
            secret_sha256: "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
                .into(),
            azp: Vec::new(),
            targets: Vec::new(),
        }];
        s.require_client_auth = true;
    })
    .await;
    let response = gcloud_exchange(&app, &cloud_sdk(), CLOUD_PLATFORM).await;
    let description = assert_error(response, 401, "invalid_client").await;
    assert!(description.contains("confidential client"), "{description}");

    let (status, _) = status_json(introspect(&app, Some(&cloud_sdk()), "ya29.x").await).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn public_clients_can_be_switched_off() {
    let app = spawn_app_with(|s| s.public_clients.clear()).await;
    let response = gcloud_exchange(&app, &cloud_sdk(), CLOUD_PLATFORM).await;
    let description = assert_error(response, 401, "invalid_client").await;
    assert!(description.contains("not configured"), "{description}");
}

#[tokio::test]
async fn gclouds_scopes_are_refused_by_a_strict_target() {
    let app = spawn_app().await;
    let response = gcloud_exchange(&app, &cloud_sdk(), GCLOUD_SCOPES).await;
    let description = assert_error(response, 400, "invalid_scope").await;
    assert!(description.contains("not allowed"), "{description}");
    assert_eq!(app.google.call_count(), 0);
}

#[tokio::test]
async fn a_narrowing_target_grants_the_allowed_part_and_says_so() {
    let app = spawn_app_with(narrowing).await;
    let (status, body) =
        status_json(gcloud_exchange(&app, &cloud_sdk(), GCLOUD_SCOPES).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], CLOUD_PLATFORM, "{body}");

    let calls = app.google.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].field("scope"), Some(CLOUD_PLATFORM));
    let issued = app
        .google
        .issued(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(issued.scopes, vec![CLOUD_PLATFORM.to_owned()]);
    assert_eq!(app.records().await[0].scopes, CLOUD_PLATFORM);
}

#[tokio::test]
async fn a_narrowing_target_still_refuses_when_nothing_allowed_remains() {
    let app = spawn_app_with(narrowing).await;
    let response = gcloud_exchange(
        &app,
        &cloud_sdk(),
        "openid https://www.googleapis.com/auth/compute",
    )
    .await;
    assert_error(response, 400, "invalid_scope").await;
    assert_eq!(app.google.call_count(), 0);
}

async fn a_handed_out_credential_is_introspected_as_active_with_its_principal(backend: Backend) {
    let Some(app) = spawn_app_on(backend, narrowing).await else {
        return;
    };
    let (status, body) =
        status_json(gcloud_exchange(&app, &cloud_sdk(), GCLOUD_SCOPES).await).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();

    let response = introspect(&app, Some(&cloud_sdk()), token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let info: Value = response.json().await.unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(
        info["username"],
        "principal://iam.googleapis.com/locations/global/workforcePools/dev-pool/subject/auth0|alice"
    );
    assert_eq!(info["sub"], "auth0|alice");
    assert_eq!(info["scope"], CLOUD_PLATFORM);
    assert_eq!(info["client_id"], CLOUD_SDK_CLIENT_ID);
    let exp = info["exp"].as_i64().unwrap();
    assert!(
        (now + 3500..=now + 3600).contains(&exp),
        "exp {exp}, now {now}"
    );
    let text = info.to_string();
    assert!(!text.contains(token), "the answer never echoes the token");

    // Without client authentication, as RFC 7662 callers with no client may send it.
    let (status, info) = status_json(introspect(&app, None, token).await).await;
    assert_eq!((status, &info["active"]), (200, &json!(true)));
    let (_, info) = status_json(introspect(&app, None, "ya29.unknown").await).await;
    assert_eq!(info, json!({ "active": false }));

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("sts_bridge_introspections_total{active=\"true\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("sts_bridge_introspections_total{active=\"false\"} 1"));
}

async fn introspection_answers_inactive_for_unknown_expired_and_revoked_credentials(
    backend: Backend,
) {
    let Some(app) = spawn_app_on(backend, |_| {}).await else {
        return;
    };
    let inactive = json!({ "active": false });
    let (status, info) =
        status_json(introspect(&app, Some(&cloud_sdk()), "ya29.unknown").await).await;
    assert_eq!((status, info), (200, inactive.clone()));

    // A credential whose record says it has expired, and one whose record says it is
    // valid (the same token can be handed out again from the cache, newest record wins).
    let mut old = old_record("auth0|bob", 0);
    old.expires_at = Some(time::OffsetDateTime::now_utc() - time::Duration::seconds(1));
    old.token_sha256 = Some(fingerprint(b"ya29.expired"));
    let mut fresh = old_record("auth0|bob", 0);
    fresh.expires_at = Some(time::OffsetDateTime::now_utc() + time::Duration::minutes(5));
    fresh.token_sha256 = Some(fingerprint(b"ya29.valid"));
    let store = &app.broker.audit().store;
    store.insert_issuances(&[old, fresh]).await.unwrap();
    let (_, info) = status_json(introspect(&app, None, "ya29.expired").await).await;
    assert_eq!(info, inactive, "expired");
    let (_, info) = status_json(introspect(&app, None, "ya29.valid").await).await;
    assert_eq!(info["active"], true, "{info}");

    // A credential of a subject revoked since.
    let (status, body) = status_json(app.exchange(&app.token_for("auth0|carol")).await).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (_, info) = status_json(introspect(&app, None, &token).await).await;
    assert_eq!(info["active"], true, "{info}");
    let response = app
        .http
        .post(format!("{}/admin/v1/revocations", app.address))
        .bearer_auth(admin_token(&app))
        .json(&json!({"subject": "auth0|carol", "until": "2099-01-01T00:00:00Z", "reason": "left"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (_, info) = status_json(introspect(&app, None, &token).await).await;
    assert_eq!(info, inactive, "revoked");

    // The lookup is by fingerprint: the fingerprint itself is not the token.
    let (_, info) = status_json(introspect(&app, None, &fingerprint(token.as_bytes())).await).await;
    assert_eq!(info, inactive);
}

#[tokio::test]
async fn introspection_refuses_malformed_requests() {
    let app = spawn_app().await;
    let url = format!("{}/v1/introspect", app.address);
    let response = app
        .http
        .post(&url)
        .form(&[("token_type_hint", ACCESS_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid_request").await;

    let response = app
        .http
        .post(&url)
        .body("token=a&token=b")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid_request").await;

    let response = app
        .http
        .post(&url)
        .json(&json!({"token": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    let response = app
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", "a".repeat(9000)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    let response = introspect(&app, Some(&basic("someone", "x")), "ya29.x").await;
    assert_error(response, 401, "invalid_client").await;

    let response = app.get("/v1/introspect").await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}

#[tokio::test]
async fn introspection_spends_the_same_per_address_allowance_as_exchanges() {
    let app = spawn_app_with(|s| {
        s.limits.per_client_address = sts_bridge::config::RateSettings {
            per_minute: 1,
            burst: 2,
        }
    })
    .await;
    assert_eq!(
        app.exchange(&app.token_for("auth0|alice")).await.status(),
        200
    );
    let (status, _) = status_json(introspect(&app, None, "ya29.x").await).await;
    assert_eq!(status, 200);
    let response = introspect(&app, None, "ya29.x").await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, 429, "slow_down").await;
}
