//! `sts-bridge dev` as a newcomer runs it: the real binary, free loopback ports, a temporary
//! folder for its files.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sts-bridge");

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sts-bridge dev` on free ports in `dir`; returns the process and what it printed
/// up to "Press Ctrl-C".
fn start_dev(dir: &std::path::Path) -> (Running, String) {
    let mut child = Command::new(BIN)
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--issuer-listen",
            "127.0.0.1:0",
        ])
        .args(["--google-listen", "127.0.0.1:0"])
        .args(["--bigquery-listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sts-bridge dev starts");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("Press Ctrl-C") {
                let _ = tx.send(printed.clone());
            }
        }
    });
    let printed = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the dev stack printed its instructions");
    (running, printed)
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn dev_stack_on_other_ports_prints_commands_that_work_and_keeps_tokens_private() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, printed) = start_dev(dir.path());

    assert_eq!(mode(&dir.path().join("alice.token")), 0o600, "{printed}");
    // The issuer is not on its default address, so the printed command names it.
    let line = printed
        .lines()
        .find(|l| l.contains("TOKEN=$(") && l.contains("dev token"))
        .expect("a dev token command");
    let issuer = line
        .split("--issuer ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no --issuer in {line}"));
    assert!(issuer.starts_with("http://127.0.0.1:"), "{line}");
    assert_ne!(issuer, "http://127.0.0.1:8081/");

    // The printed re-mint command writes a fresh token, owner-only.
    let out = dir.path().join("fresh.token");
    let started = Instant::now();
    let status = Command::new(BIN)
        .args([
            "dev",
            "token",
            "--issuer",
            issuer,
            "--sub",
            "auth0|alice",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "dev token took {:?}", started.elapsed());
    assert_eq!(mode(&out), 0o600);
    let token = std::fs::read_to_string(&out).unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
}

#[test]
fn a_taken_port_names_the_flag_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--issuer-listen",
            &addr,
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(stderr.contains("--issuer-listen"), "{stderr}");
}

/// The printed line that contains `needle`, without its indentation.
fn printed_line<'a>(printed: &'a str, needle: &str) -> &'a str {
    printed
        .lines()
        .map(str::trim)
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{printed}"))
}

/// Runs a printed command line in `sh` as a person pastes it, with `home` as HOME and the
/// Cloud SDK kept offline and quiet.
fn paste(line: &str, home: &Path) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(line)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("CLOUDSDK_CONFIG")
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
        .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
        .env("CLOUDSDK_SURVEY_DISABLE_PROMPTS", "true")
        .stdin(Stdio::null())
        .output()
        .expect("sh runs")
}

fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whom the dev stack's BigQuery stand-in runs a query as, for a bearer `token`.
fn session_user(bigquery: &str, token: &str) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!(
                "{bigquery}/bigquery/v2/projects/dev-project/queries"
            ))
            .bearer_auth(token)
            .json(&json!({"query": "SELECT SESSION_USER()", "useLegacySql": false}))
            .send()
            .await
            .expect("the BigQuery stand-in answers");
        let body: Value = response.json().await.unwrap();
        body["rows"][0]["f"][0]["v"].clone()
    })
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
        eprintln!(
            "SKIPPED the printed {name} commands: `{name}` is not installed (Google Cloud SDK)"
        );
    }
    found
}

#[test]
fn the_printed_login_gcloud_and_bq_commands_reach_the_bigquery_stand_in_as_alice() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (_dev, printed) = start_dev(dir.path());
    let bigquery = printed_line(&printed, "BigQuery stand-in")
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .expect("the stand-in's address")
        .to_owned();

    // Signing in as a data engineer would, then the person's Google token.
    let login = paste(printed_line(&printed, " login --issuer "), home.path());
    stdout_of(&login, "login");
    let printed_token = paste(
        printed_line(&printed, " print-access-token --server "),
        home.path(),
    );
    let token = stdout_of(&printed_token, "print-access-token");
    assert_eq!(session_user(&bigquery, &token), "auth0|alice");

    let Some(_) = cloud_sdk_program("gcloud") else {
        return;
    };
    // Each command with the printed `export` before it, as in one terminal.
    let export = printed_line(&printed, "export CLOUDSDK_CONFIG=");
    let in_terminal = |needle: &str| {
        let line = printed_line(&printed, needle);
        paste(&format!("{export}\n{line}"), home.path())
    };
    let login = in_terminal("gcloud auth login --cred-file=");
    let said = String::from_utf8_lossy(&login.stderr).into_owned();
    assert!(login.status.success(), "gcloud auth login: {said}");
    assert!(said.contains("subject/auth0|alice"), "{said}");
    let token = stdout_of(
        &in_terminal("gcloud auth print-access-token"),
        "gcloud auth print-access-token",
    );
    assert_eq!(session_user(&bigquery, &token), "auth0|alice");
    // gcloud's configuration stays in the dev folder.
    assert!(dir.path().join("gcloud").is_dir());

    if cloud_sdk_program("bq").is_some() {
        let rows = stdout_of(&in_terminal("bq --api="), "bq query");
        assert!(rows.contains("auth0|alice"), "{rows}");
    }
}
