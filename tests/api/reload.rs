//! Reloading targets and policies while serving: no request fails, in-flight requests
//! finish under the old policy, a bad file changes nothing, and SIGHUP triggers it.

use crate::helpers::*;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sts_bridge::devstack::{self, MintRequest, DEV_AUDIENCE, DEV_CLIENT, DEV_GROUPS_CLAIM};
use tokio::task::JoinSet;

/// A complete configuration for the dev issuer and stand-in whose one target has `policy`
/// (TOML lines of `[targets.policy]`).
fn config_text(issuer: &str, sts_url: &str, listen: &str, sqlite: &Path, policy: &str) -> String {
    format!(
        r#"
listen = "{listen}"
[[issuers]]
issuer = "{issuer}"
audiences = ["{DEV_AUDIENCE}"]
groups_claim = "{DEV_GROUPS_CLAIM}"

[[targets]]
name = "{target}"
kind = "workforce"
provider = "{provider}"
user_project = "{project}"
allowed_scopes = ["{scope}"]
default_scopes = ["{scope}"]
[targets.policy]
{policy}

[google]
sts_url = "{sts_url}"
[audit]
sqlite_path = "{sqlite}"
[log]
format = "text"
"#,
        target = devstack::DEV_TARGET,
        provider = devstack::DEV_PROVIDER,
        project = devstack::DEV_USER_PROJECT,
        scope = devstack::CLOUD_PLATFORM,
        sqlite = sqlite.display(),
    )
}

struct ConfigFile {
    dir: tempfile::TempDir,
    issuer: String,
    sts_url: String,
    listen: String,
}

impl ConfigFile {
    fn for_app(app: &TestApp) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            issuer: app.issuer.issuer(),
            sts_url: app.google.token_url(),
            listen: "127.0.0.1:0".into(),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("sts-bridge.toml")
    }

    /// Writes the file with `policy`, atomically, as a deployment tool would.
    fn write(&self, policy: &str) {
        let sqlite = self.dir.path().join("records.sqlite");
        let text = config_text(&self.issuer, &self.sts_url, &self.listen, &sqlite, policy);
        let tmp = self.dir.path().join("next.toml");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }
}

const ANALYSTS: &str = "any_groups = [\"analysts\"]";
const FINANCE_ONLY: &str = "any_groups = [\"finance\"]";

fn analyst_token(app: &TestApp, sub: &str) -> String {
    app.issuer.mint(&MintRequest {
        sub: sub.into(),
        groups: vec!["analysts".into()],
        ..Default::default()
    })
}

#[tokio::test]
async fn reloading_under_load_fails_no_request_and_takes_effect() {
    // Each worker sends far more than a subject's burst; the rate limits are not on trial.
    let app = Arc::new(spawn_app_with(|s| s.limits.enabled = false).await);
    let file = ConfigFile::for_app(&app);
    let admit_a = format!("clients = [\"{DEV_CLIENT}\"]");
    let admit_b = format!("{ANALYSTS}\nmax_lifetime_secs = 1800");

    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut load = JoinSet::new();
    for worker in 0..8 {
        let app = app.clone();
        load.spawn(async move {
            let token = analyst_token(&app, &format!("auth0|worker{worker}"));
            let mut statuses = Vec::new();
            while Instant::now() < deadline {
                statuses.push(app.exchange(&token).await.status().as_u16());
            }
            statuses
        });
    }
    let mut reloads = 0;
    while Instant::now() < deadline {
        file.write(if reloads % 2 == 0 { &admit_a } else { &admit_b });
        app.reloader
            .reload(&file.path())
            .expect("valid file reloads");
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let statuses: Vec<u16> = load.join_all().await.into_iter().flatten().collect();
    assert!(reloads >= 10, "only {reloads} reloads");
    assert!(statuses.len() >= 50, "only {} requests", statuses.len());
    let failed: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        statuses.len()
    );

    // The last file's lifetime cap is in force.
    file.write(&admit_b);
    app.reloader.reload(&file.path()).unwrap();
    let (_, body) = status_json(app.exchange(&analyst_token(&app, "auth0|x")).await).await;
    assert!(body["expires_in"].as_u64().unwrap() <= 1800, "{body}");

    // And a policy that refuses analysts refuses them at once.
    file.write(FINANCE_ONLY);
    app.reloader.reload(&file.path()).unwrap();
    let response = app.exchange(&analyst_token(&app, "auth0|worker0")).await;
    let description = assert_error(response, 403, "access_denied").await;
    assert!(description.contains("finance"), "{description}");
}

