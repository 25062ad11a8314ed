//! The backend's work behind the API: cloning sessions, running each
//! session's prompts one at a time in order, relaying each run's events from
//! the runner into Postgres and the live tail, and picking all of that up
//! again after a restart.

use std::collections::{HashMap, HashSet};
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
    /// Runs whose cancel came before the runner knew them.
    pending_cancels: Mutex<HashSet<Uuid>>,
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
            pending_cancels: Mutex::new(HashSet::new()),
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
        // first makes this a no-op, and then nothing may stay behind.
        match self
            .store
            .mark_ready(session, &commit, thread.as_deref())
            .await
        {
            Ok(true) => {
                tracing::info!(%commit, "clone ready");
                thread
            }
            Ok(false) => {
                if let Some(thread) = &thread {
                    self.delete_runner_thread(thread).await;
                }
                self.remove_session_dir(session).await;
                None
            }
            Err(error) => {
                tracing::error!(error.cause_chain = ?error, "cannot mark the clone ready");
                if let Some(thread) = &thread {
                    self.delete_runner_thread(thread).await;
                }
                self.remove_session_dir(session).await;
                None
            }
        }
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
                if let Err(e) = self
                    .finish_without_runner(&run, "run.failed", Some(error))
                    .await
                {
                    tracing::error!(error.cause_chain = ?e, "cannot fail the run");
                }
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
                    let after = self.store.last_seq(run.id).await.unwrap_or(0) as u64;
                    tracing::info!(after, "re-attaching to the runner's stream");
                    self.relay(session, &run, runner_run, after, before).await;
                }
                None => {
                    let error = "the backend stopped before the run reached the runner; send the prompt again".to_owned();
                    let _ = self
                        .finish_without_runner(&run, "run.failed", Some(error))
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
            Ok(true) => {}
            Ok(false) => return, // cancelled while queued
            Err(error) => {
                tracing::error!(error.cause_chain = ?error, "cannot start the run");
                return;
            }
        }
        tracing::info!("run started");
        let runner_run = match self.start_on_runner(session, &run.prompt).await {
            Ok(id) => id,
            Err(error) => {
                let _ = self
                    .finish_without_runner(&run, "run.failed", Some(error.to_string()))
                    .await;
                return;
            }
        };
        if let Err(error) = self.store.set_runner_run(run.id, &runner_run).await {
            tracing::error!(error.cause_chain = ?error, "cannot record the runner's run id");
        }
        if lock(&self.pending_cancels).remove(&run.id) {
            let _ = self.runner.cancel_run(&runner_run).await;
        }
        self.relay(session, &run, &runner_run, 0, before).await;
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
        let latest = self.store.session(session.id).await.ok().flatten();
        let codex_thread = latest.as_ref().and_then(|s| s.codex_thread_id.clone());
        let thread = self
            .runner
            .create_thread(&dir, codex_thread.as_deref())
            .await?;
        let _ = self.store.set_runner_thread(session.id, &thread).await;
        self.runner.start_run(&thread, prompt).await
    }

    /// Follows the runner's stream of a run from `after`: every event goes
    /// to the live tail at once and to Postgres in batches; the terminal
    /// event is written with the run's outcome in one transaction.
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
                    let mut batch: Vec<EventRow> = Vec::new();
                    let last_before = last;
                    loop {
                        // Take what is ready without waiting; write the batch
                        // when the stream has nothing more for now or the
                        // batch is full.
                        let next = match stream.next().now_or_never() {
                            Some(next) => next,
                            None => {
                                self.persist(run.id, &mut batch).await;
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
                            self.persist(run.id, &mut batch).await;
                            break 'relay row;
                        }
                        if row.event_type == "thread.started" {
                            self.record_codex_thread(session.id, &row.data).await;
                        }
                        let _ = hub.push_numbered(last, &row.event_type, row.data.clone(), false);
                        batch.push(row);
                        if batch.len() >= max_batch {
                            self.persist(run.id, &mut batch).await;
                        }
                    }
                    self.persist(run.id, &mut batch).await;
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
            let _ = self.store.set_codex_thread(session, &id).await;
        }
    }

    async fn persist(&self, run_id: Uuid, batch: &mut Vec<EventRow>) {
        if batch.is_empty() {
            return;
        }
        if let Err(error) = self.store.append_events(run_id, batch).await {
            // The events stay in the live tail and the runner keeps them: a
            // restart re-attaches from the last persisted number.
            tracing::error!(error.cause_chain = ?error, "cannot persist events");
        }
        batch.clear();
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
        match self
            .store
            .finish_run(run.id, std::slice::from_ref(&terminal), &outcome)
            .await
        {
            Ok(_) => tracing::info!(status = outcome.status, "run finished"),
            Err(error) => {
                tracing::error!(error.cause_chain = ?error, "cannot record the run's outcome")
            }
        }
        self.publish_terminal(run.id, terminal);
    }

    fn publish_terminal(&self, run_id: Uuid, terminal: EventRow) {
        let hub = self.hubs.open(run_id, terminal.seq as u64);
        let _ = hub.push_numbered(
            terminal.seq as u64,
            &terminal.event_type,
            terminal.data,
            true,
        );
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
        let finished = self
            .store
            .finish_run(run.id, std::slice::from_ref(&terminal), &outcome)
            .await?;
        if finished {
            self.publish_terminal(run.id, terminal);
        }
        Ok(finished)
    }

    /// Cancels a queued or running run. `Ok(false)` when it already ended.
    pub async fn cancel(&self, run: &RunRow) -> crate::store::Result<bool> {
        match run.status.as_str() {
            "queued" => {
                if self
                    .finish_without_runner(run, "run.cancelled", None)
                    .await?
                {
                    return Ok(true);
                }
                // It started meanwhile: cancel it as a running run.
                match self.store.run(run.id).await? {
                    Some(latest) if latest.status == "running" => {
                        Box::pin(self.cancel(&latest)).await
                    }
                    _ => Ok(false),
                }
            }
            "running" => {
                match &run.runner_run_id {
                    Some(runner_run) => {
                        if let Err(error) = self.runner.cancel_run(runner_run).await {
                            tracing::warn!(%error, "the runner did not take the cancel");
                        }
                    }
                    None => {
                        lock(&self.pending_cancels).insert(run.id);
                    }
                }
                Ok(true)
            }
            _ => Ok(false),
        }
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
