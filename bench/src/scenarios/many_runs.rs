//! S6: many runs at once, each printing small events at a fixed rate to a
//! few subscribers: delivery latency on both paths and, through the whole
//! stack, what RunEvents writes (rows and WAL per second) and whether it
//! keeps up with delivery (the backlog).
//!
//! Each run has its own runner thread (runner alone) or backend session
//! (whole stack), since a session runs one run at a time. Every run waits
//! at its gate until all subscribers of all runs are attached, then all
//! gates open together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::try_join_all;
use uuid::Uuid;

use super::{attach, sorted_latencies, start_gated, GateDir, Measurement, Paths, Sizes};
use crate::client::{percentile, Api, Subscribed, Target};
use crate::fake::Settings;
use crate::procstat::Sampler;
use crate::stack::Stack;

/// How often the backlog is sampled.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn s6(
    stack: &Stack,
    http: &reqwest::Client,
    paths: &Paths,
    api: Api,
    gates: &GateDir,
    sizes: &Sizes,
) -> anyhow::Result<Measurement> {
    let n = sizes.s6_runs;
    let targets: Vec<Target> = match api {
        Api::Runner => {
            try_join_all((0..n).map(|i| {
                let dir = stack.workspaces.join(format!("bench-s6-{i}/repo"));
                async move { Target::runner_thread(http, &stack.runner_url, &dir).await }
            }))
            .await?
        }
        Api::Backend => {
            try_join_all(
                (0..n).map(|_| Target::backend_session(http, &stack.backend_url, &stack.repo)),
            )
            .await?
        }
    };
    let settings = Settings {
        events: sizes.s6_events,
        rate: sizes.s6_rate,
        bytes: sizes.s6_bytes,
        gate: None,
    };
    let (_, watched, _) = paths.get(api);
    let sampler = Sampler::start(watched.to_vec());
    let mut runs = Vec::with_capacity(n);
    let mut waiting = Vec::with_capacity(n);
    for target in &targets {
        let (run, gate) = start_gated(target, gates, settings.clone()).await?;
        waiting.push(attach(target, &run, gate, sizes.s6_subscribers, true).await?);
        runs.push(run);
    }
    let progress: Vec<Vec<Arc<AtomicU64>>> = waiting.iter().map(|w| w.progress.clone()).collect();
    let postgres = match api {
        Api::Runner => None,
        Api::Backend => {
            let ids = runs
                .iter()
                .map(|r| Uuid::parse_str(r))
                .collect::<Result<Vec<_>, _>>()
                .context("a backend run id is not a UUID")?;
            Some(RunEvents::connect(&stack.database_url, ids).await?)
        }
    };
    let before = match &postgres {
        Some(pg) => Some((pg.rows().await?, pg.wal_position().await?)),
        None => None,
    };
    let start = Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let backlog = match (&postgres, &before) {
        (Some(pg), Some((rows_before, _))) => {
            let printed = Printed {
                runs: n,
                events: sizes.s6_events,
                rate: sizes.s6_rate,
                rows_before: *rows_before,
            };
            Some(tokio::spawn(sample_backlog(
                pg.clone(),
                progress.clone(),
                printed,
                start,
                stopped,
            )))
        }
        _ => None,
    };
    let released = try_join_all(waiting.into_iter().map(|w| w.release())).await;
    // The sampler may have ended on an error already; that is reported by
    // its result below.
    let _ = stop.send(());
    let released = released?;
    let subscribed: Vec<Subscribed> = released.into_iter().flat_map(|(_, s)| s).collect();
    let end = subscribed
        .iter()
        .filter_map(|s| s.last_event)
        .max()
        .unwrap_or(start)
        .max(start);
    let wall = (end - start).as_secs_f64();
    let usage = sampler.finish();
    let latencies = sorted_latencies(&subscribed);
    let mut figures = vec![
        ("p50", percentile(&latencies, 50.0) as f64 / 1000.0, "ms"),
        ("p99", percentile(&latencies, 99.0) as f64 / 1000.0, "ms"),
        (
            "max",
            latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
            "ms",
        ),
        ("wall", wall, "s"),
    ];
    let mut errors = Vec::new();
    if let (Some(pg), Some((rows_before, wal_start)), Some(backlog)) = (&postgres, before, backlog)
    {
        let samples = backlog.await??;
        let rows_after = pg.rows().await?;
        let wal = pg.wal_since(&wal_start).await?;
        let rows = (rows_after - rows_before) as f64;
        let max = samples.iter().map(|s| s.backlog).max().unwrap_or(0);
        let last = samples.last().map(|s| s.backlog).unwrap_or(0);
        let unstored = samples.iter().map(|s| s.unstored).max().unwrap_or(0);
        let series: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1} s: {} / {}", s.at, s.backlog, s.unstored))
            .collect();
        tracing::info!(
            samples = series.join(", "),
            "S6: events delivered but not stored / messages printed but not stored"
        );
        figures.extend([
            ("rows/s", rows / wall, "rows/s"),
            ("WAL/s", wal / wall / 1e6, "MB/s"),
            ("WAL per row", wal / rows.max(1.0), "B"),
            ("backlog max", max as f64, "events"),
            ("backlog last", last as f64, "events"),
            ("unstored max", unstored as f64, "events"),
        ]);
        // Every event delivered is a row once the runs are over.
        for (run, delivered) in pg.ids.iter().zip(fastest(&progress)) {
            let stored = pg.rows_of(*run).await?;
            if stored != delivered {
                errors.push(format!(
                    "run {run}: {delivered} events delivered, {stored} rows"
                ));
            }
        }
    }
    let expected = sizes.s6_events;
    errors.extend(
        subscribed
            .iter()
            .filter_map(|s| {
                s.error.clone().or_else(|| {
                    (!s.complete(expected)).then(|| {
                        format!(
                            "incomplete: {} messages of {expected}, terminal {:?}",
                            s.messages, s.terminal
                        )
                    })
                })
            })
            .take(3),
    );
    Ok(Measurement {
        scenario: format!(
            "S6 {n} runs × {} events at {}/s, {} subscribers each",
            sizes.s6_events, sizes.s6_rate, sizes.s6_subscribers
        ),
        path: api.label(),
        figures,
        complete: subscribed.iter().filter(|s| s.complete(expected)).count(),
        subscribers: subscribed.len(),
        gaps: subscribed.iter().map(|s| s.gaps).sum(),
        duplicates: subscribed.iter().map(|s| s.duplicates).sum(),
        errors,
        usage,
    })
}

