//! The data-tool commands as a person runs them: the real binary, with its config folder in
//! a temporary HOME, against the dev issuer, the Google stand-in and a real sts-bridge.

#[path = "common/python.rs"]
mod python;

use python::python;
use serde_json::Value;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;
use sts_bridge::broker::Broker;
use sts_bridge::devstack::{
    self, BigQueryStandIn, DevIssuer, GoogleStandIn, MintRequest, DEV_AUDIENCE, DEV_CLIENT,
};
use sts_bridge::secret::fingerprint;
use sts_bridge::startup::Application;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

const BIN: &str = env!("CARGO_BIN_EXE_sts-bridge");

struct Stack {
    issuer: DevIssuer,
    google: GoogleStandIn,
    service: String,
    broker: Arc<Broker>,
    home: tempfile::TempDir,
}

fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind loopback")
}

fn alice() -> MintRequest {
    MintRequest {
        sub: "auth0|alice".into(),
        permissions: vec!["read:bigquery".into()],
        extra: serde_json::Map::from_iter([("email".to_owned(), "alice@example.com".into())]),
        ..Default::default()
    }
}

/// The dev issuer, the Google stand-in and sts-bridge configured for them, and an empty HOME.
async fn stack() -> Stack {
    stack_with(|_| {}).await
}

/// Like [`stack`], after `tweak` has adjusted sts-bridge's settings.
async fn stack_with(tweak: impl FnOnce(&mut sts_bridge::config::Settings)) -> Stack {
    let issuer = DevIssuer::start(loopback()).expect("dev issuer");
    let google = GoogleStandIn::start(loopback()).expect("google stand-in");
    let home = tempfile::tempdir().unwrap();
    let listener = loopback();
    let mut settings = devstack::settings(&issuer, &google, listener.local_addr().unwrap());
    settings.audit.sqlite_path = home.path().join("records.sqlite");
    tweak(&mut settings);
    settings.validate().expect("valid settings");
    let app = Application::build_with_listener(settings, listener)
        .await
        .expect("app builds");
    let service = format!("http://127.0.0.1:{}", app.port());
    let broker = app.broker();
    tokio::spawn(app.run_until_stopped());
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{service}/readyz")).await {
            if r.status() == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Stack {
        issuer,
        google,
        service,
        broker,
        home,
    }
}

impl Stack {
    fn config_dir(&self) -> PathBuf {
        self.home.path().join(".config/sts-bridge")
    }

    /// The binary with only this stack's HOME in its environment.
    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    fn login_args(&self) -> Vec<String> {
        vec![
            "login".into(),
            "--issuer".into(),
            self.issuer.issuer(),
            "--client-id".into(),
            DEV_CLIENT.into(),
            "--audience".into(),
            DEV_AUDIENCE.into(),
        ]
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(Duration::from_secs(60), self.cli(args).output())
            .await
            .expect("the command finished")
            .expect("the command ran")
    }

    /// Logs alice in with the issuer approving at once.
    async fn login_alice(&self) {
        self.issuer.auto_approve(Some(alice()));
        let args = self.login_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(&args).await;
        assert!(out.status.success(), "{}", text(&out));
    }

    fn session(&self) -> Value {
        let raw = std::fs::read_to_string(self.config_dir().join("default.json")).unwrap();
        serde_json::from_str(&raw).unwrap()
    }

