//! `impersonate` targets: the service's own Google identity (a service-account key file,
//! read by `gcp_auth`, whose `token_uri` is the stand-in's OAuth endpoint) impersonates the
//! service account the caller's claims select.

use crate::helpers::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use sts_bridge::config::{
    MappedClaim, PolicySettings, ServiceAccountMapping, Settings, TargetKind, TargetSettings,
};
use sts_bridge::devstack::{
    GoogleStandIn, MintRequest, BIGQUERY, CLOUD_PLATFORM, DEV_AUDIENCE, DEV_CLIENT, DEV_ROLES_CLAIM,
};

const TARGET: &str = "analytics";
const BRIDGE_SA: &str = "sts-bridge@dev-project.iam.gserviceaccount.com";
const ANALYST_SA: &str = "bq-analyst@dev-project.iam.gserviceaccount.com";
const ENGINEER_SA: &str = "bq-engineer@dev-project.iam.gserviceaccount.com";

fn mapping(claim: MappedClaim, value: &str, service_account: &str) -> ServiceAccountMapping {
    ServiceAccountMapping {
        claim,
        value: value.into(),
        service_account: service_account.into(),
    }
}

fn target() -> TargetSettings {
    TargetSettings {
        name: TARGET.into(),
        kind: TargetKind::Impersonate,
        allowed_scopes: vec![BIGQUERY.into(), CLOUD_PLATFORM.into()],
        default_scopes: vec![BIGQUERY.into()],
        policy: PolicySettings {
            clients: vec![DEV_CLIENT.into()],
            ..PolicySettings::default()
        },
        service_accounts: vec![
            mapping(MappedClaim::Roles, "analyst", ANALYST_SA),
            mapping(MappedClaim::Roles, "engineer", ENGINEER_SA),
        ],
        ..TargetSettings::default()
    }
}

/// Writes the bridge's own key file, as downloaded from Google, into `dir`; the stand-in
/// lets the bridge act as both mapped accounts.
fn bridge_key_file(google: &GoogleStandIn, dir: &Path) -> PathBuf {
    let path = dir.join("sts-bridge-key.json");
    let file = google.service_account_key_file(BRIDGE_SA);
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    google.grant_token_creator(ANALYST_SA, BRIDGE_SA);
    google.grant_token_creator(ENGINEER_SA, BRIDGE_SA);
    path
}

async fn spawn(dir: &Path, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = dir.to_owned();
    spawn_app_with_google(move |s, google| {
        s.google.credentials_file = Some(bridge_key_file(google, &dir));
        s.targets.push(target());
        tweak(s);
    })
    .await
}

fn with_roles(app: &TestApp, sub: &str, roles: &[&str]) -> String {
    app.issuer.mint(&MintRequest {
        sub: sub.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    })
}

async fn ask(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_form(&[
        ("grant_type", GRANT),
        ("audience", TARGET),
        ("requested_token_type", ACCESS_TOKEN),
        ("subject_token", token),
        ("subject_token_type", JWT),
    ])
    .await
}

#[tokio::test]
async fn an_analyst_gets_the_analyst_accounts_token_obtained_with_the_services_own_identity() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), |_| {}).await;

    let token = with_roles(&app, "auth0|alice", &["analyst"]);
    let (status, body) = status_json(ask(&app, &token).await).await;

    assert_eq!(status, 200, "{body}");
    let issued = app
        .google
        .issued(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(issued.subject, ANALYST_SA);
    // The bridge's own token, from the key file through the OAuth JWT-bearer grant.
    assert_eq!(issued.impersonated_by.as_deref(), Some(BRIDGE_SA));
    let call = app.google.iam_calls().pop().unwrap();
    let own = app.google.issued(call.bearer.as_deref().unwrap()).unwrap();
    assert_eq!(own.audience, "oauth2");
    assert_eq!(call.body["scope"], json!([BIGQUERY]));
    // Google STS has no part in it.
    assert_eq!(app.google.call_count(), 0);

    let record = &app.records().await[0];
    assert_eq!(record.subject, "auth0|alice");
    assert_eq!(record.service_account.as_deref(), Some(ANALYST_SA));
    assert_eq!(record.source.as_deref(), Some("impersonation"));
    assert_eq!(record.google_principal, None);
}

#[tokio::test]
async fn a_caller_whose_roles_map_to_no_account_is_refused_naming_the_claim() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), |_| {}).await;

    let token = with_roles(&app, "auth0|bob", &["viewer"]);
    let description = assert_error(ask(&app, &token).await, 403, "access_denied").await;

    assert!(description.contains("roles"), "{description}");
    assert!(!description.contains(ANALYST_SA), "{description}");
    assert!(app.google.iam_calls().is_empty());
    let record = &app.records().await[0];
    assert_eq!(record.outcome, "refused");
    assert_eq!(record.subject, "auth0|bob");
}

