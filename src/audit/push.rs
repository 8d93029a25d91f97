//! Revocations pushed between replicas: with Postgres, a revocation or lift committed by one
//! replica is announced on [`REVOCATIONS_CHANNEL`] (see [`super::Store::upsert_revocation`]), and
//! every replica listens on a connection of its own, re-reads the table when told and drops
//! the cached credentials of newly revoked subjects. The poll stays the safety net: a
//! notification sent while a listener was away is lost, so a listener that (re)connects
//! re-reads the whole table before it waits.

use super::{Audit, REVOCATIONS_CHANNEL};
use crate::metrics::Metrics;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// How the listener's connection shows in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "sts-bridge revocation listener";

/// Longest wait between two connection attempts.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Called with the (issuer, subject) pairs revoked since the last read.
pub type OnRevoked = Box<dyn Fn(&[(String, String)]) + Send + Sync>;

/// Listens for revocation changes until the process ends; nothing on the SQLite file,
/// which one process serves. `first_retry` is the first wait after a lost connection.
pub fn spawn_listener(
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    first_retry: Duration,
    on_revoked: OnRevoked,
) {
    let Some(pool) = audit.store.postgres_pool() else {
        return;
    };
    let own = dedicated_pool(pool);
    let listener = Listener {
        audit,
        metrics,
        on_revoked,
    };
    tokio::spawn(listener.run(own, first_retry));
}

/// A pool of one connection, outside the store's pool so that the listener never takes a
/// connection the records need, named so an operator can find it.
fn dedicated_pool(pool: &PgPool) -> PgPool {
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .application_name(LISTENER_APPLICATION_NAME);
    PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options)
}

struct Listener {
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    on_revoked: OnRevoked,
}

impl Listener {
    async fn run(self, pool: PgPool, first_retry: Duration) {
        let mut delay = first_retry;
        let mut connected_before = false;
        // Whether the down state has had its log line.
        let mut failing = false;
        loop {
            match listen(&pool).await {
                Ok(mut listener) => {
                    if connected_before {
                        self.metrics.revocation_listener_reconnected();
                    }
                    self.metrics.revocation_listener_up(true);
                    tracing::info!(
                        reconnect = connected_before,
                        "revocation listener connected; revocations from other replicas apply at once"
                    );
                    connected_before = true;
                    delay = first_retry;
                    // Anything announced while nobody listened is only in the table.
                    self.refresh().await;
                    let cause = self.serve(&mut listener).await;
                    self.metrics.revocation_listener_up(false);
                    tracing::warn!(
                        error = %cause,
                        retry_in_ms = delay.as_millis() as u64,
                        "revocation listener lost its connection; other replicas' revocations wait for the poll until it is back"
                    );
                    drop(listener);
                    // Failed attempts to come back are the same state: no line of their own.
                    failing = true;
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "revocation listener cannot connect; other replicas' revocations wait for the poll until it can"
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "revocation listener still cannot connect")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
        }
    }

    /// Applies announced changes until the connection fails; returns why it did.
    async fn serve(&self, listener: &mut PgListener) -> String {
        loop {
            match listener.try_recv().await {
                Ok(Some(change)) => {
                    self.metrics.revocation_notified();
                    tracing::debug!(change = change.payload(), "revocation change announced");
                    // One read covers every change announced so far.
                    while let Some(change) = listener.next_buffered() {
                        self.metrics.revocation_notified();
                        tracing::debug!(change = change.payload(), "revocation change announced");
                    }
                    self.refresh().await;
                }
                Ok(None) => return "the connection was closed".to_owned(),
                Err(e) => return e.to_string(),
            }
        }
    }

    /// Re-reads the revocations table and purges the newly revoked subjects' credentials.
    async fn refresh(&self) {
        match self.audit.revocations.reload_now(&self.audit.store).await {
            Ok(newly) if newly.is_empty() => {}
            Ok(newly) => (self.on_revoked)(&newly),
            Err(e) => {
                tracing::warn!(error = %e, "announced revocations not read; the poll will retry")
            }
        }
    }
}

/// A listener on its own connection, subscribed to the revocations channel.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection ends `try_recv` at once; `run` reconnects with its backoff.
    listener.eager_reconnect(false);
    listener.listen(REVOCATIONS_CHANNEL).await?;
    Ok(listener)
}