    /// Fingerprints of the Google credentials sts-bridge recorded handing out to `subject`.
    async fn handed_out_to(&self, subject: &str) -> Vec<String> {
        self.broker
            .audit()
            .store
            .list_issuances(&sts_bridge::audit::IssuanceQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("records readable")
            .into_iter()
            .filter(|r| r.subject == subject && r.outcome == "issued")
            .filter_map(|r| r.token_sha256)
            .collect()
    }

    fn server_args<'a>(&'a self, command: &'a str) -> Vec<&'a str> {
        vec![
            command,
            "--server",
            &self.service,
            "--target",
            devstack::DEV_TARGET,
        ]
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fails with the whole output unless the command's stderr contains `expected`.
fn assert_stderr_has(out: &Output, expected: &str) {
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(expected),
        "{}",
        text(out)
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn json_stdout(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A running `login`: the user code it showed, and the rest of its stderr to come.
struct PendingLogin {
    child: Child,
    user_code: String,
    stderr: tokio::task::JoinHandle<String>,
}

/// Starts the CLI with `args`, its stderr ready to be read line by line as it prints.
fn spawn_reading_stderr(stack: &Stack, args: &[&str]) -> (Child, BufReader<ChildStderr>) {
    let mut child = stack
        .cli(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    (child, stderr)
}

async fn start_device_login(stack: &Stack) -> PendingLogin {
    let args = stack.login_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (child, mut stderr) = spawn_reading_stderr(stack, &args);
    let mut shown = String::new();
    let user_code = loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), stderr.read_line(&mut line))
            .await
            .expect("login printed its code")
            .unwrap();
        assert!(n > 0, "login ended before showing a code: {shown}");
        shown.push_str(&line);
        if let Some(rest) = line.trim().split(" and enter the code ").nth(1) {
            assert!(line.contains("/activate"), "{line}");
            break rest.to_owned();
        }
    };
    let stderr = tokio::spawn(async move {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest).await;
        shown + &rest
    });
    PendingLogin {
        child,
        user_code,
        stderr,
    }
}

impl PendingLogin {
    async fn finish(mut self) -> (bool, String, String) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("login finished")
            .unwrap();
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .await
            .unwrap();
        (status.success(), stdout, self.stderr.await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_waits_through_pending_and_slow_down_then_stores_a_private_sign_in() {
    let stack = stack().await;
    let started = std::time::Instant::now();
    let login = start_device_login(&stack).await;
    assert_eq!(
        stack.issuer.device_user_codes(),
        vec![login.user_code.clone()]
    );
    // Polls before approval are answered authorization_pending; then one slow_down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.issuer.force_slow_down(1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(stack.issuer.approve_device(&login.user_code, alice()));
    let (ok, stdout, stderr) = login.finish().await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("Logged in"), "{stdout}");
    assert!(stderr.contains("Waiting for you to confirm"), "{stderr}");
    assert!(stderr.matches('.').count() >= 3, "a dot per poll: {stderr}");
    // slow_down stretched the 1 s interval by 5 s, as RFC 8628 asks.
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );

    let dir = stack.config_dir();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("default.json")), 0o600);
    let session = stack.session();
    let refresh = session["refresh_token"].as_str().expect("a refresh token");
    assert!(stack.issuer.refresh_token_alive(refresh));
    assert_eq!(session["profile"]["client_id"], DEV_CLIENT);

