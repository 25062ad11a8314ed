//! CPU time and resident memory of the measured processes, read from
//! `/proc`. A watched process may be a tree (Postgres: the postmaster and
//! the backends it forks), summed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Linux reports CPU time in clock ticks of `USER_HZ`, which is 100 on
/// every architecture Linux exposes to user space (`sysconf(_SC_CLK_TCK)`).
const TICKS_PER_SEC: f64 = 100.0;

/// How often resident memory is sampled for its peak.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One measured process (with its children when `tree`).
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: &'static str,
    pub pid: u32,
    pub tree: bool,
}

/// CPU ticks and resident bytes of one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    ticks: u64,
    rss: u64,
}

/// Reads `pid` (and, for a tree, its direct children) once.
/// A tree's memory is its processes' proportional set sizes (`Pss`) added
/// up, since their resident sets share pages (Postgres's shared buffers).
fn read(watched: &Watched, parents: &HashMap<u32, u32>) -> Reading {
    let mut pids = vec![watched.pid];
    if watched.tree {
        pids.extend(
            parents
                .iter()
                .filter(|(_, parent)| **parent == watched.pid)
                .map(|(pid, _)| *pid),
        );
    }
    pids.into_iter().fold(Reading::default(), |sum, pid| {
        let one = read_pid(pid, watched.tree).unwrap_or_default();
        Reading {
            ticks: sum.ticks + one.ticks,
            rss: sum.rss + one.rss,
        }
    })
}

/// `utime + stime` (fields 14 and 15 of `stat`), and `VmRSS` (or, with
/// `proportional`, `Pss`).
fn read_pid(pid: u32, proportional: bool) -> Option<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start
    // past its closing parenthesis, at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let (file, field) = if proportional {
        ("smaps_rollup", "Pss:")
    } else {
        ("status", "VmRSS:")
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    Some(Reading {
        ticks,
        rss: rss_kb * 1024,
    })
}

/// Every process's parent, for trees.
fn parents() -> HashMap<u32, u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let parent = rest.split(' ').nth(1)?.parse().ok()?;
            Some((pid, parent))
        })
        .collect()
}

fn read_all(watched: &[Watched]) -> Vec<Reading> {
    let parents = if watched.iter().any(|w| w.tree) {
        parents()
    } else {
        HashMap::new()
    };
    watched.iter().map(|w| read(w, &parents)).collect()
}

/// What one process used during a measurement.
#[derive(Debug, Clone)]
pub struct Usage {
    pub name: &'static str,
    /// CPU seconds (user + system) spent during the measurement.
    pub cpu_secs: f64,
    /// The highest resident memory sampled.
    pub peak_rss: u64,
    /// Resident memory at the start.
    pub start_rss: u64,
    /// Resident memory at the end.
    pub end_rss: u64,
}

/// A running measurement: CPU from start to finish, resident memory
/// sampled every [`SAMPLE_EVERY`] for its peak.
pub struct Sampler {
    watched: Vec<Watched>,
    start: Vec<Reading>,
    peaks: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(watched: Vec<Watched>) -> Self {
        let start = read_all(&watched);
        let peaks = Arc::new(Mutex::new(start.iter().map(|r| r.rss).collect::<Vec<_>>()));
        let task = {
            let watched = watched.clone();
            let peaks = peaks.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SAMPLE_EVERY);
                loop {
                    every.tick().await;
                    let watched = watched.clone();
                    let Ok(now) = tokio::task::spawn_blocking(move || read_all(&watched)).await
                    else {
                        return;
                    };
                    if let Ok(mut peaks) = peaks.lock() {
                        for (peak, reading) in peaks.iter_mut().zip(&now) {
                            *peak = (*peak).max(reading.rss);
                        }
                    }
                }
            })
        };
        Self {
            watched,
            start,
            peaks,
            task,
        }
    }

    /// Ends the measurement.
    pub fn finish(self) -> Vec<Usage> {
        self.task.abort();
        let end = read_all(&self.watched);
        let peaks = self.peaks.lock().map(|p| p.clone()).unwrap_or_default();
        self.watched
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let start = self.start[i];
                let end = end[i];
                Usage {
                    name: w.name,
                    cpu_secs: end.ticks.saturating_sub(start.ticks) as f64 / TICKS_PER_SEC,
                    peak_rss: peaks.get(i).copied().unwrap_or(0).max(end.rss),
                    start_rss: start.rss,
                    end_rss: end.rss,
                }
            })
            .collect()
    }
}

/// The resident memory of one watched process now.
pub fn rss_now(watched: &Watched) -> u64 {
    read_all(std::slice::from_ref(watched))
        .first()
        .map(|r| r.rss)
        .unwrap_or(0)
}
