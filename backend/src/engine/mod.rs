//! The backend's work behind the API: cloning sessions, running each
//! session's prompts one at a time in order, relaying each run's events from
//! the runner into Postgres and the live tail, and picking all of that up
//! again after a restart.
//!
//! [`Engine`] is the facade the API sees: [`Engine::spawn_clone`],
//! [`Engine::kick`] (a prompt was queued), [`Engine::cancel`],
//! [`Engine::delete_session`], [`Engine::recover`] and [`Engine::shutdown`],
//! plus read access to the store, the live tails, the session feed and the
//! count of open streams. Each concern is its own module:
//!
//! - `clones` — a session's clone, its progress, its deletion and leftover
//!   folders;
//! - `queue` — one worker per session runs its runs in order, starts them on
//!   the runner and cancels them;
//! - `relay` — follows a run's stream on the runner into Postgres and the
//!   live tail, never dropping an event;
//! - `outcome` — a run's end: its outcome, its files and its terminal event;
//! - `sweeper` — the size of each workspace, and the expiry of idle
//!   sessions and of the longest idle past the total quota.
//!
//! Every task the engine spawns belongs to its [`TaskTracker`] and stops
//! when its [`CancellationToken`] is cancelled: [`Engine::shutdown`] cancels
//! and waits, after the server has stopped taking requests.

mod clones;
mod outcome;
mod queue;
mod relay;
mod sweeper;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Config;
use crate::hub::Hubs;
use crate::open_streams::OpenStreams;
use crate::runner_client::RunnerClient;
use crate::session_changes::SessionChanges;
use crate::store::Store;

use clones::CloneTask;

/// The first pause before a failed database call is tried again; it doubles
/// up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Failures of one call logged as warnings before they are errors: a short
/// blip (a restart of Postgres, a dropped connection) is not an operator's
/// business, an outage is.
const QUIET_FAILURES: u32 = 5;

pub struct Engine {
    config: Arc<Config>,
    store: Store,
    runner: RunnerClient,
    hubs: Arc<Hubs>,
    /// Which sessions changed, announced by Postgres.
    changes: SessionChanges,
    /// The event streams each user holds open.
    open_streams: Arc<OpenStreams>,
    /// Canonical `WORKSPACES_ROOT`.
    root: PathBuf,
    /// One worker per session with queued or running runs. Held only to
    /// look up, add or remove an entry, never across a database call.
    workers: tokio::sync::Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Clones in progress, by session. Whoever takes a session out of here
    /// while it is marked deleted (the clone task) or finds it absent (a
    /// delete) removes its folder: under this lock exactly one of them does.
    clones: Mutex<HashMap<Uuid, CloneTask>>,
    /// Bytes the checkouts in progress are about to write.
    checkout_reserved: Arc<std::sync::atomic::AtomicU64>,
    /// Every task the engine spawns: clones, session workers (with the
    /// relays they run) and the session-change listener.
    tasks: TaskTracker,
    /// Cancelled when the backend stops.
    stopping: CancellationToken,
    metrics: Arc<crate::metrics::Metrics>,
    /// For the forges' APIs (pull requests); `None` when it could not be
    /// built (logged at start).
    forge_client: Option<reqwest::Client>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    pub fn new(config: Arc<Config>, store: Store, root: PathBuf) -> Arc<Self> {
        let tasks = TaskTracker::new();
        let stopping = CancellationToken::new();
        let changes = SessionChanges::listen(config.database_url.clone(), &tasks, &stopping);
        let forge_client = crate::forge::client(
            &config.clone_policy,
            config.limits.clone_connect_timeout,
            config.limits.clone_io_timeout,
        )
        .inspect_err(|error| {
            tracing::error!(error.cause_chain = ?error, "no client for the forges' APIs: pull requests fail");
        })
        .ok();
        Arc::new(Self {
            forge_client,
            runner: RunnerClient::new(&config.runner_url, config.runner_token.as_deref()),
            hubs: Arc::new(Hubs::new(
                config.limits.max_events_per_run,
                config.limits.live_tail_bytes,
            )),
            changes,
            open_streams: OpenStreams::new(config.limits.user_max_streams),
            config,
            store,
            root,
            workers: tokio::sync::Mutex::new(HashMap::new()),
            clones: Mutex::new(HashMap::new()),
            checkout_reserved: Arc::default(),
            tasks,
            stopping,
            metrics: Arc::default(),
        })
    }

    /// The figures of `/metrics`.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// For reads; every change of a session or a run goes through the
    /// engine.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The live tails of active runs, for subscribers.
    pub fn hubs(&self) -> &Arc<Hubs> {
        &self.hubs
    }

