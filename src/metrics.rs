//! Prometheus metrics. Labels hold only bounded values (configured target and issuer names,
//! error codes, outcomes), never a subject or a token.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Duration;

/// The `code` label of a request that got no HTTP status.
pub fn transport_error(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "error"
    }
}

/// Every metric of one sts-bridge instance, in its own registry.
pub struct Metrics {
    registry: Registry,
    exchanges: IntCounterVec,
    exchange_seconds: HistogramVec,
    token_rejections: IntCounterVec,
    malformed_requests: IntCounterVec,
    suppressed_log_lines: IntCounterVec,
    upstream_requests: IntCounterVec,
    upstream_seconds: HistogramVec,
    cache_lookups: IntCounterVec,
    cache_refreshes: IntCounterVec,
    cache_entries: IntGauge,
    validated_tokens: IntCounterVec,
    jwks_refreshes: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_keys_skipped: IntCounterVec,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    breaker_rejections: IntCounterVec,
    audit_queue_depth: IntGauge,
    audit_batch_rows: Histogram,
    audit_flush_seconds: Histogram,
    audit_rows: IntCounterVec,
    rate_limited: IntCounterVec,
    introspections: IntCounterVec,
    refusal_records_dropped: IntCounter,
    request_timeouts: IntCounter,
    audit_writer_restarts: IntCounter,
    audit_writer_up: IntGauge,
    revocation_notifications: IntCounter,
    revocation_listener_up: IntGauge,
    revocation_listener_reconnects: IntCounter,
    tier2_up: IntGauge,
    tier2_lookups: IntCounterVec,
    tier2_lock_waits: IntCounterVec,
    tier2_lock_wait_seconds: Histogram,
    tier2_fallbacks: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid histogram");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn plain_histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid histogram");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid counter");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid gauge");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every sts-bridge metric (and the process metrics) in it.
    pub fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        let _ = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let build_info = IntGaugeVec::new(
            Opts::new(
                "sts_bridge_build_info",
                "Build of the running sts-bridge; always 1.",
            ),
            &["version"],
        )
        .expect("valid gauge");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        r.register(Box::new(build_info)).expect("unique metric");
        let jwks_keys = IntGaugeVec::new(
            Opts::new(
                "sts_bridge_jwks_keys",
                "Signing keys currently loaded per issuer.",
            ),
            &["issuer"],
        )
        .expect("valid gauge");
        r.register(Box::new(jwks_keys.clone()))
            .expect("unique metric");
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "sts_bridge_upstream_breaker_state",
                "Circuit breaker per upstream: 0 closed, 1 open (calls refused at once), 2 half-open (one probe call).",
            ),
            &["upstream"],
        )
        .expect("valid gauge");
        r.register(Box::new(breaker_state.clone()))
            .expect("unique metric");
        Self {
            exchanges: counter(&r, "sts_bridge_exchanges_total", "Token exchanges answered, by target, its kind, source, outcome and error code.", &["target", "kind", "source", "outcome", "error"]),
            exchange_seconds: histogram(&r, "sts_bridge_exchange_duration_seconds", "Time to answer POST /v1/token.", LATENCY_BUCKETS, &["outcome"]),
            token_rejections: counter(&r, "sts_bridge_token_rejections_total", "Subject or admin tokens refused by validation, by reason.", &["reason"]),
            malformed_requests: counter(&r, "sts_bridge_malformed_requests_total", "Requests refused before a token signature was verified (malformed request or token, unknown key or issuer, bad signature), by error code.", &["error"]),
            suppressed_log_lines: counter(&r, "sts_bridge_log_lines_suppressed_total", "Log lines left out because their kind was over its rate, by kind.", &["kind"]),
            upstream_requests: counter(&r, "sts_bridge_upstream_requests_total", "Requests to Google and to issuers, by upstream and HTTP status (or transport error).", &["upstream", "code"]),
            upstream_seconds: histogram(&r, "sts_bridge_upstream_duration_seconds", "Latency of requests to Google and to issuers.", LATENCY_BUCKETS, &["upstream"]),
            cache_lookups: counter(&r, "sts_bridge_cache_lookups_total", "Credential cache lookups: hit, miss (one upstream call), shared (taken from the shared tier) or coalesced (waited for another caller's call).", &["result"]),
            cache_refreshes: counter(&r, "sts_bridge_cache_refreshes_total", "Background refreshes of credentials inside the refresh margin, by result.", &["result"]),
            cache_entries: gauge(&r, "sts_bridge_cache_entries", "Credentials currently cached."),
            validated_tokens: counter(&r, "sts_bridge_validated_token_cache_total", "Validated-token cache lookups: hit (signature check skipped) or miss (full validation).", &["result"]),
            jwks_refreshes: counter(&r, "sts_bridge_jwks_refreshes_total", "Key set fetches per issuer, by result.", &["issuer", "result"]),
            jwks_keys,
            jwks_keys_skipped: counter(&r, "sts_bridge_jwks_keys_skipped_total", "Keys of an issuer's key set left out at a fetch, by reason (weak, encryption, unsupported, invalid).", &["issuer", "reason"]),
            breaker_state,
            breaker_transitions: counter(&r, "sts_bridge_upstream_breaker_transitions_total", "Circuit breaker state changes per upstream, by the state entered.", &["upstream", "state"]),
            breaker_rejections: counter(&r, "sts_bridge_upstream_breaker_rejections_total", "Upstream calls not made because the upstream's circuit breaker was open.", &["upstream"]),
            audit_queue_depth: gauge(&r, "sts_bridge_audit_queue_depth", "Issuance records waiting for the writer."),
            audit_batch_rows: plain_histogram(&r, "sts_bridge_audit_batch_rows", "Rows written per INSERT statement.", BATCH_BUCKETS),
            audit_flush_seconds: plain_histogram(&r, "sts_bridge_audit_flush_duration_seconds", "Time to write one batch of issuance records.", LATENCY_BUCKETS),
            audit_rows: counter(&r, "sts_bridge_audit_rows_total", "Issuance rows written or failed.", &["result"]),
            rate_limited: counter(&r, "sts_bridge_rate_limited_total", "Exchanges refused with 429 by a rate limit, by scope (subject or client_address).", &["scope"]),
            introspections: counter(&r, "sts_bridge_introspections_total", "Token introspections answered, by whether the token was active.", &["active"]),
            refusal_records_dropped: plain_counter(&r, "sts_bridge_refusal_records_dropped_total", "Refusals answered but not written to the records because their subject was over the refusal-record rate."),
            request_timeouts: plain_counter(&r, "sts_bridge_request_timeouts_total", "Exchanges answered 503 because they did not complete within http.request_timeout_ms."),
            audit_writer_restarts: plain_counter(&r, "sts_bridge_audit_writer_restarts_total", "Times the issuance writer died and was started again."),
            audit_writer_up: gauge(&r, "sts_bridge_audit_writer_up", "1 while the issuance writer runs, 0 while it waits for its restart."),
            revocation_notifications: plain_counter(&r, "sts_bridge_revocation_notifications_total", "Revocation changes announced by replicas (Postgres LISTEN/NOTIFY) and heard by this one."),
            revocation_listener_up: gauge(&r, "sts_bridge_revocation_listener_up", "1 while this replica listens for revocation changes, 0 while it reconnects (and always with SQLite or audit.revocation_push off)."),
            revocation_listener_reconnects: plain_counter(&r, "sts_bridge_revocation_listener_reconnects_total", "Times the revocation listener connected again after losing its connection."),
            // Registered only when the tier is configured (`tier2_up`), so that an instance
            // without Redis does not report a tier that is down.
            tier2_up: IntGauge::new("sts_bridge_cache_tier2_up", "1 while the shared cache tier (Redis) answers, 0 while each replica falls back to its own cache; absent without cache.redis_url.").expect("valid gauge"),
            tier2_lookups: counter(&r, "sts_bridge_cache_tier2_lookups_total", "Shared cache tier lookups after a local miss or before a background refresh: hit (no upstream call) or miss.", &["result"]),
            tier2_lock_waits: counter(&r, "sts_bridge_cache_tier2_lock_waits_total", "Waits for another replica's exchange, by outcome: served (its credential arrived), timeout or abandoned (it gave up without one; this replica then exchanged itself).", &["outcome"]),
            tier2_lock_wait_seconds: plain_histogram(&r, "sts_bridge_cache_tier2_lock_wait_seconds", "Time spent waiting for another replica's exchange.", LATENCY_BUCKETS),
            tier2_fallbacks: counter(&r, "sts_bridge_cache_tier2_fallbacks_total", "Shared cache tier operations skipped or failed, the replica then using its own cache and exchanges, by reason (down: known down, not tried; timeout; unreachable; error: Redis answered with an error).", &["reason"]),
            registry: r,
        }
    }

    /// One answered exchange; `kind` is the target's kind (`unknown` with no target).
    pub fn exchange(
        &self,
        (target, kind): (&str, &str),
        source: &str,
        outcome: &str,
        error: &str,
        took: Duration,
    ) {
        self.exchanges
            .with_label_values(&[target, kind, source, outcome, error])
            .inc();
        self.exchange_seconds
            .with_label_values(&[outcome])
            .observe(took.as_secs_f64());
    }

    /// An exchange refused by the rate limit of `scope` (`subject`, `client_address`).
    pub fn rate_limited(&self, scope: &str) {
        self.rate_limited.with_label_values(&[scope]).inc();
    }

    /// One introspection answered.
    pub fn introspection(&self, active: bool) {
        self.introspections
            .with_label_values(&[if active { "true" } else { "false" }])
            .inc();
    }

    /// A refusal left out of the records by the refusal-record rate.
    pub fn refusal_record_dropped(&self) {
        self.refusal_records_dropped.inc();
    }

    /// An exchange cut off by the request timeout.
    pub fn request_timeout(&self) {
        self.request_timeouts.inc();
    }

    /// A token refused by validation.
    pub fn token_rejected(&self, reason: &str) {
        self.token_rejections.with_label_values(&[reason]).inc();
    }

    /// A request refused before a token's signature was verified.
    pub fn malformed_request(&self, error: &str) {
        self.malformed_requests.with_label_values(&[error]).inc();
    }

    /// A log line of `kind` left out by its rate limit.
    pub fn log_line_suppressed(&self, kind: &str) {
        self.suppressed_log_lines.with_label_values(&[kind]).inc();
    }

    /// One upstream request; `code` is the HTTP status or `timeout`/`connect`/`error`.
    pub fn upstream(&self, upstream: &str, code: &str, took: Duration) {
        self.upstream_requests
            .with_label_values(&[upstream, code])
            .inc();
        self.upstream_seconds
            .with_label_values(&[upstream])
            .observe(took.as_secs_f64());
    }

    /// A cache lookup: `hit`, `miss` or `coalesced`.
    pub fn cache_lookup(&self, result: &str) {
        self.cache_lookups.with_label_values(&[result]).inc();
    }

    /// A validated-token cache lookup.
    pub fn validated_token_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.validated_tokens.with_label_values(&[result]).inc();
    }

    /// A background refresh: `ok` or `error`.
    pub fn cache_refresh(&self, result: &str) {
        self.cache_refreshes.with_label_values(&[result]).inc();
    }

    /// A key set fetch and the number of keys now loaded.
    pub fn jwks_refresh(&self, issuer: &str, ok: bool, keys: usize) {
        let result = if ok { "ok" } else { "error" };
        self.jwks_refreshes
            .with_label_values(&[issuer, result])
            .inc();
        self.jwks_keys.with_label_values(&[issuer]).set(keys as i64);
    }

    /// A key left out of `issuer`'s key set, for a bounded `reason`.
    pub fn jwks_key_skipped(&self, issuer: &str, reason: &str) {
        self.jwks_keys_skipped
            .with_label_values(&[issuer, reason])
            .inc();
    }

    /// `upstream`'s breaker entered `state` (0 closed, 1 open, 2 half-open) named `name`;
    /// `changed` is false for the initial value.
    pub fn breaker_state(&self, upstream: &str, state: i64, name: &str, changed: bool) {
        self.breaker_state.with_label_values(&[upstream]).set(state);
        if changed {
            self.breaker_transitions
                .with_label_values(&[upstream, name])
                .inc();
        }
    }

    /// A call to `upstream` refused by its open breaker.
    pub fn breaker_rejected(&self, upstream: &str) {
        self.breaker_rejections.with_label_values(&[upstream]).inc();
    }

    /// One audit batch.
    pub fn audit_batch(&self, rows: usize, ok: bool, took: Duration) {
        self.audit_batch_rows.observe(rows as f64);
        self.audit_flush_seconds.observe(took.as_secs_f64());
        let result = if ok { "written" } else { "failed" };
        self.audit_rows
            .with_label_values(&[result])
            .inc_by(rows as u64);
    }

    /// The issuance writer died (`false`) or was started again (`true`).
    pub fn audit_writer_up(&self, up: bool) {
        self.audit_writer_up.set(i64::from(up));
    }

    /// The issuance writer was started again after it died.
    pub fn audit_writer_restarted(&self) {
        self.audit_writer_restarts.inc();
    }

    /// A revocation change was announced.
    pub fn revocation_notified(&self) {
        self.revocation_notifications.inc();
    }

    /// The revocation listener listens (`true`) or lost its connection (`false`).
    pub fn revocation_listener_up(&self, up: bool) {
        self.revocation_listener_up.set(i64::from(up));
    }

    /// The revocation listener connected again after losing its connection.
    pub fn revocation_listener_reconnected(&self) {
        self.revocation_listener_reconnects.inc();
    }

    /// The shared cache tier answers (`true`) or not.
    pub fn tier2_up(&self, up: bool) {
        // Registering twice fails harmlessly: the first registration stands.
        let _ = self.registry.register(Box::new(self.tier2_up.clone()));
        self.tier2_up.set(i64::from(up));
    }

    /// A shared cache tier lookup after a local miss.
    pub fn tier2_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.tier2_lookups.with_label_values(&[result]).inc();
    }

    /// A wait for another replica's exchange: `served`, `timeout` or `abandoned`.
    pub fn tier2_lock_wait(&self, outcome: &str, took: Duration) {
        self.tier2_lock_waits.with_label_values(&[outcome]).inc();
        self.tier2_lock_wait_seconds.observe(took.as_secs_f64());
    }

    /// A shared cache tier operation skipped or failed for `reason`.
    pub fn tier2_fallback(&self, reason: &str) {
        self.tier2_fallbacks.with_label_values(&[reason]).inc();
    }

    /// The Prometheus text exposition, after setting the gauges read at scrape time.
    pub fn render(&self, cache_entries: u64, audit_queue_depth: usize) -> String {
        self.cache_entries.set(cache_entries as i64);
        self.audit_queue_depth.set(audit_queue_depth as i64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).unwrap_or_default()
    }
}