    // The executable-sourced answer carries the stored token, valid for about an hour.
    let out = stack.run(&["auth0-token"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        out.stderr.is_empty(),
        "google-auth reads stderr with stdout"
    );
    let answer = json_stdout(&out);
    assert_eq!(answer["version"], 1);
    assert_eq!(answer["success"], true);
    assert_eq!(answer["token_type"], "urn:ietf:params:oauth:token-type:jwt");
    assert_eq!(answer["id_token"], session["access_token"]);
    let exp = answer["expiration_time"].as_i64().unwrap();
    assert!((now() + 3500..=now() + 3600).contains(&exp), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_device_login_says_so_and_stores_nothing() {
    let stack = stack().await;
    let login = start_device_login(&stack).await;
    assert!(stack.issuer.deny_device(&login.user_code));
    let (ok, _, stderr) = login.finish().await;
    assert!(!ok);
    assert!(stderr.contains("the sign-in was denied"), "{stderr}");
    assert!(!stack.config_dir().join("default.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_left_unconfirmed_expires_with_advice_to_log_in_again() {
    let stack = stack().await;
    stack.issuer.set_device_code_ttl(2);
    let login = start_device_login(&stack).await;
    let (ok, _, stderr) = login.finish().await;
    assert!(!ok);
    assert!(
        stderr.contains(
            "the sign-in code expired before it was confirmed; run `sts-bridge login` again"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_with_pkce_comes_back_on_the_loopback_redirect() {
    let stack = stack().await;
    stack.issuer.auto_approve(Some(alice()));
    let mut args = stack.login_args();
    args.push("--browser".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut child, mut stderr) = spawn_reading_stderr(&stack, &args);
    let url = loop {
        let mut line = String::new();
        stderr.read_line(&mut line).await.unwrap();
        assert!(!line.is_empty(), "login ended before showing an address");
        if line.trim_start().starts_with("http") && line.contains("/authorize?") {
            break line.trim().to_owned();
        }
    };
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    // The "browser": follows the issuer's redirect back to the CLI.
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Signed in"));
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert!(stack.session()["refresh_token"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_token_renews_near_expiry_and_keeps_the_rotated_refresh_token() {
    let stack = stack().await;
    stack.issuer.set_login_token_ttl(30);
    stack.login_alice().await;
    let before = stack.session();
    let old_file = std::fs::read(stack.config_dir().join("default.json")).unwrap();
    // Tokens minted within the same second would be identical.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let out = stack.run(&["auth0-token"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let answer = json_stdout(&out);
    assert_ne!(
        answer["id_token"], before["access_token"],
        "30 s left: renewed"
    );
    let after = stack.session();
    assert_eq!(answer["id_token"], after["access_token"]);
    let (old, new) = (
        before["refresh_token"].as_str().unwrap(),
        after["refresh_token"].as_str().unwrap(),
    );
    assert_ne!(old, new);
    assert!(!stack.issuer.refresh_token_alive(old), "rotated away");
    assert!(stack.issuer.refresh_token_alive(new));
    assert_eq!(mode(&stack.config_dir().join("default.json")), 0o600);

    // A stale copy of the sign-in holds the used refresh token: the issuer refuses it.
    std::fs::write(stack.config_dir().join("default.json"), old_file).unwrap();
    let out = stack.run(&["auth0-token"]).await;
    assert!(!out.status.success());
    let answer = json_stdout(&out);
    assert_eq!(answer["version"], 1);
    assert_eq!(answer["success"], false);
    assert_eq!(answer["code"], "invalid_grant");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("Unknown or invalid refresh token"),
        "{message}"
    );
    assert!(
        message.contains("run `sts-bridge login` again"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_at_once_from_two_processes_both_succeed_despite_rotation() {
    let stack = stack().await;
    stack.issuer.set_login_token_ttl(30);
    stack.login_alice().await;
    for _ in 0..3 {
        let (a, b) = tokio::join!(stack.run(&["auth0-token"]), stack.run(&["auth0-token"]));
        assert!(a.status.success(), "{}", text(&a));
        assert!(b.status.success(), "{}", text(&b));
    }
    let refresh = stack.session()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        stack.issuer.refresh_token_alive(&refresh),
        "the stored one is the newest"
    );
    assert!(!stack.config_dir().join("default.lock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_token_before_login_answers_the_failure_shape_only() {
    let stack = stack().await;
    let out = stack.run(&["auth0-token"]).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.is_empty(),
        "google-auth reads stderr with stdout"
    );
    let answer = json_stdout(&out);
    assert_eq!(answer["success"], false);
    assert_eq!(answer["code"], "not_logged_in");
    assert!(answer["message"]
        .as_str()
        .unwrap()
        .contains("not logged in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_removes_and_revokes_the_sign_in() {
    let stack = stack().await;
    stack.login_alice().await;
    let refresh = stack.session()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = stack.run(&["logout"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked"),
        "{}",
        text(&out)
    );
    assert!(!stack.config_dir().join("default.json").exists());
    assert!(!stack.issuer.refresh_token_alive(&refresh));
    let out = stack
        .run(&[
            "print-access-token",
            "--server",
            &stack.service,
            "--target",
            "bigquery",
        ])
        .await;
    assert_stderr_has(&out, "not logged in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_access_token_prints_the_persons_google_token_or_says_why_not() {
    let stack = stack().await;
    stack.login_alice().await;
    let out = stack.run(&stack.server_args("print-access-token")).await;
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let issued = stack.google.issued(&token).expect("the stand-in's token");
    assert_eq!(issued.subject, "auth0|alice");

    // The server's refusal, with its description.
    let out = stack
        .run(&[
            "print-access-token",
            "--server",
            &stack.service,
            "--target",
            "nosuch",
        ])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sts-bridge refused the exchange (HTTP 400 invalid_target)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("nosuch"),
        "the description names the target: {stderr}"
    );

    // Nobody listening.
    let closed = loopback().local_addr().unwrap();
    let out = stack
        .run(&[
            "print-access-token",
            "--server",
            &format!("http://{closed}"),
            "--target",
            "bigquery",
        ])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot reach sts-bridge at http://{closed}/v1/token"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_against_an_unreachable_issuer_names_it() {
    let stack = stack().await;
    let closed = loopback().local_addr().unwrap();
    let issuer = format!("http://{closed}/");
    let out = stack
        .run(&["login", "--issuer", &issuer, "--client-id", DEV_CLIENT])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot use the identity provider at {issuer}.well-known/openid-configuration"
        )),
        "{stderr}"
    );
    // Without flags or a stored profile there is nothing to log in to.
    let out = stack.run(&["login"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("give --issuer and --client-id"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sign_in_without_refresh_token_says_login_expired() {
    let stack = stack().await;
    stack.login_alice().await;
    let path = stack.config_dir().join("default.json");
    let mut session = stack.session();
    session["refresh_token"] = Value::Null;
    session["expires_at"] = (now() - 10).into();
    std::fs::write(&path, session.to_string()).unwrap();
    let out = stack.run(&stack.server_args("print-access-token")).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has expired and cannot be renewed"),
        "{stderr}"
    );
}

/// Runs tests/python/data_tool_credentials.py with `args` and `env` only (and HOME).
async fn google_auth(stack: &Stack, python: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    python_json(stack, python, "data_tool_credentials.py", args, env).await
}

/// Runs `script` from tests/python with `args` and `env` only (and HOME); its JSON line.
async fn python_json(
    stack: &Stack,
    python: &Path,
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", stack.home.path())
        .env("XDG_CONFIG_HOME", stack.home.path().join(".config"))
        .env("CLOUDSDK_CONFIG", stack.home.path().join("gcloud"))
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("python finished")
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    json_stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_auth_runs_the_credentials_file_and_gets_the_persons_token() {
    let Some(python) = python() else { return };
    let stack = stack().await;
    stack.login_alice().await;
    let file = stack.home.path().join("external_account.json");
    let mut args = stack.server_args("credentials-file");
    let file_arg = file.display().to_string();
    args.extend(["--out", &file_arg]);
    let out = stack.run(&args).await;
    assert!(out.status.success(), "{}", text(&out));
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["token_url"], format!("{}/v1/token", stack.service));
    assert_eq!(
        written["token_info_url"],
        format!("{}/v1/introspect", stack.service)
    );
    let command = written["credential_source"]["executable"]["command"]
        .as_str()
        .unwrap();
    assert!(
        command.starts_with('/') && command.ends_with(" auth0-token --profile default"),
        "{command}"
    );

    let got = google_auth(
        &stack,
        &python,
        &["file", &file_arg],
        &[("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")],
    )
    .await;
    let token = got["token"].as_str().unwrap();
    let issued = stack.google.issued(token).expect("the stand-in's token");
    assert_eq!(issued.subject, "auth0|alice");
    assert!(got["kind"].as_str().unwrap().contains("pluggable"), "{got}");
}

/// Starts `metadata-server` on a free port; returns it and its address.
async fn start_metadata_server(stack: &Stack, extra: &[&str]) -> (Child, String) {
    let mut args = stack.server_args("metadata-server");
    args.extend(["--listen", "127.0.0.1:0"]);
    args.extend(extra);
    let mut child = stack
        .cli(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
            .await
            .expect("the metadata server printed its address")
            .unwrap();
        assert!(!line.is_empty(), "the metadata server ended");
        if let Some(rest) = line.trim().strip_prefix("export GCE_METADATA_HOST=") {
            let addr = rest.split_whitespace().next().unwrap().to_owned();
            return (child, addr);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_server_answers_like_google_and_only_with_the_header() {
    let stack = stack().await;
    stack.login_alice().await;
    let (_server, addr) = start_metadata_server(&stack, &["--project", "dev-project"]).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}/computeMetadata/v1");

    let ping = http
        .get(format!("http://{addr}/"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);
    assert_eq!(ping.headers()["metadata-flavor"], "Google");

    let token_url = format!("{base}/instance/service-accounts/default/token");
    let bare = http.get(&token_url).send().await.unwrap();
    assert_eq!(bare.status(), 403);
    assert!(bare.text().await.unwrap().contains("Metadata-Flavor"));
    let proxied = http
        .get(&token_url)
        .header("Metadata-Flavor", "Google")
        .header("X-Forwarded-For", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 403);
    // A page that rebound its own name to 127.0.0.1 sends that name as Host.
    let rebound = http
        .get(&token_url)
        .header("Metadata-Flavor", "Google")
        .header("Host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    for local in ["localhost", "metadata.google.internal"] {
        let named = http
            .get(format!("http://{addr}/"))
            .header("Host", local)
            .send()
            .await
            .unwrap();
        assert_eq!(named.status(), 200, "Host {local}");
    }

    let info: Value = http
        .get(format!(
            "{base}/instance/service-accounts/default/?recursive=true"
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(info["aliases"], serde_json::json!(["default"]));
    assert_eq!(
        info["scopes"],
        serde_json::json!([devstack::CLOUD_PLATFORM])
    );

    let by_email = http
        .get(format!(
            "{base}/instance/service-accounts/alice@example.com/token?scopes={}",
            devstack::BIGQUERY
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(by_email.status(), 200);
    assert_eq!(by_email.headers()["metadata-flavor"], "Google");
    let token: Value = by_email.json().await.unwrap();
    assert_eq!(token["token_type"], "Bearer");
    assert!(token["expires_in"].as_u64().unwrap() > 3000, "{token}");
    let issued = stack
        .google
        .issued(token["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(issued.subject, "auth0|alice");
    assert_eq!(issued.scopes, vec![devstack::BIGQUERY.to_owned()]);

    let unknown = http
        .get(format!(
            "{base}/instance/service-accounts/bob@example.com/token"
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let email = http
        .get(format!("{base}/instance/service-accounts/default/email"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(email.text().await.unwrap(), "alice@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_server_refuses_to_listen_beyond_loopback() {
    let stack = stack().await;
    stack.login_alice().await;
    let mut args = stack.server_args("metadata-server");
    args.extend(["--listen", "0.0.0.0:0"]);
    let out = stack.run(&args).await;
    assert!(!out.status.success());
    assert_stderr_has(&out, "loopback addresses only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_auth_default_through_the_metadata_server_gets_the_persons_token() {
    let Some(python) = python() else { return };
    let stack = stack().await;
    stack.login_alice().await;
    let (_server, addr) = start_metadata_server(&stack, &["--project", "dev-project"]).await;
    let got = google_auth(
        &stack,
        &python,
        &["default"],
        // google-auth pings GCE_METADATA_IP and reads everything else from GCE_METADATA_HOST.
        &[("GCE_METADATA_HOST", &addr), ("GCE_METADATA_IP", &addr)],
    )
    .await;
    assert_eq!(got["project"], "dev-project");
    assert!(
        got["kind"].as_str().unwrap().contains("compute_engine"),
        "{got}"
    );
    assert_eq!(got["email"], "alice@example.com");
    let token = got["token"].as_str().unwrap();
    assert_eq!(
        stack
            .google
            .issued(token)
            .expect("the stand-in's token")
            .subject,
        "auth0|alice"
    );
    // The very credential sts-bridge hands alice for this target (from its cache).
    let out = stack.run(&stack.server_args("print-access-token")).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        token,
        "{}",
        text(&out)
    );
}

/// `google-cloud-bigquery` as a notebook runs it, finding credentials and project itself
/// through the metadata server, against the BigQuery stand-in.
async fn bigquery_through_the_metadata_server(quota_project: Option<&str>) {
    let Some(python) = python() else { return };
    let stack = stack().await;
    stack.login_alice().await;
    let bigquery = BigQueryStandIn::start(loopback(), stack.google.clone()).unwrap();
    // The project the queries run in when the code names none.
    let (_server, addr) = start_metadata_server(&stack, &["--project", "analytics-prod"]).await;
    let mut env = vec![
        ("GCE_METADATA_HOST", addr.as_str()),
        ("GCE_METADATA_IP", addr.as_str()),
    ];
    if let Some(project) = quota_project {
        // google-auth names no quota project for metadata credentials unless told here.
        env.push(("GOOGLE_CLOUD_QUOTA_PROJECT", project));
    }
    let endpoint = bigquery.endpoint();
    let got = python_json(
        &stack,
        &python,
        "bigquery_query.py",
        &[&endpoint, "default"],
        &env,
    )
    .await;
    assert_eq!(got["session_user"], "auth0|alice", "{got}");
    assert_eq!(got["one"], 1, "{got}");
    assert_eq!(got["project"], "analytics-prod", "{got}");

    // Exactly the credential sts-bridge handed alice for the client's scope (its cache
    // answers).
    let mut args = stack.server_args("print-access-token");
    args.extend(["--scope", devstack::CLOUD_PLATFORM]);
    let out = stack.run(&args).await;
    assert!(out.status.success(), "{}", text(&out));
    let alices = fingerprint(String::from_utf8_lossy(&out.stdout).trim().as_bytes());
    let handed_out = stack.handed_out_to("auth0|alice").await;
    assert!(handed_out.contains(&alices), "{handed_out:?}");
    let calls = bigquery.calls();
    assert!(calls.len() >= 2, "{calls:?}");
    for call in &calls {
        assert_eq!(call.token_sha256.as_ref(), Some(&alices), "{call:?}");
        assert_eq!(call.subject.as_deref(), Some("auth0|alice"), "{call:?}");
        assert_eq!(call.user_project.as_deref(), quota_project, "{call:?}");
        assert!(
            call.path
                .starts_with("/bigquery/v2/projects/analytics-prod/"),
            "{call:?}"
        );
    }
    assert!(
        calls.iter().any(|c| c.path.ends_with("/queries")),
        "{calls:?}"
    );
    assert!(calls.iter().any(|c| c.path.ends_with("/jobs")), "{calls:?}");
    bigquery.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_client_through_the_metadata_server_queries_with_the_persons_token() {
    bigquery_through_the_metadata_server(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_client_through_the_metadata_server_names_the_quota_project() {
    bigquery_through_the_metadata_server(Some("analytics-billing")).await;
}

/// The Cloud SDK's `gcloud`, or `None` (with the reason printed) where it is absent: no
/// registry offers the SDK, so it cannot be installed everywhere the tests run.
fn gcloud_program() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("gcloud"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("SKIPPED gcloud test: `gcloud` is not installed (Google Cloud SDK)");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcloud_logs_in_with_the_written_credentials_file_and_prints_the_persons_token() {
    let Some(gcloud) = gcloud_program() else {
        return;
    };
    // gcloud asks for its own scope list; the target narrows it to what it allows.
    let stack = stack_with(|s| s.targets[0].narrow_scopes = true).await;
    stack.login_alice().await;
    let file = stack.home.path().join("external_account.json");
    let file_arg = file.display().to_string();
    let mut args = stack.server_args("credentials-file");
    args.extend(["--out", &file_arg]);
    assert!(stack.run(&args).await.status.success());

    let gcloud_run = |args: &[&str]| {
        let mut cmd = Command::new(&gcloud);
        cmd.args(args)
            .arg("--quiet")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", stack.home.path())
            .env("XDG_CONFIG_HOME", stack.home.path().join(".config"))
            .env("CLOUDSDK_CONFIG", stack.home.path().join("gcloud"))
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
            .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
            .env("CLOUDSDK_SURVEY_DISABLE_PROMPTS", "true")
            .env("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(Duration::from_secs(120), cmd.output())
                .await
                .expect("gcloud finished")
                .expect("gcloud ran")
        }
    };
    let login = gcloud_run(&["auth", "login", &format!("--cred-file={file_arg}")]).await;
    assert!(login.status.success(), "{}", text(&login));
    let said = String::from_utf8_lossy(&login.stderr);
    assert!(
        said.contains("subject/auth0|alice"),
        "gcloud names the person: {said}"
    );
    let printed = gcloud_run(&["auth", "print-access-token"]).await;
    assert!(printed.status.success(), "{}", text(&printed));
    let token = String::from_utf8_lossy(&printed.stdout).trim().to_owned();
    let issued = stack.google.issued(&token).expect("the stand-in's token");
    assert_eq!(issued.subject, "auth0|alice");
}