    pub fn changes(&self) -> &SessionChanges {
        &self.changes
    }

    /// The event streams each user holds open (`BACKEND_USER_MAX_STREAMS`).
    pub fn open_streams(&self) -> &Arc<OpenStreams> {
        &self.open_streams
    }

    /// The forges pull requests are opened on (`FORGES` and the known ones).
    pub fn forges(&self) -> &crate::forge::Forges {
        &self.config.forges
    }

    pub fn forge_client(&self) -> Result<&reqwest::Client, crate::forge::ForgeError> {
        self.forge_client.as_ref().ok_or_else(|| {
            crate::forge::ForgeError::Unavailable("no HTTP client for forges".into())
        })
    }

    pub fn runner(&self) -> &RunnerClient {
        &self.runner
    }

    /// `WORKSPACES_ROOT/<session>`: the session's folder.
    pub fn session_dir(&self, session: Uuid) -> PathBuf {
        self.root.join(session.to_string())
    }

    /// `WORKSPACES_ROOT/<session>/repo`: the clone the agent works in.
    pub fn workspace(&self, session: Uuid) -> PathBuf {
        self.session_dir(session).join("repo")
    }

    /// Where the session's workspace snapshots keep their index.
    pub fn snapshot_cache(&self, session: Uuid) -> crate::git::SnapshotCache {
        crate::git::SnapshotCache::new(&self.snapshot_dir(session))
    }

    /// `<WORKSPACES_ROOT>/.snapshots/<session>`: out of the session's
    /// folder, which the session's agent sees (see `git::SnapshotCache`).
    pub fn snapshot_dir(&self, session: Uuid) -> PathBuf {
        self.root.join(".snapshots").join(session.to_string())
    }

    /// Stops every task the engine spawned and waits for them, at most
    /// `grace`. Called after the server stopped taking requests: clones end
    /// (the next start fails them as interrupted), workers stop between
    /// steps, and relays stop reading with what they read stored, so the
    /// next start re-attaches to the runs still running on the runner.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "tasks still busy at shutdown (a database call retrying?); leaving them"
            );
        }
    }

    /// Sleeps, or returns at once when the backend stops.
    async fn pause(&self, duration: Duration) {
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = self.stopping.cancelled() => {}
        }
    }

    /// Picks up what a previous process left: interrupted clones fail (their
    /// token, if any, was never stored) and lose their partial folder,
    /// folders of sessions that no longer exist go, queued and running runs
    /// resume. Runs before the API serves, so no clone is in progress.
    pub async fn recover(self: &Arc<Self>) -> crate::store::Result<()> {
        for session in self.store.interrupted_clones().await? {
            tracing::warn!(session_id = %session, "clone interrupted by a restart");
            self.remove_session_dir(session).await;
            self.store
                .mark_failed(session, "the clone was interrupted by a restart of the backend; delete this session and create it again")
                .await?;
        }
        self.remove_orphans().await?;
        let mut sessions = std::collections::BTreeSet::new();
        for run in self.store.active_runs().await? {
            let first = self.store.last_seq(run.id).await? as u64 + 1;
            self.hubs.open(run.id, first);
            sessions.insert(run.session_id);
        }
        for session in sessions {
            self.kick(session).await;
        }
        Ok(())
    }
}

/// Calls `call` until it succeeds, pausing between attempts (doubling up to
/// `MAX_BACKOFF`). For writes whose data exists nowhere else once dropped:
/// a run's events and its outcome. While Postgres is away the caller waits
/// here; nothing it holds is lost.
async fn retry_forever<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::store::Result<T>>,
{
    loop {
        // Only after `u32::MAX` failures in a row does this come back with
        // an error; then the count starts again.
        if let Ok(value) = retry_bounded(what, u32::MAX, &mut call).await {
            return value;
        }
    }
}

/// `retry_forever` with at most `attempts` calls; the last error is the
/// caller's.
async fn retry_bounded<T, F, Fut>(what: &str, attempts: u32, mut call: F) -> crate::store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::store::Result<T>>,
{
    let mut delay = FIRST_BACKOFF;
    let mut failures = 0u32;
    loop {
        match call().await {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(what, failures, "database call went through after retrying");
                }
                return Ok(value);
            }
            Err(error) => {
                failures += 1;
                if failures >= attempts {
                    return Err(error);
                }
                log_failure(what, failures, &error);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn log_failure(what: &str, failures: u32, error: &crate::store::StoreError) {
    if failures <= QUIET_FAILURES {
        tracing::warn!(error.cause_chain = ?error, what, failures, "database call failed; retrying");
    } else {
        tracing::error!(error.cause_chain = ?error, what, failures, "database call keeps failing; retrying");
    }
}
