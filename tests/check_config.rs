//! `sts-bridge check-config` as an operator runs it: the real binary, a configuration file,
//! and (for `--probe`) the dev issuer standing in for Auth0.

use std::net::TcpListener;
use sts_bridge::devstack::{DevIssuer, DEV_AUDIENCE};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sts-bridge");

fn config_for(issuer: &str) -> String {
    format!(
        r#"
[[issuers]]
issuer = "{issuer}"
audiences = ["{DEV_AUDIENCE}"]
groups_claim = "https://example.com/groups"

[[targets]]
name = "bigquery"
kind = "workforce"
provider = "//iam.googleapis.com/locations/global/workforcePools/pool/providers/auth0"
user_project = "123"
allowed_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
[targets.policy]
any_permissions = ["read:bigquery"]

[[targets]]
name = "nobody"
kind = "workforce"
provider = "//iam.googleapis.com/locations/global/workforcePools/pool/providers/other"
allowed_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
"#
    )
}

/// Runs check-config with `args`, no inherited configuration; (success, stdout, stderr).
async fn check_config(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .arg("check-config")
        .args(args)
        .env_remove("STS_BRIDGE_CONFIG")
        .env_remove("DATABASE_URL")
        .output()
        .await
        .expect("sts-bridge runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn without_a_file_it_says_none_was_given() {
    let (ok, stdout, stderr) = check_config(&[]).await;
    assert!(!ok);
    assert!(stdout.contains("no configuration file given"), "{stdout}");
    assert!(stderr.contains("`issuers`"), "{stderr}");
}

#[tokio::test]
async fn it_tells_what_it_loaded_and_probes_the_issuer() {
    let issuer = DevIssuer::start(TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, config_for(&issuer.issuer())).unwrap();
    let path = file.to_str().unwrap();

    let (ok, stdout, stderr) = check_config(&["--config", path]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("configuration file: {path}")),
        "{stdout}"
    );
    assert!(stdout.contains(&issuer.issuer()), "{stdout}");
    assert!(
        stdout.contains("groups from https://example.com/groups"),
        "{stdout}"
    );
    assert!(stdout.contains("bigquery (workforce)"), "{stdout}");
    assert!(
        stdout.contains("policy          any_permissions [read:bigquery]; machine tokens refused"),
        "{stdout}"
    );
    assert!(stdout.contains("refuses everyone"), "{stdout}");
    assert!(stdout.contains("mode            pass-through"), "{stdout}");
    assert!(
        stdout.contains("warning: ") && stdout.contains("nobody"),
        "{stdout}"
    );
    assert!(stdout.contains("sqlite file"), "{stdout}");
    assert!(
        stdout.contains("/metrics          on the public listener"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rate limits:        per subject 600/min, burst 100; per client address 6000/min, burst 1000"),
        "{stdout}"
    );
    assert!(stdout.contains("trusted proxies   none"), "{stdout}");
    assert!(
        !stdout.contains("probe "),
        "no probe unless asked: {stdout}"
    );

    let (ok, stdout, stderr) = check_config(&["--config", path, "--probe"]).await;
    assert!(ok, "{stdout}{stderr}");
    let probe = stdout
        .lines()
        .find(|l| l.starts_with("probe "))
        .unwrap_or_else(|| panic!("no probe line: {stdout}"));
    assert!(probe.contains("discovery ok"), "{probe}");
    assert!(probe.contains(&issuer.current_kid()), "{probe}");
    assert!(probe.contains("1 usable key(s)"), "{probe}");
}

#[tokio::test]
async fn a_probe_of_an_unreachable_issuer_fails_and_names_the_cause() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, config_for(&format!("http://127.0.0.1:{port}/"))).unwrap();

    let (ok, stdout, stderr) = check_config(&["--config", file.to_str().unwrap(), "--probe"]).await;
    assert!(!ok);
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("onnection refused"), "{stdout}");
    assert!(stderr.contains("could not be probed"), "{stderr}");
}

#[tokio::test]
async fn an_algorithm_google_refuses_is_refused_for_an_issuer_whose_tokens_are_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let config = config_for("https://tenant.example.com/").replace(
        "groups_claim",
        "algorithms = [\"RS256\", \"PS256\"]\ngroups_claim",
    );
    std::fs::write(&path, config).unwrap();
    let (ok, _, stderr) = check_config(&["--config", path.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(stderr.contains("issuers[0].algorithms"), "{stderr}");
    assert!(
        stderr.contains("PS256") && stderr.contains("RS256 and ES256"),
        "{stderr}"
    );
}

const KINDS: &str = r#"
[[targets]]
name = "analytics"
kind = "impersonate"
allowed_scopes = ["https://www.googleapis.com/auth/bigquery"]
service_accounts = [
  { claim = "roles", value = "analyst", service_account = "bq-analyst@p.iam.gserviceaccount.com" },
]
[targets.policy]
any_roles = ["analyst"]

[[targets]]
name = "firestore"
kind = "firebase"
[targets.firebase]
service_account = "firebase-signer@p.iam.gserviceaccount.com"
claims = { permissions = "permissions" }
[targets.policy]
any_permissions = ["read:notes"]
"#;

#[tokio::test]
async fn it_shows_each_kinds_service_accounts_and_refuses_firebase_reserved_claims() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!("{}{KINDS}", config_for("https://tenant.auth0.com/")),
    )
    .unwrap();
    let path = file.to_str().unwrap();

    let (ok, stdout, stderr) = check_config(&["--config", path]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("analytics (impersonate)"), "{stdout}");
    assert!(
        stdout.contains("roles ∋ analyst")
            && stdout.contains("bq-analyst@p.iam.gserviceaccount.com"),
        "{stdout}"
    );
    assert!(stdout.contains("firestore (firebase)"), "{stdout}");
    assert!(
        stdout.contains(
            "signed by       firebase-signer@p.iam.gserviceaccount.com (IAM Credentials signJwt"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("claims permissions ← permissions"),
        "{stdout}"
    );

    let reserved = format!(
        "{}{}",
        config_for("https://tenant.auth0.com/"),
        KINDS.replace("claims = { permissions", "claims = { firebase")
    );
    std::fs::write(&file, reserved).unwrap();
    let (ok, stdout, stderr) = check_config(&["--config", path]).await;
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("targets[3].firebase.claims.firebase")
            && stderr.contains("reserved by Firebase"),
        "{stderr}"
    );
}
