//! Load generators that need more than wrk offers: a constant arrival rate with latency
//! measured from each request's scheduled time (so a stall counts for every request it
//! delays, as in wrk2), a storm of simultaneous first requests, and a closed loop over many
//! distinct requests.

use crate::http::Conn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

/// Latencies in microseconds, and how many requests failed.
#[derive(Default)]
pub struct Samples {
    latencies_us: Vec<u64>,
    /// Requests that got no answer or not a 200.
    pub errors: usize,
}

impl Samples {
    /// The `p`-th percentile (0-100), in milliseconds.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[rank] as f64 / 1000.0
    }

    /// Answered requests.
    pub fn count(&self) -> usize {
        self.latencies_us.len()
    }

    fn merge(&mut self, other: Samples) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
    }
}

/// Sends `request` at `rate` per second for `duration` over `connections` keep-alive
/// connections. Latency is counted from when each request was due, not when it was sent.
pub async fn constant_rate(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    rate: f64,
    duration: Duration,
    connections: usize,
) -> std::io::Result<Samples> {
    let total = (rate * duration.as_secs_f64()) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let mut conn = Conn::open(addr).await?;
        let (request, next) = (request.clone(), next.clone());
        tasks.spawn(async move {
            let mut samples = Samples::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return samples;
                }
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due).await;
                match conn.send(&request).await {
                    Ok((200, _)) => samples.latencies_us.push(due.elapsed().as_micros() as u64),
                    Ok(_) => samples.errors += 1,
                    Err(_) => {
                        samples.errors += 1;
                        match Conn::open(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => return samples,
                        }
                    }
                }
            }
        });
    }
    let mut all = Samples::default();
    while let Some(done) = tasks.join_next().await {
        all.merge(done.map_err(std::io::Error::other)?);
    }
    Ok(all)
}

/// Opens `n` connections, then sends `request` on all of them at once; the statuses.
pub async fn storm(addr: SocketAddr, request: Arc<Vec<u8>>, n: usize) -> Vec<u16> {
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (request, barrier) = (request.clone(), barrier.clone());
        tasks.spawn(async move {
            let conn = Conn::open(addr).await;
            barrier.wait().await;
            match conn {
                Ok(mut conn) => conn.send(&request).await.map(|r| r.0).unwrap_or(0),
                Err(_) => 0,
            }
        });
    }
    tasks.join_all().await
}

/// Sends every request once, `connections` at a time; samples and the time it took.
pub async fn closed_loop(
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    connections: usize,
) -> std::io::Result<(Samples, Duration)> {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let mut conn = Conn::open(addr).await?;
        let (requests, next) = (requests.clone(), next.clone());
        tasks.spawn(async move {
            let mut samples = Samples::default();
            while let Some(request) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                let sent = Instant::now();
                match conn.send(request).await {
                    Ok((200, _)) => samples.latencies_us.push(sent.elapsed().as_micros() as u64),
                    _ => samples.errors += 1,
                }
            }
            samples
        });
    }
    let mut all = Samples::default();
    while let Some(done) = tasks.join_next().await {
        all.merge(done.map_err(std::io::Error::other)?);
    }
    Ok((all, started.elapsed()))
}
