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

/// How often clone progress is written to Postgres.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(300);
/// Attempts to reach the runner's event stream before a run is failed.
const RELAY_ATTEMPTS: u32 = 8;

pub struct Engine {
    pub config: Arc<Config>,
    pub store: Store,
    pub runner: RunnerClient,
    pub hubs: Arc<Hubs>,
    /// Canonical `WORKSPACES_ROOT`.
    pub root: PathBuf,
    /// One worker per session with queued or running runs.
    workers: tokio::sync::Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Clones in progress, by session.
    clones: Mutex<HashMap<Uuid, Arc<CloneProgress>>>,
    /// Runs whose cancel came before the runner knew them.
    pending_cancels: Mutex<HashSet<Uuid>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    pub fn new(config: Arc<Config>, store: Store, root: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            runner: RunnerClient::new(&config.runner_url),
            hubs: Arc::new(Hubs::new(config.limits.max_events_per_run)),
            config,
            store,
            root,
            workers: tokio::sync::Mutex::new(HashMap::new()),
            clones: Mutex::new(HashMap::new()),
            pending_cancels: Mutex::new(HashSet::new()),
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
        lock(&self.clones).insert(session, progress.clone());
        let engine = self.clone();
        let span = tracing::info_span!(parent: None, "clone", session_id = %session);
        tokio::spawn(
            async move {
                engine.clone_session(session, request, progress).await;
                lock(&engine.clones).remove(&session);
                engine.kick(session).await;
            }
            .instrument(span),
        );
    }

    async fn clone_session(
        &self,
        session: Uuid,
        request: CloneRequest,
        progress: Arc<CloneProgress>,
    ) {
        let dest = self.workspace(session);
        tracing::info!(url = %request.url.as_str(), "clone started");
        let blocking = {
            let progress = progress.clone();
            let dest = dest.clone();
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                std::fs::create_dir_all(dest.parent().unwrap_or(&dest))
                    .map_err(|e| git::CloneError::Disk(e.to_string()))?;
                git::clone(&request, &dest, &progress)
            })
        };
        tokio::pin!(blocking);
        let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
        let result = loop {
            tokio::select! {
                result = &mut blocking => break result,
                _ = tick.tick() => {
                    let _ = self.store.set_clone_progress(session, &progress.to_json()).await;
                }
            }
        };
        let _ = self
            .store
            .set_clone_progress(session, &progress.to_json())
            .await;
        let deleted = progress.cancel.load(Ordering::Relaxed);
        let outcome = match result {
            Ok(Ok(oid)) if !deleted => Ok(oid.to_string()),
            Ok(Ok(_)) => Err("the session was deleted".to_owned()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(join) => Err(format!("the clone task failed: {join}")),
        };
        match outcome {
            Ok(commit) => {
                // A thread now saves a round trip on the first prompt; if the
                // runner is away, the first run creates it.
                let thread = match self.runner.create_thread(&dest, None).await {
                    Ok(thread) => Some(thread),
                    Err(error) => {
                        tracing::warn!(%error, "no runner thread yet; the first run will create it");
                        None
                    }
                };
                match self
                    .store
                    .mark_ready(session, &commit, thread.as_deref())
                    .await
                {
                    Ok(true) => tracing::info!(%commit, "clone ready"),
                    Ok(false) | Err(_) => {
                        // Deleted while cloning: nothing may stay on disk.
                        if let Some(thread) = thread {
                            let _ = self.runner.delete_thread(&thread).await;
                        }
                        self.remove_session_dir(session).await;
                    }
                }
            }
            Err(message) => {
                tracing::warn!(%message, "clone failed");
                self.remove_session_dir(session).await;
                if !deleted {
                    let _ = self.store.mark_failed(session, &message).await;
                }
            }
        }
    }

    async fn remove_session_dir(&self, session: Uuid) {
        let dir = self.session_dir(session);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }

    /// Cancels the session's work, forgets it and removes its folder.
    pub async fn delete_session(&self, session: &SessionRow) -> crate::store::Result<()> {
        let cloning = lock(&self.clones).get(&session.id).cloned();
        if let Some(progress) = &cloning {
            progress.cancel.store(true, Ordering::Relaxed);
        }
        for run in self.store.runs_of_session(session.id).await? {
            self.cancel(&run).await?;
        }
        if let Some(thread) = &session.runner_thread_id {
            let _ = self.runner.delete_thread(thread).await;
        }
        self.store.delete_session(session.id).await?;
        // A clone in progress removes its folder itself when it stops.
        if cloning.is_none() {
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

    /// Picks up what a previous process left: interrupted clones fail (their
    /// token, if any, was never stored), queued and running runs resume.
    pub async fn recover(self: &Arc<Self>) -> crate::store::Result<()> {
        for session in self.store.interrupted_clones().await? {
            tracing::warn!(session_id = %session, "clone interrupted by a restart");
            self.remove_session_dir(session).await;
            self.store
                .mark_failed(session, "the clone was interrupted by a restart of the backend; delete this session and create it again")
                .await?;
        }
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
