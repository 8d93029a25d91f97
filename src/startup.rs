//! Builds the application: shared state, routes, background tasks.

use crate::assertion::{AssertionError, Minter};
use crate::audit::{self, Audit, AuditError, AuditWriter, Revocations, Store, WriterLimits};
use crate::breaker::Breaker;
use crate::broker::{Broker, GoogleClients, SharedTier};
use crate::config::{AuditSettings, ConfigError, Settings, TargetMode};
use crate::google::{IamCredentialsClient, OwnIdentity, RetryPolicy, StsClient};
use crate::identity::{KeySet, TokenCacheLimits, Validator};
use crate::metrics::Metrics;
use crate::ratelimit::{KeyedLimit, Rate};
use crate::routes::{self, AppState, Served};
use crate::telemetry;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A built, not yet running, sts-bridge.
pub struct Application {
    port: u16,
    server: Server,
    /// Separate admin and metrics listeners: address, what it serves, the server.
    others: Vec<(SocketAddr, Served, Server)>,
    broker: Arc<Broker>,
    reloader: Reloader,
}

/// What the public listener serves, and the separate listeners with what each serves
/// (admin and metrics share one when given the same address).
fn listeners(settings: &Settings) -> (Served, Vec<(SocketAddr, Served)>) {
    let admin = settings.admin.enabled;
    let public = Served {
        token: true,
        admin: admin && settings.admin.listen.is_none(),
        metrics: settings.metrics.listen.is_none(),
    };
    let mut extra: Vec<(SocketAddr, Served)> = Vec::new();
    let wanted = [
        (settings.admin.listen.filter(|_| admin), true),
        (settings.metrics.listen, false),
    ];
    for (addr, is_admin) in wanted {
        let Some(addr) = addr else { continue };
        let existing = extra
            .iter_mut()
            .find(|(a, _)| *a == addr && addr.port() != 0);
        let served = match existing {
            Some((_, served)) => served,
            None => {
                extra.push((addr, Served::default()));
                &mut extra.last_mut().expect("just pushed").1
            }
        };
        if is_admin {
            served.admin = true;
        } else {
            served.metrics = true;
        }
    }
    (public, extra)
}

/// How long the records still queued at exit may take to be written, after the grace period.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// Log lines a second for requests refused before any token was validated.
const MALFORMED_LOG_LINES_PER_SEC: u32 = 10;

/// Builds one HTTP server on `listener` serving `served`.
fn serve(
    listener: TcpListener,
    served: Served,
    state: web::Data<AppState>,
    shutdown_timeout: Duration,
) -> Result<Server, StartupError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    Ok(HttpServer::new(move || {
        App::new()
            .wrap(from_fn(telemetry::with_request_id))
            .app_data(state.clone())
            .configure(|cfg| routes::configure(cfg, served, state.assertion.as_deref()))
            .default_service(web::to(routes::not_found))
    })
    .listen(listener)
    .map_err(|source| StartupError::Bind { addr, source })?
    .shutdown_timeout(shutdown_timeout.as_secs())
    .run())
}

/// Reloads targets and their policies from the configuration file while serving.
#[derive(Clone)]
pub struct Reloader {
    broker: Arc<Broker>,
    current: Arc<Mutex<Settings>>,
}

impl Reloader {
    /// Loads and validates `path`; when it is valid, its targets and policies replace the
    /// running ones (requests already under way finish under the old ones). When it is
    /// not, the error names the key and everything running stays as it was. Other
    /// sections take effect at the next start.
    pub fn reload(&self, path: &Path) -> Result<(), ConfigError> {
        let fresh = Settings::load(Some(path)).inspect_err(|e| {
            tracing::error!(error = %e, file = %path.display(), "configuration not reloaded; the running targets and policies stay");
        })?;
        for warning in fresh.warnings() {
            tracing::warn!("{warning}");
        }
        let mut current = self.current.lock().expect("settings lock");
        needs_no_new_keys(&current, &fresh).inspect_err(|e| {
            tracing::error!(error = %e, file = %path.display(), "configuration not reloaded; the running targets and policies stay");
        })?;
        if !same_apart_from_targets(&current, &fresh) {
            tracing::warn!("only targets and their policies are reloaded; other changed sections take effect at the next start");
        }
        self.broker.replace_targets(&fresh.targets);
        current.targets = fresh.targets;
        tracing::info!(
            targets = current.targets.len(),
            "targets and policies reloaded"
        );
        Ok(())
    }
}