/// The events read by each run's fastest subscriber.
fn fastest(progress: &[Vec<Arc<AtomicU64>>]) -> Vec<i64> {
    progress
        .iter()
        .map(|run| {
            let most = run
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            i64::try_from(most).unwrap_or(i64::MAX)
        })
        .collect()
}

/// What the fakes of the scenario print: each run's messages, `rate` a
/// second from the opening of the gates.
struct Printed {
    runs: usize,
    events: u64,
    rate: u64,
    /// Rows of the runs before the gates opened.
    rows_before: i64,
}

impl Printed {
    /// Messages printed `secs` after the gates opened, all runs together.
    fn by(&self, secs: f64) -> i64 {
        let each = ((secs * self.rate as f64) as u64 + 1).min(self.events);
        i64::try_from(each * self.runs as u64).unwrap_or(i64::MAX)
    }
}

/// One sample of [`sample_backlog`].
struct Sample {
    /// Seconds since the gates opened.
    at: f64,
    /// Events delivered (each run's fastest subscriber, summed) minus the
    /// rows of the runs: what Postgres is behind delivery.
    backlog: i64,
    /// Messages the fakes have printed by now minus the rows stored since
    /// the gates opened: what Postgres is behind the CLI, which grows when
    /// delivery waits for it.
    unstored: i64,
}

/// Every [`BACKLOG_EVERY`] until `stopped`, a [`Sample`]. The delivered
/// count is read just before the rows are counted.
async fn sample_backlog(
    pg: RunEvents,
    progress: Vec<Vec<Arc<AtomicU64>>>,
    printed: Printed,
    start: Instant,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<Vec<Sample>> {
    let mut every = tokio::time::interval(BACKLOG_EVERY);
    // The first tick is at once: the gates have just opened.
    every.tick().await;
    let mut samples = Vec::new();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = &mut stopped => return Ok(samples),
        }
        let at = start.elapsed().as_secs_f64();
        let delivered: i64 = fastest(&progress).iter().sum();
        let rows = pg.rows().await?;
        samples.push(Sample {
            at,
            backlog: delivered - rows,
            unstored: printed.by(at) - (rows - printed.rows_before),
        });
    }
}

/// The scenario's runs in the backend's `run_events`, read on a connection
/// of the bench's own.
#[derive(Clone)]
struct RunEvents {
    client: Arc<tokio_postgres::Client>,
    /// The runs of the scenario.
    ids: Vec<Uuid>,
}

impl RunEvents {
    async fn connect(url: &str, ids: Vec<Uuid>) -> anyhow::Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the S6 database connection ended");
            }
        });
        Ok(Self {
            client: Arc::new(client),
            ids,
        })
    }

    /// Rows of `run_events` for the scenario's runs. Each run's events are
    /// numbered from 1 without gaps and stored in order, so its highest
    /// number is its count: one index lookup per run, where a `count(*)`
    /// every second would scan every row stored so far and take the
    /// Postgres time being measured.
    async fn rows(&self) -> anyhow::Result<i64> {
        let row = self
            .client
            .query_one(
                "SELECT coalesce(sum((SELECT max(seq) FROM run_events WHERE run_id = r)), 0)::bigint
                 FROM unnest($1::uuid[]) AS r",
                &[&self.ids],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn rows_of(&self, run: Uuid) -> anyhow::Result<i64> {
        let row = self
            .client
            .query_one("SELECT count(*) FROM run_events WHERE run_id = $1", &[&run])
            .await?;
        Ok(row.get(0))
    }

    /// Where the write-ahead log is now.
    async fn wal_position(&self) -> anyhow::Result<String> {
        let row = self
            .client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?;
        Ok(row.get(0))
    }

    /// Bytes of write-ahead log written since `position`.
    async fn wal_since(&self, position: &str) -> anyhow::Result<f64> {
        let row = self
            .client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
                &[&position],
            )
            .await?;
        Ok(row.get(0))
    }
}
