//! The run: the upstream stand-ins, the servers under test, and every measurement in order.

use crate::cpu::{PerRequest, Ticks};
use crate::http::{form_request, get_request, Conn};
use crate::loadgen::{closed_loop, constant_rate, storm};
use crate::report::{Figures, Phase, Report, Round, TwoReplicas, WriterFigures};
use crate::wrk::{self, WrkResult};
use crate::{secs, Options};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use sqlx::{Connection, Executor, PgConnection};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sts_bridge::devstack::{self, DevIssuer, GoogleStandIn, MintRequest};

type BenchResult<T> = Result<T, String>;

/// A fresh database on the bench's Postgres server, dropped at the end.
struct BenchDb {
    admin_url: String,
    name: String,
    url: String,
}

impl BenchDb {
    async fn create(admin_url: &str) -> BenchResult<Self> {
        let name = format!("sts_bridge_bench_{}", std::process::id());
        let mut url = url::Url::parse(admin_url).map_err(|e| format!("database URL: {e}"))?;
        let mut admin = PgConnection::connect(admin_url)
            .await
            .map_err(|e| format!("cannot reach Postgres at the bench database URL: {e}"))?;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .map_err(|e| format!("create database {name}: {e}"))?;
        url.set_path(&name);
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    async fn version(&self) -> String {
        let Ok(mut conn) = PgConnection::connect(&self.url).await else {
            return "unknown".into();
        };
        sqlx::query_scalar::<_, String>("SELECT version()")
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|_| "unknown".into())
    }

    async fn drop_now(self) {
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = admin.execute(sqlx::AssertSqlSafe(sql)).await {
                eprintln!("could not drop database {}: {e}", self.name);
            }
        }
    }
}

/// Child processes, killed when the run ends however it ends.
#[derive(Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server under test.
#[derive(Clone, Copy)]
struct Server {
    addr: SocketAddr,
    pid: u32,
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}/v1/token", self.addr)
    }

    fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }
}

fn free_port() -> BenchResult<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// How one sts-bridge under test keeps its records and whether it caches validated tokens.
struct Variant<'a> {
    name: &'a str,
    database_url: Option<&'a str>,
    token_cache: bool,
    /// Redis URL and key prefix of the shared cache tier, when the variant has one.
    redis: Option<(&'a str, &'a str)>,
}

fn config(
    variant: &Variant,
    port: u16,
    issuer: &DevIssuer,
    google: &GoogleStandIn,
    dir: &Path,
) -> String {
    let records = match variant.database_url {
        Some(url) => format!("database_url = \"{url}\""),
        None => format!(
            "sqlite_path = \"{}\"",
            dir.join(format!("{}.sqlite", variant.name)).display()
        ),
    };
    let shared_tier = match variant.redis {
        // A fixed key: the bench's Redis entries are its own and dropped after the run.
        Some((url, prefix)) => format!(
            "redis_url = \"{url}\"\nredis_key = \"{}\"\nredis_key_prefix = \"{prefix}\"\n",
            "ab".repeat(32)
        ),
        None => String::new(),
    };
    format!(
        r#"listen = "127.0.0.1:{port}"

[[issuers]]
issuer = "{issuer}"
audiences = ["{audience}"]
algorithms = ["RS256", "ES256"]
groups_claim = "{groups}"
roles_claim = "{roles}"

[[targets]]
name = "{target}"
kind = "workforce"
provider = "{provider}"
user_project = "{project}"
allowed_scopes = ["{cloud}", "{bigquery}"]
default_scopes = ["{cloud}"]
[targets.policy]
clients = ["{client}"]

[google]
sts_url = "{sts}"

[cache]
{shared_tier}
[cache.validated_tokens]
enabled = {token_cache}

[audit]
{records}

# On, so their cost is in the figures, at rates the load generator never reaches.
[limits]
per_subject = {{ per_minute = 60000000, burst = 1000000 }}
per_client_address = {{ per_minute = 60000000, burst = 1000000 }}

[log]
format = "json"
filter = "warn"
"#,
        issuer = issuer.issuer(),
        audience = devstack::DEV_AUDIENCE,
        groups = devstack::DEV_GROUPS_CLAIM,
        roles = devstack::DEV_ROLES_CLAIM,
        target = devstack::DEV_TARGET,
        client = devstack::DEV_CLIENT,
        provider = devstack::DEV_PROVIDER,
        project = devstack::DEV_USER_PROJECT,
        cloud = devstack::CLOUD_PLATFORM,
        bigquery = devstack::BIGQUERY,
        sts = google.token_url(),
        token_cache = variant.token_cache,
    )
}

