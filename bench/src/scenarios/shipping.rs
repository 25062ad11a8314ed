//! S7: getting the agent's work out of a large workspace. A repository of
//! many small text files in nested folders is cloned twice: by the backend
//! as a session, and by `git clone` beside it. Each round makes the same
//! changes on disk in both (files changed, added and deleted, as an agent
//! would), then times:
//! - `GET /api/sessions/{id}/patch`, downloaded to its last byte, against
//!   `git diff --binary --full-index HEAD` (the new files made known to git
//!   with `git add -N`, so that its patch has them too), and against git
//!   doing what the backend does (`git add -A` into an index of its own,
//!   `git write-tree`, `git diff-tree`), the first request after the change
//!   and once more;
//! - `POST /api/sessions/{id}/commits` against `git add -A` and
//!   `git commit`.
//!
//! Each patch must be `git diff`'s, byte for byte, and each commit's tree
//! git's.
//! And while a patch of the large workspace is made, `GET /health` and
//! another session's `GET /api/sessions/{id}` are polled: their latency,
//! next to the same polling of the idle server.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::{Measurement, Sizes};
use crate::client::{create_session, delete_session, percentile};
use crate::procstat::{Sampler, Usage};
use crate::repos::{git, git_bytes, git_bytes_with_index, large_repo, text_file, text_line, Rng};
use crate::stack::Stack;

/// The baselines' paths, in the report.
pub const GIT_DIFF: &str = "git diff";
pub const GIT_SNAPSHOT: &str = "git add -A, write-tree, diff-tree (own index)";
pub const GIT_COMMIT: &str = "git add -A && git commit";
pub const IDLE: &str = "idle server";

/// Pause between two requests of a poller.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// The shortest idle polling.
const MIN_IDLE_POLL: Duration = Duration::from_millis(500);

/// Runs S7: the patch first after a change and once more (the whole stack,
/// `git diff`, and git doing the backend's work), polling during a patch
/// (the whole stack, the idle server), and the commit (the whole stack,
/// `git add -A && git commit`).
pub(super) async fn s7(
    stack: &Stack,
    http: &reqwest::Client,
    sizes: &Sizes,
) -> anyhow::Result<Vec<Measurement>> {
    let dir = stack.scratch.join("s7");
    let source = dir.join("source");
    std::fs::create_dir_all(&source)?;
    let started = Instant::now();
    let files = large_repo(&source, sizes.s7_files).await?;
    tracing::info!(
        files = files.len(),
        secs = started.elapsed().as_secs_f64(),
        "S7 repository made"
    );

    let url = format!("file://{}", source.display());
    let started = Instant::now();
    let big = create_session(http, &stack.backend_url, &json!({"repo_url": url})).await?;
    let workspace = PathBuf::from(
        big.session["repo_path"]
            .as_str()
            .context("the ready session has no repo_path")?,
    );
    tracing::info!(secs = started.elapsed().as_secs_f64(), "S7 session ready");
    let copy = dir.join("git-copy");
    git(
        &dir,
        &["clone", "--quiet", &url, &copy.display().to_string()],
    )
    .await?;
    let heads = (
        git(&workspace, &["rev-parse", "HEAD"]).await?,
        git(&copy, &["rev-parse", "HEAD"]).await?,
    );
    if heads.0 != heads.1 {
        bail!("the session checked out {} and git {}", heads.0, heads.1);
    }
    let small = create_session(
        http,
        &stack.backend_url,
        &json!({"repo_url": format!("file://{}", stack.repo.display())}),
    )
    .await?;

    let own_index = dir.join("git-own-index");
    let sides = Sides {
        http,
        base: &stack.backend_url,
        session: &big.id,
        workspace: &workspace,
        copy: &copy,
        own_index: &own_index,
        base_commit: &heads.1,
    };
    // Untimed: both indexes fresh (the backend snapshots the workspace
    // before and after each run, so its index is when a run has ended), and
    // both trees in the page cache.
    let (_, empty) = sides.download_patch().await?;
    if !empty.is_empty() {
        bail!(
            "the fresh session's patch is not empty ({} bytes)",
            empty.len()
        );
    }
    git(&copy, &["update-index", "-q", "--refresh"]).await?;
    std::fs::copy(copy.join(".git/index"), &own_index)?;
    for maker in [Maker::GitDiff, Maker::GitSnapshot] {
        let (_, empty) = sides.patch(maker).await?;
        if !empty.is_empty() {
            bail!("{maker:?}: the fresh copy's patch is not empty");
        }
    }

    let mut workload = Workload {
        pool: files,
        rng: Rng::new(21),
        round: 0,
        sizes: sizes.clone(),
    };
    workload.shuffle();
    let label = format!(
        "S7 {} files, {} changed + {} new + {} deleted",
        sizes.s7_files, sizes.s7_modified, sizes.s7_added, sizes.s7_deleted
    );
    let mut out = Vec::new();
    out.extend(patches(&sides, stack, &mut workload, &label, sizes.s7_repeats).await?);
    out.extend(probe(&sides, stack, &mut workload, &label, &small.id).await?);
    out.extend(commits(&sides, stack, &mut workload, &label, sizes.s7_repeats).await?);

    delete_session(http, &stack.backend_url, &small.id).await?;
    delete_session(http, &stack.backend_url, &big.id).await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(out)
}

