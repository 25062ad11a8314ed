//! The scenarios of docs/BENCHMARKS.md, each run against the runner alone
//! and against the whole stack in the same invocation:
//! - S1: one subscriber, N events as fast as the fake prints them: events/s.
//! - S2: N events at a fixed rate to K subscribers: latency and wall time.
//! - S3: K idle subscribers: memory each, time to attach them all.
//! - S4: prompt → first event, one run at a time.
//! - S5: a clone to `ready`, full and shallow, next to `git clone`
//!   ([`clone_time`]).
//! - S6: many runs of small events at once: latency, and Postgres's rows
//!   and WAL per second and backlog ([`many_runs`]).
//! - S7: a patch and a commit of a large workspace, next to `git diff` and
//!   `git commit`, and the server's answers while a patch is made
//!   ([`shipping`]).

mod clone_time;
mod many_runs;
mod shipping;

pub use shipping::{GIT_COMMIT, GIT_DIFF, GIT_SNAPSHOT, IDLE};

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::client::{percentile, subscribe, Api, Gate, Subscribed, Target, HANG_GUARD};
use crate::fake::Settings;
use crate::procstat::{rss_now, Sampler, Usage, Watched};
use crate::stack::{Binaries, Stack, StackOptions};

/// How big each scenario is.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub s1_events: u64,
    pub s2_events: u64,
    /// Events per second in S2.
    pub s2_rate: u64,
    pub s2_subscribers: Vec<usize>,
    pub s3_subscribers: usize,
    pub s4_runs: usize,
    /// Bytes of each agent message's line.
    pub bytes: usize,
    /// S5: the repositories to clone; when none is named, see
    /// `s5_small_repo`.
    pub s5_repos: Vec<PathBuf>,
    /// S5 without a repository named: a small one the bench makes (CI)
    /// instead of the repository the bench is run from.
    pub s5_small_repo: bool,
    /// S5: clones of each kind and path per repository; the median is
    /// reported.
    pub s5_repeats: usize,
    /// S6: runs at once, each on its own runner thread or backend session.
    pub s6_runs: usize,
    /// S6: agent messages per run, and per second.
    pub s6_events: u64,
    pub s6_rate: u64,
    /// S6: subscribers per run.
    pub s6_subscribers: usize,
    /// S6: bytes of each agent message's line (the fake's smallest line,
    /// with its number and time, is about 112).
    pub s6_bytes: usize,
    /// S7: files in the repository, and the files each round changes,
    /// adds and deletes.
    pub s7_files: usize,
    pub s7_modified: usize,
    pub s7_added: usize,
    pub s7_deleted: usize,
    /// S7: rounds of patches, and of commits; the median is reported.
    pub s7_repeats: usize,
    /// The scenarios to run (`S1`, …); empty runs them all.
    pub only: Vec<String>,
}

impl Sizes {
    /// The sizes of docs/BENCHMARKS.md (those of issue 10): a few minutes
    /// on 2 cores.
    pub fn full() -> Self {
        Self {
            s1_events: 100_000,
            s2_events: 10_000,
            s2_rate: 2_000,
            s2_subscribers: vec![1, 100, 1000],
            s3_subscribers: 2000,
            s4_runs: 20,
            bytes: 250,
            s5_repos: Vec::new(),
            s5_small_repo: false,
            s5_repeats: 3,
            s6_runs: 50,
            s6_events: 200 * 20,
            s6_rate: 200,
            s6_subscribers: 10,
            s6_bytes: 100,
            s7_files: 50_000,
            s7_modified: 100,
            s7_added: 20,
            s7_deleted: 10,
            s7_repeats: 5,
            only: Vec::new(),
        }
    }

    /// CI's size: checks correctness, takes seconds.
    pub fn small() -> Self {
        Self {
            s1_events: 300,
            s2_events: 100,
            s2_rate: 1000,
            s2_subscribers: vec![1, 10],
            s3_subscribers: 20,
            s4_runs: 2,
            bytes: 250,
            s5_repos: Vec::new(),
            s5_small_repo: true,
            s5_repeats: 1,
            s6_runs: 3,
            s6_events: 20,
            s6_rate: 200,
            s6_subscribers: 2,
            s6_bytes: 100,
            s7_files: 2_000,
            s7_modified: 100,
            s7_added: 20,
            s7_deleted: 10,
            s7_repeats: 1,
            only: Vec::new(),
        }
    }

    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }

    fn max_events(&self) -> u64 {
        self.s1_events.max(self.s2_events).max(self.s6_events)
    }
}