struct Stack {
    issuer: DevIssuer,
    google: GoogleStandIn,
    rsa_kid: String,
    /// Public key of `rsa_kid`, for the baseline.
    rsa_pem: String,
    dir: PathBuf,
    server_bin: PathBuf,
    children: Children,
}

impl Stack {
    fn spawn_bridge(&mut self, variant: &Variant) -> BenchResult<Server> {
        let port = free_port()?;
        let path = self.dir.join(format!("{}.toml", variant.name));
        std::fs::write(
            &path,
            config(variant, port, &self.issuer, &self.google, &self.dir),
        )
        .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(self.dir.join(format!("{}.log", variant.name)))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&self.server_bin)
            .args(["serve", "--config"])
            .arg(&path)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.server_bin.display()))?;
        Ok(self.track(child, port))
    }

    fn spawn_baseline(&mut self) -> BenchResult<Server> {
        let port = free_port()?;
        let key = self.dir.join("baseline-key.pem");
        std::fs::write(&key, &self.rsa_pem).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .arg("--baseline-port")
            .arg(port.to_string())
            .arg("--baseline-key")
            .arg(&key)
            .arg("--server")
            .arg(&self.server_bin)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the baseline: {e}"))?;
        Ok(self.track(child, port))
    }

    fn track(&mut self, child: Child, port: u16) -> Server {
        let server = Server {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pid: child.id(),
        };
        self.children.0.push(child);
        server
    }

    /// google-auth's form for `token`, as Python's client sends it.
    fn request(&self, server: Server, token: &str) -> Vec<u8> {
        form_request(server.addr, "/v1/token", &form(token), GOOGLE_AUTH_HEADERS)
    }

    fn rsa_token(&self, sub: &str) -> String {
        let claims = self.issuer.claims(&MintRequest {
            sub: sub.into(),
            ..Default::default()
        });
        self.issuer.sign(&self.rsa_kid, &claims)
    }
}

const GOOGLE_AUTH_HEADERS: &str =
    "x-goog-api-client: gl-python/3.11.2 auth/2.62.0 google-byoid-sdk sa-impersonation/false config-lifetime/false\r\nUser-Agent: python-requests/2.32.3\r\n";

/// The form google-auth posts for a workforce pool: `options` percent-encoded before the
/// form encoding, so it arrives encoded twice.
fn form(token: &str) -> String {
    let options = format!("{{\"userProject\": \"{}\"}}", devstack::DEV_USER_PROJECT);
    let options = utf8_percent_encode(&options, NON_ALPHANUMERIC).to_string();
    serde_urlencoded::to_string([
        ("audience", devstack::DEV_PROVIDER),
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("options", options.as_str()),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("scope", devstack::CLOUD_PLATFORM),
        ("subject_token", token),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
    ])
    .unwrap_or_default()
}

