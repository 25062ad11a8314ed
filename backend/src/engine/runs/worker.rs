//! The session queue: one worker per session runs its runs one at a time,
//! in order; a run starts on the runner's thread of the session, and a
//! cancel recorded in Postgres reaches it whenever it comes.

use std::sync::Arc;
use std::time::Duration;

use runner_protocol::Terminal;
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use super::outcome::Before;
use super::{Lease, Runs};
use crate::domain::{RunStatus, RunnerRunId, SessionStatus};
use crate::engine::relay::{self, Followed};
use crate::engine::retry::retry_forever;
use crate::engine::runner_client::RunnerError;
use crate::git;
use crate::store::{Marked, RunRow, SessionRow};

impl Runs {
    /// Makes sure the session's worker runs (or wakes it): after a prompt
    /// is queued, a clone ends, or a restart.
    pub(in crate::engine) async fn kick(self: &Arc<Self>, session: Uuid) {
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
        self.core.tasks.spawn(work);
    }

    /// Runs the session's runs one at a time, in order, until none is left.
    async fn work(self: Arc<Self>, session_id: Uuid, notify: Arc<Notify>) {
        let core = self.core.clone();
        loop {
            if core.stopping.is_cancelled() {
                // A run in progress stays `running` and the next process
                // re-attaches to it; a queued one waits for it.
                break;
            }
            let session = match core.store.session(session_id).await {
                Ok(Some(session)) => session,
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(error.cause_chain = ?error, "cannot read the session; retrying");
                    core.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if session.status == SessionStatus::Cloning {
                tokio::select! {
                    () = notify.notified() => continue,
                    () = core.stopping.cancelled() => break,
                }
            }
            let next = match core.store.next_run(session_id).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::error!(error.cause_chain = ?error, "cannot read the queue; retrying");
                    core.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(run) = next else {
                // Leave first, then look once more, without holding the lock
                // across the query: a prompt queued before the look is seen
                // by it; one queued after it finds no worker and starts one.
                self.workers.lock().await.remove(&session_id);
                if !matches!(core.store.next_run(session_id).await, Ok(None)) {
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

    async fn execute(&self, session: &SessionRow, run: RunRow) {
        // Held until the run's end is recorded (`finish`), before its
        // terminal event is published: no commit or push changes the
        // workspace meanwhile, and one sent on seeing the end finds it free.
        let lease = self.wait_for_lease(session.id).await;
        if run.status == RunStatus::Running {
            self.resume(session, &run, lease).await;
            return;
        }
        let before = {
            let dir = self.core.workspace(session.id);
            let cache = self.core.snapshot_cache(session.id);
            let refname = git::run_ref(run.id, "before");
            tokio::task::spawn_blocking(move || Before::read(&dir, &cache, &refname))
                .await
                .unwrap_or_else(|join| Before::unknown(format!("the snapshot task failed: {join}")))
        };
        let started = self
            .core
            .store
            .start_run(run.id, before.status(), before.commit())
            .await;
        match started {
            Ok(Marked::Done) => {}
            Ok(Marked::CancelRequested) => {
                // Cancelled between the queue and here: the canceller found
                // it queued, then lost the race to end it; ending it is ours.
                drop(lease);
                self.end_without_runner(&run, Terminal::cancelled(run.id))
                    .await;
                return;
            }
            Ok(Marked::Gone) => return, // cancelled while queued, or deleted
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
                drop(lease);
                self.end_without_runner(&run, Terminal::failed(run.id, message))
                    .await;
                return;
            }
        };
        // Read after the id is stored: a cancel recorded before this update
        // is seen here, one recorded after it finds the id and tells the
        // runner itself.
        let recorded = retry_forever("record the runner's run id", || {
            self.core.store.set_runner_run(run.id, &runner_run)
        })
        .await;
        match recorded {
            Marked::Done => {}
            Marked::CancelRequested => self.cancel_on_runner(&runner_run).await,
            Marked::Gone => {
                // Its session was deleted meanwhile. The relay still follows
                // the run to its end for the live tail's subscribers.
                tracing::info!("the run was deleted as it started; cancelling it");
                self.cancel_on_runner(&runner_run).await;
            }
        }
        self.follow(session, &run, &runner_run, 0, before, lease)
            .await;
    }

    /// A run found `running` after a restart: re-attached to the runner
    /// after what is stored, or ended if it never reached the runner.
    async fn resume(&self, session: &SessionRow, run: &RunRow, lease: Lease) {
        let before = match &run.status_before {
            Some(status) => Before::recorded(status.clone()),
            None => {
                Before::unknown("the workspace's state before the run was not recorded".to_owned())
            }
        };
        match &run.runner_run_id {
            Some(runner_run) => {
                if run.cancel_requested {
                    // The process that took the cancel may have died
                    // before it told the runner.
                    self.cancel_on_runner(runner_run).await;
                }
                let after = retry_forever("read the last stored event", || {
                    self.core.store.last_seq(run.id)
                })
                .await as u64;
                tracing::info!(after, "re-attaching to the runner's stream");
                self.follow(session, run, runner_run, after, before, lease)
                    .await;
            }
            None if run.cancel_requested => {
                drop(lease);
                self.end_without_runner(run, Terminal::cancelled(run.id))
                    .await;
            }
            None => {
                let error =
                    "the backend stopped before the run reached the runner; send the prompt again";
                self.end_without_runner(run, Terminal::failed(run.id, error))
                    .await;
            }
        }
    }

    /// Opens the run's tail after `after`, has the relay follow the
    /// runner's stream into it, and records the end it reports.
    async fn follow(
        &self,
        session: &SessionRow,
        run: &RunRow,
        runner_run: &RunnerRunId,
        after: u64,
        before: Before,
        lease: Lease,
    ) {
        let tail = self.core.hubs.open(run.id, after + 1);
        match relay::relay(&self.core, session.id, run.id, runner_run, after, tail).await {
            Followed::Ended {
                seq,
                terminal,
                seen,
            } => {
                let end = super::outcome::End {
                    seq,
                    terminal,
                    seen,
                };
                self.finish(session, run, end, before, lease).await
            }
            // The run stays `running`: the next process re-attaches after
            // what is stored.
            Followed::Stopping | Followed::WriterFailed => self.core.hubs.remove(run.id),
        }
    }

    /// Starts the prompt on the session's runner thread. A runner that
    /// forgot the thread (it restarted) gets a new one that resumes the
    /// session's Codex thread, so the conversation goes on.
    async fn start_on_runner(
        &self,
        session: &SessionRow,
        prompt: &str,
    ) -> Result<RunnerRunId, RunnerError> {
        let core = &self.core;
        let dir = core.workspace(session.id);
        if let Some(thread) = &session.runner_thread_id {
            match core.runner.start_run(thread, prompt).await {
                Err(RunnerError::NotFound { .. }) => {}
                other => return other,
            }
        }
        // The latest row, for the Codex thread a run since `session` was
        // read may have recorded: without it the conversation would start
        // over.
        let latest = retry_forever("read the session", || core.store.session(session.id)).await;
        let codex_thread = latest.as_ref().and_then(|s| s.codex_thread_id.clone());
        let thread = core
            .runner
            .create_thread(&dir, codex_thread.as_deref(), &session.settings)
            .await?;
        retry_forever("record the runner thread", || {
            core.store.set_runner_thread(session.id, &thread)
        })
        .await;
        core.runner.start_run(&thread, prompt).await
    }
}
