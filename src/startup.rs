//! Builds the application: shared state, routes, background tasks.

use crate::audit::{Audit, AuditError, AuditWriter, Revocations, Store};
use crate::broker::Broker;
use crate::config::{AuditSettings, Settings};
use crate::google::StsClient;
use crate::identity::{KeySet, TokenCacheLimits, Validator};
use crate::metrics::Metrics;
use crate::routes::{self, AppState};
use crate::telemetry;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// A built, not yet running, sts-bridge.
pub struct Application {
    port: u16,
    server: Server,
    broker: Arc<Broker>,
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
        let http = reqwest::Client::builder()
            .timeout(settings.google.timeout())
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sts-bridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let metrics = Arc::new(Metrics::new());
        let key_sets = settings
            .issuers
            .iter()
            .map(|i| {
                let keys = KeySet::new(
                    i.issuer.clone(),
                    i.discovery_url.clone(),
                    http.clone(),
                    i.jwks_min_refetch(),
                    metrics.clone(),
                );
                (i.clone(), Arc::new(keys))
            })
            .collect::<Vec<_>>();
        for (issuer, keys) in &key_sets {
            spawn_key_refresher(keys.clone(), issuer.jwks_refresh());
        }
        let audit = Arc::new(open_audit(&settings.audit, metrics.clone()).await?);
        let sts = StsClient::new(http, settings.google.sts_url.clone(), metrics.clone());
        let validated = &settings.cache.validated_tokens;
        let token_cache = validated.enabled.then(|| TokenCacheLimits {
            max_entries: validated.max_entries,
            max_age: Duration::from_secs(validated.max_secs),
        });
        let validator = Validator::new(key_sets, token_cache, metrics.clone());
        let broker = Arc::new(Broker::new(&settings, validator, sts, audit, metrics));
        spawn_revocation_poller(
            broker.clone(),
            Duration::from_secs(settings.audit.revocation_poll_secs),
        );
        spawn_retention(broker.clone(), &settings.audit);
        let state = web::Data::new(AppState {
            broker: broker.clone(),
            clients: settings.clients.clone(),
            retry_after_secs: settings.google.retry_after_secs,
            admin_permission: settings.admin.permission.clone(),
        });
        let admin_enabled = settings.admin.enabled;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(telemetry::with_request_id))
                .app_data(state.clone())
                .configure(|cfg| routes::configure(cfg, admin_enabled))
                .default_service(web::to(routes::not_found))
        })
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: port.to_string(),
            source,
        })?
        .shutdown_timeout(30)
        .run();
        Ok(Self {
            port: port.port(),
            server,
            broker,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The exchange engine, for inspection.
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Opens the store, applies migrations, loads revocations and starts the writer.
async fn open_audit(settings: &AuditSettings, metrics: Arc<Metrics>) -> Result<Audit, AuditError> {
    let store = Store::connect(
        settings.database_url.as_deref(),
        &settings.sqlite_path,
        settings.pool_size,
    )
    .await?;
    store.migrate().await?;
    let revocations = Revocations::default();
    revocations.reload(&store).await?;
    tracing::info!(engine = store.engine(), "issuance store ready");
    let writer = AuditWriter::start(
        store.clone(),
        metrics,
        settings.queue_capacity,
        settings.max_batch,
        settings.max_in_flight,
        Duration::from_millis(settings.enqueue_timeout_ms),
        Duration::from_millis(settings.commit_timeout_ms),
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
                Ok(newly) => newly.iter().for_each(|s| broker.purge_subject(s)),
                Err(e) => {
                    tracing::warn!(error = %e, "revocations not reloaded; keeping the last list")
                }
            }
        }
    });
}

/// Purges issuance records past the retention period, in bounded batches.
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
            let store = &broker.audit().store;
            let mut purged = 0;
            loop {
                match store.purge_issuances_before(cutoff, BATCH).await {
                    Ok(n) => {
                        purged += n;
                        if n < BATCH as u64 {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention purge failed; will retry");
                        break;
                    }
                }
            }
            if purged > 0 {
                tracing::info!(rows = purged, "purged issuance records past retention");
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