/// The bridge's signing keys are loaded at start only: a reload may not put a target in
/// assertion mode in a process that has none.
fn needs_no_new_keys(current: &Settings, fresh: &Settings) -> Result<(), ConfigError> {
    let asserting = fresh
        .targets
        .iter()
        .position(|t| t.mode == TargetMode::Assertion);
    match (asserting, &current.assertion) {
        (Some(i), None) => Err(ConfigError::Invalid {
            key: format!("targets[{i}].mode"),
            problem: "assertion mode needs the [assertion] keys, which are loaded at start; restart instead of reloading".into(),
        }),
        _ => Ok(()),
    }
}

fn same_apart_from_targets(a: &Settings, b: &Settings) -> bool {
    let without_targets = |s: &Settings| {
        let mut v = serde_json::to_value(s).ok();
        if let Some(serde_json::Value::Object(map)) = v.as_mut() {
            map.remove("targets");
        }
        v
    };
    without_targets(a) == without_targets(b)
}

/// Reloads `path` through `reloader` on every SIGHUP.
#[cfg(unix)]
pub fn reload_on_sighup(reloader: Reloader, path: PathBuf) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration");
            // A refusal is logged by reload, naming the key.
            let _ = reloader.reload(&path);
        }
    });
    Ok(())
}

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The issuance store could not be opened or migrated.
    #[error("issuance store: {0}")]
    Audit(#[from] AuditError),
    /// A signing key of the bridge's own issuer could not be loaded.
    #[error("{0}")]
    Assertion(#[from] AssertionError),
    /// The shared cache tier is misconfigured (Redis being down is no error).
    #[error("{0}")]
    SharedTier(#[from] crate::broker::SharedTierError),
}

impl Application {
    /// Binds `settings.listen` and builds the server.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(settings.listen).map_err(|source| StartupError::Bind {
            addr: settings.listen.to_string(),
            source,
        })?;
        Self::build_with_listener(settings, listener).await
    }

    /// Builds the server on an already bound listener (tests bind port 0).
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        let port = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.listen.to_string(),
            source,
        })?;
        // One client per kind of upstream: a slow issuer must not hold the connections or
        // the timeouts Google STS needs, nor the other way round; IAM Credentials, another
        // Google service, has the same timeouts as STS and a client of its own.
        let sts_http = http_client(settings.google.connect_timeout(), settings.google.timeout())?;
        let iam_http = http_client(settings.google.connect_timeout(), settings.google.timeout())?;
        let keys_http = http_client(settings.jwks.connect_timeout(), settings.jwks.timeout())?;
        let minter = settings
            .assertion
            .as_ref()
            .map(Minter::load)
            .transpose()?
            .map(Arc::new);
        let metrics = Arc::new(Metrics::new());
        let key_sets = settings
            .issuers
            .iter()
            .map(|i| {
                let breaker = Arc::new(Breaker::new(
                    format!("jwks:{}", i.issuer),
                    settings.jwks.breaker,
                    metrics.clone(),
                ));
                let keys = KeySet::new(i, keys_http.clone(), breaker, metrics.clone());
                (i.clone(), Arc::new(keys))
            })
            .collect::<Vec<_>>();
        for (issuer, keys) in &key_sets {
            spawn_key_refresher(keys.clone(), issuer.jwks_refresh());
        }
        let audit = Arc::new(open_audit(&settings.audit, metrics.clone()).await?);
        let retry = RetryPolicy {
            max_attempts: settings.google.max_attempts,
            deadline: settings.google.deadline(),
            base_backoff: Duration::from_millis(100),
            max_concurrent: settings.google.max_concurrent_calls,
        };
        let breaker = |upstream: &str| {
            Arc::new(Breaker::new(
                upstream,
                settings.google.breaker,
                metrics.clone(),
            ))
        };
        let google = GoogleClients {
            sts: StsClient::new(
                sts_http,
                settings.google.sts_url.clone(),
                metrics.clone(),
                retry,
                breaker("google_sts"),
            ),
            iam: IamCredentialsClient::new(
                iam_http,
                settings.google.iam_credentials_url.clone(),
                metrics.clone(),
                breaker("iam_credentials"),
                retry,
            ),
            own: Arc::new(OwnIdentity::new(settings.google.credentials_file.clone())),
        };
        let validated = &settings.cache.validated_tokens;
        let token_cache = validated.enabled.then(|| TokenCacheLimits {
            max_entries: validated.max_entries,
            max_age: Duration::from_secs(validated.max_secs),
        });
        let validator = Validator::new(key_sets, token_cache, metrics.clone());
        let broker = Arc::new(
            Broker::new(
                &settings,
                validator,
                google,
                minter.clone(),
                audit,
                metrics.clone(),
            )
            .with_shared_tier(SharedTier::connect(&settings.cache, metrics).await?),
        );
        spawn_revocation_poller(
            broker.clone(),
            Duration::from_secs(settings.audit.revocation_poll_secs),
        );
        if settings.audit.revocation_push {
            let purger = broker.clone();
            audit::spawn_listener(
                broker.audit().clone(),
                broker.metrics().clone(),
                settings.audit.revocation_push_retry(),
                Box::new(move |newly| purge_revoked(&purger, newly)),
            );
        }
        spawn_retention(broker.clone(), &settings.audit);
        let reloader = Reloader {
            broker: broker.clone(),
            current: Arc::new(Mutex::new(settings.clone())),
        };
        for warning in settings.warnings() {
            tracing::warn!("{warning}");
        }
        let state = web::Data::new(AppState {
            broker: broker.clone(),
            clients: settings.clients.clone(),
            public_clients: settings.public_clients.clone(),
            require_client_auth: settings.require_client_auth,
            retry_after_secs: settings.google.retry_after_secs,
            admin: settings.admin.clone(),
            issuers: settings.issuers.iter().map(|i| i.issuer.clone()).collect(),
            assertion: minter,
            body_timeout: settings.http.body_timeout(),
            verbose_errors: settings.http.verbose_errors,
            malformed_log: telemetry::LogThrottle::new(MALFORMED_LOG_LINES_PER_SEC),
            cursor_key: routes::CursorKey::new(settings.admin.cursor_secret.as_deref()),
            request_timeout: settings.http.request_timeout(),
            proxies: routes::TrustedProxies::new(settings.http.trusted_proxy_nets()),
            address_limit: settings.limits.enabled.then(|| {
                KeyedLimit::new(
                    Rate::from(&settings.limits.per_client_address),
                    settings.limits.max_tracked_keys,
                )
            }),
        });
        let (public, extra) = listeners(&settings);
        let grace = Duration::from_secs(settings.http.shutdown_timeout_secs);
        let server = serve(listener, public, state.clone(), grace)?;
        let mut others = Vec::new();
        for (addr, served) in extra {
            let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind {
                addr: addr.to_string(),
                source,
            })?;
            let bound = listener.local_addr().map_err(|source| StartupError::Bind {
                addr: addr.to_string(),
                source,
            })?;
            tracing::info!(addr = %bound, admin = served.admin, metrics = served.metrics, "separate listener");
            others.push((
                bound,
                served,
                serve(listener, served, state.clone(), grace)?,
            ));
        }
        Ok(Self {
            port: port.port(),
            server,
            others,
            broker,
            reloader,
        })
    }

    /// The address of the separate listener serving the admin API, when one is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.others.iter().find(|o| o.1.admin).map(|o| o.0)
    }

    /// The address of the separate listener serving `/metrics`, when one is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.others.iter().find(|o| o.1.metrics).map(|o| o.0)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The exchange engine, for inspection.
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Reloads targets and policies from `path`; see [`Reloader::reload`].
    pub fn reload(&self, path: &Path) -> Result<(), ConfigError> {
        self.reloader.reload(path)
    }

    /// A handle that reloads while the application runs.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM); the separate listeners stop
    /// on the same signals. On a stop, new connections are refused, the exchanges under
    /// way finish (for up to the grace period), and the records they queued are written
    /// before this returns.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        for (_, _, server) in self.others {
            tokio::spawn(server);
        }
        let served = self.server.await;
        tracing::info!("stopped accepting; writing the queued issuance records");
        // Every exchange that finished waited for its record; only those cut off at the
        // end of the grace period may have left one in the queue.
        let writer = &self.broker.audit().writer;
        if writer.flush(FLUSH_AT_EXIT).await {
            tracing::info!("issuance records written; exiting");
        } else {
            tracing::error!(
                queued = writer.queue_depth(),
                "issuance records still unwritten at exit"
            );
        }
        served
    }
}