/// What one scenario measured on one path.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// `S2 K=100`, ...
    pub scenario: String,
    /// `runner alone`, `whole stack`, or what else was measured.
    pub path: &'static str,
    /// The headline figures, in order: (name, value, unit).
    pub figures: Vec<(&'static str, f64, &'static str)>,
    /// Subscribers that read the whole run without a gap or a duplicate.
    pub complete: usize,
    pub subscribers: usize,
    pub gaps: u64,
    pub duplicates: u64,
    /// Subscriber errors, first few.
    pub errors: Vec<String>,
    pub usage: Vec<Usage>,
}

impl Measurement {
    pub fn figure(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, _)| *v)
    }

    /// Every subscriber read every event exactly once (S5: every clone
    /// checked out git's commit), and nothing else went wrong.
    pub fn correct(&self) -> bool {
        self.complete == self.subscribers
            && self.gaps == 0
            && self.duplicates == 0
            && self.errors.is_empty()
    }
}

/// The two paths under test, and what to watch on each.
struct Paths {
    runner: Target,
    backend: Target,
    runner_watched: Vec<Watched>,
    stack_watched: Vec<Watched>,
    runner_pid: Watched,
    backend_pid: Watched,
}

impl Paths {
    fn get(&self, api: Api) -> (&Target, &[Watched], &Watched) {
        match api {
            Api::Runner => (&self.runner, &self.runner_watched, &self.runner_pid),
            Api::Backend => (&self.backend, &self.stack_watched, &self.backend_pid),
        }
    }
}

/// Starts the stack, runs every scenario on both paths, stops the stack.
pub async fn run_all(
    binaries: &Binaries,
    options: StackOptions,
    sizes: &Sizes,
) -> anyhow::Result<Vec<Measurement>> {
    let options = StackOptions {
        max_events_per_run: usize::try_from(sizes.max_events())? + 16,
        ..options
    };
    let stack = Stack::start(binaries, &options).await?;
    let result = tokio::time::timeout(HANG_GUARD * 4, scenarios(&stack, binaries, sizes)).await;
    let result = match result {
        Ok(Ok(measurements)) => Ok(measurements),
        Ok(Err(e)) => Err(e.context(format!("servers' last lines:\n{}", stack.log_tails()))),
        Err(_) => Err(anyhow::anyhow!(
            "the benchmark hung; servers' last lines:\n{}",
            stack.log_tails()
        )),
    };
    stack.stop().await?;
    result
}

async fn scenarios(
    stack: &Stack,
    binaries: &Binaries,
    sizes: &Sizes,
) -> anyhow::Result<Vec<Measurement>> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()?;
    let watched = stack.stack_processes();
    let find = |name: &str| watched.iter().find(|w| w.name == name).cloned();
    let paths = Paths {
        runner: Target::runner_thread(
            &http,
            &stack.runner_url,
            &stack.workspaces.join("bench-runner/repo"),
        )
        .await?,
        backend: Target::backend_session(&http, &stack.backend_url, &stack.repo).await?,
        runner_watched: stack.runner_processes(),
        stack_watched: watched.clone(),
        runner_pid: find("runner").context("no runner process")?,
        backend_pid: find("backend").context("no backend process")?,
    };
    let gates = GateDir {
        dir: stack.scratch.clone(),
        next: std::cell::Cell::new(0),
    };
    let apis = [Api::Runner, Api::Backend];
    let mut out = Vec::new();

    // Idle memory first, before any scenario has grown the heaps.
    for api in apis.into_iter().filter(|_| sizes.runs("S3")) {
        tracing::info!(path = api.label(), "S3");
        out.push(s3(&paths, api, &gates, sizes).await?);
    }
    for api in apis.into_iter().filter(|_| sizes.runs("S4")) {
        tracing::info!(path = api.label(), "S4");
        out.push(s4(&paths, api, sizes).await?);
    }
    if sizes.runs("S4") {
        out.push(cli_start(binaries, sizes.s4_runs).await?);
    }
    for api in apis.into_iter().filter(|_| sizes.runs("S1")) {
        tracing::info!(path = api.label(), "S1");
        out.push(s1(&paths, api, &gates, sizes).await?);
    }
    for &k in sizes.s2_subscribers.iter().filter(|_| sizes.runs("S2")) {
        for api in apis {
            tracing::info!(path = api.label(), k, "S2");
            out.push(s2(&paths, api, &gates, sizes, k).await?);
        }
    }
    if sizes.runs("S5") {
        out.extend(clone_time::s5(stack, &http, sizes).await?);
    }
    for api in apis.into_iter().filter(|_| sizes.runs("S6")) {
        tracing::info!(path = api.label(), "S6");
        out.push(many_runs::s6(stack, &http, &paths, api, &gates, sizes).await?);
    }
    if sizes.runs("S7") {
        tracing::info!("S7");
        out.extend(shipping::s7(stack, &http, sizes).await?);
    }
    Ok(out)
}

