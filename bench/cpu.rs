//! Where the CPU went during a run: the server under test, Postgres, and everything else
//! (mostly the load tool and the kernel's network path). Read from /proc, so the split holds
//! whatever else the machine does, unlike req/s.

use std::fs;

/// Clock ticks consumed so far, by whom.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ticks {
    all: u64,
    server: u64,
    postgres: u64,
}

/// CPU time per answered request, µs.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerRequest {
    /// The server under test.
    pub server: f64,
    /// Every Postgres process on the machine.
    pub postgres: f64,
    /// The rest: load tool, kernel, anything else running.
    pub other: f64,
}

impl PerRequest {
    /// All of it.
    pub fn total(&self) -> f64 {
        self.server + self.postgres + self.other
    }
}

impl Ticks {
    /// Ticks so far of the whole machine, of process `server`, and of all Postgres processes.
    pub fn now(server: u32) -> Self {
        Self {
            all: machine_busy(),
            server: process(server).unwrap_or(0),
            postgres: postgres(),
        }
    }

    /// Per request of `requests` answered between `self` and `later`.
    pub fn per_request(&self, later: &Ticks, requests: f64) -> PerRequest {
        let us = |ticks: u64| ticks as f64 * 1e6 / ticks_per_second() / requests.max(1.0);
        let server = later.server.saturating_sub(self.server);
        let postgres = later.postgres.saturating_sub(self.postgres);
        let all = later.all.saturating_sub(self.all);
        PerRequest {
            server: us(server),
            postgres: us(postgres),
            other: us(all.saturating_sub(server + postgres)),
        }
    }
}

fn ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux architecture this runs on.
    100.0
}

/// Busy ticks of all CPUs (everything but idle and iowait).
fn machine_busy() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user, nice, system, then idle and iowait (skipped), then irq and softirq; steal is
    // time the hypervisor took, and guest time is already counted in user.
    [0, 1, 2, 5, 6].iter().filter_map(|i| fields.get(*i)).sum()
}

/// utime + stime of one process, with its threads.
fn process(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Ticks of every process named `postgres`: the backends, the WAL writer, the checkpointer.
fn postgres() -> u64 {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(process)
        .sum()
}