/// An outbound client with its own connection pool and timeouts; redirects are not
/// followed, so an upstream cannot send a request (or a token) elsewhere.
fn http_client(connect: Duration, whole: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(whole)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sts-bridge/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Opens the store, applies migrations, loads revocations and starts the writer.
async fn open_audit(settings: &AuditSettings, metrics: Arc<Metrics>) -> Result<Audit, AuditError> {
    let store = Store::connect_with(
        settings.database_url.as_deref(),
        &settings.sqlite_path,
        settings.pool_size,
        settings.statement_timeout(),
    )
    .await?;
    store.migrate().await?;
    let revocations = Revocations::default();
    revocations.reload(&store).await?;
    tracing::info!(engine = store.engine(), "issuance store ready");
    let writer = AuditWriter::start(
        store.clone(),
        metrics,
        WriterLimits {
            capacity: settings.queue_capacity,
            max_batch: settings.max_batch,
            // SQLite lets one writer in at a time: a second batch would only wait for the
            // lock, in the busy handler's sleeps of a millisecond and more.
            max_in_flight: match store {
                Store::Postgres(_) => settings.max_in_flight,
                Store::Sqlite(_) => 1,
            },
            overlap_after: Duration::from_millis(settings.overlap_after_ms),
            enqueue_timeout: Duration::from_millis(settings.enqueue_timeout_ms),
            commit_timeout: Duration::from_millis(settings.commit_timeout_ms),
            restart_backoff: Duration::from_millis(settings.writer_restart_backoff_ms),
        },
    );
    Ok(Audit {
        store,
        writer,
        revocations,
    })
}

/// Reloads revocations so every replica honours one within the poll interval, and drops
/// the cached credentials of newly revoked subjects.
fn spawn_revocation_poller(broker: Arc<Broker>, every: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let audit = broker.audit();
            match audit.revocations.reload(&audit.store).await {
                Ok(newly) => purge_revoked(&broker, &newly),
                Err(e) => {
                    tracing::warn!(error = %e, "revocations not reloaded; keeping the last list")
                }
            }
        }
    });
}