/// The two copies of the repository, and how to reach the session's.
struct Sides<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    session: &'a str,
    workspace: &'a Path,
    copy: &'a Path,
    /// An index of git's own for the copy, kept from one round to the next
    /// as the backend keeps its own.
    own_index: &'a Path,
    /// The commit both were cloned at.
    base_commit: &'a str,
}

impl Sides<'_> {
    /// `GET /api/sessions/{id}/patch`, read to its last byte.
    async fn download_patch(&self) -> anyhow::Result<(Duration, Vec<u8>)> {
        let url = format!("{}/api/sessions/{}/patch", self.base, self.session);
        let started = Instant::now();
        let response = self.http.get(&url).send().await?;
        if response.status() != 200 {
            bail!(
                "GET {url} answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        let body = response.bytes().await?;
        Ok((started.elapsed(), body.to_vec()))
    }

    /// The patch of `maker`, timed.
    async fn patch(&self, maker: Maker) -> anyhow::Result<(Duration, Vec<u8>)> {
        match maker {
            Maker::Backend => self.download_patch().await,
            Maker::GitDiff => self.git_patch().await,
            Maker::GitSnapshot => self.git_snapshot_patch().await,
        }
    }

    /// `git diff --binary --full-index HEAD` in the copy, from spawn to exit.
    async fn git_patch(&self) -> anyhow::Result<(Duration, Vec<u8>)> {
        let started = Instant::now();
        let patch = git_bytes(self.copy, &["diff", "--binary", "--full-index", "HEAD"]).await?;
        Ok((started.elapsed(), patch))
    }

    /// The backend's work done by git in the copy: `git add -A` into an
    /// index of its own (as the backend's snapshot index), `git write-tree`
    /// and `git diff-tree -p --binary --full-index -M` from the base commit
    /// to that tree; from the first spawn to the last exit.
    async fn git_snapshot_patch(&self) -> anyhow::Result<(Duration, Vec<u8>)> {
        let index = Some(self.own_index);
        let started = Instant::now();
        git_bytes_with_index(self.copy, &["add", "-A"], index).await?;
        let tree = git_bytes_with_index(self.copy, &["write-tree"], index).await?;
        let tree = String::from_utf8_lossy(&tree).trim().to_owned();
        let patch = git_bytes(
            self.copy,
            &[
                "diff-tree",
                "-p",
                "--binary",
                "--full-index",
                "-M",
                self.base_commit,
                &tree,
            ],
        )
        .await?;
        Ok((started.elapsed(), patch))
    }

    /// `POST /api/sessions/{id}/commits`; returns the time and the commit's
    /// tree.
    async fn commit(&self, message: &str) -> anyhow::Result<(Duration, String)> {
        let url = format!("{}/api/sessions/{}/commits", self.base, self.session);
        let started = Instant::now();
        let response = self
            .http
            .post(&url)
            .json(&json!({"message": message}))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        let elapsed = started.elapsed();
        if status != 201 {
            bail!("POST {url} answered {status}: {body}");
        }
        let sha = body["sha"].as_str().context("the commit has no sha")?;
        let tree = git(self.workspace, &["rev-parse", &format!("{sha}^{{tree}}")]).await?;
        Ok((elapsed, tree))
    }

    /// `git add -A` and `git commit` in the copy; returns the time and the
    /// commit's tree.
    async fn git_commit(&self, message: &str) -> anyhow::Result<(Duration, String)> {
        let started = Instant::now();
        git(self.copy, &["add", "-A"]).await?;
        git(self.copy, &["commit", "-q", "-m", message]).await?;
        let elapsed = started.elapsed();
        Ok((
            elapsed,
            git(self.copy, &["rev-parse", "HEAD^{tree}"]).await?,
        ))
    }

    /// Makes `changes` in both copies; the copy's new files are made known
    /// to git (`git add -N`) so that `git diff HEAD` shows them. Git's
    /// index is refreshed first, as the backend's was by its last request:
    /// each side then reads only the files of this round.
    async fn change(&self, changes: &Changes) -> anyhow::Result<()> {
        git(self.copy, &["update-index", "-q", "--refresh"]).await?;
        for dir in [self.workspace, self.copy] {
            changes.apply(dir)?;
        }
        let mut args = vec!["add", "-N", "--"];
        args.extend(changes.added.iter().map(String::as_str));
        git(self.copy, &args).await?;
        Ok(())
    }
}

/// One side's repeated timings, and how many of them matched git.
#[derive(Default)]
struct Timings {
    secs: Vec<f64>,
    bytes: Vec<usize>,
    matching: usize,
    errors: Vec<String>,
}

impl Timings {
    fn push(&mut self, elapsed: Duration) {
        self.secs.push(elapsed.as_secs_f64());
    }

    fn measurement(
        self,
        scenario: String,
        path: &'static str,
        usage: Vec<Usage>,
        size_figure: bool,
    ) -> Measurement {
        let mut secs = self.secs;
        secs.sort_by(f64::total_cmp);
        let at = |i: usize| secs.get(i).copied().unwrap_or(0.0);
        let mut figures = vec![
            ("median", at(secs.len() / 2), "s"),
            ("min", at(0), "s"),
            ("max", at(secs.len().saturating_sub(1)), "s"),
        ];
        if size_figure {
            let mean = self.bytes.iter().sum::<usize>() as f64 / self.bytes.len().max(1) as f64;
            figures.push(("patch", mean / 1e3, "KB"));
        }
        Measurement {
            scenario,
            path,
            figures,
            complete: self.matching,
            subscribers: secs.len(),
            gaps: 0,
            duplicates: 0,
            errors: self.errors,
            usage,
        }
    }
}

/// Who makes a patch.
#[derive(Debug, Clone, Copy)]
enum Maker {
    Backend,
    GitDiff,
    GitSnapshot,
}

impl Maker {
    const ALL: [Maker; 3] = [Maker::Backend, Maker::GitDiff, Maker::GitSnapshot];

    fn path(self) -> &'static str {
        match self {
            Maker::Backend => "whole stack",
            Maker::GitDiff => GIT_DIFF,
            Maker::GitSnapshot => GIT_SNAPSHOT,
        }
    }
}