/// Fresh FIFO paths for gates.
struct GateDir {
    dir: std::path::PathBuf,
    next: std::cell::Cell<u64>,
}

impl GateDir {
    fn gate(&self) -> anyhow::Result<Gate> {
        let n = self.next.get() + 1;
        self.next.set(n);
        Gate::new(self.dir.join(format!("gate-{n}")))
    }
}

/// One gated run read by `k` subscribers.
struct GatedRun {
    subscribed: Vec<Subscribed>,
    /// From the first subscription to the last one's first event.
    attach: Duration,
    /// The server's resident memory before the subscribers and once all
    /// of them were attached.
    rss_before: u64,
    rss_attached: u64,
    /// When the gate opened: the fake's first message follows.
    opened: Instant,
    usage: Vec<Usage>,
}

async fn gated_run(
    paths: &Paths,
    api: Api,
    gates: &GateDir,
    settings: Settings,
    k: usize,
) -> anyhow::Result<GatedRun> {
    let (target, watched, server) = paths.get(api);
    let sampler = Sampler::start(watched.to_vec());
    let (run, gate) = start_gated(target, gates, settings).await?;
    let rss_before = rss_now(server);
    let waiting = attach(target, &run, gate, k, false).await?;
    let rss_attached = rss_now(server);
    let attach = waiting.last_attached - waiting.started;
    let (opened, subscribed) = waiting.release().await?;
    Ok(GatedRun {
        subscribed,
        attach,
        rss_before,
        rss_attached,
        opened,
        usage: sampler.finish(),
    })
}

/// Starts a run of `settings` that waits at a fresh gate; returns its id.
async fn start_gated(
    target: &Target,
    gates: &GateDir,
    settings: Settings,
) -> anyhow::Result<(String, Gate)> {
    let gate = gates.gate()?;
    let settings = Settings {
        gate: Some(gate.path().to_path_buf()),
        ..settings
    };
    let run = target.start_run(&settings.prompt()).await?;
    Ok((run, gate))
}

/// A run waiting at its gate, its subscribers attached.
struct Waiting {
    gate: Gate,
    /// Each subscriber's result, once its stream ends.
    done: tokio::sync::mpsc::Receiver<Subscribed>,
    /// The first subscription, and the last subscriber's first event.
    started: Instant,
    last_attached: Instant,
    /// Events read so far, per subscriber (when asked for).
    progress: Vec<Arc<AtomicU64>>,
}

/// Attaches `k` subscribers to `run` and waits until each has read an
/// event (or failed), with `progress` counters when asked for.
async fn attach(
    target: &Target,
    run: &str,
    gate: Gate,
    k: usize,
    progress: bool,
) -> anyhow::Result<Waiting> {
    let url = target.events_url(run);
    let started = Instant::now();
    let mut attached = Vec::with_capacity(k);
    let mut counters = Vec::new();
    // Room for every result: a subscriber never waits to report.
    let (done_tx, done) = tokio::sync::mpsc::channel(k.max(1));
    for _ in 0..k {
        let (tx, rx) = tokio::sync::oneshot::channel();
        attached.push(rx);
        let counter = progress.then(|| Arc::new(AtomicU64::new(0)));
        counters.extend(counter.clone());
        let (http, url, done_tx) = (target.http().clone(), url.clone(), done_tx.clone());
        tokio::spawn(async move {
            let seen = subscribe(http, url, Some(tx), counter).await;
            // The receiver lives until every result is in, unless the
            // scenario failed already; then nobody needs this one.
            let _ = done_tx.send(seen).await;
        });
    }
    drop(done_tx);
    let mut last_attached = started;
    for rx in attached {
        // A subscriber that fails before its first event drops its sender;
        // its error is in its result.
        if let Ok(at) = rx.await {
            last_attached = last_attached.max(at);
        }
    }
    Ok(Waiting {
        gate,
        done,
        started,
        last_attached,
        progress: counters,
    })
}