#[tokio::test]
async fn the_cache_never_serves_one_roles_account_to_another_role() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), |_| {}).await;

    let analyst = with_roles(&app, "auth0|carol", &["analyst"]);
    let engineer = with_roles(&app, "auth0|carol", &["engineer"]);
    let (_, first) = status_json(ask(&app, &analyst).await).await;
    let (_, second) = status_json(ask(&app, &engineer).await).await;
    let (_, again) = status_json(ask(&app, &analyst).await).await;

    let account = |body: &serde_json::Value| {
        app.google
            .issued(body["access_token"].as_str().unwrap())
            .unwrap()
            .subject
    };
    assert_eq!(account(&first), ANALYST_SA);
    assert_eq!(account(&second), ENGINEER_SA);
    assert_eq!(again["access_token"], first["access_token"]);
    assert_eq!(app.google.iam_calls().len(), 2);
    let records = app.records().await;
    let accounts: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.source.clone().unwrap(),
                r.service_account.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        accounts,
        [
            ("cache".to_owned(), ANALYST_SA.to_owned()),
            ("impersonation".to_owned(), ENGINEER_SA.to_owned()),
            ("impersonation".to_owned(), ANALYST_SA.to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_bridge_without_token_creator_is_refused_with_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), |s| {
        s.targets[1].service_accounts = vec![mapping(
            MappedClaim::Roles,
            "analyst",
            "ungranted@dev-project.iam.gserviceaccount.com",
        )];
    })
    .await;
    app.google
        .add_service_account("ungranted@dev-project.iam.gserviceaccount.com");

    let token = with_roles(&app, "auth0|alice", &["analyst"]);
    let description = assert_error(ask(&app, &token).await, 403, "access_denied").await;

    assert!(description.contains("PERMISSION_DENIED"), "{description}");
}

/// A free loopback port for a child process to listen on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_server_finds_its_own_identity_through_google_application_credentials() {
    // Only the stand-ins of this app are used; the server under test is a child process.
    let upstreams = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let key = bridge_key_file(&upstreams.google, dir.path());
    let port = free_port();
    let config = dir.path().join("sts-bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:{port}"
[[issuers]]
issuer = "{issuer}"
audiences = ["{DEV_AUDIENCE}"]
roles_claim = "{DEV_ROLES_CLAIM}"

[[targets]]
name = "{TARGET}"
kind = "impersonate"
allowed_scopes = ["{BIGQUERY}"]
default_scopes = ["{BIGQUERY}"]
service_accounts = [{{ claim = "roles", value = "analyst", service_account = "{ANALYST_SA}" }}]
[targets.policy]
clients = ["{DEV_CLIENT}"]

[google]
sts_url = "{sts}"
iam_credentials_url = "{iam}"
[audit]
sqlite_path = "{sqlite}"
[log]
format = "text"
"#,
            issuer = upstreams.issuer.issuer(),
            sts = upstreams.google.token_url(),
            iam = upstreams.google.iam_url(),
            sqlite = dir.path().join("records.sqlite").display(),
        ),
    )
    .unwrap();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_sts-bridge"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("GOOGLE_APPLICATION_CREDENTIALS", &key)
            .env_remove("STS_BRIDGE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = upstreams.http.get(format!("{base}/readyz")).send().await {
            ready = r.status() == 200;
            if ready {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the server became ready");

    let token = with_roles(&upstreams, "auth0|alice", &["analyst"]);
    let response = upstreams
        .http
        .post(format!("{base}/v1/token"))
        .form(&[
            ("grant_type", GRANT),
            ("audience", TARGET),
            ("requested_token_type", ACCESS_TOKEN),
            ("subject_token", token.as_str()),
            ("subject_token_type", JWT),
        ])
        .send()
        .await
        .unwrap();

    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    let issued = upstreams
        .google
        .issued(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(issued.subject, ANALYST_SA);
    assert_eq!(issued.impersonated_by.as_deref(), Some(BRIDGE_SA));
}

#[tokio::test]
async fn exchanges_are_counted_by_the_kind_of_their_target() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(dir.path(), |_| {}).await;

    let analyst = with_roles(&app, "auth0|alice", &["analyst"]);
    assert_eq!(ask(&app, &analyst).await.status(), 200);
    assert_eq!(
        app.exchange(&app.token_for("auth0|alice")).await.status(),
        200
    );

    let body = crate::metrics::scrape(&app).await;
    let count = |labels: &[(&str, &str)]| {
        crate::metrics::sample(&body, "sts_bridge_exchanges_total", labels)
    };
    assert_eq!(
        count(&[
            ("target", TARGET),
            ("kind", "impersonate"),
            ("source", "impersonation")
        ]),
        Some(1.0)
    );
    assert_eq!(
        count(&[
            ("target", "bigquery"),
            ("kind", "workforce"),
            ("source", "sts")
        ]),
        Some(1.0)
    );
    assert_eq!(
        crate::metrics::sample(
            &body,
            "sts_bridge_upstream_requests_total",
            &[("upstream", "iam_credentials"), ("code", "200")]
        ),
        Some(1.0)
    );
}
