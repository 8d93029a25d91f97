//! Data tools as their users run them, through an `external_account` file whose
//! `token_url` is sts-bridge: the real `google-cloud-bigquery` client against the BigQuery
//! stand-in, and the Cloud SDK's `gcloud` and `bq` where they are installed.

use crate::helpers::*;
use crate::python::python;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use sts_bridge::devstack::{BigQueryStandIn, CLOUD_PLATFORM, DEV_PROVIDER, DEV_USER_PROJECT};
use sts_bridge::secret::fingerprint;

/// The project the queries run in (and, when the file names one, the quota project).
const QUERY_PROJECT: &str = "analytics-prod";
const QUOTA_PROJECT: &str = "analytics-billing";

/// The credential file a data engineer would be given: the token comes from `token_file`,
/// the exchange and the introspection go to sts-bridge.
fn credential_file(app: &TestApp, dir: &Path, quota_project: Option<&str>) -> PathBuf {
    let token_file = dir.join("auth0.token");
    std::fs::write(&token_file, app.token_for("auth0|alice")).unwrap();
    let mut file = json!({
        "type": "external_account",
        "audience": DEV_PROVIDER,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("{}/v1/token", app.address),
        "token_info_url": format!("{}/v1/introspect", app.address),
        "workforce_pool_user_project": DEV_USER_PROJECT,
        "credential_source": { "file": token_file.display().to_string() },
    });
    if let Some(project) = quota_project {
        file["quota_project_id"] = project.into();
    }
    let path = dir.join("external_account.json");
    std::fs::write(&path, file.to_string()).unwrap();
    path
}

/// The fingerprints of the credentials sts-bridge handed out to `subject`.
async fn handed_out_to(app: &TestApp, subject: &str) -> Vec<String> {
    app.records()
        .await
        .into_iter()
        .filter(|r| r.subject == subject && r.outcome == "issued")
        .filter_map(|r| r.token_sha256)
        .collect()
}

fn run_quietly(command: &mut Command) -> Output {
    command
        // Keep every client on loopback whatever the environment says.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .output()
        .expect("the command runs")
}

