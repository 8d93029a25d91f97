use reqwest::Response;
use serde_json::Value;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use sts_bridge::broker::Broker;
use sts_bridge::config::Settings;
use sts_bridge::devstack::{self, DevIssuer, GoogleStandIn, MintRequest};
use sts_bridge::startup::{Application, Reloader};

pub use crate::db::{Backend, TestDb};

pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

pub struct TestApp {
    pub address: String,
    pub issuer: DevIssuer,
    pub google: GoogleStandIn,
    pub http: reqwest::Client,
    pub broker: Arc<Broker>,
    pub db: Arc<TestDb>,
    pub reloader: Reloader,
    /// Base URL of the separate admin listener, when the settings ask for one.
    pub admin_address: Option<String>,
    /// Base URL of the separate metrics listener, when the settings ask for one.
    pub metrics_address: Option<String>,
}

fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind loopback")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the dev issuer, the Google stand-in and the application configured for them
/// (on an embedded SQLite file), after `tweak` has adjusted the settings; returns once the
/// app reports ready.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let app = start_app(Arc::new(TestDb::sqlite()), tweak).await;
    app.wait_ready().await;
    app
}

/// Like [`spawn_app_with`] on `backend`; `None` when Postgres is unreachable outside CI.
pub async fn spawn_app_on(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Option<TestApp> {
    let db = Arc::new(TestDb::create(backend).await?);
    let app = start_app(db, tweak).await;
    app.wait_ready().await;
    Some(app)
}

/// Like [`spawn_app_with`] on an existing database, which the test may also reach.
pub async fn spawn_app_on_db(db: Arc<TestDb>, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let app = start_app(db, tweak).await;
    app.wait_ready().await;
    app
}

/// Starts an app on `db` without waiting for readiness.
pub async fn start_app(db: Arc<TestDb>, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let issuer = DevIssuer::start(loopback()).expect("dev issuer");
    let google = GoogleStandIn::start(loopback()).expect("google stand-in");
    start_app_with_upstreams(issuer, google, db, tweak).await
}

/// Like [`spawn_app_with`], but `tweak` also gets the Google stand-in (to make a provider
/// trust the bridge, for instance).
pub async fn spawn_app_with_google(tweak: impl FnOnce(&mut Settings, &GoogleStandIn)) -> TestApp {
    let issuer = DevIssuer::start(loopback()).expect("dev issuer");
    let google = GoogleStandIn::start(loopback()).expect("google stand-in");
    let stand_in = google.clone();
    let app = start_app_with_upstreams(issuer, google, Arc::new(TestDb::sqlite()), move |s| {
        tweak(s, &stand_in)
    })
    .await;
    app.wait_ready().await;
    app
}

/// A further app instance sharing `first`'s database, issuer and Google stand-in.
pub async fn spawn_replica(first: &TestApp, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let app = start_app_with_upstreams(
        first.issuer.clone(),
        first.google.clone(),
        first.db.clone(),
        tweak,
    )
    .await;
    app.wait_ready().await;
    app
}

/// `n` app instances sharing one fresh database on `backend`, one dev issuer and one Google
/// stand-in, each configured by `tweak`; `None` when Postgres is unreachable outside CI.
pub async fn spawn_replicas(
    backend: Backend,
    n: usize,
    tweak: impl Fn(&mut Settings),
) -> Option<Vec<TestApp>> {
    let db = Arc::new(TestDb::create(backend).await?);
    let issuer = DevIssuer::start(loopback()).expect("dev issuer");
    let google = GoogleStandIn::start(loopback()).expect("google stand-in");
    let mut apps = Vec::with_capacity(n);
    for _ in 0..n {
        let app =
            start_app_with_upstreams(issuer.clone(), google.clone(), db.clone(), &tweak).await;
        app.wait_ready().await;
        apps.push(app);
    }
    Some(apps)
}

async fn start_app_with_upstreams(
    issuer: DevIssuer,
    google: GoogleStandIn,
    db: Arc<TestDb>,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let listener = loopback();
    let mut settings = devstack::settings(&issuer, &google, listener.local_addr().unwrap());
    db.configure(&mut settings);
    tweak(&mut settings);
    settings.validate().expect("test settings are valid");
    let app = Application::build_with_listener(settings, listener)
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let broker = app.broker();
    let reloader = app.reloader();
    let admin_address = app.admin_addr().map(|a| format!("http://{a}"));
    let metrics_address = app.metrics_addr().map(|a| format!("http://{a}"));
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        issuer,
        google,
        // The server closes idle keep-alive connections after 5 s; a client that reused one
        // at that moment would see the request fail without an answer.
        http: reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client"),
        broker,
        db,
        reloader,
        admin_address,
        metrics_address,
    }
}

impl TestApp {
    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self
                .http
                .get(format!("{}/readyz", self.address))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("application did not become ready");
    }

    /// A token for `sub` from the dev issuer, with default claims.
    pub fn token_for(&self, sub: &str) -> String {
        self.issuer.mint(&MintRequest {
            sub: sub.into(),
            ..Default::default()
        })
    }

    /// The newest issuance records (at most 100), read from the store.
    pub async fn records(&self) -> Vec<sts_bridge::audit::StoredIssuance> {
        self.newest_records(100).await
    }

    /// The newest `limit` issuance records, read from the store.
    pub async fn newest_records(&self, limit: i64) -> Vec<sts_bridge::audit::StoredIssuance> {
        self.broker
            .audit()
            .store
            .list_issuances(&sts_bridge::audit::IssuanceQuery {
                limit,
                ..Default::default()
            })
            .await
            .expect("records readable")
    }

    /// GETs `path` on the app.
    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// Posts `body` as JSON to /v1/token.
    pub async fn post_json(&self, body: &Value) -> Response {
        self.http
            .post(format!("{}/v1/token", self.address))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Posts `fields` as a form to /v1/token.
    pub async fn post_form(&self, fields: &[(&str, &str)]) -> Response {
        self.http
            .post(format!("{}/v1/token", self.address))
            .form(fields)
            .send()
            .await
            .expect("request sent")
    }

    /// The standard exchange google-auth would make for the dev target.
    pub async fn exchange(&self, subject_token: &str) -> Response {
        self.post_form(&[
            ("grant_type", GRANT),
            ("audience", devstack::DEV_TARGET),
            ("requested_token_type", ACCESS_TOKEN),
            ("subject_token", subject_token),
            ("subject_token_type", JWT),
        ])
        .await
    }
}

/// Status and JSON body of a response.
pub async fn status_json(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.expect("JSON body");
    (status, body)
}

/// Asserts an RFC 6749 error and returns its description.
pub async fn assert_error(response: Response, status: u16, code: &str) -> String {
    let (got_status, body) = status_json(response).await;
    assert_eq!(got_status, status, "body: {body}");
    assert_eq!(body["error"], code, "body: {body}");
    body["error_description"]
        .as_str()
        .expect("error_description")
        .to_owned()
}