/// Rounds of changes, each patched by every maker twice: the first request
/// after the change (which reads the changed files) and once more. Each
/// round another maker goes first. Git's `git diff` is the reference every
/// other patch must equal.
async fn patches(
    sides: &Sides<'_>,
    stack: &Stack,
    workload: &mut Workload,
    label: &str,
    repeats: usize,
) -> anyhow::Result<Vec<Measurement>> {
    let mut first: [Timings; 3] = Default::default();
    let mut again: [Timings; 3] = Default::default();
    let sampler = Sampler::start(stack.stack_processes());
    for round in 0..repeats {
        let changes = workload.next(sides.copy)?;
        sides.change(&changes).await?;
        for timings in [&mut first, &mut again] {
            let mut made: [(Duration, Vec<u8>); 3] = Default::default();
            for turn in 0..Maker::ALL.len() {
                let k = (turn + round) % Maker::ALL.len();
                made[k] = sides.patch(Maker::ALL[k]).await?;
            }
            let reference = &made[1].1;
            for (maker, ((took, patch), timings)) in
                Maker::ALL.iter().zip(made.iter().zip(timings.iter_mut()))
            {
                timings.push(*took);
                timings.bytes.push(patch.len());
                if patch == reference {
                    timings.matching += 1;
                } else {
                    timings.errors.push(format!(
                        "round {round}: the patch of {maker:?} ({} bytes) is not git diff's ({} bytes); first difference at byte {}",
                        patch.len(),
                        reference.len(),
                        patch.iter().zip(reference).take_while(|(a, b)| a == b).count()
                    ));
                }
            }
        }
    }
    let usage = sampler.finish();
    let mut out = Vec::new();
    for (when, timings) in [
        ("first request after the change", first),
        ("once more", again),
    ] {
        for (maker, timings) in Maker::ALL.iter().zip(timings) {
            let usage = match maker {
                Maker::Backend => usage.clone(),
                _ => Vec::new(),
            };
            out.push(timings.measurement(
                format!("{label}: patch, {when}"),
                maker.path(),
                usage,
                true,
            ));
        }
    }
    Ok(out)
}