#[tokio::test]
async fn a_request_in_flight_finishes_under_the_policy_it_started_with() {
    let app = Arc::new(spawn_app().await);
    let file = ConfigFile::for_app(&app);
    app.google.set_delay(Duration::from_millis(400));
    let in_flight = {
        let app = app.clone();
        let token = analyst_token(&app, "auth0|alice");
        tokio::spawn(async move { status_json(app.exchange(&token).await).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    file.write(FINANCE_ONLY);
    app.reloader.reload(&file.path()).unwrap();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let after = app.exchange(&analyst_token(&app, "auth0|alice")).await;
    assert_error(after, 403, "access_denied").await;
}

#[tokio::test]
async fn a_bad_file_is_refused_by_key_and_the_running_policy_stays() {
    let app = spawn_app().await;
    let file = ConfigFile::for_app(&app);
    file.write(FINANCE_ONLY);
    app.reloader.reload(&file.path()).unwrap();

    file.write(&format!("{ANALYSTS}\nmax_lifetime_secs = 5"));
    let err = app.reloader.reload(&file.path()).unwrap_err().to_string();
    assert!(err.contains("targets[0].policy.max_lifetime_secs"), "{err}");
    file.write("any_groups = [\"analysts\"]\nno_such_rule = true");
    let err = app.reloader.reload(&file.path()).unwrap_err().to_string();
    assert!(err.contains("no_such_rule"), "{err}");

    let response = app.exchange(&analyst_token(&app, "auth0|alice")).await;
    assert_error(response, 403, "access_denied").await;
}

/// The real binary, configured by file, reloads on SIGHUP.
#[tokio::test]
async fn the_binary_reloads_its_policy_on_sighup() {
    let app = spawn_app().await; // for its dev issuer and Google stand-in
    let mut file = ConfigFile::for_app(&app);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    file.listen = format!("127.0.0.1:{port}");
    file.write(ANALYSTS);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sts-bridge"))
        .args(["serve", "--config"])
        .arg(file.path())
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let exchange = |token: String| {
        let http = app.http.clone();
        let url = format!("{base}/v1/token");
        async move {
            http.post(url)
                .form(&[
                    ("grant_type", GRANT),
                    ("audience", devstack::DEV_TARGET),
                    ("subject_token", token.as_str()),
                    ("subject_token_type", JWT),
                ])
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
        }
    };
    let token = analyst_token(&app, "auth0|alice");
    let mut first = None;
    for _ in 0..100 {
        first = exchange(token.clone()).await;
        if first == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first, Some(200), "the binary did not serve alice");

    file.write(FINANCE_ONLY);
    let pid = child.id().expect("running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut after = None;
    for _ in 0..50 {
        after = exchange(token.clone()).await;
        if after == Some(403) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        after,
        Some(403),
        "SIGHUP did not put the new policy in force"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the binary"
    );
    child.kill().await.unwrap();
}

/// What `sts-bridge check-config` prints for `file`, after checking it succeeded.
async fn check_config(file: &ConfigFile) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sts-bridge"))
        .args(["check-config", "--config"])
        .arg(file.path())
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    stdout
}

#[tokio::test]
async fn check_config_warns_about_a_target_that_names_nobody() {
    let app = spawn_app().await;
    let file = ConfigFile::for_app(&app);
    file.write("machine_tokens = true");
    let stdout = check_config(&file).await;
    assert!(
        stdout.contains("warning: configuration key `targets[0].policy`")
            && stdout.contains("refuses everyone"),
        "{stdout}"
    );
    file.write(ANALYSTS);
    let stdout = check_config(&file).await;
    assert!(!stdout.contains("warning"), "{stdout}");
}