impl Waiting {
    /// Opens the gate and collects every subscriber's result; returns when
    /// the gate opened, and the results.
    async fn release(mut self) -> anyhow::Result<(Instant, Vec<Subscribed>)> {
        let gate_path = self.gate.path().to_path_buf();
        let opening = self.gate.open();
        tokio::pin!(opening);
        let mut subscribed = Vec::new();
        let opened = loop {
            tokio::select! {
                opened = &mut opening => break opened?,
                seen = self.done.recv() => match seen {
                    Some(seen) => subscribed.push(seen),
                    None => {
                        // Every stream ended and the fake never opened its
                        // gate: the run ended early. The opener still waits
                        // for a reader; this one lets it finish.
                        Gate::release(&gate_path);
                        bail!("the run ended before its gate opened: {:?}", subscribed.first());
                    }
                },
            }
        };
        while let Some(seen) = self.done.recv().await {
            subscribed.push(seen);
        }
        Ok((opened, subscribed))
    }
}

fn measurement(
    scenario: String,
    api: Api,
    run: &GatedRun,
    expected: u64,
    figures: Vec<(&'static str, f64, &'static str)>,
) -> Measurement {
    Measurement {
        scenario,
        path: api.label(),
        figures,
        complete: run
            .subscribed
            .iter()
            .filter(|s| s.complete(expected))
            .count(),
        subscribers: run.subscribed.len(),
        gaps: run.subscribed.iter().map(|s| s.gaps).sum(),
        duplicates: run.subscribed.iter().map(|s| s.duplicates).sum(),
        errors: run
            .subscribed
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
            .take(3)
            .collect(),
        usage: run.usage.clone(),
    }
}

fn sorted_latencies(subscribed: &[Subscribed]) -> Vec<u64> {
    let mut all: Vec<u64> = subscribed
        .iter()
        .flat_map(|s| s.latencies_us.iter().copied())
        .collect();
    all.sort_unstable();
    all
}

fn last_event(run: &GatedRun) -> Instant {
    run.subscribed
        .iter()
        .filter_map(|s| s.last_event)
        .max()
        .unwrap_or(run.opened)
        .max(run.opened)
}

async fn s1(
    paths: &Paths,
    api: Api,
    gates: &GateDir,
    sizes: &Sizes,
) -> anyhow::Result<Measurement> {
    let settings = Settings {
        events: sizes.s1_events,
        rate: 0,
        bytes: sizes.bytes,
        gate: None,
    };
    let run = gated_run(paths, api, gates, settings, 1).await?;
    let elapsed = last_event(&run) - run.opened;
    let latencies = sorted_latencies(&run.subscribed);
    let figures = vec![
        (
            "events/s",
            sizes.s1_events as f64 / elapsed.as_secs_f64(),
            "ev/s",
        ),
        ("wall", elapsed.as_secs_f64(), "s"),
        ("p50", percentile(&latencies, 50.0) as f64 / 1000.0, "ms"),
        ("p99", percentile(&latencies, 99.0) as f64 / 1000.0, "ms"),
    ];
    Ok(measurement(
        format!("S1 {} events, 1 subscriber", sizes.s1_events),
        api,
        &run,
        sizes.s1_events,
        figures,
    ))
}

async fn s2(
    paths: &Paths,
    api: Api,
    gates: &GateDir,
    sizes: &Sizes,
    k: usize,
) -> anyhow::Result<Measurement> {
    let settings = Settings {
        events: sizes.s2_events,
        rate: sizes.s2_rate,
        bytes: sizes.bytes,
        gate: None,
    };
    let run = gated_run(paths, api, gates, settings, k).await?;
    let wall = last_event(&run) - run.opened;
    let latencies = sorted_latencies(&run.subscribed);
    let figures = vec![
        ("p50", percentile(&latencies, 50.0) as f64 / 1000.0, "ms"),
        ("p99", percentile(&latencies, 99.0) as f64 / 1000.0, "ms"),
        (
            "max",
            latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
            "ms",
        ),
        ("wall", wall.as_secs_f64(), "s"),
    ];
    Ok(measurement(
        format!(
            "S2 {} events at {}/s, K={k}",
            sizes.s2_events, sizes.s2_rate
        ),
        api,
        &run,
        sizes.s2_events,
        figures,
    ))
}

