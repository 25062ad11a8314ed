//! The backend's work behind the API: cloning sessions, running each
//! session's prompts one at a time in order, relaying each run's events from
//! the runner into Postgres and the live tail, and picking all of that up
//! again after a restart.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::Config;
use crate::git::{self, CloneProgress, CloneRequest, Snapshot};
use crate::hub::{is_terminal, Hubs};
use crate::runner_client::{RunnerClient, RunnerError};
use crate::store::{EventRow, RunOutcome, RunRow, SessionRow, Store};

/// Clone progress is written to Postgres at most this often per clone.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Attempts to reach the runner's event stream before a run is failed.
const RELAY_ATTEMPTS: u32 = 8;
/// The first pause before a failed database call is tried again; it doubles
/// up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Failures of one call logged as warnings before they are errors: a short
/// blip (a restart of Postgres, a dropped connection) is not an operator's
/// business, an outage is.
const QUIET_FAILURES: u32 = 5;
/// Attempts to mark a finished clone ready (about six seconds in all)
/// before the session is failed instead.
const READY_ATTEMPTS: u32 = 7;

pub struct Engine {
    pub config: Arc<Config>,
    pub store: Store,
    pub runner: RunnerClient,
    pub hubs: Arc<Hubs>,
    /// Which sessions changed, announced by Postgres.
    pub changes: crate::session_changes::SessionChanges,
    /// Canonical `WORKSPACES_ROOT`.
    pub root: PathBuf,
    /// One worker per session with queued or running runs.
    workers: tokio::sync::Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Clones in progress, by session. Whoever takes a session out of here
    /// while it is marked deleted (the clone task) or finds it absent (a
    /// delete) removes its folder: under this lock exactly one of them does.
    clones: Mutex<HashMap<Uuid, CloneTask>>,
    /// Bytes the checkouts in progress are about to write.
    checkout_reserved: Arc<std::sync::atomic::AtomicU64>,
}