async fn wait_ready(server: Server, ready_path: &str) -> BenchResult<()> {
    let deadline = Instant::now() + secs(30);
    while Instant::now() < deadline {
        if let Ok(mut conn) = Conn::open(server.addr).await {
            if let Ok((200, _)) = conn.send(&get_request(server.addr, ready_path)).await {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("server on {} did not become ready", server.addr))
}

async fn expect_ok(server: Server, request: &[u8]) -> BenchResult<()> {
    let mut conn = Conn::open(server.addr).await.map_err(|e| e.to_string())?;
    match conn.send(request).await.map_err(|e| e.to_string())? {
        (200, _) => Ok(()),
        (status, body) => Err(format!(
            "{} answered {status}: {}",
            server.addr,
            String::from_utf8_lossy(&body)
        )),
    }
}

/// Runs the whole bench; the database is dropped whatever happens.
pub async fn run(options: Options) -> BenchResult<()> {
    if !options.server.is_file() {
        return Err(format!(
            "{} is not a file; build it with `cargo build --release`",
            options.server.display()
        ));
    }
    let db = BenchDb::create(&options.database_url).await?;
    let result = measure(&options, &db).await;
    db.drop_now().await;
    let Some(report) = result? else {
        return Ok(());
    };
    let text = report.markdown();
    println!("{text}");
    std::fs::write(&options.out, &text).map_err(|e| format!("writing the report: {e}"))?;
    println!("written to {}", options.out.display());
    Ok(())
}

async fn measure(options: &Options, db: &BenchDb) -> BenchResult<Option<Report>> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bind = |what| {
        devstack::bind_loopback("127.0.0.1:0".parse().expect("addr"))
            .map_err(|e| format!("{what}: {e}"))
    };
    let issuer = DevIssuer::start(bind("issuer")?).map_err(|e| e.to_string())?;
    let google = GoogleStandIn::start(bind("google")?).map_err(|e| e.to_string())?;
    let rsa_kid = issuer.current_kid();
    let rsa_pem = issuer.public_key_pem();
    // Published before the servers load the key set; ES256 keeps minting 100,000 tokens
    // for the RSS figure to a few seconds. `mint` signs with it, `rsa_token` with the RSA key.
    issuer.add_ec_key(true);
    let mut stack = Stack {
        issuer,
        google,
        rsa_kid,
        rsa_pem,
        dir: dir.path().to_owned(),
        server_bin: options.server.clone(),
        children: Children::default(),
    };
    let a = stack.spawn_baseline()?;
    let b = stack.spawn_bridge(&Variant {
        name: "b-postgres",
        database_url: Some(&db.url),
        token_cache: false,
        redis: None,
    })?;
    let c = stack.spawn_bridge(&Variant {
        name: "c-sqlite",
        database_url: None,
        token_cache: false,
        redis: None,
    })?;
    let d = stack.spawn_bridge(&Variant {
        name: "d-token-cache",
        database_url: Some(&db.url),
        token_cache: true,
        redis: None,
    })?;
    for server in [b, c, d] {
        wait_ready(server, "/readyz").await?;
    }
    let token = stack.rsa_token("auth0|bench");
    let script = dir.path().join("form.lua");
    std::fs::write(&script, wrk::script(&form(&token))).map_err(|e| e.to_string())?;
    for server in [a, b, c, d] {
        let deadline = Instant::now() + secs(30);
        // The baseline has no readiness endpoint: retry the exchange itself.
        while let Err(e) = expect_ok(server, &stack.request(server, &token)).await {
            if Instant::now() > deadline {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    if options.rss_only {
        subjects_rss(&mut stack, options, db).await?;
        return Ok(None);
    }
    if let Some(rate) = options.tail_only {
        for (name, server) in [("A", a), ("B", b), ("C", c), ("D", d)] {
            let before = scrape(server).await.unwrap_or_default();
            let h = half_peak(&stack, server, rate).await?;
            let after = scrape(server).await.unwrap_or_default();
            println!(
                "constant {rate:.0} req/s on {name}: p50 {:.2} ms, p99 {:.2} ms, {} failed",
                h.p50_ms, h.p99_ms, h.errors
            );
            for metric in [
                "sts_bridge_exchange_duration_seconds_bucket{outcome=\"issued\",le=\"",
                "sts_bridge_audit_flush_duration_seconds_bucket{le=\"",
            ] {
                let was = histogram(&before, metric);
                let delta: Vec<String> = histogram(&after, metric)
                    .iter()
                    .map(|(le, n)| {
                        let n0 = was.iter().find(|(l, _)| l == le).map_or(0, |(_, n)| *n);
                        format!("≤{le}: {}", n - n0)
                    })
                    .collect();
                if !delta.is_empty() {
                    println!(
                        "  {}: {}",
                        metric.split('{').next().unwrap_or(metric),
                        delta.join(", ")
                    );
                }
            }
        }
        return Ok(None);
    }

    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        let mut results = [None; 4];
        let mut cpu = [PerRequest::default(); 4];
        let mut batch = [None; 4];
        for (i, server) in [a, b, c, d].into_iter().enumerate() {
            let written = batch_totals(server).await;
            let before = Ticks::now(server.pid);
            let r = wrk::run(&server.url(), &script, secs(options.seconds), 64)?;
            cpu[i] = before.per_request(&Ticks::now(server.pid), r.rps * options.seconds as f64);
            batch[i] = match (written, batch_totals(server).await) {
                (Some((rows0, n0)), Some((rows1, n1))) if n1 > n0 => {
                    Some((rows1 - rows0) / (n1 - n0))
                }
                _ => None,
            };
            println!(
                "round {round} {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}; \
                 CPU µs per request: server {:.1}, Postgres {:.1}, rest {:.1}; \
                 records per statement {}",
                ["A", "B", "C", "D"][i],
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.errors,
                cpu[i].server,
                cpu[i].postgres,
                cpu[i].other,
                batch[i].map_or("–".to_owned(), |b| format!("{b:.1}"))
            );
            results[i] = Some(r);
            tokio::time::sleep(secs(1)).await;
        }
        rounds.push(Round(results.map(|r| r.expect("measured")), cpu, batch));
    }
    let mean = |i: usize| rounds.iter().map(|r| r.0[i].rps).sum::<f64>() / rounds.len() as f64;
    let peak_b = mean(1);
    if options.compare_only {
        println!(
            "ratios to A: B {:.2}, C {:.2}, D {:.2}",
            mean(1) / mean(0),
            mean(2) / mean(0),
            mean(3) / mean(0)
        );
        return Ok(None);
    }

    let storm = cold_storm(&stack, b).await;
    println!(
        "cold storm: {} upstream call(s), {} of 1000 answered 200",
        storm.0, storm.1
    );

    let half = half_peak(&stack, b, peak_b / 2.0).await?;
    println!(
        "constant {:.0} req/s on B: p50 {:.2} ms, p99 {:.2} ms",
        half.rate, half.p50_ms, half.p99_ms
    );

    // The same arrivals on C tell whether the tail comes from the Postgres commits.
    let half_sqlite = half_peak(&stack, c, peak_b / 2.0).await?;
    println!(
        "constant {:.0} req/s on C: p50 {:.2} ms, p99 {:.2} ms",
        half_sqlite.rate, half_sqlite.p50_ms, half_sqlite.p99_ms
    );

    let half_baseline = half_peak(&stack, a, peak_b / 2.0).await?;
    println!(
        "constant {:.0} req/s on A: p50 {:.2} ms, p99 {:.2} ms",
        half_baseline.rate, half_baseline.p50_ms, half_baseline.p99_ms
    );

    let replicas = two_replicas(&mut stack, options, db, &script).await?;

    let writer = writer_throughput(&db.url).await?;
    println!("audit writer: {:.0} rows/s", writer.rows_per_sec);

    let rss = subjects_rss(&mut stack, options, db).await?;

    let mut soak = Vec::new();
    for minute in 1..=options.soak {
        let r = wrk::run(&d.url(), &script, secs(60), 64)?;
        let rss = d.rss_bytes();
        println!(
            "soak minute {minute}: D {:.0} req/s, p99 {:.2} ms, RSS {:.1} MiB",
            r.rps,
            r.p99_ms,
            rss as f64 / 1048576.0
        );
        soak.push((minute, r, rss));
    }

    Ok(Some(Report {
        figures: Figures {
            rounds,
            storm_calls: storm.0,
            storm_ok: storm.1,
            half,
            half_sqlite,
            half_baseline,
            writer,
            subjects: options.subjects,
            rss,
            soak,
            replicas,
            seconds: options.seconds,
        },
        postgres: db.version().await,
    }))
}

/// Two replicas on one Redis and one Postgres: a cold storm split across both, every
/// subject asked of both, and wrk on both at once. `None` when Redis is unreachable.
async fn two_replicas(
    stack: &mut Stack,
    options: &Options,
    db: &BenchDb,
    script: &Path,
) -> BenchResult<Option<TwoReplicas>> {
    let client = redis::Client::open(options.redis_url.as_str()).map_err(|e| e.to_string())?;
    let mut conn =
        match tokio::time::timeout(secs(2), client.get_multiplexed_async_connection()).await {
            Ok(Ok(conn)) => conn,
            _ => {
                println!(
                    "two replicas: skipped, Redis at {} unreachable",
                    options.redis_url
                );
                return Ok(None);
            }
        };
    let prefix = format!("sts-bridge-bench:{}:", std::process::id());
    let shared = Some((options.redis_url.as_str(), prefix.as_str()));
    let mut replicas = Vec::new();
    for name in ["f-replica", "g-replica"] {
        replicas.push(stack.spawn_bridge(&Variant {
            name,
            database_url: Some(&db.url),
            token_cache: true,
            redis: shared,
        })?);
    }
    let (f, g) = (replicas[0], replicas[1]);
    for server in [f, g] {
        wait_ready(server, "/readyz").await?;
    }
    let result = measure_replicas(stack, options, script, f, g).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
    result.map(Some)
}

async fn measure_replicas(
    stack: &Stack,
    options: &Options,
    script: &Path,
    f: Server,
    g: Server,
) -> BenchResult<TwoReplicas> {
    // Cold storm: 500 simultaneous first requests on each replica for one subject.
    let token = stack.rsa_token("auth0|cold-storm-two-replicas");
    let before = stack.google.call_count();
    let (on_f, on_g) = tokio::join!(
        storm(f.addr, Arc::new(stack.request(f, &token)), 500),
        storm(g.addr, Arc::new(stack.request(g, &token)), 500)
    );
    let storm_calls = stack.google.call_count() - before;
    let storm_ok = on_f.iter().chain(&on_g).filter(|s| **s == 200).count();
    println!(
        "two replicas, cold storm: {storm_calls} upstream call(s), {storm_ok} of 1000 answered 200"
    );

    // Each of many subjects asked of both replicas at once.
    let subjects = 1000;
    let before = stack.google.call_count();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..subjects {
        let token = stack.rsa_token(&format!("auth0|replicated-{i}"));
        let requests = [f, g].map(|s| (s, Arc::new(stack.request(s, &token))));
        tasks.spawn(async move {
            let [(f, rf), (g, rg)] = requests;
            let (a, b) = tokio::join!(storm(f.addr, rf, 1), storm(g.addr, rg, 1));
            a.into_iter().chain(b).filter(|s| *s == 200).count()
        });
        if tasks.len() >= 32 {
            tasks.join_next().await;
        }
    }
    tasks.join_all().await;
    let calls_per_subject = (stack.google.call_count() - before) as f64 / subjects as f64;
    println!("two replicas, {subjects} subjects asked of both: {calls_per_subject:.3} upstream calls per subject");

    // Both replicas loaded at once, each by its own wrk with half the connections.
    let duration = secs(options.seconds);
    let (script_f, script_g) = (script.to_owned(), script.to_owned());
    let (url_f, url_g) = (f.url(), g.url());
    let on_f = std::thread::spawn(move || wrk::run(&url_f, &script_f, duration, 32));
    let on_g = std::thread::spawn(move || wrk::run(&url_g, &script_g, duration, 32));
    let (rf, rg) = (
        on_f.join().map_err(|_| "wrk thread panicked")??,
        on_g.join().map_err(|_| "wrk thread panicked")??,
    );
    let combined_rps = rf.rps + rg.rps;
    println!(
        "two replicas under wrk: {combined_rps:.0} req/s combined ({:.0} + {:.0}), errors {}",
        rf.rps,
        rg.rps,
        rf.errors + rg.errors
    );
    Ok(TwoReplicas {
        storm_calls,
        storm_ok,
        subjects,
        calls_per_subject,
        combined_rps,
        errors: rf.errors + rg.errors,
    })
}

/// 1,000 simultaneous first requests for one subject: (upstream calls, answers 200).
async fn cold_storm(stack: &Stack, server: Server) -> (usize, usize) {
    let token = stack.rsa_token("auth0|cold-storm");
    let before = stack.google.call_count();
    let statuses = storm(server.addr, Arc::new(stack.request(server, &token)), 1000).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    (stack.google.call_count() - before, ok)
}

async fn half_peak(stack: &Stack, server: Server, rate: f64) -> BenchResult<Phase> {
    let token = stack.rsa_token("auth0|bench");
    let request = Arc::new(stack.request(server, &token));
    let mut samples = constant_rate(server.addr, request, rate, secs(10), 64)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Phase {
        rate,
        answered: samples.count(),
        errors: samples.errors,
        p50_ms: samples.percentile_ms(50.0),
        p99_ms: samples.percentile_ms(99.0),
    })
}

/// RSS of a fresh server (E: validated-token cache on, records in Postgres) before and
/// after caching `--subjects` distinct subjects.
async fn subjects_rss(stack: &mut Stack, options: &Options, db: &BenchDb) -> BenchResult<Rss> {
    let e = stack.spawn_bridge(&Variant {
        name: "e-subjects",
        database_url: Some(&db.url),
        token_cache: true,
        redis: None,
    })?;
    wait_ready(e, "/readyz").await?;
    let rss = many_subjects(stack, e, options.subjects).await?;
    println!(
        "{} subjects: RSS {:.1} MiB before, {:.1} MiB after",
        options.subjects,
        rss.before as f64 / 1048576.0,
        rss.after as f64 / 1048576.0
    );
    Ok(rss)
}

/// RSS of a fresh server before and after caching `n` distinct subjects.
pub struct Rss {
    /// Bytes after one exchange.
    pub before: u64,
    /// Bytes after `n` subjects.
    pub after: u64,
    /// Exchanges that failed.
    pub errors: usize,
    /// How long the exchanges took.
    pub took: Duration,
}

async fn many_subjects(stack: &Stack, server: Server, n: usize) -> BenchResult<Rss> {
    expect_ok(
        server,
        &stack.request(
            server,
            &stack.issuer.mint(&MintRequest {
                sub: "auth0|first".into(),
                ..Default::default()
            }),
        ),
    )
    .await?;
    let before = server.rss_bytes();
    let requests: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let token = stack.issuer.mint(&MintRequest {
                sub: format!("auth0|subject-{i:06}"),
                ..Default::default()
            });
            stack.request(server, &token)
        })
        .collect();
    let (samples, took) = closed_loop(server.addr, requests, 64)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(secs(2)).await;
    Ok(Rss {
        before,
        after: server.rss_bytes(),
        errors: samples.errors,
        took,
    })
}

