//! Builds the application: shared state, routes, background tasks.

use crate::broker::Broker;
use crate::config::Settings;
use crate::google::StsClient;
use crate::identity::{KeySet, Validator};
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
}

impl Application {
    /// Binds `settings.listen` and builds the server.
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(settings.listen).map_err(|source| StartupError::Bind {
            addr: settings.listen.to_string(),
            source,
        })?;
        Self::build_with_listener(settings, listener)
    }

    /// Builds the server on an already bound listener (tests bind port 0).
    pub fn build_with_listener(
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
        let key_sets = settings
            .issuers
            .iter()
            .map(|i| {
                let keys = KeySet::new(
                    i.issuer.clone(),
                    i.discovery_url.clone(),
                    http.clone(),
                    i.jwks_min_refetch(),
                );
                (i.clone(), Arc::new(keys))
            })
            .collect::<Vec<_>>();
        for (_, keys) in &key_sets {
            spawn_initial_key_load(keys.clone());
        }
        let sts = StsClient::new(http, settings.google.sts_url.clone());
        let broker = Arc::new(Broker::new(&settings, Validator::new(key_sets), sts));
        let state = web::Data::new(AppState {
            broker: broker.clone(),
            clients: settings.clients.clone(),
            retry_after_secs: settings.google.retry_after_secs,
        });
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(telemetry::with_request_id))
                .app_data(state.clone())
                .route("/v1/token", web::post().to(routes::token))
                .route("/healthz", web::get().to(routes::healthz))
                .route("/readyz", web::get().to(routes::readyz))
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

/// Loads an issuer's keys in the background, retrying with backoff, so the service starts
/// (and reports not-ready) while the issuer is unreachable.
fn spawn_initial_key_load(keys: Arc<KeySet>) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        while !keys.is_loaded() {
            if let Err(e) = keys.refresh().await {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "signing keys not loaded");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    });
}