/// A clone in progress.
struct CloneTask {
    progress: Arc<CloneProgress>,
    /// Its session was deleted: the clone task cleans up when it ends.
    deleted: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    pub fn new(config: Arc<Config>, store: Store, root: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            runner: RunnerClient::new(&config.runner_url),
            hubs: Arc::new(Hubs::new(config.limits.max_events_per_run)),
            changes: crate::session_changes::SessionChanges::listen(config.database_url.clone()),
            config,
            store,
            root,
            workers: tokio::sync::Mutex::new(HashMap::new()),
            clones: Mutex::new(HashMap::new()),
            checkout_reserved: Arc::default(),
        })
    }

    /// `WORKSPACES_ROOT/<session>`: the session's folder.
    pub fn session_dir(&self, session: Uuid) -> PathBuf {
        self.root.join(session.to_string())
    }

    /// `WORKSPACES_ROOT/<session>/repo`: the clone the agent works in.
    pub fn workspace(&self, session: Uuid) -> PathBuf {
        self.session_dir(session).join("repo")
    }

    // --- sessions -------------------------------------------------------

    /// Clones in the background; the session becomes `ready` or `failed`.
    pub fn spawn_clone(self: &Arc<Self>, session: Uuid, request: CloneRequest) {
        let progress = Arc::new(CloneProgress::default());
        lock(&self.clones).insert(
            session,
            CloneTask {
                progress: progress.clone(),
                deleted: false,
            },
        );
        let engine = self.clone();
        let span = tracing::info_span!(parent: None, "clone", session_id = %session);
        tokio::spawn(
            async move {
                let thread = engine.clone_session(session, request, &progress).await;
                let deleted = lock(&engine.clones)
                    .remove(&session)
                    .is_some_and(|task| task.deleted);
                if deleted {
                    // The delete left the folder (and any thread made here)
                    // to this task, which is the last to touch them.
                    if let Some(thread) = thread {
                        engine.delete_runner_thread(&thread).await;
                    }
                    engine.remove_session_dir(session).await;
                    tracing::info!("deleted session's clone cleaned up");
                }
                engine.kick(session).await;
            }
            .instrument(span),
        );
    }

    /// Runs the clone to its end; returns the runner thread it created, if
    /// any.
    async fn clone_session(
        &self,
        session: Uuid,
        request: CloneRequest,
        progress: &Arc<CloneProgress>,
    ) -> Option<String> {
        let dest = self.workspace(session);
        let limits = &self.config.limits;
        let disk = git::DiskLimits {
            max_checkout_bytes: limits.max_checkout_bytes,
            min_free_bytes: limits.min_free_disk_bytes,
            reserved: self.checkout_reserved.clone(),
        };
        tracing::info!(url = %request.url.as_str(), "clone started");
        let blocking = {
            let progress = progress.clone();
            let dest = dest.clone();
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                std::fs::create_dir_all(dest.parent().unwrap_or(&dest))
                    .map_err(|e| git::CloneError::Disk(e.to_string()))?;
                git::clone(&request, &dest, &progress, &disk)
            })
        };
        tokio::pin!(blocking);
        let deadline = tokio::time::sleep(limits.clone_timeout);
        tokio::pin!(deadline);
        let mut timed_out = false;
        let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut written = Value::Null;
        let result = loop {
            tokio::select! {
                result = &mut blocking => break result,
                _ = &mut deadline, if !timed_out => {
                    // The transport and the progress callbacks see the flag;
                    // the session fails now, the folder goes when the clone
                    // stops.
                    timed_out = true;
                    progress.cancel.store(true, Ordering::Relaxed);
                    tracing::warn!("clone timed out");
                    if let Err(error) = self.store.mark_failed_if_cloning(session, &timeout_message(limits.clone_timeout)).await {
                        tracing::error!(error.cause_chain = ?error, "cannot fail the timed-out clone");
                    }
                }
                _ = tick.tick() => self.write_progress(session, progress, &mut written).await,
            }
        };
        self.write_progress(session, progress, &mut written).await;
        let deleted = progress.cancel.load(Ordering::Relaxed) && !timed_out;
        let outcome = match result {
            _ if timed_out => Err(timeout_message(limits.clone_timeout)),
            Ok(Ok(oid)) if !deleted => Ok(oid.to_string()),
            Ok(Ok(_)) => Err("the session was deleted".to_owned()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(join) => Err(format!("the clone task failed: {join}")),
        };
        let commit = match outcome {
            Ok(commit) => commit,
            Err(message) => {
                tracing::warn!(%message, "clone failed");
                self.remove_session_dir(session).await;
                if !deleted {
                    if let Err(error) = self.store.mark_failed_if_cloning(session, &message).await {
                        tracing::error!(error.cause_chain = ?error, "cannot fail the clone");
                    }
                }
                return None;
            }
        };
        // A thread now saves a round trip on the first prompt; if the runner
        // is away, the first run creates it.
        let thread = match self.runner.create_thread(&dest, None).await {
            Ok(thread) => Some(thread),
            Err(error) => {
                tracing::warn!(%error, "no runner thread yet; the first run will create it");
                None
            }
        };
        // Conditional on the row still being `cloning`: a delete that came
        // first makes this a no-op, and then nothing may stay behind. An
        // error is not a delete: the update is tried again, and if it never
        // goes through the session fails with a reason instead of staying
        // `cloning`.
        let ready = retry_bounded("mark the clone ready", READY_ATTEMPTS, || {
            self.store.mark_ready(session, &commit, thread.as_deref())
        })
        .await;
        if let Ok(true) = ready {
            tracing::info!(%commit, "clone ready");
            return thread;
        }
        // Not ready: what the clone made goes before the session says so,
        // so a `failed` session never has a folder.
        if let Some(thread) = &thread {
            self.delete_runner_thread(thread).await;
        }
        self.remove_session_dir(session).await;
        match ready {
            Ok(_) => {
                tracing::info!("the session was deleted or failed while it was cloned");
            }
            Err(error) => {
                tracing::error!(error.cause_chain = ?error, "cannot mark the clone ready; failing the session");
                let failed = retry_bounded("fail the session", READY_ATTEMPTS, || {
                    self.store
                        .mark_failed_if_cloning(session, READY_FAILED_MESSAGE)
                })
                .await;
                if let Err(error) = failed {
                    // The next start of the backend fails a session it
                    // finds `cloning`.
                    tracing::error!(error.cause_chain = ?error, "cannot fail the session either");
                }
            }
        }
        None
    }

    /// Writes the clone's progress when it changed since the last write.
    async fn write_progress(&self, session: Uuid, progress: &CloneProgress, written: &mut Value) {
        let now = progress.to_json();
        if now == *written {
            return;
        }
        match self.store.set_clone_progress(session, &now).await {
            Ok(()) => *written = now,
            // The next tick tries again.
            Err(error) => {
                tracing::warn!(error.cause_chain = ?error, "cannot record clone progress")
            }
        }
    }

    async fn delete_runner_thread(&self, thread: &str) {
        match self.runner.delete_thread(thread).await {
            Ok(()) | Err(RunnerError::NotFound(_)) => {}
            Err(error) => tracing::warn!(%error, "the runner did not delete the thread"),
        }
    }

    /// Removes the session's folder; one already gone is fine.
    async fn remove_session_dir(&self, session: Uuid) {
        let dir = self.session_dir(session);
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        })
        .await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, session_id = %session, "cannot remove the session's folder")
            }
            Err(error) => {
                tracing::error!(%error, session_id = %session, "cannot remove the session's folder")
            }
        }
    }

    /// Cancels the session's work, forgets it and removes its folder.
    pub async fn delete_session(&self, session: &SessionRow) -> crate::store::Result<()> {
        // A clone still running owns the folder from here on; one that has
        // ended (or never ran in this process) leaves it to us.
        let cloning = match lock(&self.clones).get_mut(&session.id) {
            Some(task) => {
                task.deleted = true;
                task.progress.cancel.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        };
        for run in self.store.runs_of_session(session.id).await? {
            self.cancel(&run).await?;
        }
        // The row as deleted, not as read before: a clone that became ready
        // meanwhile recorded its thread there.
        let thread = self.store.delete_session(session.id).await?;
        if let Some(thread) = thread.or_else(|| session.runner_thread_id.clone()) {
            self.delete_runner_thread(&thread).await;
        }
        if !cloning {
            self.remove_session_dir(session.id).await;
        }
        tracing::info!(session_id = %session.id, "session deleted");
        Ok(())
    }

    // --- runs -----------------------------------------------------------

    /// Makes sure the session's worker runs (or wakes it).
    pub async fn kick(self: &Arc<Self>, session: Uuid) {
        let mut workers = self.workers.lock().await;
        if let Some(notify) = workers.get(&session) {
            notify.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        workers.insert(session, notify.clone());
        let engine = self.clone();
        let span = tracing::info_span!(parent: None, "session", session_id = %session);
        tokio::spawn(engine.work(session, notify).instrument(span));
    }

    /// Runs the session's runs one at a time, in order, until none is left.
    async fn work(self: Arc<Self>, session_id: Uuid, notify: Arc<Notify>) {
        loop {
            let session = match self.store.session(session_id).await {
                Ok(Some(session)) => session,
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(error.cause_chain = ?error, "cannot read the session; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if session.status == "cloning" {
                notify.notified().await;
                continue;
            }
            let next = match self.store.next_run(session_id).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::error!(error.cause_chain = ?error, "cannot read the queue; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(run) = next else {
                // Decide to stop under the workers lock, so a prompt queued
                // now either is seen here or finds no worker and starts one.
                let mut workers = self.workers.lock().await;
                if matches!(self.store.next_run(session_id).await, Ok(None)) {
                    workers.remove(&session_id);
                    return;
                }
                continue;
            };
            let span = tracing::info_span!("run", run_id = %run.id);
            if session.status == "failed" {
                let error = format!(
                    "the session's clone failed: {}",
                    session.error.as_deref().unwrap_or("unknown error")
                );
                self.end_without_runner(&run, "run.failed", Some(error))
                    .instrument(span)
                    .await;
                continue;
            }
            self.execute(&session, run).instrument(span).await;
        }
        self.workers.lock().await.remove(&session_id);
    }

    async fn execute(&self, session: &SessionRow, run: RunRow) {
        let dir = self.workspace(session.id);
        if run.status == "running" {
            // Picked up after a restart.
            let before: Snapshot = run
                .status_before
                .clone()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
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
                    self.end_without_runner(&run, "run.cancelled", None).await;
                }
                None => {
                    let error = "the backend stopped before the run reached the runner; send the prompt again";
                    self.end_without_runner(&run, "run.failed", Some(error.to_owned()))
                        .await;
                }
            }
            return;
        }
        let before = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || git::snapshot(&dir))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        let before_json = serde_json::to_value(&before).unwrap_or(Value::Null);
        match self.store.start_run(run.id, &before_json).await {
            Ok(Some(false)) => {}
            Ok(Some(true)) => {
                // Cancelled between the queue and here: the canceller found
                // it queued, then lost the race to end it; ending it is ours.
                self.end_without_runner(&run, "run.cancelled", None).await;
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
                self.end_without_runner(&run, "run.failed", Some(error.to_string()))
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
    async fn cancel_on_runner(&self, runner_run: &str) {
        match self.runner.cancel_run(runner_run).await {
            Ok(()) | Err(RunnerError::NotFound(_)) | Err(RunnerError::Conflict(_)) => {}
            // The relay is the one to notice a runner that went away: it
            // fails the run after its attempts to reach the stream.
            Err(error) => tracing::warn!(%error, "the runner did not take the cancel"),
        }
    }

    /// Starts the prompt on the session's runner thread. A runner that
    /// forgot the thread (it restarted) gets a new one that resumes the
    /// session's Codex thread, so the conversation goes on.
    async fn start_on_runner(
        &self,
        session: &SessionRow,
        prompt: &str,
    ) -> Result<String, RunnerError> {
        let dir = self.workspace(session.id);
        if let Some(thread) = &session.runner_thread_id {
            match self.runner.start_run(thread, prompt).await {
                Err(RunnerError::NotFound(_)) => {}
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
            .create_thread(&dir, codex_thread.as_deref())
            .await?;
        retry_forever("record the runner thread", || {
            self.store.set_runner_thread(session.id, &thread)
        })
        .await;
        self.runner.start_run(&thread, prompt).await
    }

    /// Follows the runner's stream of a run from `after`: every event goes
    /// to the live tail at once and to Postgres in batches; the terminal
    /// event is written with the run's outcome in one transaction.
    ///
    /// A batch is written before anything after it is read, and a write is
    /// retried until it succeeds (or finds the run deleted), so `last` is
    /// always stored when the relay reads on or reconnects: while Postgres
    /// is away the relay stops reading and the runner keeps the events.
    async fn relay(
        &self,
        session: &SessionRow,
        run: &RunRow,
        runner_run: &str,
        after: u64,
        before: Snapshot,
    ) {
        let hub = self.hubs.open(run.id, after + 1);
        let max_batch = self.config.limits.event_batch;
        let mut last = after;
        let mut failures = 0u32;
        let mut writer = EventWriter::new(run.id);
        let terminal: EventRow = 'relay: loop {
            // Each pass follows one connection; one that fails, or ends with
            // nothing new, backs off, so a runner that keeps refusing or
            // closing streams is not hammered.
            let failure = match self.runner.events(runner_run, last).await {
                Err(RunnerError::NotFound(_)) => {
                    break 'relay synthetic_failure(run.id, last + 1,
                        "the runner no longer knows this run (it was probably restarted); send the prompt again");
                }
                Err(error) => format!("lost the runner: {error}"),
                Ok(mut stream) => {
                    let last_before = last;
                    loop {
                        // Take what is ready without waiting; write the batch
                        // when the stream has nothing more for now or the
                        // batch is full.
                        let next = match stream.next().now_or_never() {
                            Some(next) => next,
                            None => {
                                writer.flush(&self.store).await;
                                stream.next().await
                            }
                        };
                        let event = match next {
                            Some(Ok(event)) => event,
                            Some(Err(_)) | None => break,
                        };
                        if event.seq <= last {
                            continue;
                        }
                        if event.seq != last + 1 {
                            tracing::warn!(
                                expected = last + 1,
                                got = event.seq,
                                "gap in the runner's stream; reconnecting"
                            );
                            break;
                        }
                        failures = 0;
                        last = event.seq;
                        let row = EventRow {
                            seq: event.seq as i64,
                            event_type: event.kind,
                            data: event.data,
                        };
                        if is_terminal(&row.event_type) {
                            writer.flush(&self.store).await;
                            break 'relay row;
                        }
                        if row.event_type == "thread.started" {
                            self.record_codex_thread(session.id, &row.data).await;
                        }
                        if let Err(error) =
                            hub.push_numbered(last, &row.event_type, row.data.clone(), false)
                        {
                            // The live tail is a cache in front of Postgres:
                            // the event is still stored and replayed, only
                            // this process's live subscribers miss it.
                            tracing::warn!(?error, seq = last, "the live tail refused an event");
                        }
                        writer.push(row);
                        if writer.len() >= max_batch {
                            writer.flush(&self.store).await;
                        }
                    }
                    writer.flush(&self.store).await;
                    if last != last_before {
                        continue;
                    }
                    "the runner keeps closing the run's event stream".to_owned()
                }
            };
            failures += 1;
            if failures >= RELAY_ATTEMPTS {
                break 'relay synthetic_failure(run.id, last + 1, &failure);
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
        };
        self.finish(session, run, terminal, before).await;
    }

    /// The session's conversation is this Codex thread from now on: a
    /// restarted runner resumes it.
    async fn record_codex_thread(&self, session: Uuid, thread_started: &str) {
        let id = serde_json::from_str::<Value>(thread_started)
            .ok()
            .and_then(|v| v["thread_id"].as_str().map(str::to_owned));
        if let Some(id) = id {
            // A deleted session makes this a no-op, not an error.
            retry_forever("record the Codex thread", || {
                self.store.set_codex_thread(session, &id)
            })
            .await;
        }
    }

    /// Records the outcome and the files the run changed, then publishes
    /// the terminal event and drops the live tail.
    async fn finish(
        &self,
        session: &SessionRow,
        run: &RunRow,
        terminal: EventRow,
        before: Snapshot,
    ) {
        let dir = self.workspace(session.id);
        let changes = tokio::task::spawn_blocking(move || {
            git::snapshot(&dir)
                .ok()
                .map(|after| git::changes(&before, &after, &dir))
        })
        .await
        .ok()
        .flatten();
        let mut data: Value = serde_json::from_str(&terminal.data).unwrap_or_else(|_| json!({}));
        data["type"] = json!(terminal.event_type);
        data["runId"] = json!(run.id);
        data["files"] = json!(changes);
        let outcome = RunOutcome {
            status: run_status(&terminal.event_type),
            final_response: data["finalResponse"].as_str().map(str::to_owned),
            usage: Some(data["usage"].clone()).filter(|u| !u.is_null()),
            error: data["error"].as_str().map(str::to_owned),
            files: changes.as_ref().and_then(|c| serde_json::to_value(c).ok()),
        };
        let terminal = EventRow {
            data: data.to_string(),
            ..terminal
        };
        let recorded = retry_forever("record the run's outcome", || {
            self.store
                .finish_run(run.id, std::slice::from_ref(&terminal), &outcome)
        })
        .await;
        if recorded {
            tracing::info!(status = outcome.status, "run finished");
        } else {
            // Deleted with its session while it ended: nothing to record.
            tracing::info!(
                status = outcome.status,
                "run ended after it was deleted; nothing recorded"
            );
        }
        self.publish_terminal(run.id, terminal);
    }

    fn publish_terminal(&self, run_id: Uuid, terminal: EventRow) {
        let hub = self.hubs.open(run_id, terminal.seq as u64);
        if let Err(error) = hub.push_numbered(
            terminal.seq as u64,
            &terminal.event_type,
            terminal.data,
            true,
        ) {
            // Only after the tail refused an earlier event (it is full, see
            // `relay`). The event is stored; a subscriber of this tail
            // reads it from Postgres once it reconnects.
            tracing::warn!(?error, "the live tail refused the terminal event");
        }
        self.hubs.remove(run_id);
    }

    /// Ends a run that the runner never saw (or no longer knows) with one
    /// terminal event of the backend's own.
    async fn finish_without_runner(
        &self,
        run: &RunRow,
        kind: &'static str,
        error: Option<String>,
    ) -> crate::store::Result<bool> {
        self.finish_without_runner_if(run, kind, error, false).await
    }

    /// `finish_without_runner` for the worker's own run, retried until
    /// stored: the run is `running`, and nobody else would end it.
    async fn end_without_runner(&self, run: &RunRow, kind: &'static str, error: Option<String>) {
        retry_forever("end the run", || {
            self.finish_without_runner(run, kind, error.clone())
        })
        .await;
    }

    async fn finish_without_runner_if(
        &self,
        run: &RunRow,
        kind: &'static str,
        error: Option<String>,
        only_queued: bool,
    ) -> crate::store::Result<bool> {
        let seq = self.store.last_seq(run.id).await? + 1;
        let data = json!({"type": kind, "runId": run.id, "error": error, "files": null});
        let terminal = EventRow {
            seq,
            event_type: kind.to_owned(),
            data: data.to_string(),
        };
        let outcome = RunOutcome {
            status: run_status(kind),
            error,
            ..Default::default()
        };
        let events = std::slice::from_ref(&terminal);
        let finished = if only_queued {
            self.store
                .finish_queued_run(run.id, events, &outcome)
                .await?
        } else {
            self.store.finish_run(run.id, events, &outcome).await?
        };
        if finished {
            self.publish_terminal(run.id, terminal);
        }
        Ok(finished)
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
        if target.status == "queued"
            && self
                .finish_without_runner_if(run, "run.cancelled", None, true)
                .await?
        {
            return Ok(true);
        }
        if let Some(runner_run) = &target.runner_run_id {
            self.cancel_on_runner(runner_run).await;
        }
        Ok(true)
    }

    // --- restart ----------------------------------------------------------

    /// Removes the folders of sessions deleted while their clone ran when
    /// the process died (or deleted by hand in the database).
    async fn remove_orphans(&self) -> crate::store::Result<()> {
        let sessions = self.store.session_ids().await?;
        let root = self.root.clone();
        let found = match tokio::task::spawn_blocking(move || orphans(&root, &sessions)).await {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot list WORKSPACES_ROOT for leftover folders");
                return Ok(());
            }
            Err(error) => {
                tracing::error!(%error, "cannot list WORKSPACES_ROOT for leftover folders");
                return Ok(());
            }
        };
        for session in found {
            tracing::warn!(session_id = %session, "removing the folder of a session that no longer exists");
            self.remove_session_dir(session).await;
        }
        Ok(())
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

/// A run's events on their way to Postgres.
struct EventWriter {
    run_id: Uuid,
    batch: Vec<EventRow>,
    /// The run was deleted (with its session): its events are no longer
    /// stored, only relayed to the live tail until the terminal event.
    gone: bool,
}

impl EventWriter {
    fn new(run_id: Uuid) -> Self {
        Self {
            run_id,
            batch: Vec::new(),
            gone: false,
        }
    }

    fn push(&mut self, event: EventRow) {
        if !self.gone {
            self.batch.push(event);
        }
    }

    fn len(&self) -> usize {
        self.batch.len()
    }

    /// Stores the batch, retrying until it is stored or the run is found
    /// deleted; returns with the batch empty either way.
    async fn flush(&mut self, store: &Store) {
        if self.batch.is_empty() {
            return;
        }
        let batch = &self.batch;
        let stored =
            retry_forever("store events", || store.append_events(self.run_id, batch)).await;
        if !stored {
            tracing::info!("the run was deleted; its events are no longer stored");
            self.gone = true;
        }
        self.batch.clear();
    }
}

/// Why a session whose clone succeeded failed all the same.
const READY_FAILED_MESSAGE: &str = "the clone finished but the backend could not record it in its database; delete this session and create it again";

/// Calls `call` until it succeeds, pausing between attempts (doubling up to
/// `MAX_BACKOFF`). For writes whose data exists nowhere else once dropped:
/// a run's events and its outcome. While Postgres is away the caller waits
/// here; nothing it holds is lost.
async fn retry_forever<T, F, Fut>(what: &str, mut call: F) -> T
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
                return value;
            }
            Err(error) => {
                failures += 1;
                log_failure(what, failures, &error);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
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
            Ok(value) => return Ok(value),
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

fn timeout_message(timeout: Duration) -> String {
    format!(
        "the clone took longer than the limit of {} seconds (BACKEND_CLONE_TIMEOUT_SECS)",
        timeout.as_secs()
    )
}

/// Folders under the root named like a session id whose session is gone.
/// Anything else an operator put there is left alone.
fn orphans(root: &std::path::Path, sessions: &HashSet<Uuid>) -> std::io::Result<Vec<Uuid>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let id = entry
            .file_name()
            .to_str()
            .and_then(|n| Uuid::parse_str(n).ok());
        if let Some(id) = id {
            if entry.file_type()?.is_dir() && !sessions.contains(&id) {
                found.push(id);
            }
        }
    }
    Ok(found)
}

/// The status a run ends in, by its terminal event.
fn run_status(terminal_event: &str) -> &'static str {
    match terminal_event {
        "run.completed" => "completed",
        "run.cancelled" => "cancelled",
        _ => "failed",
    }
}

fn synthetic_failure(run_id: Uuid, seq: u64, message: &str) -> EventRow {
    EventRow {
        seq: seq as i64,
        event_type: "run.failed".into(),
        data: json!({"type": "run.failed", "runId": run_id, "error": message}).to_string(),
    }
}