/// The group-commit writer alone, in this process, into the bench database.
async fn writer_throughput(url: &str) -> BenchResult<WriterFigures> {
    use sts_bridge::audit::{AuditWriter, IssuanceRecord, Outcome, Store, WriterLimits};
    let store = Store::connect(Some(url), Path::new("unused"), 8)
        .await
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let metrics = Arc::new(sts_bridge::metrics::Metrics::new());
    let limits = WriterLimits {
        capacity: 10_000,
        max_batch: 512,
        max_in_flight: 4,
        // As the service runs it by default.
        overlap_after: Duration::from_millis(
            sts_bridge::config::AuditSettings::default().overlap_after_ms,
        ),
        enqueue_timeout: secs(5),
        commit_timeout: secs(30),
        restart_backoff: Duration::from_millis(100),
    };
    let writer = AuditWriter::start(store, metrics.clone(), limits);
    let record = IssuanceRecord {
        issued_at: time::OffsetDateTime::now_utc(),
        request_id: "00000000-0000-4000-8000-000000000000".into(),
        server_request_id: Some("00000000-0000-4000-8000-000000000001".into()),
        issuer: "https://bench.invalid/".into(),
        subject: "auth0|writer-bench".into(),
        client_id: Some("bench-client".into()),
        azp: Some("bench-client".into()),
        actor: None,
        target: devstack::DEV_TARGET.into(),
        google_principal: Some(format!(
            "principal://iam.googleapis.com/{}/subject/auth0|writer-bench",
            devstack::DEV_PROVIDER
        )),
        service_account: None,
        scopes: devstack::CLOUD_PLATFORM.into(),
        source: Some("cache"),
        outcome: Outcome::Issued,
        error_code: None,
        expires_at: Some(time::OffsetDateTime::now_utc()),
        token_sha256: Some(sts_bridge::secret::fingerprint(b"bench")),
        client_addr: Some("127.0.0.1".into()),
        user_agent: Some("python-requests/2.32.3".into()),
        api_client: Some("gl-python/3.11.2 auth/2.62.0 google-byoid-sdk".into()),
        claimed_client: None,
    };
    const ROWS: usize = 200_000;
    const PRODUCERS: usize = 2_000;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..PRODUCERS {
        let (writer, record) = (writer.clone(), record.clone());
        tasks.spawn(async move {
            let mut failed = 0;
            for _ in 0..ROWS / PRODUCERS {
                if writer.record(record.clone()).await.is_err() {
                    failed += 1;
                }
            }
            failed
        });
    }
    let failed: usize = tasks.join_all().await.into_iter().sum();
    let took = started.elapsed();
    Ok(WriterFigures {
        rows: ROWS,
        failed,
        rows_per_sec: (ROWS - failed) as f64 / took.as_secs_f64(),
        batches: writer.stats().batches(),
        histogram: batch_histogram(&metrics.render(0, 0)),
    })
}