async fn s3(
    paths: &Paths,
    api: Api,
    gates: &GateDir,
    sizes: &Sizes,
) -> anyhow::Result<Measurement> {
    let settings = Settings {
        events: 1,
        rate: 0,
        bytes: sizes.bytes,
        gate: None,
    };
    let k = sizes.s3_subscribers;
    let run = gated_run(paths, api, gates, settings, k).await?;
    let per_subscriber = run.rss_attached.saturating_sub(run.rss_before) as f64 / k as f64;
    let figures = vec![
        ("memory each", per_subscriber / 1024.0, "KB"),
        ("attach all", run.attach.as_secs_f64(), "s"),
    ];
    Ok(measurement(
        format!("S3 {k} idle subscribers"),
        api,
        &run,
        1,
        figures,
    ))
}

async fn s4(paths: &Paths, api: Api, sizes: &Sizes) -> anyhow::Result<Measurement> {
    let (target, watched, _) = paths.get(api);
    let settings = Settings {
        events: 1,
        rate: 0,
        bytes: sizes.bytes,
        gate: None,
    };
    // A warm-up run: the backend's first run also creates its runner thread.
    let warm = target.start_run(&settings.prompt()).await?;
    let warm = subscribe(target.http().clone(), target.events_url(&warm), None, None).await;
    if !warm.complete(1) {
        bail!("the warm-up run failed: {warm:?}");
    }
    let sampler = Sampler::start(watched.to_vec());
    let mut firsts = Vec::with_capacity(sizes.s4_runs);
    let mut results = Vec::with_capacity(sizes.s4_runs);
    for _ in 0..sizes.s4_runs {
        let posted = Instant::now();
        let run = target.start_run(&settings.prompt()).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let seen = subscribe(
            target.http().clone(),
            target.events_url(&run),
            Some(tx),
            None,
        )
        .await;
        if let Ok(first) = rx.await {
            firsts.push(u64::try_from((first - posted).as_micros())?);
        }
        results.push(seen);
    }
    let usage = sampler.finish();
    firsts.sort_unstable();
    let expected = 1;
    Ok(Measurement {
        scenario: format!("S4 prompt → first event, {} runs", sizes.s4_runs),
        path: api.label(),
        figures: vec![
            ("p50", percentile(&firsts, 50.0) as f64 / 1000.0, "ms"),
            (
                "max",
                firsts.last().copied().unwrap_or(0) as f64 / 1000.0,
                "ms",
            ),
        ],
        complete: results.iter().filter(|s| s.complete(expected)).count(),
        subscribers: results.len(),
        gaps: results.iter().map(|s| s.gaps).sum(),
        duplicates: results.iter().map(|s| s.duplicates).sum(),
        errors: results
            .iter()
            .filter_map(|s| s.error.clone())
            .take(3)
            .collect(),
        usage,
    })
}

/// The fake CLI's own start-up: spawn → its first line, without a runner.
async fn cli_start(binaries: &Binaries, runs: usize) -> anyhow::Result<Measurement> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&binaries.fake_codex)
            .arg("exec")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().context("no stdin")?;
        stdin.write_all(b"bench events=1").await?;
        drop(stdin);
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        lines
            .next_line()
            .await?
            .context("the fake printed nothing")?;
        times.push(u64::try_from(started.elapsed().as_micros())?);
        while lines.next_line().await?.is_some() {}
        let status = child.wait().await?;
        if !status.success() {
            bail!("the fake CLI exited with {status}");
        }
    }
    times.sort_unstable();
    Ok(Measurement {
        scenario: "S4 the fake CLI alone: spawn → first line".into(),
        path: "fake CLI alone",
        figures: vec![
            ("p50", percentile(&times, 50.0) as f64 / 1000.0, "ms"),
            (
                "max",
                times.last().copied().unwrap_or(0) as f64 / 1000.0,
                "ms",
            ),
        ],
        complete: runs,
        subscribers: runs,
        gaps: 0,
        duplicates: 0,
        errors: Vec::new(),
        usage: Vec::new(),
    })
}
