//! Group commit: requests enqueue their record on a bounded queue and wait; one task takes
//! everything queued as one batch, writes it in one statement and wakes its waiters with the
//! result. While a batch commits, arrivals gather behind it and leave as one batch when it
//! is done: each statement costs the database far more than each row. Once a commit has
//! taken longer than `overlap_after`, the next batch goes out beside it (up to
//! `max_in_flight` at once), so a stalled commit does not hold up the records that arrive
//! meanwhile. Each waiter still hears only of its own commit.
//!
//! A supervisor watches that task. When it dies (a panic in it or in one of its batches),
//! the writer reports itself stopped (readiness fails), everything queued is answered
//! `WriterStopped` at once, and the task is started again after a backoff. The queue
//! outlives the task, so the senders held by the routes stay valid across restarts.

use super::{AuditError, IssuanceRecord, Store};
use crate::causes;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::{JoinError, JoinSet};

/// A writer that stayed up this long starts its next backoff from the beginning again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// The longest wait before a restart.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

struct Pending {
    record: IssuanceRecord,
    done: oneshot::Sender<Result<(), AuditError>>,
}

type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>;

/// Counters of the writer, for metrics and tests.
#[derive(Debug, Default)]
pub struct WriterStats {
    batches: AtomicU64,
    rows: AtomicU64,
    failed_rows: AtomicU64,
    largest_batch: AtomicU64,
    restarts: AtomicU64,
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
    /// Times the writer task was started again after it died.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

/// Whether the writer task runs; why it stopped when it does not.
#[derive(Default)]
struct Health {
    /// Set while `stopped` holds a cause: every record checks it, so it is a plain flag.
    down: AtomicBool,
    stopped: Mutex<Option<String>>,
    #[cfg(feature = "fault-injection")]
    panic_next_batch: std::sync::atomic::AtomicBool,
    #[cfg(feature = "fault-injection")]
    stall_next_batch: Mutex<Option<Duration>>,
}

impl Health {
    fn stopped(&self) -> Option<String> {
        self.stopped.lock().expect("writer health lock").clone()
    }
    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
    fn set(&self, cause: Option<String>) {
        let down = cause.is_some();
        *self.stopped.lock().expect("writer health lock") = cause;
        self.down.store(down, Ordering::Release);
    }
}

/// Sizes and timings of the writer.
#[derive(Debug, Clone)]
pub struct WriterLimits {
    /// Records waiting to be written, at most.
    pub capacity: usize,
    /// Records in one statement, at most.
    pub max_batch: usize,
    /// Statements being written at once, at most.
    pub max_in_flight: usize,
    /// How long a commit runs before the next batch goes out beside it; until then, and
    /// until it is done, arrivals gather into one batch.
    pub overlap_after: Duration,
    /// How long a record waits for room in a full queue.
    pub enqueue_timeout: Duration,
    /// How long a record waits for its commit.
    pub commit_timeout: Duration,
    /// The first wait before a dead writer is started again; it doubles on each death
    /// in a row, up to 30 s.
    pub restart_backoff: Duration,
}

/// Handle for enqueueing records.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Pending>,
    stats: Arc<WriterStats>,
    health: Arc<Health>,
    enqueue_timeout: Duration,
    commit_timeout: Duration,
}

/// What a writer task needs; shared by every incarnation of it.
#[derive(Clone)]
struct Shared {
    store: Store,
    stats: Arc<WriterStats>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    max_batch: usize,
    max_in_flight: usize,
    overlap_after: Duration,
    /// Told whenever a batch has been written.
    batch_done: Arc<Notify>,
}