fn python_query(python: &Path, file: &Path, endpoint: &str) -> Result<Value, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/bigquery_query.py");
    let output = run_quietly(
        Command::new(python)
            .arg(script)
            .args([endpoint, "file"])
            .arg(file)
            .arg(QUERY_PROJECT),
    );
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("JSON line"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

async fn bigquery_round_trip(quota_project: Option<&'static str>) {
    let Some(python) = python() else { return };
    let app = spawn_app().await;
    let bigquery = BigQueryStandIn::start(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        app.google.clone(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = credential_file(&app, dir.path(), quota_project);
    let endpoint = bigquery.endpoint();

    let result = tokio::task::spawn_blocking(move || python_query(&python, &file, &endpoint))
        .await
        .unwrap()
        .expect("the BigQuery client runs its queries");

    assert_eq!(result["session_user"], "auth0|alice", "{result}");
    assert_eq!(result["one"], 1, "{result}");
    assert_eq!(result["project"], QUERY_PROJECT, "{result}");
    let handed_out = handed_out_to(&app, "auth0|alice").await;
    let calls = bigquery.calls();
    assert!(calls.len() >= 2, "{calls:?}");
    for call in &calls {
        assert_eq!(call.subject.as_deref(), Some("auth0|alice"), "{call:?}");
        let sent = call.token_sha256.as_ref().expect("a bearer token");
        assert!(
            handed_out.contains(sent),
            "{call:?} used a token sts-bridge did not hand out"
        );
        assert_eq!(call.user_project.as_deref(), quota_project, "{call:?}");
        assert!(call
            .path
            .starts_with(&format!("/bigquery/v2/projects/{QUERY_PROJECT}/")));
    }
    assert!(
        calls.iter().any(|c| c.path.ends_with("/queries")),
        "jobs.query: {calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.path.ends_with("/jobs")),
        "jobs.insert: {calls:?}"
    );
    bigquery.stop().await;
}

#[tokio::test]
async fn the_bigquery_client_queries_as_the_person_with_the_token_sts_bridge_handed_out() {
    bigquery_round_trip(None).await;
}

#[tokio::test]
async fn the_bigquery_client_names_the_quota_project_the_file_configures() {
    bigquery_round_trip(Some(QUOTA_PROJECT)).await;
}

#[tokio::test]
async fn the_bigquery_stand_in_refuses_a_token_google_did_not_issue() {
    let app = spawn_app().await;
    let bigquery = BigQueryStandIn::start(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        app.google.clone(),
    )
    .unwrap();
    let response = app
        .http
        .post(format!(
            "{}/bigquery/v2/projects/p/queries",
            bigquery.endpoint()
        ))
        .bearer_auth("ya29.forged")
        .json(&json!({"query": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED", "{body}");
    assert_eq!(body["error"]["errors"][0]["reason"], "authError", "{body}");
    let calls = bigquery.calls();
    assert_eq!(calls[0].token_sha256, Some(fingerprint(b"ya29.forged")));
    assert_eq!(calls[0].subject, None);
}

/// A program of the Cloud SDK, or `None` (with the reason printed) where it is absent: no
/// registry offers the SDK, so it cannot be installed everywhere the tests run.
fn cloud_sdk_program(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("SKIPPED {name} test: `{name}` is not installed (Google Cloud SDK)");
    }
    found
}

/// `gcloud` with a configuration directory of its own, offline and without prompts.
fn gcloud(program: &Path, config: &Path, args: &[&str]) -> Output {
    run_quietly(
        Command::new(program)
            .args(args)
            .arg("--quiet")
            .env("CLOUDSDK_CONFIG", config)
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
            .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
            .env("CLOUDSDK_SURVEY_DISABLE_PROMPTS", "true"),
    )
}

fn stdout_of(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `bq query` with gcloud's credentials in `config`, against the BigQuery stand-in. `--api`
/// alone would make bq fetch the discovery document from the stand-in; the SDK ships it.
fn bq_query(bq: &Path, config: &Path, endpoint: &str) -> Output {
    let sdk = bq
        .canonicalize()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.to_owned()))
        .expect("the Cloud SDK's directory");
    let discovery = sdk.join("platform/bq/discovery_next/bigquery.json");
    run_quietly(
        Command::new(bq)
            .env("CLOUDSDK_CONFIG", config)
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .arg(format!("--api={endpoint}"))
            .arg(format!("--discovery_file={}", discovery.display()))
            .arg(format!("--project_id={QUERY_PROJECT}"))
            .arg("--format=json")
            .args(["query", "--nouse_legacy_sql", "SELECT SESSION_USER()"]),
    )
}

#[tokio::test]
async fn gcloud_logs_in_with_the_credential_file_and_gcloud_and_bq_use_the_persons_token() {
    let Some(program) = cloud_sdk_program("gcloud") else {
        return;
    };
    let app = spawn_app_with(|s| s.targets[0].narrow_scopes = true).await;
    let dir = tempfile::tempdir().unwrap();
    let file = credential_file(&app, dir.path(), None);
    let config = dir.path().join("gcloud");

    let bigquery = BigQueryStandIn::start(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        app.google.clone(),
    )
    .unwrap();
    let endpoint = bigquery.endpoint();
    let (login, token, bq) = tokio::task::spawn_blocking(move || {
        let file = format!("--cred-file={}", file.display());
        let login = gcloud(&program, &config, &["auth", "login", &file]);
        let token = gcloud(&program, &config, &["auth", "print-access-token"]);
        let bq = cloud_sdk_program("bq").map(|bq| bq_query(&bq, &config, &endpoint));
        (login, token, bq)
    })
    .await
    .unwrap();

    let login_said = String::from_utf8_lossy(&login.stderr).into_owned();
    assert!(
        login.status.success(),
        "gcloud auth login failed: {login_said}"
    );
    // gcloud names the account by the username sts-bridge's introspection answered.
    let principal =
        "principal://iam.googleapis.com/locations/global/workforcePools/dev-pool/subject/auth0|alice";
    assert!(login_said.contains(principal), "{login_said}");
    let token = stdout_of(&token, "gcloud auth print-access-token");
    let issued = app
        .google
        .issued(&token)
        .expect("a token the stand-in issued");
    assert_eq!(issued.subject, "auth0|alice");
    assert_eq!(issued.scopes, vec![CLOUD_PLATFORM.to_owned()]);
    assert!(handed_out_to(&app, "auth0|alice")
        .await
        .contains(&fingerprint(token.as_bytes())));

    if let Some(bq) = bq {
        let rows: Value = serde_json::from_str(&stdout_of(&bq, "bq query")).unwrap();
        assert_eq!(rows, json!([{ "f0_": "auth0|alice" }]));
        let handed_out = handed_out_to(&app, "auth0|alice").await;
        let calls = bigquery.calls();
        assert!(!calls.is_empty());
        for call in calls {
            assert_eq!(call.subject.as_deref(), Some("auth0|alice"), "{call:?}");
            assert!(handed_out.contains(call.token_sha256.as_ref().unwrap()));
        }
    }

    // gcloud sent its public client and its own scope list; the exchange was narrowed.
    let records = app.records().await;
    let exchange = records.iter().find(|r| r.outcome == "issued").unwrap();
    assert_eq!(
        exchange.claimed_client.as_deref(),
        Some(sts_bridge::config::CLOUD_SDK_CLIENT_ID)
    );
    assert_eq!(exchange.scopes, CLOUD_PLATFORM);
}
