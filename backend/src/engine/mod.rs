//! The backend's work behind the API, behind one facade that speaks
//! intentions: [`Engine::create_session`], [`Engine::enqueue_prompt`],
//! [`Engine::cancel`], [`Engine::subscribe`], [`Engine::approve`] (and the
//! other controls of a running run), [`Engine::delete_session`], and
//! read-only queries through [`Engine::reads`]. Routes call these; the store,
//! the live tails and the runner's client are private to this module, so a
//! route cannot change a session or a run any other way.
//!
//! Inside, each concern is a type with its own private state:
//!
//! - [`runs::Runs`] — each session's queue (one worker per session), the
//!   cancel state machine and a run's outcome; the only code that opens a
//!   run's live tail;
//! - `relay` — follows a run's stream on the runner into the tail it is
//!   given and into Postgres, never dropping an event;
//! - [`clones::Clones`] — a session's clone, its progress, its deletion and
//!   leftover folders;
//! - [`sweeper::Sweeper`] — the expiry of idle sessions and of the longest
//!   idle past the total quota;
//! - `core` — what they all share (configuration, store, runner client,
//!   tails, metrics, tasks); `reads` — the read-only handle; `hub` — the
//!   live tails; `runner_client` — the runner's HTTP API; `retry` — retried
//!   database calls.
//!
//! Every task the engine spawns belongs to its `TaskTracker` and stops when
//! its `CancellationToken` is cancelled: [`Engine::shutdown`] cancels and
//! waits, after the server has stopped taking requests.

mod clones;
mod core;
mod hub;
mod reads;
mod relay;
mod retry;
mod runner_client;
mod runs;
mod sweeper;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use runner_protocol::{ApprovalDecision, ApprovalId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::auth::Accounts;
use crate::config::Config;
use crate::domain::{Prompt, RepoUrl, RunStatus, RunnerRunId, SessionSettings};
use crate::git::{CloneRequest, LocalSource, LocalSourceError};
use crate::metrics::{Metrics, Rejection};
use crate::open_streams::OpenStreams;
use crate::session_changes::SessionChanges;
use crate::store::{NewSession, OwnedInsert, RunRow, SessionRow, Store, StoreError};

use self::core::Core;
use clones::Clones;
use runs::Runs;
use sweeper::Sweeper;

pub(crate) use reads::Reads;
pub(crate) use runner_client::{ClientError, RunnerError, RunnerModel};
pub(crate) use runs::{Cancel, PromptRefused, QueuedRun};

pub struct Engine {
    core: Arc<Core>,
    runs: Arc<Runs>,
    clones: Arc<Clones>,
    sweeper: Arc<Sweeper>,
    reads: Reads,
    accounts: Accounts,
    /// Which sessions changed, announced by Postgres.
    changes: SessionChanges,
    /// The event streams each user holds open.
    open_streams: Arc<OpenStreams>,
    /// For the forges' APIs (pull requests); `None` when it could not be
    /// built (logged at start).
    forge_client: Option<reqwest::Client>,
}

/// A session to create: checked and parsed by the caller.
pub struct NewSessionRequest {
    pub id: Uuid,
    pub clone: CloneRequest,
    pub settings: SessionSettings,
    /// The token to keep for pushes, sealed for this session.
    pub sealed_token: Option<Vec<u8>>,
}

/// Why a session was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateRefused {
    #[error(
        "you have {max} sessions, the most one user may have \
         (BACKEND_USER_MAX_SESSIONS); delete one first"
    )]
    TooManySessions { max: i64 },
    #[error(
        "your workspaces hold {held} bytes, at least the {max} one user may have \
         (BACKEND_USER_MAX_WORKSPACE_BYTES); delete a session first"
    )]
    TooManyBytes { held: i64, max: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A commit to make in a session's workspace: everything, onto `branch`.
pub struct CommitIntent {
    pub message: crate::domain::CommitMessage,
    pub branch: crate::domain::BranchName,
    pub author_name: String,
    pub author_email: String,
}

/// Why a commit or a push did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceRefused<E> {
    /// A run of the session is queued or running: it may change the
    /// workspace under the commit or push.
    #[error("a run of session {0} is queued or running: try again once it has ended")]
    Busy(Uuid),
    /// Another commit or push of the session holds its workspace.
    #[error("another commit or push of session {0} is under way: try again once it has ended")]
    InUse(Uuid),
    #[error(transparent)]
    Git(E),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the git task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Why a control (approval, steer, interrupt) did not reach the run.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("run {run} is {status}: only a running run takes approvals, steering and interrupts")]
    NotRunning { run: Uuid, status: RunStatus },
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

