//! A circuit breaker for one upstream (Google STS, an issuer's key endpoints): after
//! repeated failures callers are answered at once instead of queueing on a dead upstream,
//! and after a cool-down one probe call decides whether it is back.
//!
//! Own type rather than a crate: the maintained ones either pull in a tower stack or count
//! failures by ratio over a time series, while this needs three states, one mutex and the
//! time left until the next probe (the caller's `Retry-After`).

use crate::config::BreakerSettings;
use crate::metrics::Metrics;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cool-down has passed.
    Open,
    /// One probe call is allowed; its outcome closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// The value exported in `sts_bridge_upstream_breaker_state`.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    /// Lower-case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A call refused because the breaker is open; `retry_after` is the time until the next
/// probe may be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// Time until a call may be tried again, at least one second.
    pub retry_after: Duration,
}

struct Inner {
    state: BreakerState,
    /// Failures in a row, and when the first of them happened.
    failures: u32,
    first_failure: Option<Instant>,
    opened_at: Instant,
    probing: bool,
}

/// The breaker of one upstream.
pub struct Breaker {
    upstream: String,
    settings: BreakerSettings,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker for `upstream` (the metrics label).
    pub fn new(
        upstream: impl Into<String>,
        settings: BreakerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let upstream = upstream.into();
        metrics.breaker_state(&upstream, BreakerState::Closed.gauge(), "closed", false);
        Self {
            upstream,
            settings,
            metrics,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                first_failure: None,
                opened_at: Instant::now(),
                probing: false,
            }),
        }
    }

    /// The upstream this breaker guards.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Where the breaker stands now.
    pub fn state(&self) -> BreakerState {
        self.inner.lock().expect("breaker lock").state
    }

    /// Permission to make one call, or how long to wait when the breaker is open. The
    /// returned admission must be settled with the call's outcome.
    pub fn admit(&self) -> Result<Admission<'_>, Open> {
        let mut inner = self.inner.lock().expect("breaker lock");
        let refused = match inner.state {
            BreakerState::Closed => None,
            BreakerState::Open => {
                let waited = inner.opened_at.elapsed();
                if waited >= self.settings.cool_down() {
                    self.enter(&mut inner, BreakerState::HalfOpen);
                    inner.probing = true;
                    return Ok(Admission::new(self, true));
                }
                Some(self.settings.cool_down() - waited)
            }
            // The probe under way decides; the next caller may try once it has.
            BreakerState::HalfOpen if inner.probing => Some(Duration::from_secs(1)),
            BreakerState::HalfOpen => {
                inner.probing = true;
                return Ok(Admission::new(self, true));
            }
        };
        match refused {
            None => Ok(Admission::new(self, false)),
            Some(wait) => {
                drop(inner);
                self.metrics.breaker_rejected(&self.upstream);
                Err(Open {
                    retry_after: round_up_to_secs(wait),
                })
            }
        }
    }

    fn settle(&self, probe: bool, ok: bool) {
        let mut inner = self.inner.lock().expect("breaker lock");
        if probe {
            inner.probing = false;
        }
        if ok {
            inner.failures = 0;
            inner.first_failure = None;
            if inner.state != BreakerState::Closed {
                self.enter(&mut inner, BreakerState::Closed);
            }
            return;
        }
        if inner.state == BreakerState::HalfOpen {
            self.enter(&mut inner, BreakerState::Open);
            return;
        }
        let now = Instant::now();
        let in_window = inner
            .first_failure
            .is_some_and(|first| now.duration_since(first) <= self.settings.window());
        if in_window {
            inner.failures += 1;
        } else {
            inner.failures = 1;
            inner.first_failure = Some(now);
        }
        if inner.state == BreakerState::Closed && inner.failures >= self.settings.failure_threshold
        {
            self.enter(&mut inner, BreakerState::Open);
        }
    }

    /// A probe that ended without an outcome (its caller gave up): let another try.
    fn abandon(&self) {
        self.inner.lock().expect("breaker lock").probing = false;
    }

    fn enter(&self, inner: &mut Inner, state: BreakerState) {
        let from = inner.state;
        inner.state = state;
        if state == BreakerState::Open {
            inner.opened_at = Instant::now();
        }
        if state != BreakerState::HalfOpen {
            inner.failures = 0;
            inner.first_failure = None;
        }
        self.metrics
            .breaker_state(&self.upstream, state.gauge(), state.as_str(), true);
        match state {
            BreakerState::Open => tracing::warn!(
                upstream = %self.upstream,
                from = from.as_str(),
                to = state.as_str(),
                cool_down_secs = self.settings.cool_down_secs,
                "circuit breaker opened: calls are refused at once until a probe succeeds"
            ),
            _ => tracing::info!(
                upstream = %self.upstream,
                from = from.as_str(),
                to = state.as_str(),
                "circuit breaker state changed"
            ),
        }
    }
}

/// One call the breaker let through. Settle it with [`Admission::succeeded`] or
/// [`Admission::failed`]. Dropped unsettled (its caller gave up), it counts as a failure
/// once the call was sent (no answer in the caller's time) and for nothing before.
pub struct Admission<'a> {
    breaker: &'a Breaker,
    probe: bool,
    sent: bool,
    settled: bool,
}

impl<'a> Admission<'a> {
    fn new(breaker: &'a Breaker, probe: bool) -> Self {
        Self {
            breaker,
            probe,
            sent: false,
            settled: false,
        }
    }

    /// The call is on its way to the upstream.
    pub fn sent(&mut self) {
        self.sent = true;
    }

    /// The upstream answered (a refusal it meant counts as an answer).
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.settle(self.probe, true);
    }

    /// The upstream failed: 429, 5xx, no connection, no answer in time.
    pub fn failed(mut self) {
        self.settled = true;
        self.breaker.settle(self.probe, false);
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if self.sent {
            self.breaker.settle(self.probe, false);
        } else if self.probe {
            self.breaker.abandon();
        }
    }
}

fn round_up_to_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(
            "test",
            BreakerSettings {
                failure_threshold: threshold,
                window_secs: 60,
                cool_down_secs: 60,
            },
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn opens_after_the_threshold_of_failures_in_a_row_and_refuses_with_the_cool_down() {
        let b = breaker(3);
        for _ in 0..2 {
            b.admit().expect("closed").failed();
        }
        b.admit().expect("closed").succeeded();
        for _ in 0..2 {
            b.admit().expect("closed").failed();
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a success restarts the count"
        );
        b.admit().expect("closed").failed();
        assert_eq!(b.state(), BreakerState::Open);
        let refused = b.admit().err().expect("open refuses");
        assert!(refused.retry_after > Duration::from_secs(58));
        assert!(refused.retry_after <= Duration::from_secs(60));
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_caller_probe() {
        let b = breaker(1);
        b.admit().expect("closed").failed();
        {
            let mut inner = b.inner.lock().unwrap();
            inner.opened_at -= Duration::from_secs(61);
        }
        let probe = b.admit().expect("cool-down over: a probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_err(), "one probe at a time");
        drop(probe);
        let probe = b.admit().expect("the abandoned probe's place");
        probe.failed();
        assert_eq!(b.state(), BreakerState::Open, "a failed probe reopens");
        assert!(b.admit().is_err());
    }
}
