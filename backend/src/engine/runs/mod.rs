//! Runs: each session's queue, the cancel state machine and the outcome.
//! This is the only code that opens a run's live tail (`Hubs::open`): when a
//! run is queued, when a run is picked up again after a restart, and when
//! its terminal event is published.
//!
//! - `worker`: one worker per session runs its runs one at a time, in
//!   order, starts each on the runner and hands its stream to the relay;
//! - `outcome`: a run's end, its files and its terminal event.
//!
//! A cancel goes through three states, recorded on the run's row so that
//! any process can finish it: requested (`cancel_requested`), then either
//! ended here (a queued run, or one the runner never saw), or told to the
//! runner (a run with a runner id), whose `run.cancelled` the relay then
//! records. Whoever records the runner's id or starts the run reads the
//! request back in the same update (`store::Marked`), so a cancel that
//! races a start is never lost.

mod lease;
mod outcome;
mod worker;

pub(in crate::engine) use lease::Lease;
use lease::Leases;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use runner_protocol::Terminal;
use tokio::sync::Notify;
use uuid::Uuid;

use super::core::Core;
use super::hub;
use crate::domain::{Prompt, RunStatus, RunnerRunId, SessionStatus};
use crate::metrics::Rejection;
use crate::store::{Enqueue, RunRow, SessionRow, StoreError};

pub(super) struct Runs {
    core: Arc<Core>,
    /// One worker per session with queued or running runs. Held only to
    /// look up, add or remove an entry, never across a database call.
    workers: tokio::sync::Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Each session's workspace lease: held by its worker from before a
    /// run starts until its end is recorded, and by a commit or push for
    /// its length, so the two never change a workspace at once. An entry
    /// lives while someone holds or waits for its lease.
    leases: Leases,
}

/// A prompt that became a run.
#[derive(Debug, Clone, Copy)]
pub struct QueuedRun {
    pub run_id: Uuid,
    /// 1 for the session's first run, 2 for the next...
    pub position: i64,
}

/// Why a prompt was not queued.
#[derive(Debug, thiserror::Error)]
pub enum PromptRefused {
    #[error("session {session} failed to clone and cannot run prompts: {error}")]
    CloneFailed { session: Uuid, error: String },
    #[error(
        "session {0} has expired: its workspace was removed after it sat idle \
         (BACKEND_SESSION_IDLE_TTL_HOURS) or to keep the workspaces under their quota; \
         create a new session"
    )]
    Expired(Uuid),
    #[error("session {0} does not exist")]
    SessionGone(Uuid),
    #[error(
        "you have {max} runs queued or running, the most one user may have \
         (BACKEND_USER_MAX_ACTIVE_RUNS); wait for one to end or cancel one"
    )]
    TooManyRuns { max: i64 },
    #[error(
        "session {session} already has {limit} queued runs (BACKEND_MAX_QUEUED_RUNS); wait or cancel some"
    )]
    QueueFull { session: Uuid, limit: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The run was queued and is now cancelled.
    Cancelled,
    /// The run is running; `run.cancelled` follows once the runner stops it.
    Cancelling,
    /// The run had already ended: nothing to do.
    AlreadyEnded,
}

impl Runs {
    pub(super) fn new(core: Arc<Core>) -> Arc<Self> {
        Arc::new(Self {
            core,
            workers: tokio::sync::Mutex::new(HashMap::new()),
            leases: Leases::default(),
        })
    }

    /// The session's workspace lease if nobody holds it: a commit or push
    /// takes it, or is refused, while a run is under way.
    pub(in crate::engine) fn try_lease(&self, session: Uuid) -> Option<Lease> {
        self.leases.of(session).try_lock_owned().ok()
    }

    /// The session's workspace lease, once a commit or push holding it is
    /// done: a run takes it before it starts.
    async fn wait_for_lease(&self, session: Uuid) -> Lease {
        self.leases.of(session).lock_owned().await
    }

