//! The figures of one run, as the Markdown written to `bench/results.md`.

use crate::cpu::PerRequest;
use crate::servers::{Rss, SoakRow};
use crate::wrk::WrkResult;
use std::fmt::Write;
use std::process::Command;

/// A, B, C and D measured once each, in that order, with the CPU each request cost and
/// the records each INSERT statement carried (none for A, which keeps no records).
pub struct Round(
    pub [WrkResult; 4],
    pub [PerRequest; 4],
    pub [Option<f64>; 4],
);

/// A constant-rate run.
pub struct Phase {
    /// Arrivals per second asked for.
    pub rate: f64,
    /// Requests answered 200.
    pub answered: usize,
    /// Requests that failed.
    pub errors: usize,
    /// Median latency from the scheduled time, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// The audit writer alone.
pub struct WriterFigures {
    /// Rows enqueued.
    pub rows: usize,
    /// Rows not committed.
    pub failed: usize,
    /// Committed rows per second.
    pub rows_per_sec: f64,
    /// Statements written.
    pub batches: u64,
    /// Batches per size bucket (`le`, count).
    pub histogram: Vec<(String, u64)>,
}

/// Everything measured.
pub struct Figures {
    /// The alternating rounds.
    pub rounds: Vec<Round>,
    /// Upstream calls made for the cold storm.
    pub storm_calls: usize,
    /// Storm requests answered 200.
    pub storm_ok: usize,
    /// Constant rate at half of B's peak.
    pub half: Phase,
    /// The same arrival rate on C.
    pub half_sqlite: Phase,
    /// The same arrival rate on A: what the machine and the load generator leave of p99
    /// for a server that does one verify and nothing else.
    pub half_baseline: Phase,
    /// The writer alone.
    pub writer: WriterFigures,
    /// Subjects cached for the RSS figure.
    pub subjects: usize,
    /// RSS before and after.
    pub rss: Rss,
    /// Soak minutes.
    pub soak: Vec<SoakRow>,
    /// Two replicas on one Redis, when Redis was reachable.
    pub replicas: Option<TwoReplicas>,
    /// Seconds per configuration and round.
    pub seconds: u64,
}

/// Two replicas sharing the cache through Redis.
pub struct TwoReplicas {
    /// Upstream calls for 1,000 simultaneous first requests split across both.
    pub storm_calls: usize,
    /// Of those, answered 200.
    pub storm_ok: usize,
    /// Subjects each asked of both replicas at once.
    pub subjects: usize,
    /// Upstream calls per such subject (1.0 when the tier works).
    pub calls_per_subject: f64,
    /// wrk on both at once, requests per second summed.
    pub combined_rps: f64,
    /// Non-2xx answers and socket errors under wrk.
    pub errors: u64,
}

/// Figures plus the environment they were measured in.
pub struct Report {
    /// The figures.
    pub figures: Figures,
    /// `SELECT version()`.
    pub postgres: String,
}

const NAMES: [&str; 4] = [
    "A: baseline, one RS256 verify (jsonwebtoken, aws-lc-rs)",
    "B: sts-bridge, cached credential, full validation, records in Postgres",
    "C: the same, records in SQLite",
    "D: B with the validated-token cache",
];

const MIB: f64 = 1024.0 * 1024.0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let f = &self.figures;
        let mut s = String::new();
        let rps =
            |i: usize| f.rounds.iter().map(|r| r.0[i].rps).sum::<f64>() / f.rounds.len() as f64;
        let p = |i: usize, p99: bool| {
            median(
                f.rounds
                    .iter()
                    .map(|r| if p99 { r.0[i].p99_ms } else { r.0[i].p50_ms })
                    .collect(),
            )
        };
        let errors = |i: usize| f.rounds.iter().map(|r| r.0[i].errors).sum::<u64>();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = writeln!(s, "# sts-bridge bench results\n");
        let _ = writeln!(
            s,
            "Produced by `make bench` ({}).\n",
            time::OffsetDateTime::now_utc().date()
        );
        let _ = writeln!(s, "## Machine and versions\n");
        let _ = writeln!(
            s,
            "- CPU: {} ({cores} cores visible); load generator, servers and Postgres share them",
            cpu_model()
        );
        let _ = writeln!(s, "- kernel: {}", command_output("uname", &["-sr"]));
        let _ = writeln!(s, "- {}", command_output("rustc", &["-V"]));
        let _ = writeln!(s, "- {}", command_output("wrk", &["-v"]));
        let _ = writeln!(
            s,
            "- {}",
            self.postgres.split(',').next().unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "- sts-bridge {} (release build), Postgres over TCP on loopback\n",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(s, "## Cached exchange against the verify limit\n");
        let _ = writeln!(s, "wrk -t2 -c64, {} s per configuration, {} rounds of A, B, C, D in turn; one subject, google-auth's form (`options` encoded twice, `x-goog-api-client`). req/s is the mean over rounds, latencies the median of the rounds' values.\n", f.seconds, f.rounds.len());
        let _ = writeln!(
            s,
            "| configuration | req/s | ratio to A | p50 ms | p99 ms | errors |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for (i, name) in NAMES.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
                rps(i),
                rps(i) / rps(0),
                p(i, false),
                p(i, true),
                errors(i)
            );
        }
        let _ = writeln!(s, "\nEach round:\n");
        let _ = writeln!(s, "| round | A req/s | B req/s | C req/s | D req/s |");
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|");
        for (n, r) in f.rounds.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
                n + 1,
                r.0[0].rps,
                r.0[1].rps,
                r.0[2].rps,
                r.0[3].rps
            );
        }
        let cpu = |i: usize, part: fn(&PerRequest) -> f64| {
            median(f.rounds.iter().map(|r| part(&r.1[i])).collect())
        };
        let _ = writeln!(s, "\nCPU time per answered request (µs, median over rounds; read from /proc, so it holds however busy the machine is). The rest is mostly the load tool and the kernel's loopback path.\n");
        let _ = writeln!(
            s,
            "| configuration | server | Postgres | rest | total | records per statement |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for (i, name) in ["A", "B", "C", "D"].iter().enumerate() {
            let batch: Vec<f64> = f.rounds.iter().filter_map(|r| r.2[i]).collect();
            let batch = if batch.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.1}", median(batch))
            };
            let _ = writeln!(
                s,
                "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {batch} |",
                cpu(i, |c| c.server),
                cpu(i, |c| c.postgres),
                cpu(i, |c| c.other),
                cpu(i, PerRequest::total)
            );
        }
        let per_subject =
            f.rss.after.saturating_sub(f.rss.before) as f64 / f.subjects.max(1) as f64;
        let _ = writeln!(s, "\n## Other figures\n");
        let _ = writeln!(s, "- Cold storm: 1,000 simultaneous requests for one new subject on B: **{} upstream call(s)**, {} answered 200.", f.storm_calls, f.storm_ok);
        match &f.replicas {
            Some(r) => {
                let _ = writeln!(s, "- Two replicas (validated-token cache on, records in one Postgres, cache shared through one Redis): cold storm of 1,000 simultaneous requests for one new subject split across both, **{} upstream call(s)**, {} answered 200; {} subjects each asked of both at once, **{:.3} upstream calls per subject**; wrk on both at once (-t2 -c32 each, {} s): **{:.0} req/s combined**, {} errors.", r.storm_calls, r.storm_ok, r.subjects, r.calls_per_subject, f.seconds, r.combined_rps, r.errors);
            }
            None => {
                let _ = writeln!(
                    s,
                    "- Two replicas: not measured (Redis unreachable; set BENCH_REDIS_URL)."
                );
            }
        }
        let _ = writeln!(s, "- Constant arrival rate on B at half its peak ({:.0} req/s for 10 s, 64 connections, latency from each request's scheduled time): p50 {:.2} ms, **p99 {:.2} ms**, {} answered, {} failed.", f.half.rate, f.half.p50_ms, f.half.p99_ms, f.half.answered, f.half.errors);
        let h = &f.half_sqlite;
        let _ = writeln!(s, "- The same arrival rate on C (records in SQLite): p50 {:.2} ms, p99 {:.2} ms, {} answered, {} failed.", h.p50_ms, h.p99_ms, h.answered, h.errors);
        let h = &f.half_baseline;
        let _ = writeln!(s, "- The same arrival rate on A (the baseline, one verify per request): p50 {:.2} ms, p99 {:.2} ms, {} answered, {} failed. This is the floor the machine and the load generator leave.", h.p50_ms, h.p99_ms, h.answered, h.errors);
        let _ = writeln!(s, "- {} distinct subjects exchanged and cached (ES256 tokens, validated-token cache on, records in Postgres) in {:.1} s, {} failed: RSS {:.1} MiB before, **{:.1} MiB after**, {:.0} bytes per subject.", f.subjects, f.rss.took.as_secs_f64(), f.rss.errors, f.rss.before as f64 / MIB, f.rss.after as f64 / MIB, per_subject);
        let w = &f.writer;
        let _ = writeln!(s, "- Audit writer alone (group commit into Postgres over TCP, 2,000 concurrent producers, max_batch 512, 4 batches in flight): {} rows in {} statements, {} failed, **{:.0} rows/s**.", w.rows, w.batches, w.failed, w.rows_per_sec);
        let _ = writeln!(s, "\n  | batch rows ≤ | batches |\n  |---:|---:|");
        for (le, n) in &w.histogram {
            let _ = writeln!(s, "  | {le} | {n} |");
        }
        if !f.soak.is_empty() {
            let _ = writeln!(s, "\n## Soak (D, wrk -t2 -c64)\n\n| minute | req/s | p99 ms | RSS MiB |\n|---:|---:|---:|---:|");
            for (minute, r, rss) in &f.soak {
                let _ = writeln!(
                    s,
                    "| {minute} | {:.0} | {:.2} | {:.1} |",
                    r.rps,
                    r.p99_ms,
                    *rss as f64 / MIB
                );
            }
        }
        let targets = [
            (
                "B ≥ 0.7 × A",
                format!("{:.2}", rps(1) / rps(0)),
                rps(1) / rps(0) >= 0.7,
            ),
            (
                "C ≥ 0.8 × A",
                format!("{:.2}", rps(2) / rps(0)),
                rps(2) / rps(0) >= 0.8,
            ),
            (
                "D ≥ 1.5 × A",
                format!("{:.2}", rps(3) / rps(0)),
                rps(3) / rps(0) >= 1.5,
            ),
            (
                "p50 of B < 2 ms",
                format!("{:.2} ms", p(1, false)),
                p(1, false) < 2.0,
            ),
            (
                "p99 at half peak < 5 ms",
                format!("{:.2} ms", f.half.p99_ms),
                f.half.p99_ms < 5.0,
            ),
            (
                "cold storm = 1 upstream call",
                f.storm_calls.to_string(),
                f.storm_calls == 1,
            ),
            (
                "100k subjects < 150 MiB RSS",
                format!("{:.1} MiB", f.rss.after as f64 / MIB),
                f.rss.after as f64 / MIB < 150.0,
            ),
            (
                "audit ≥ 20,000 rows/s",
                format!("{:.0}", w.rows_per_sec),
                w.rows_per_sec >= 20_000.0,
            ),
        ];
        let _ = writeln!(s, "\n## Targets\n\n| target | measured | |\n|---|---:|---|");
        for (target, value, ok) in targets {
            let _ = writeln!(s, "| {target} | {value} | {} |", verdict(ok));
        }
        s.push_str(&floors(&|i, part| cpu(i, part)));
        let _ = writeln!(
            s,
            "- p99 at half peak: at the same arrival rate the baseline's p99 is {:.2} ms, B's \
             {:.2} ms and C's {:.2} ms. B and C wait for their record's commit (the writer \
             and the database run on other threads of the same two cores, each hand-over a \
             chance to wait for a core), and the machine's other services take the cores \
             for milliseconds at a time: `make bench BENCH_ARGS=\"--tail-only RATE\"` \
             repeats this part alone, with the server's own exchange and commit times.",
            f.half_baseline.p99_ms, f.half.p99_ms, f.half_sqlite.p99_ms
        );
        s
    }
}

