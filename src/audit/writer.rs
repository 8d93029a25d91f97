//! Group commit: requests enqueue their record on a bounded queue and wait; one task takes
//! everything queued as one batch, writes it in one statement and wakes its waiters with the
//! result. Up to `max_in_flight` batches are written at once, so a slow commit does not hold
//! up the records that arrive meanwhile; each waiter still hears only of its own commit.

use super::{AuditError, IssuanceRecord, Store};
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

struct Pending {
    record: IssuanceRecord,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// Counters of the writer, for metrics and tests.
#[derive(Debug, Default)]
pub struct WriterStats {
    batches: AtomicU64,
    rows: AtomicU64,
    failed_rows: AtomicU64,
    largest_batch: AtomicU64,
    /// Records enqueued and not yet answered by a commit or a failure.
    outstanding: AtomicI64,
}

impl WriterStats {
    /// Statements written.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
    /// Rows committed.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
    /// Rows whose write failed.
    pub fn failed_rows(&self) -> u64 {
        self.failed_rows.load(Ordering::Relaxed)
    }
    /// Largest batch so far.
    pub fn largest_batch(&self) -> u64 {
        self.largest_batch.load(Ordering::Relaxed)
    }
}

/// Handle for enqueueing records.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Pending>,
    stats: Arc<WriterStats>,
    enqueue_timeout: Duration,
    commit_timeout: Duration,
}

impl AuditWriter {
    /// Starts the writer task on `store`.
    pub fn start(
        store: Store,
        metrics: Arc<Metrics>,
        capacity: usize,
        max_batch: usize,
        max_in_flight: usize,
        enqueue_timeout: Duration,
        commit_timeout: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(WriterStats::default());
        let limits = BatchLimits {
            max_batch,
            max_in_flight,
        };
        tokio::spawn(run(store, rx, limits, stats.clone(), metrics));
        Self {
            tx,
            stats,
            enqueue_timeout,
            commit_timeout,
        }
    }

    /// Records waiting to be written.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Waits until every record enqueued so far is committed or has failed, at most
    /// `within`; false when some are still outstanding then.
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.stats.outstanding.load(Ordering::Acquire) <= 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Records an issuance and returns once it is committed.
    pub async fn record(&self, record: IssuanceRecord) -> Result<(), AuditError> {
        let (done, committed) = oneshot::channel();
        self.stats.outstanding.fetch_add(1, Ordering::AcqRel);
        self.tx
            .send_timeout(Pending { record, done }, self.enqueue_timeout)
            .await
            .inspect_err(|_| {
                self.stats.outstanding.fetch_sub(1, Ordering::AcqRel);
            })
            .map_err(|e| match e {
                mpsc::error::SendTimeoutError::Timeout(_) => AuditError::QueueFull,
                mpsc::error::SendTimeoutError::Closed(_) => AuditError::WriterStopped,
            })?;
        match tokio::time::timeout(self.commit_timeout, committed).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AuditError::WriterStopped),
            Err(_) => Err(AuditError::CommitTimeout),
        }
    }
}

struct BatchLimits {
    max_batch: usize,
    max_in_flight: usize,
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Pending>,
    limits: BatchLimits,
    stats: Arc<WriterStats>,
    metrics: Arc<Metrics>,
) {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let mut batch = Vec::with_capacity(limits.max_batch);
    loop {
        // Wait for a free slot first: while every slot is busy, arrivals gather in the queue
        // and leave as one larger batch.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if rx.recv_many(&mut batch, limits.max_batch).await == 0 {
            return;
        }
        let (records, waiting): (Vec<IssuanceRecord>, Vec<_>) =
            batch.drain(..).map(|p| (p.record, p.done)).unzip();
        let (store, stats, metrics) = (store.clone(), stats.clone(), metrics.clone());
        tokio::spawn(async move {
            let results = write(&store, &records, &stats, &metrics).await;
            stats
                .outstanding
                .fetch_sub(records.len() as i64, Ordering::AcqRel);
            drop(slot);
            for (result, done) in results.into_iter().zip(waiting) {
                let _ = done.send(result);
            }
        });
    }
}

/// Writes `records` in one statement; when the database refuses the statement (a bad row,
/// not an outage), writes them one by one so one bad row fails only its own request.
async fn write(
    store: &Store,
    records: &[IssuanceRecord],
    stats: &WriterStats,
    metrics: &Metrics,
) -> Vec<Result<(), AuditError>> {
    match statement(store, records, stats, metrics).await {
        Err(AuditError::Rejected(_)) if records.len() > 1 => {
            let mut each = Vec::with_capacity(records.len());
            for record in records {
                each.push(statement(store, std::slice::from_ref(record), stats, metrics).await);
            }
            each
        }
        result => vec![result; records.len()],
    }
}

/// One INSERT statement, counted.
async fn statement(
    store: &Store,
    rows: &[IssuanceRecord],
    stats: &WriterStats,
    metrics: &Metrics,
) -> Result<(), AuditError> {
    let started = Instant::now();
    let result = store.insert_issuances(rows).await;
    metrics.audit_batch(rows.len(), result.is_ok(), started.elapsed());
    let n = rows.len() as u64;
    match &result {
        Ok(()) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.rows.fetch_add(n, Ordering::Relaxed);
            stats.largest_batch.fetch_max(n, Ordering::Relaxed);
        }
        Err(e) => {
            stats.failed_rows.fetch_add(n, Ordering::Relaxed);
            tracing::error!(rows = n, error = %e, "issuance records not written; callers get 503");
        }
    }
    result
}
