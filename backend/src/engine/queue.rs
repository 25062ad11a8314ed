//! The session queue: one worker per session runs its runs one at a time,
//! in order; a run starts on the runner's thread of the session, and a
//! cancel recorded in Postgres reaches it whenever it comes.

use std::sync::Arc;
use std::time::Duration;

use runner_protocol::Terminal;
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use super::{retry_forever, Engine};
use crate::domain::{RunStatus, SessionStatus};
use crate::git::{self, Snapshot};
use crate::runner_client::RunnerError;
use crate::store::{RunRow, SessionRow};

impl Engine {
    /// Makes sure the session's worker runs (or wakes it): after a prompt
    /// is queued, a clone ends, or a restart.
    pub async fn kick(self: &Arc<Self>, session: Uuid) {
        let mut workers = self.workers.lock().await;
        if let Some(notify) = workers.get(&session) {
            notify.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        workers.insert(session, notify.clone());
        drop(workers);
        self.spawn_worker(session, notify);
    }

    /// Not async, so that `work` (which may `kick`) and `kick` do not
    /// contain each other's futures.
    fn spawn_worker(self: &Arc<Self>, session: Uuid, notify: Arc<Notify>) {
        let span = tracing::info_span!(parent: None, "session", session_id = %session);
        let work: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(self.clone().work(session, notify).instrument(span));
        self.tasks.spawn(work);
    }

    /// Runs the session's runs one at a time, in order, until none is left.
    pub(super) async fn work(self: Arc<Self>, session_id: Uuid, notify: Arc<Notify>) {
        loop {
            if self.stopping.is_cancelled() {
                // A run in progress stays `running` and the next process
                // re-attaches to it; a queued one waits for it.
                break;
            }
            let session = match self.store.session(session_id).await {
                Ok(Some(session)) => session,
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(error.cause_chain = ?error, "cannot read the session; retrying");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if session.status == SessionStatus::Cloning {
                tokio::select! {
                    () = notify.notified() => continue,
                    () = self.stopping.cancelled() => break,
                }
            }
            let next = match self.store.next_run(session_id).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::error!(error.cause_chain = ?error, "cannot read the queue; retrying");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(run) = next else {
                // Leave first, then look once more, without holding the lock
                // across the query: a prompt queued before the look is seen
                // by it; one queued after it finds no worker and starts one.
                self.workers.lock().await.remove(&session_id);
                if !matches!(self.store.next_run(session_id).await, Ok(None)) {
                    self.kick(session_id).await;
                }
                return;
            };
            let span = tracing::info_span!("run", run_id = %run.id);
            if session.status == SessionStatus::Failed {
                let error = format!(
                    "the session's clone failed: {}",
                    session.error.as_deref().unwrap_or("unknown error")
                );
                self.end_without_runner(&run, Terminal::failed(run.id, error))
                    .instrument(span)
                    .await;
                continue;
            }
            self.execute(&session, run).instrument(span).await;
        }
        self.workers.lock().await.remove(&session_id);
    }

    pub(super) async fn execute(&self, session: &SessionRow, run: RunRow) {
        let dir = self.workspace(session.id);
        if run.status == RunStatus::Running {
            // Picked up after a restart.
            let before: Snapshot = run.status_before.clone().unwrap_or_default();
            match &run.runner_run_id {
                Some(runner_run) => {
                    if run.cancel_requested {
                        // The process that took the cancel may have died
                        // before it told the runner.
                        self.cancel_on_runner(runner_run).await;
                    }
                    let after =
                        retry_forever("read the last stored event", || self.store.last_seq(run.id))
                            .await as u64;
                    tracing::info!(after, "re-attaching to the runner's stream");
                    self.relay(session, &run, runner_run, after, before).await;
                }
                None if run.cancel_requested => {
                    self.end_without_runner(&run, Terminal::cancelled(run.id))
                        .await;
                }
                None => {
                    let error = "the backend stopped before the run reached the runner; send the prompt again";
                    self.end_without_runner(&run, Terminal::failed(run.id, error))
                        .await;
                }
            }
            return;
        }
        let (before, snapshot_before) = {
            let dir = dir.clone();
            let cache = self.snapshot_cache(session.id);
            let refname = git::run_ref(run.id, "before");
            tokio::task::spawn_blocking(move || {
                let status = git::snapshot(&dir).unwrap_or_default();
                (status, snapshot(&dir, &cache, &refname))
            })
            .await
            .unwrap_or_default()
        };
        match self
            .store
            .start_run(run.id, &before, snapshot_before.as_deref())
            .await
        {
            Ok(Some(false)) => {}
            Ok(Some(true)) => {
                // Cancelled between the queue and here: the canceller found
                // it queued, then lost the race to end it; ending it is ours.
                self.end_without_runner(&run, Terminal::cancelled(run.id))
                    .await;
                return;
            }
            Ok(None) => return, // cancelled while queued, or deleted
            Err(error) => {
                // The run is still queued; the worker's loop takes it again.
                tracing::error!(error.cause_chain = ?error, "cannot start the run");
                return;
            }
        }
        tracing::info!("run started");
        let runner_run = match self.start_on_runner(session, &run.prompt).await {
            Ok(id) => id,
            Err(error) => {
                // The runner's words name its ids and the server's paths:
                // they go to the log, the user gets ours.
                tracing::warn!(%error, detail = %error.detail(), "the runner did not start the run");
                let message = format!("the run could not start: {error}");
                self.end_without_runner(&run, Terminal::failed(run.id, message))
                    .await;
                return;
            }
        };
        // Read after the id is stored: a cancel recorded before this update
        // is seen here, one recorded after it finds the id and tells the
        // runner itself.
        let recorded = retry_forever("record the runner's run id", || {
            self.store.set_runner_run(run.id, &runner_run)
        })
        .await;
        match recorded {
            Some(false) => {}
            Some(true) => self.cancel_on_runner(&runner_run).await,
            None => {
                // Its session was deleted meanwhile. The relay still follows
                // the run to its end for the live tail's subscribers.
                tracing::info!("the run was deleted as it started; cancelling it");
                self.cancel_on_runner(&runner_run).await;
            }
        }
        self.relay(session, &run, &runner_run, 0, before).await;
    }

    /// Asks the runner to cancel; a run it no longer knows or has finished
    /// needs nothing more.
    pub(super) async fn cancel_on_runner(&self, runner_run: &str) {
        match self.runner.cancel_run(runner_run).await {
            Ok(()) | Err(RunnerError::NotFound { .. }) | Err(RunnerError::Conflict(_)) => {}
            // The relay is the one to notice a runner that went away: it
            // fails the run after its attempts to reach the stream.
            Err(error) => {
                tracing::warn!(%error, detail = %error.detail(), "the runner did not take the cancel");
            }
        }
    }

    /// Starts the prompt on the session's runner thread. A runner that
    /// forgot the thread (it restarted) gets a new one that resumes the
    /// session's Codex thread, so the conversation goes on.
    pub(super) async fn start_on_runner(
        &self,
        session: &SessionRow,
        prompt: &str,
    ) -> Result<String, RunnerError> {
        let dir = self.workspace(session.id);
        if let Some(thread) = &session.runner_thread_id {
            match self.runner.start_run(thread, prompt).await {
                Err(RunnerError::NotFound { .. }) => {}
                other => return other,
            }
        }
        // The latest row, for the Codex thread a run since `session` was
        // read may have recorded: without it the conversation would start
        // over.
        let latest = retry_forever("read the session", || self.store.session(session.id)).await;
        let codex_thread = latest.as_ref().and_then(|s| s.codex_thread_id.clone());
        let thread = self
            .runner
            .create_thread(&dir, codex_thread.as_deref(), &session.settings)
            .await?;
        retry_forever("record the runner thread", || {
            self.store.set_runner_thread(session.id, &thread)
        })
        .await;
        self.runner.start_run(&thread, prompt).await
    }

    /// Cancels a queued or running run. `Ok(false)` when it already ended.
    ///
    /// The request is recorded on the run's row first. A queued run is
    /// ended here if it is still queued; otherwise its worker honours the
    /// request when it starts it or records the runner's run id, and a run
    /// whose runner id is already recorded is cancelled on the runner here.
    pub async fn cancel(&self, run: &RunRow) -> crate::store::Result<bool> {
        let Some(target) = self.store.request_cancel(run.id).await? else {
            return Ok(false);
        };
        if target.status == RunStatus::Queued
            && self
                .finish_without_runner_if(run, Terminal::cancelled(run.id), true)
                .await?
        {
            return Ok(true);
        }
        if let Some(runner_run) = &target.runner_run_id {
            self.cancel_on_runner(runner_run).await;
        }
        Ok(true)
    }
}

/// The workspace's state as a commit under `refname`, for the run's patch.
/// A workspace whose `.git` the agent broke has none: the run goes on, and
/// its patch answers that the snapshot is missing.
pub(super) fn snapshot(
    dir: &std::path::Path,
    cache: &git::SnapshotCache,
    refname: &str,
) -> Option<String> {
    match git::snapshot_commit(dir, cache, refname) {
        Ok(commit) => Some(commit.to_string()),
        Err(error) => {
            tracing::warn!(%error, refname, "cannot snapshot the workspace");
            None
        }
    }
}