/// Rounds of changes, each committed by both sides.
async fn commits(
    sides: &Sides<'_>,
    stack: &Stack,
    workload: &mut Workload,
    label: &str,
    repeats: usize,
) -> anyhow::Result<[Measurement; 2]> {
    // Untimed: the earlier rounds' changes are committed first, so that
    // every timed commit holds one round's.
    let (_, tree) = sides.commit("bench: earlier rounds").await?;
    let (_, git_tree) = sides.git_commit("bench: earlier rounds").await?;
    if tree != git_tree {
        bail!("the backend committed tree {tree} and git {git_tree}");
    }
    let [mut ours, mut theirs] = [Timings::default(), Timings::default()];
    let sampler = Sampler::start(stack.stack_processes());
    for round in 0..repeats {
        let changes = workload.next(sides.copy)?;
        sides.change(&changes).await?;
        let message = format!("bench: round {round}");
        let ((took, tree), (git_took, git_tree)) = if round % 2 == 0 {
            let backend = sides.commit(&message).await?;
            (backend, sides.git_commit(&message).await?)
        } else {
            let git = sides.git_commit(&message).await?;
            (sides.commit(&message).await?, git)
        };
        ours.push(took);
        theirs.push(git_took);
        theirs.matching += 1;
        if tree == git_tree {
            ours.matching += 1;
        } else {
            ours.errors.push(format!(
                "round {round}: the backend committed tree {tree} and git {git_tree}"
            ));
        }
    }
    let usage = sampler.finish();
    let scenario = format!("{label}: commit");
    Ok([
        ours.measurement(scenario.clone(), "whole stack", usage, false),
        theirs.measurement(scenario, GIT_COMMIT, Vec::new(), false),
    ])
}

/// `GET /health` and `GET /api/sessions/{small}`, polled while the server is
/// idle, then while the large workspace's patch (first after a change) is
/// made.
async fn probe(
    sides: &Sides<'_>,
    stack: &Stack,
    workload: &mut Workload,
    label: &str,
    small: &str,
) -> anyhow::Result<[Measurement; 2]> {
    let changes = workload.next(sides.copy)?;
    sides.change(&changes).await?;
    let targets = [
        format!("{}/health", sides.base),
        format!("{}/api/sessions/{small}", sides.base),
    ];
    let idle_sampler = Sampler::start(stack.stack_processes());
    let idle = Pollers::start(sides.http, &targets);
    tokio::time::sleep(MIN_IDLE_POLL).await;
    let idle = idle.finish().await?;
    let idle_usage = idle_sampler.finish();

    let sampler = Sampler::start(stack.stack_processes());
    let busy = Pollers::start(sides.http, &targets);
    let (took, patch) = sides.download_patch().await?;
    let busy = busy.finish().await?;
    let usage = sampler.finish();
    tracing::info!(
        secs = took.as_secs_f64(),
        bytes = patch.len(),
        polls = ?busy.each_ref().map(Vec::len),
        idle_polls = ?idle.each_ref().map(Vec::len),
        "S7 patch made while polling"
    );

    let scenario = format!("{label}: GET /health and another session's GET during a patch");
    let figures = |polled: &[Vec<u64>; 2]| {
        let ms = |v: u64| v as f64 / 1000.0;
        vec![
            ("health p50", ms(percentile(&polled[0], 50.0)), "ms"),
            (
                "health max",
                ms(polled[0].last().copied().unwrap_or(0)),
                "ms",
            ),
            ("session GET p50", ms(percentile(&polled[1], 50.0)), "ms"),
            (
                "session GET max",
                ms(polled[1].last().copied().unwrap_or(0)),
                "ms",
            ),
        ]
    };
    let mut busy_figures = figures(&busy);
    busy_figures.push(("patch", took.as_secs_f64(), "s"));
    let idle_figures = figures(&idle);
    let measurement = |path, figures, usage, polled: &[Vec<u64>; 2]| Measurement {
        scenario: scenario.clone(),
        path,
        figures,
        // Every poller answered at least once.
        complete: polled.iter().filter(|p| !p.is_empty()).count(),
        subscribers: polled.len(),
        gaps: 0,
        duplicates: 0,
        errors: Vec::new(),
        usage,
    };
    Ok([
        measurement("whole stack", busy_figures, usage, &busy),
        measurement(IDLE, idle_figures, idle_usage, &idle),
    ])
}

