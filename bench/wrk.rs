//! Runs wrk (closed loop, `-t2 -c64`) with a Lua script that posts one form, and reads its
//! throughput and latency percentiles.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Non-2xx answers and socket errors.
    pub errors: u64,
}

/// A Lua script for wrk that posts `body` with google-auth's headers.
pub fn script(body: &str) -> String {
    let body = body.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "wrk.method = \"POST\"\n\
         wrk.body = \"{body}\"\n\
         wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n\
         wrk.headers[\"x-goog-api-client\"] = \"gl-python/3.11.2 auth/2.62.0 google-byoid-sdk\"\n"
    )
}

/// Runs wrk against `url` for `duration`.
pub fn run(
    url: &str,
    script: &Path,
    duration: Duration,
    connections: u32,
) -> Result<WrkResult, String> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs()),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}

fn parse(text: &str) -> Option<WrkResult> {
    let value_after = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let rps = value_after("Requests/sec:")?.parse().ok()?;
    let p50_ms = millis(value_after("50%")?)?;
    let p99_ms = millis(value_after("99%")?)?;
    let non_2xx: u64 = value_after("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let socket_errors: u64 = value_after("Socket errors:")
        .map(|v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Some(WrkResult {
        rps,
        p50_ms,
        p99_ms,
        errors: non_2xx + socket_errors,
    })
}

/// wrk prints `812.00us`, `1.25ms` or `2.10s`.
fn millis(value: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = value.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}
