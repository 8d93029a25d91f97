//! Prometheus metrics. Labels hold only bounded values (configured target and issuer names,
//! error codes, outcomes), never a subject or a token.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
    audit_queue_depth: IntGauge,
    audit_batch_rows: Histogram,
    audit_flush_seconds: Histogram,
    audit_rows: IntCounterVec,
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
        Self {
            exchanges: counter(&r, "sts_bridge_exchanges_total", "Token exchanges answered, by target, its kind, source, outcome and error code.", &["target", "kind", "source", "outcome", "error"]),
            exchange_seconds: histogram(&r, "sts_bridge_exchange_duration_seconds", "Time to answer POST /v1/token.", LATENCY_BUCKETS, &["outcome"]),
            token_rejections: counter(&r, "sts_bridge_token_rejections_total", "Subject or admin tokens refused by validation, by reason.", &["reason"]),
            malformed_requests: counter(&r, "sts_bridge_malformed_requests_total", "Requests refused before a token signature was verified (malformed request or token, unknown key or issuer, bad signature), by error code.", &["error"]),
            suppressed_log_lines: counter(&r, "sts_bridge_log_lines_suppressed_total", "Log lines left out because their kind was over its rate, by kind.", &["kind"]),
            upstream_requests: counter(&r, "sts_bridge_upstream_requests_total", "Requests to Google and to issuers, by upstream and HTTP status (or transport error).", &["upstream", "code"]),
            upstream_seconds: histogram(&r, "sts_bridge_upstream_duration_seconds", "Latency of requests to Google and to issuers.", LATENCY_BUCKETS, &["upstream"]),
            cache_lookups: counter(&r, "sts_bridge_cache_lookups_total", "Credential cache lookups: hit, miss (one upstream call) or coalesced (waited for another caller's call).", &["result"]),
            cache_refreshes: counter(&r, "sts_bridge_cache_refreshes_total", "Background refreshes of credentials inside the refresh margin, by result.", &["result"]),
            cache_entries: gauge(&r, "sts_bridge_cache_entries", "Credentials currently cached."),
            validated_tokens: counter(&r, "sts_bridge_validated_token_cache_total", "Validated-token cache lookups: hit (signature check skipped) or miss (full validation).", &["result"]),
            jwks_refreshes: counter(&r, "sts_bridge_jwks_refreshes_total", "Key set fetches per issuer, by result.", &["issuer", "result"]),
            jwks_keys,
            audit_queue_depth: gauge(&r, "sts_bridge_audit_queue_depth", "Issuance records waiting for the writer."),
            audit_batch_rows: plain_histogram(&r, "sts_bridge_audit_batch_rows", "Rows written per INSERT statement.", BATCH_BUCKETS),
            audit_flush_seconds: plain_histogram(&r, "sts_bridge_audit_flush_duration_seconds", "Time to write one batch of issuance records.", LATENCY_BUCKETS),
            audit_rows: counter(&r, "sts_bridge_audit_rows_total", "Issuance rows written or failed.", &["result"]),
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

    /// One audit batch.
    pub fn audit_batch(&self, rows: usize, ok: bool, took: Duration) {
        self.audit_batch_rows.observe(rows as f64);
        self.audit_flush_seconds.observe(took.as_secs_f64());
        let result = if ok { "written" } else { "failed" };
        self.audit_rows
            .with_label_values(&[result])
            .inc_by(rows as u64);
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
