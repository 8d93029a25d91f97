//! SIGTERM under load, on the real binary with Postgres records: it stops accepting, the
//! exchanges under way finish, and no credential leaves without its record.

use crate::helpers::*;
use serde_json::Value;
use sqlx::{Connection, PgConnection, Row};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sts_bridge::devstack::{self, DevIssuer, GoogleStandIn};
use sts_bridge::secret::fingerprint;

const GRACE_SECS: u64 = 10;
/// Exchanges under way when SIGTERM arrives (each waits for Google).
const IN_FLIGHT: usize = 24;

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sts-bridge serve` on `config`; returns once it logged the port it listens on.
fn serve(config: &std::path::Path) -> (Running, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sts-bridge"))
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("DATABASE_URL")
        .env_remove("STS_BRIDGE_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sts-bridge serve starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(json) = serde_json::from_str::<Value>(&line) {
                if json["message"] == "sts-bridge listening" {
                    let _ = tx.send(json["port"].as_u64().unwrap_or(0) as u16);
                }
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the service logged its port");
    (Running(child), port)
}

fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// Waits for the child to exit, at most `within`; its status and when it exited.
async fn exit_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The real binary on Postgres records, with the dev issuer and the Google stand-in in
/// this process.
struct Served {
    running: Running,
    base: String,
    http: reqwest::Client,
    issuer: DevIssuer,
    google: GoogleStandIn,
    db: TestDb,
    _dir: tempfile::TempDir,
}

impl Served {
    /// `None` when Postgres is unreachable outside CI.
    async fn start(grace_secs: u64) -> Option<Self> {
        let db = TestDb::create(Backend::Postgres).await?;
        let issuer = DevIssuer::start(loopback()).unwrap();
        let google = GoogleStandIn::start(loopback()).unwrap();
        let mut settings = devstack::settings(&issuer, &google, "127.0.0.1:0".parse().unwrap());
        db.configure(&mut settings);
        settings.log.format = "json".into();
        settings.http.shutdown_timeout_secs = grace_secs;
        settings.google.max_concurrent_calls = IN_FLIGHT * 2;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sts-bridge.toml");
        std::fs::write(&config, toml::to_string(&settings).unwrap()).unwrap();
        let (running, port) = serve(&config);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    return Some(Self {
                        running,
                        base,
                        http,
                        issuer,
                        google,
                        db,
                        _dir: dir,
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the service did not become ready");
    }

    /// Starts an exchange for `sub` (a cache miss, so it waits on Google); its status and
    /// body, status 0 when no answer came.
    fn exchange(&self, sub: String) -> tokio::task::JoinHandle<(u16, Option<Value>)> {
        let (http, url) = (self.http.clone(), format!("{}/v1/token", self.base));
        let token = self.issuer.mint(&devstack::MintRequest {
            sub,
            ..Default::default()
        });
        tokio::spawn(async move {
            let response = http
                .post(url)
                .form(&[
                    ("grant_type", GRANT),
                    ("audience", devstack::DEV_TARGET),
                    ("subject_token", token.as_str()),
                    ("subject_token_type", JWT),
                ])
                .send()
                .await;
            match response {
                Ok(r) => (r.status().as_u16(), r.json::<Value>().await.ok()),
                Err(_) => (0, None),
            }
        })
    }

    /// Starts `IN_FLIGHT` exchanges and returns once Google has all of them.
    async fn load(&self, prefix: &str) -> Vec<tokio::task::JoinHandle<(u16, Option<Value>)>> {
        let before = self.google.call_count();
        let under_way = (0..IN_FLIGHT)
            .map(|i| self.exchange(format!("auth0|{prefix}-{i}")))
            .collect();
        while self.google.call_count() < before + IN_FLIGHT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        under_way
    }

    /// Sends SIGTERM; returns when it was sent.
    fn signal(&self) -> Instant {
        let pid = self.running.0.id().to_string();
        let signalled = Instant::now();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        signalled
    }

    /// The exit status and how long after `signalled` the exit came; a panic when the
    /// process has not exited `within`.
    async fn exit(
        &mut self,
        signalled: Instant,
        within: Duration,
    ) -> (std::process::ExitStatus, Duration) {
        let status = exit_within(&mut self.running.0, within)
            .await
            .expect("the process did not exit");
        (status, signalled.elapsed())
    }

    /// Fingerprints of the credentials recorded as issued.
    async fn recorded(&self) -> HashSet<String> {
        let mut conn = PgConnection::connect(self.db.url.as_deref().unwrap())
            .await
            .unwrap();
        sqlx::query("SELECT token_sha256 FROM issuances WHERE outcome = 'issued'")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("token_sha256"))
            .collect()
    }
}

/// Asserts every credential in `handed_out` has its record.
fn assert_recorded(handed_out: &[Value], recorded: &HashSet<String>) {
    for body in handed_out {
        let token = body["access_token"].as_str().expect("a credential");
        assert!(
            recorded.contains(&fingerprint(token.as_bytes())),
            "a credential left without its record"
        );
    }
}

#[tokio::test]
async fn sigterm_under_load_finishes_exchanges_under_way_and_records_every_credential() {
    let Some(mut served) = Served::start(GRACE_SECS).await else {
        return;
    };
    served.google.set_delay(Duration::from_millis(1500));
    let under_way = served.load("user").await;
    let signalled = served.signal();
    // Callers keep coming after the signal; whatever they get, a credential has a record.
    let late: Vec<_> = (0..IN_FLIGHT)
        .map(|i| served.exchange(format!("auth0|late-{i}")))
        .collect();
    let (status, took) = served
        .exit(signalled, Duration::from_secs(GRACE_SECS + 5))
        .await;
    assert!(status.success(), "exit status {status}");
    assert!(
        took <= Duration::from_secs(GRACE_SECS),
        "exited {took:?} after SIGTERM"
    );

    let mut handed_out = Vec::new();
    for (i, task) in under_way.into_iter().enumerate() {
        let (status, body) = task.await.unwrap();
        // An exchange under way when the signal came is finished, not dropped.
        assert_eq!(status, 200, "exchange {i} under way at SIGTERM: {body:?}");
        handed_out.push(body.unwrap());
    }
    for task in late {
        if let (200, Some(body)) = task.await.unwrap() {
            handed_out.push(body);
        }
    }
    let recorded = served.recorded().await;
    eprintln!(
        "exited {took:?} after SIGTERM; {} credentials handed out, {} rows",
        handed_out.len(),
        recorded.len()
    );
    assert_recorded(&handed_out, &recorded);
}

#[tokio::test]
async fn exchanges_stuck_past_the_grace_period_do_not_hold_the_exit_and_leave_nothing_unrecorded() {
    const SHORT_GRACE: u64 = 1;
    let Some(mut served) = Served::start(SHORT_GRACE).await else {
        return;
    };
    served.google.set_delay(Duration::from_secs(30));
    let under_way = served.load("stuck").await;
    let signalled = served.signal();
    let (status, took) = served.exit(signalled, Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
    // The grace period, then at most 2 s to write the records still queued.
    assert!(
        took <= Duration::from_secs(SHORT_GRACE + 3),
        "exited {took:?} after SIGTERM"
    );
    let mut handed_out = Vec::new();
    for task in under_way {
        let (status, body) = task.await.unwrap();
        assert_ne!(status, 200, "Google never answered, yet a credential left");
        handed_out.extend(body.filter(|b| b.get("access_token").is_some()));
    }
    assert!(handed_out.is_empty());
    assert_recorded(&handed_out, &served.recorded().await);
}