/// Drops the cached credentials of subjects another replica revoked (heard by the poll or
/// the listener): the one place a revocation made elsewhere reaches the caches. The shared
/// tier is purged again here too: the revoking replica's own purge finds nothing to do when
/// Redis was unreachable at that moment, or when another replica's exchange wrote its
/// credential just after it.
fn purge_revoked(broker: &Arc<Broker>, newly: &[(String, String)]) {
    for (issuer, subject) in newly {
        broker.purge_subject(issuer, subject);
    }
    if newly.is_empty() {
        return;
    }
    let (broker, subjects) = (broker.clone(), newly.to_vec());
    tokio::spawn(async move {
        for (_, subject) in subjects {
            broker.purge_shared_subject(&subject).await;
        }
    });
}

/// Purges issuance records past the retention period, in bounded batches, on one replica
/// at a time: the others skip their turn while one holds the purge lock.
fn spawn_retention(broker: Arc<Broker>, settings: &AuditSettings) {
    const BATCH: i64 = 10_000;
    let retention = time::Duration::days(i64::from(settings.retention_days));
    let every = Duration::from_secs(settings.purge_interval_secs);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let cutoff = time::OffsetDateTime::now_utc() - retention;
            match broker.audit().store.purge_expired(cutoff, BATCH).await {
                Ok(Some(0)) => {}
                Ok(Some(rows)) => {
                    tracing::info!(rows, "purged issuance records past retention")
                }
                Ok(None) => {
                    tracing::debug!("retention purge skipped: another replica holds the purge lock")
                }
                Err(e) => tracing::warn!(error = %e, "retention purge failed; will retry"),
            }
        }
    });
}

/// Loads an issuer's keys in the background, retrying with backoff until the first set
/// arrives (the service starts, and reports not-ready, while the issuer is unreachable),
/// then refetches them every `every` so withdrawn keys stop being trusted.
fn spawn_key_refresher(keys: Arc<KeySet>, every: Duration) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            let wait = match keys.refresh().await {
                Ok(_) => every,
                Err(e) if keys.is_loaded() => {
                    tracing::warn!(error = %e, "key set refresh failed; keeping the last good keys");
                    every.min(Duration::from_secs(60))
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "signing keys not loaded");
                    delay = (delay * 2).min(Duration::from_secs(30));
                    delay
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
}