impl AuditWriter {
    /// Starts the writer task on `store`, under a supervisor that restarts it.
    pub fn start(store: Store, metrics: Arc<Metrics>, limits: WriterLimits) -> Self {
        let (tx, rx) = mpsc::channel(limits.capacity);
        let stats = Arc::new(WriterStats::default());
        let health = Arc::new(Health::default());
        let shared = Shared {
            store,
            stats: stats.clone(),
            health: health.clone(),
            metrics,
            max_batch: limits.max_batch,
            max_in_flight: limits.max_in_flight,
            overlap_after: limits.overlap_after,
            batch_done: Arc::new(Notify::new()),
        };
        shared.metrics.audit_writer_up(true);
        tokio::spawn(supervise(
            Arc::new(tokio::sync::Mutex::new(rx)),
            shared,
            limits.restart_backoff,
        ));
        Self {
            tx,
            stats,
            health,
            enqueue_timeout: limits.enqueue_timeout,
            commit_timeout: limits.commit_timeout,
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

    /// Why the writer task is not running (it died and waits for its restart), or `None`
    /// while it runs.
    pub fn stopped(&self) -> Option<String> {
        self.health.stopped()
    }

    /// Makes the next batch panic inside the writer, as a bug in the database driver
    /// would, so that tests can watch the supervisor at work.
    #[cfg(feature = "fault-injection")]
    pub fn panic_on_next_batch(&self) {
        self.health.panic_next_batch.store(true, Ordering::SeqCst);
    }

    /// Makes the next batch take `by` longer before its statement, as a commit stalled in
    /// the network or the database would.
    #[cfg(feature = "fault-injection")]
    pub fn stall_next_batch(&self, by: Duration) {
        *self
            .health
            .stall_next_batch
            .lock()
            .expect("writer health lock") = Some(by);
    }

    /// Records an issuance and returns once it is committed.
    pub async fn record(&self, record: IssuanceRecord) -> Result<(), AuditError> {
        // While the task is down nothing would take the record before the commit timeout.
        if self.health.is_down() {
            return Err(AuditError::WriterStopped);
        }
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

/// Runs the writer task, and again after each death, until every sender is gone.
async fn supervise(queue: Queue, shared: Shared, first_delay: Duration) {
    let mut delay = first_delay;
    loop {
        let started = Instant::now();
        let cause = match tokio::spawn(run(queue.clone(), shared.clone())).await {
            Ok(Ok(())) => return,
            Ok(Err(batch)) => format!("a batch failed: {}", causes::chain(&batch)),
            Err(task) => causes::chain(&task),
        };
        tracing::error!(cause = %cause, restart_in_ms = delay.as_millis() as u64, "the issuance writer died; callers get 503 until it is restarted");
        shared.health.set(Some(cause));
        shared.metrics.audit_writer_up(false);
        refuse_queued(&queue, &shared).await;
        if started.elapsed() >= STABLE_AFTER {
            delay = first_delay;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RESTART_DELAY.max(first_delay));
        shared.stats.restarts.fetch_add(1, Ordering::Relaxed);
        shared.metrics.audit_writer_restarted();
        shared.metrics.audit_writer_up(true);
        shared.health.set(None);
        tracing::info!("the issuance writer was restarted");
    }
}

/// Answers every queued record at once rather than after its commit timeout.
async fn refuse_queued(queue: &Queue, shared: &Shared) {
    let mut rx = queue.lock().await;
    let stats = &shared.stats;
    while let Ok(pending) = rx.try_recv() {
        stats.outstanding.fetch_sub(1, Ordering::AcqRel);
        let _ = pending.done.send(Err(AuditError::WriterStopped));
    }
}

/// The writer task: `Ok` once every sender is gone, `Err` when one of its batches died.
async fn run(queue: Queue, shared: Shared) -> Result<(), JoinError> {
    let mut rx = queue.lock().await;
    let in_flight = Arc::new(Semaphore::new(shared.max_in_flight));
    let mut batches = JoinSet::new();
    let mut batch = Vec::with_capacity(shared.max_batch);
    let mut last_started = Instant::now();
    loop {
        // Wait for a free slot first: while every slot is busy, arrivals gather in the queue
        // and leave as one larger batch.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return Ok(());
        };
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, shared.max_batch) => n,
            failed = first_failure(&mut batches) => {
                // The other batches may be committing: let them finish and answer.
                batches.detach_all();
                return Err(failed);
            }
        };
        if received == 0 {
            return Ok(());
        }
        let others = || shared.max_in_flight - in_flight.available_permits() - 1;
        gather(
            &mut rx,
            &mut batch,
            &shared,
            others,
            last_started + shared.overlap_after,
        )
        .await;
        last_started = Instant::now();
        let (records, waiting): (Vec<IssuanceRecord>, Vec<_>) =
            batch.drain(..).map(|p| (p.record, p.done)).unzip();
        let shared = shared.clone();
        batches.spawn(async move {
            let results = write(&shared, &records).await;
            shared
                .stats
                .outstanding
                .fetch_sub(records.len() as i64, Ordering::AcqRel);
            drop(slot);
            shared.batch_done.notify_waiters();
            for (result, done) in results.into_iter().zip(waiting) {
                let _ = done.send(result);
            }
        });
    }
}

/// While `others()` batches are being written, takes arrivals into `batch` until one of
/// them is done, `overlap_at` has come, or the batch is full.
async fn gather(
    rx: &mut mpsc::Receiver<Pending>,
    batch: &mut Vec<Pending>,
    shared: &Shared,
    others: impl Fn() -> usize,
    overlap_at: Instant,
) {
    // Listen before looking, so that a batch done in between is not missed.
    let done = shared.batch_done.notified();
    tokio::pin!(done);
    done.as_mut().enable();
    if others() == 0 {
        return;
    }
    let overlap = tokio::time::sleep_until(overlap_at.into());
    tokio::pin!(overlap);
    while batch.len() < shared.max_batch {
        tokio::select! {
            biased;
            _ = &mut done => return,
            _ = &mut overlap => return,
            n = rx.recv_many(batch, shared.max_batch - batch.len()) => if n == 0 { return },
        }
    }
}

/// The first batch task that did not complete; pending while all do.
async fn first_failure(batches: &mut JoinSet<()>) -> JoinError {
    loop {
        match batches.join_next().await {
            Some(Err(failed)) => return failed,
            Some(Ok(())) => {}
            None => std::future::pending::<()>().await,
        }
    }
}

/// Writes `records` in one statement; when the database refuses the statement (a bad row,
/// not an outage), writes them one by one so one bad row fails only its own request.
async fn write(shared: &Shared, records: &[IssuanceRecord]) -> Vec<Result<(), AuditError>> {
    match statement(shared, records).await {
        Err(AuditError::Rejected(_)) if records.len() > 1 => {
            let mut each = Vec::with_capacity(records.len());
            for record in records {
                each.push(statement(shared, std::slice::from_ref(record)).await);
            }
            each
        }
        result => vec![result; records.len()],
    }
}

/// One INSERT statement, counted.
async fn statement(shared: &Shared, rows: &[IssuanceRecord]) -> Result<(), AuditError> {
    #[cfg(feature = "fault-injection")]
    if shared.health.panic_next_batch.swap(false, Ordering::SeqCst) {
        panic!("injected fault: the database driver panicked");
    }
    #[cfg(feature = "fault-injection")]
    let stall = shared
        .health
        .stall_next_batch
        .lock()
        .expect("writer health lock")
        .take();
    #[cfg(feature = "fault-injection")]
    if let Some(by) = stall {
        tokio::time::sleep(by).await;
    }
    let (stats, metrics) = (&shared.stats, &shared.metrics);
    let started = Instant::now();
    let result = shared.store.insert_issuances(rows).await;
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