/// What the CPU split says about the ratio targets: every configuration shares the cores
/// with the load tool, and B and D with Postgres, whatever the server does.
fn floors(cpu: &dyn Fn(usize, fn(&PerRequest) -> f64) -> f64) -> String {
    let a_total = cpu(0, PerRequest::total);
    let load_tool = cpu(0, |c| c.other);
    let mut s = String::from("\n## What bounds the ratios\n\n");
    let _ = writeln!(
        s,
        "A costs {a_total:.1} µs of CPU per request, {load_tool:.1} µs of it outside the server \
         (the load tool and the kernel). For a ratio r, a configuration may spend at most \
         {a_total:.1} / r µs per request in all.\n"
    );
    for (i, name, target) in [(1, "B", 0.7), (3, "D", 1.5)] {
        let postgres = cpu(i, |c| c.postgres);
        let budget = a_total / target;
        let _ = writeln!(
            s,
            "- {name} ≥ {target}×: budget {budget:.1} µs; the load tool's {load_tool:.1} µs and \
             Postgres's {postgres:.1} µs per record leave {:.1} µs for the server, which spent \
             {:.1} µs (A's server: {:.1} µs).",
            budget - load_tool - postgres,
            cpu(i, |c| c.server),
            cpu(0, |c| c.server)
        );
    }
    s
}