    /// Queues `prompt` as the session's next run and wakes its worker.
    pub(super) async fn enqueue(
        self: &Arc<Self>,
        session: &SessionRow,
        owner: Option<Uuid>,
        prompt: &Prompt,
    ) -> Result<QueuedRun, PromptRefused> {
        let core = &self.core;
        match session.status {
            SessionStatus::Failed => {
                return Err(PromptRefused::CloneFailed {
                    session: session.id,
                    error: session.error.clone().unwrap_or_default(),
                })
            }
            // Said before the quota: waiting for a run to end would not
            // help. The enqueue checks again under the row lock.
            SessionStatus::Expired => return Err(PromptRefused::Expired(session.id)),
            SessionStatus::Cloning | SessionStatus::Ready => {}
        }
        if let Some(owner) = owner {
            let max = core.config.limits.user_max_active_runs;
            // A count, then the insert: two prompts at once may both pass
            // at the edge, by one run; the per-session queue bound holds
            // regardless.
            if core.store.active_runs_of_owner(owner).await? >= max {
                core.metrics.rejected(Rejection::Quota);
                return Err(PromptRefused::TooManyRuns { max });
            }
        }
        let limit = core.config.limits.max_queued_runs;
        let run = match core
            .store
            .enqueue_run(Uuid::new_v4(), session.id, prompt.as_str(), limit)
            .await?
        {
            Enqueue::Queued(run) => run,
            Enqueue::SessionMissing => return Err(PromptRefused::SessionGone(session.id)),
            Enqueue::SessionExpired => return Err(PromptRefused::Expired(session.id)),
            Enqueue::QueueFull => {
                return Err(PromptRefused::QueueFull {
                    session: session.id,
                    limit,
                })
            }
        };
        // Open before the worker may start it: a subscriber attaching now
        // waits on the tail rather than polling Postgres.
        core.hubs.open(run.id, 1);
        self.kick(session.id).await;
        tracing::info!(session_id = %session.id, run_id = %run.id, "prompt queued");
        Ok(QueuedRun {
            run_id: run.id,
            position: run.position,
        })
    }

    /// The run's events after `after`: what is stored, then the live tail.
    pub(super) fn subscribe(&self, run: Uuid, after: u64) -> impl Stream<Item = Bytes> + Send {
        hub::subscribe(self.core.store.clone(), self.core.hubs.clone(), run, after)
    }

    /// Picks up the runs a previous process left queued or running: opens
    /// their tails after what is stored and wakes their sessions' workers.
    pub(super) async fn recover(self: &Arc<Self>) -> crate::store::Result<()> {
        let mut sessions = std::collections::BTreeSet::new();
        for run in self.core.store.active_runs().await? {
            let first = self.core.store.last_seq(run.id).await? as u64 + 1;
            self.core.hubs.open(run.id, first);
            sessions.insert(run.session_id);
        }
        for session in sessions {
            self.kick(session).await;
        }
        Ok(())
    }

    /// Cancels a queued or running run.
    ///
    /// The request is recorded on the run's row first. A queued run is
    /// ended here if it is still queued; otherwise its worker honours the
    /// request when it starts it or records the runner's run id, and a run
    /// whose runner id is already recorded is cancelled on the runner here.
    pub(super) async fn cancel(&self, run: &RunRow) -> crate::store::Result<Cancel> {
        let Some(target) = self.core.store.request_cancel(run.id).await? else {
            return Ok(Cancel::AlreadyEnded);
        };
        if target.status == RunStatus::Queued {
            if self
                .finish_without_runner_if(run, Terminal::cancelled(run.id), true)
                .await?
            {
                return Ok(Cancel::Cancelled);
            }
            // Another cancel ended it first, or its worker started it (and
            // reads the request as it does): which, the row says.
            match self.core.store.run(run.id).await? {
                Some(now) if now.status == RunStatus::Running => {}
                Some(now) if now.status == RunStatus::Cancelled => return Ok(Cancel::Cancelled),
                Some(now) if now.status.has_ended() => return Ok(Cancel::AlreadyEnded),
                Some(_) => {}
                // Deleted with its session meanwhile: it will not run.
                None => return Ok(Cancel::Cancelled),
            }
        }
        if let Some(runner_run) = &target.runner_run_id {
            self.cancel_on_runner(runner_run).await;
        }
        Ok(Cancel::Cancelling)
    }

    /// Asks the runner to cancel; a run it no longer knows or has finished
    /// needs nothing more.
    async fn cancel_on_runner(&self, runner_run: &RunnerRunId) {
        use super::runner_client::RunnerError;
        match self.core.runner.cancel_run(runner_run).await {
            Ok(()) | Err(RunnerError::NotFound { .. }) | Err(RunnerError::Conflict(_)) => {}
            // The relay is the one to notice a runner that went away: it
            // fails the run after its attempts to reach the stream.
            Err(error) => {
                tracing::warn!(%error, detail = %error.detail(), "the runner did not take the cancel");
            }
        }
    }
}