/// One poller per URL, each sending a request, reading its answer, waiting
/// [`POLL_EVERY`] and again, until stopped.
struct Pollers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<u64>>>>,
}

impl Pollers {
    fn start(http: &reqwest::Client, urls: &[String; 2]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = urls
            .iter()
            .map(|url| {
                let (http, url, stop) = (http.clone(), url.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let response = http.get(&url).send().await?;
                        let status = response.status();
                        response.bytes().await?;
                        if status != 200 {
                            bail!("GET {url} answered {status}");
                        }
                        latencies.push(u64::try_from(started.elapsed().as_micros())?);
                        tokio::time::sleep(POLL_EVERY).await;
                    }
                    Ok(latencies)
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the pollers (each ends its request in flight); returns each
    /// one's latencies in µs, sorted.
    async fn finish(self) -> anyhow::Result<[Vec<u64>; 2]> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out: [Vec<u64>; 2] = Default::default();
        for (slot, task) in out.iter_mut().zip(self.tasks) {
            let mut latencies = task.await??;
            latencies.sort_unstable();
            *slot = latencies;
        }
        Ok(out)
    }
}

/// The files a round changes: taken from a shuffled pool of the generated
/// files, so that no file is changed or deleted twice, and spread over the
/// whole tree.
struct Workload {
    pool: Vec<String>,
    rng: Rng,
    round: usize,
    sizes: Sizes,
}

/// One round's changes, the same in both copies.
struct Changes {
    /// Changed and new files, with their new content.
    written: Vec<(String, Vec<u8>)>,
    /// The new files among them.
    added: Vec<String>,
    deleted: Vec<String>,
}

impl Workload {
    fn shuffle(&mut self) {
        for i in (1..self.pool.len()).rev() {
            let j = self.rng.below(i + 1);
            self.pool.swap(i, j);
        }
    }

    fn take(&mut self) -> anyhow::Result<String> {
        self.pool
            .pop()
            .context("S7 ran out of files to change: make the repository larger")
    }

    /// The next round's changes; the changed files' current content is
    /// read from `current`. A changed file has one line replaced and two
    /// added, as an edit does.
    fn next(&mut self, current: &Path) -> anyhow::Result<Changes> {
        self.round += 1;
        let round = self.round;
        let mut written = Vec::new();
        for _ in 0..self.sizes.s7_modified {
            let path = self.take()?;
            let old = std::fs::read_to_string(current.join(&path))?;
            let mut lines: Vec<String> = old.lines().map(|l| format!("{l}\n")).collect();
            let at = self.rng.below(lines.len().max(1));
            let edit = format!("    // round {round}: {}", text_line(&mut self.rng));
            match lines.get_mut(at) {
                Some(line) => *line = edit,
                None => lines.push(edit),
            }
            lines.push(text_line(&mut self.rng));
            lines.push(text_line(&mut self.rng));
            written.push((path, lines.concat().into_bytes()));
        }
        let mut added = Vec::new();
        for n in 0..self.sizes.s7_added {
            // Beside a file still in the pool: in a folder that exists.
            let beside = self
                .pool
                .get(self.rng.below(self.pool.len().max(1)))
                .context("S7 ran out of files to change: make the repository larger")?;
            let folder = beside.rsplit_once('/').map_or("", |(folder, _)| folder);
            let path = format!("{folder}/new_{round}_{n}.rs");
            written.push((path.clone(), text_file(&mut self.rng)));
            added.push(path);
        }
        let deleted = (0..self.sizes.s7_deleted)
            .map(|_| self.take())
            .collect::<anyhow::Result<_>>()?;
        Ok(Changes {
            written,
            added,
            deleted,
        })
    }
}

impl Changes {
    fn apply(&self, dir: &Path) -> std::io::Result<()> {
        for (path, content) in &self.written {
            std::fs::write(dir.join(path), content)?;
        }
        for path in &self.deleted {
            std::fs::remove_file(dir.join(path))?;
        }
        Ok(())
    }
}