impl Engine {
    pub(crate) fn new(
        config: Arc<Config>,
        store: Store,
        root: PathBuf,
    ) -> Result<Arc<Self>, ClientError> {
        let tasks = TaskTracker::new();
        let stopping = CancellationToken::new();
        let runner =
            runner_client::RunnerClient::new(&config.runner_url, config.runner_token.as_deref())?;
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
        let core = Arc::new(Core {
            hubs: Arc::new(hub::Hubs::new(
                config.limits.max_events_per_run,
                config.limits.live_tail_bytes,
            )),
            runner,
            metrics: Arc::default(),
            config: config.clone(),
            store: store.clone(),
            root,
            tasks,
            stopping,
        });
        let runs = Runs::new(core.clone());
        let clones = Clones::new(core.clone(), runs.clone());
        Ok(Arc::new(Self {
            sweeper: Sweeper::new(core.clone(), clones.clone()),
            reads: Reads::new(core.clone()),
            accounts: Accounts::new(store),
            open_streams: OpenStreams::new(config.limits.user_max_streams),
            forge_client,
            changes,
            runs,
            clones,
            core,
        }))
    }

    pub(crate) fn config(&self) -> &Config {
        &self.core.config
    }

    /// The figures of `/metrics`.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.core.metrics
    }

    /// Read-only queries.
    pub(crate) fn reads(&self) -> &Reads {
        &self.reads
    }

    /// Users, tokens, sign-ins and preview grants.
    pub(crate) fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub(crate) fn changes(&self) -> &SessionChanges {
        &self.changes
    }

    /// The event streams each user holds open (`BACKEND_USER_MAX_STREAMS`).
    pub(crate) fn open_streams(&self) -> &Arc<OpenStreams> {
        &self.open_streams
    }

    /// The forges pull requests are opened on (`FORGES` and the known ones).
    pub(crate) fn forges(&self) -> &crate::forge::Forges {
        &self.core.config.forges
    }

    pub(crate) fn forge_client(&self) -> Result<&reqwest::Client, crate::forge::ForgeError> {
        self.forge_client.as_ref().ok_or_else(|| {
            crate::forge::ForgeError::Unavailable("no HTTP client for forges".into())
        })
    }

    /// Whether the runner answers its health check.
    pub(crate) async fn runner_answers(&self) -> bool {
        self.core.runner.health().await.is_ok()
    }

    /// The models the runner's CLI offers.
    pub(crate) async fn models(&self) -> Result<Vec<RunnerModel>, RunnerError> {
        self.core.runner.models().await
    }

    /// For a local `url`, the check that its path is outside
    /// `WORKSPACES_ROOT` and `BACKEND_FORBIDDEN_CLONE_PATHS`, which a
    /// [`CloneRequest`] for it needs; `None` for a remote.
    pub(crate) async fn local_source(
        &self,
        url: &RepoUrl,
    ) -> Result<Option<LocalSource>, LocalSourceError> {
        self.clones.local_source(url).await
    }

    /// Creates a session, `cloning`, owned by `owner` (within their quota),
    /// and clones it in the background: it becomes `ready` (with a runner
    /// thread) or `failed` (with a message).
    pub(crate) async fn create_session(
        &self,
        request: NewSessionRequest,
        owner: Option<Uuid>,
    ) -> Result<SessionRow, CreateRefused> {
        let NewSessionRequest {
            id,
            clone,
            settings,
            sealed_token,
        } = request;
        let store = &self.core.store;
        let new = NewSession {
            repo_url: clone.url.as_str(),
            git_ref: clone.git_ref.as_ref().map(|r| r.as_str()),
            depth: clone.depth.map(|d| d.get()),
            settings: &settings,
        };
        let row = match owner {
            Some(owner) => {
                let limits = &self.core.config.limits;
                let (max, max_bytes) = (limits.user_max_sessions, limits.user_max_workspace_bytes);
                match store
                    .insert_owned_session(id, new, owner, max, max_bytes)
                    .await?
                {
                    OwnedInsert::Inserted(row) => *row,
                    OwnedInsert::TooManySessions => {
                        self.core.metrics.rejected(Rejection::Quota);
                        return Err(CreateRefused::TooManySessions { max });
                    }
                    OwnedInsert::TooManyBytes(held) => {
                        self.core.metrics.rejected(Rejection::Quota);
                        return Err(CreateRefused::TooManyBytes {
                            held,
                            max: max_bytes,
                        });
                    }
                }
            }
            None => store.insert_session(id, new, None).await?,
        };
        if let Some(sealed) = &sealed_token {
            store.set_session_token(id, sealed).await?;
        }
        tracing::info!(session_id = %id, url = %clone.url.as_str(), keep_token = sealed_token.is_some(), "session created");
        self.clones.spawn(id, clone);
        Ok(row)
    }

    /// Cancels the session's work, forgets it and removes its folder.
    pub(crate) async fn delete_session(&self, session: &SessionRow) -> crate::store::Result<()> {
        self.clones.delete_session(session).await
    }

    /// Queues `prompt` as the session's next run (`owner`: the caller, whose
    /// quota of active runs it counts against).
    pub(crate) async fn enqueue_prompt(
        &self,
        session: &SessionRow,
        owner: Option<Uuid>,
        prompt: &Prompt,
    ) -> Result<QueuedRun, PromptRefused> {
        self.runs.enqueue(session, owner, prompt).await
    }

    /// Cancels a queued or running run.
    pub(crate) async fn cancel(&self, run: &RunRow) -> crate::store::Result<Cancel> {
        self.runs.cancel(run).await
    }

    /// The run's events after `after` as SSE frames: what is stored, then
    /// the live tail, until the terminal event.
    pub(crate) fn subscribe(&self, run: Uuid, after: u64) -> impl Stream<Item = Bytes> + Send {
        self.runs.subscribe(run, after)
    }

    /// Answers an approval the running run asked for.
    pub(crate) async fn approve(
        &self,
        run: &RunRow,
        approval: &ApprovalId,
        decision: ApprovalDecision,
        by: Option<String>,
    ) -> Result<(), ControlError> {
        let runner_run = running(run)?;
        Ok(self
            .core
            .runner
            .resolve_approval(runner_run, approval, decision, by)
            .await?)
    }

    /// Sends a prompt into the running run's turn.
    pub(crate) async fn steer(&self, run: &RunRow, prompt: &Prompt) -> Result<(), ControlError> {
        let runner_run = running(run)?;
        Ok(self
            .core
            .runner
            .steer_run(runner_run, prompt.as_str())
            .await?)
    }

    /// Stops the running run's turn; the run ends `cancelled`.
    pub(crate) async fn interrupt(&self, run: &RunRow) -> Result<(), ControlError> {
        let runner_run = running(run)?;
        Ok(self.core.runner.interrupt_run(runner_run).await?)
    }

    /// Commits everything in the session's workspace `dir` onto the
    /// intent's branch (never the branch it was cloned from), which becomes
    /// HEAD. Refused while a run is queued or running. `permit` is the
    /// caller's place in its gate of blocking git work, held until the
    /// commit is made.
    pub(crate) async fn commit(
        &self,
        session: &SessionRow,
        dir: PathBuf,
        intent: CommitIntent,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<crate::git::Committed, WorkspaceRefused<crate::git::CommitError>> {
        let lease = self.lease_idle_workspace(session.id).await?;
        let cache = self.core.snapshot_cache(session.id);
        let cloned_branch = session.cloned_branch.clone();
        let span = tracing::Span::current();
        let made = tokio::task::spawn_blocking(move || {
            let (_permit, _lease) = (permit, lease);
            let _entered = span.enter();
            crate::git::commit(
                &dir,
                &cache,
                &crate::git::CommitRequest {
                    message: &intent.message,
                    branch: &intent.branch,
                    cloned_branch: cloned_branch.as_deref(),
                    author_name: &intent.author_name,
                    author_email: &intent.author_email,
                },
            )
        })
        .await
        .map_err(WorkspaceRefused::Task)?;
        made.map_err(WorkspaceRefused::Git)
    }

    /// Pushes a branch of the session's workspace `dir` as `request` says.
    /// Refused while a run is queued or running.
    pub(crate) async fn push(
        &self,
        session: &SessionRow,
        dir: PathBuf,
        request: crate::git::PushRequest,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<crate::git::Pushed, WorkspaceRefused<crate::git::PushError>> {
        let lease = self.lease_idle_workspace(session.id).await?;
        let span = tracing::Span::current();
        let pushed = tokio::task::spawn_blocking(move || {
            let (_permit, _lease) = (permit, lease);
            let _entered = span.enter();
            crate::git::push(&dir, &request)
        })
        .await
        .map_err(WorkspaceRefused::Task)?;
        pushed.map_err(WorkspaceRefused::Git)
    }

    /// The session's workspace lease, for a commit or push: refused while
    /// a run is queued or running, or another commit or push holds it. A
    /// prompt queued after the check waits for the lease before its run
    /// starts.
    async fn lease_idle_workspace<E>(
        &self,
        session: Uuid,
    ) -> Result<runs::Lease, WorkspaceRefused<E>> {
        // Asked first, so that a run holding the lease is told as a run.
        let busy = self.core.store.session_busy(session).await?;
        let lease = self.runs.try_lease(session);
        match lease {
            _ if busy => Err(WorkspaceRefused::Busy(session)),
            Some(lease) => Ok(lease),
            None => Err(WorkspaceRefused::InUse(session)),
        }
    }

    /// Records a pull request opened from the session's branch.
    pub(crate) async fn record_pull_request(
        &self,
        session: Uuid,
        number: i64,
        url: &str,
        head: &str,
        base: &str,
    ) -> crate::store::Result<()> {
        self.core
            .store
            .insert_pull_request(session, number, url, head, base)
            .await
    }

    /// Picks up what a previous process left: interrupted clones fail and
    /// lose their partial folder, folders of sessions that no longer exist
    /// go, queued and running runs resume. Runs before the API serves.
    pub(crate) async fn recover(&self) -> crate::store::Result<()> {
        self.clones.recover().await?;
        self.runs.recover().await
    }

    /// Starts the sweeper (if anything ever expires).
    pub(crate) fn spawn_sweeper(&self) {
        self.sweeper.spawn();
    }

    /// Stops every task the engine spawned and waits for them, at most
    /// `grace`. Called after the server stopped taking requests: clones end
    /// (the next start fails them as interrupted), workers stop between
    /// steps, and relays stop reading with what they read stored, so the
    /// next start re-attaches to the runs still running on the runner.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        let core = &self.core;
        core.stopping.cancel();
        core.tasks.close();
        if tokio::time::timeout(grace, core.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = core.tasks.len(),
                "tasks still busy at shutdown (a database call retrying?); leaving them"
            );
        }
    }
}

/// The runner's id of a running run; the refusal for any other.
fn running(run: &RunRow) -> Result<&RunnerRunId, ControlError> {
    match (&run.status, &run.runner_run_id) {
        (RunStatus::Running, Some(runner_run)) => Ok(runner_run),
        (status, _) => Err(ControlError::NotRunning {
            run: run.id,
            status: *status,
        }),
    }
}
