//! `make bench`: measures a cached exchange against the verify limit, in one run.
//!
//! It starts, on loopback, the dev issuer and the Google stand-in (in this process), three
//! release sts-bridge servers (B: records in Postgres, validated-token cache off; C: records
//! in SQLite, cache off; D: Postgres, cache on) and the baseline A (one RS256 verify per
//! request), then loads them in turn with wrk and the same google-auth form, round after
//! round, so drifts of the shared cores hit all four alike. Then: the cold storm, RSS with
//! 100,000 cached subjects, the audit writer alone, p99 at half of B's peak under a constant
//! arrival rate, two replicas on one Redis and one Postgres, and optionally a soak. Figures go to stdout and `bench/results.md`.

mod baseline;
mod cpu;
mod http;
mod loadgen;
mod report;
mod servers;
mod wrk;

use clap::Parser;
use std::time::Duration;

/// Command line of the bench binary.
#[derive(Parser, Debug, Clone)]
#[command(about = "sts-bridge load bench")]
pub struct Options {
    /// Minutes of soak after the measurements (RSS and p99 printed each minute).
    #[arg(long, default_value_t = 0)]
    pub soak: u64,
    /// Rounds of A/B/C/D.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Measure the A/B/C/D rounds only, print their ratios and stop (no report written):
    /// for quick comparisons while changing the request path.
    #[arg(long)]
    pub compare_only: bool,
    /// Measure only the p99 under this constant arrival rate (req/s) on A, B, C and D in
    /// turn, print it and stop: for chasing the latency tail.
    #[arg(long, value_name = "RATE")]
    pub tail_only: Option<f64>,
    /// Measure only the RSS with `--subjects` cached subjects, print it and stop.
    #[arg(long)]
    pub rss_only: bool,
    /// Seconds of load per configuration and round.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Distinct subjects cached for the RSS figure.
    #[arg(long, default_value_t = 100_000)]
    pub subjects: usize,
    /// The release sts-bridge binary.
    #[arg(long, env = "STS_BRIDGE_BIN")]
    pub server: std::path::PathBuf,
    /// Postgres server the bench may create a database on.
    #[arg(
        long,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// Redis for the two-replica figure (shared cache tier); unreachable: the figure is
    /// left out.
    #[arg(
        long,
        env = "BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub redis_url: String,
    /// Where the report is written.
    #[arg(long, default_value = "bench/results.md")]
    pub out: std::path::PathBuf,
    /// Serve the baseline (A) on this port instead of running the bench.
    #[arg(long, hide = true)]
    pub baseline_port: Option<u16>,
    /// RSA public key (PEM) the baseline verifies with.
    #[arg(long, hide = true)]
    pub baseline_key: Option<String>,
}

fn main() -> std::process::ExitCode {
    // `cargo bench` appends `--bench`; it means nothing here.
    let args = std::env::args().filter(|a| a != "--bench");
    let options = Options::parse_from(args);
    if let (Some(port), Some(key)) = (options.baseline_port, &options.baseline_key) {
        return match baseline::serve(port, key) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("baseline: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(servers::run(options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Seconds as a `Duration`.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