/// The server's /metrics; `None` for a server without them (the baseline).
async fn scrape(server: Server) -> Option<String> {
    let mut conn = Conn::open(server.addr).await.ok()?;
    let (status, body) = conn
        .send(&get_request(server.addr, "/metrics"))
        .await
        .ok()?;
    (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
}

/// Rows and INSERT statements the server has written so far, from its /metrics; `None`
/// for a server without them (the baseline).
async fn batch_totals(server: Server) -> Option<(f64, f64)> {
    let text = scrape(server).await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some((
        value("sts_bridge_audit_batch_rows_sum ")?,
        value("sts_bridge_audit_batch_rows_count ")?,
    ))
}

/// Batches per size bucket, from the cumulative Prometheus histogram.
fn batch_histogram(exposition: &str) -> Vec<(String, u64)> {
    histogram(exposition, "sts_bridge_audit_batch_rows_bucket{le=\"")
}

/// The count in each bucket (not cumulative) of the histogram whose bucket lines start
/// with `prefix`, up to the bound's value.
fn histogram(exposition: &str, prefix: &str) -> Vec<(String, u64)> {
    let mut previous = 0;
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let cumulative: u64 = count.trim().parse().ok()?;
            let n = cumulative - previous;
            previous = cumulative;
            Some((le.to_owned(), n))
        })
        .collect()
}

/// One soak minute: its number, what wrk measured on D, and D's RSS in bytes.
pub type SoakRow = (u64, WrkResult, u64);
