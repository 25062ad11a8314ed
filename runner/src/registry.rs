//! The runner's in-memory state: threads, runs, and the rules between them
//! (one active run per thread; bounded tables).
//!
//! A thread is cheap to forget: its Codex conversation lives in the
//! workspace's `CODEX_HOME`, and a new runner thread created with
//! `resumeThreadId` continues it. So a full thread table does not refuse a
//! new thread while some thread is idle: the least recently used idle thread
//! is released instead, and idle threads are released after
//! `RUNNER_THREAD_IDLE_SECS`. A released thread answers 404 like a deleted
//! one. Threads with an active run are never released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, Utc};
use codex_sdk::{Canceller, RunControl, ThreadOptions};
use runner_protocol::{RunSnapshot, Usage};
use uuid::Uuid;

use crate::config::Limits;
use crate::error::{ApiError, Result};
use event_log::RunLog;

/// A runner thread: options for the CLI and the Codex thread it is bound to.
#[derive(Debug, Clone)]
pub(crate) struct ThreadRecord {
    pub id: Uuid,
    pub options: ThreadOptions,
    /// Known after the first run's `thread.started`, or given to resume.
    pub codex_thread_id: Option<String>,
    pub active_run: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// When the thread was created or last started or ended a run: the
    /// order in which idle threads are released.
    pub last_used: Instant,
}

/// A run's state is the wire's: the runner has no other.
pub(crate) use runner_protocol::RunStatus;

/// One run: its event log and its state.
#[derive(Debug)]
pub(crate) struct Run {
    pub id: Uuid,
    pub thread_id: Uuid,
    pub log: RunLog,
    state: Mutex<RunState>,
}

#[derive(Debug)]
struct RunState {
    status: RunStatus,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    finished: Option<Instant>,
    codex_thread_id: Option<String>,
    final_response: Option<String>,
    usage: Option<Usage>,
    error: Option<String>,
    cancel_requested: bool,
    canceller: Option<Canceller>,
    control: Option<RunControl>,
}

impl Run {
    fn new(thread_id: Uuid, codex_thread_id: Option<String>, limits: &Limits) -> Self {
        Self {
            id: Uuid::new_v4(),
            thread_id,
            log: RunLog::new(limits.max_events_per_run).with_max_bytes(limits.max_run_bytes),
            state: Mutex::new(RunState {
                status: RunStatus::Running,
                created_at: Utc::now(),
                finished_at: None,
                finished: None,
                codex_thread_id,
                final_response: None,
                usage: None,
                error: None,
                cancel_requested: false,
                canceller: None,
                control: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, RunState> {
        // A panic while holding this lock cannot leave the plain data inside
        // half-written in a way that matters more than losing the run.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What is known of the run, as `GET /runs/{id}` shows it.
    pub(crate) fn snapshot(&self) -> RunSnapshot {
        let state = self.state();
        RunSnapshot {
            run_id: self.id,
            thread_id: self.thread_id,
            codex_thread_id: state.codex_thread_id.clone(),
            status: state.status,
            created_at: state.created_at,
            finished_at: state.finished_at,
            final_response: state.final_response.clone(),
            usage: state.usage.clone(),
            error: state.error.clone(),
            event_count: self.log.len(),
        }
    }

    pub(crate) fn status(&self) -> RunStatus {
        self.state().status
    }

    /// Hands the run its canceller; cancels at once if a cancel came first.
    pub(crate) fn attach_canceller(&self, canceller: Canceller) {
        let mut state = self.state();
        if state.cancel_requested {
            canceller.cancel();
        }
        state.canceller = Some(canceller);
    }

    /// Hands the run the handle that approves, steers and interrupts it.
    pub(crate) fn attach_control(&self, control: RunControl) {
        self.state().control = Some(control);
    }

    /// The run's control, while it runs.
    pub(crate) fn control(&self) -> Option<RunControl> {
        let state = self.state();
        if state.status.has_ended() {
            return None;
        }
        state.control.clone()
    }

    /// Requests cancellation; `false` when the run has already finished.
    pub(crate) fn request_cancel(&self) -> bool {
        let mut state = self.state();
        if state.status.has_ended() {
            return false;
        }
        state.cancel_requested = true;
        if let Some(canceller) = &state.canceller {
            canceller.cancel();
        }
        true
    }

    pub(crate) fn set_codex_thread_id(&self, id: String) {
        self.state().codex_thread_id = Some(id);
    }

    pub(crate) fn set_final_response(&self, text: String) {
        self.state().final_response = Some(text);
    }

    pub(crate) fn set_usage(&self, usage: Usage) {
        self.state().usage = Some(usage);
    }

    pub(crate) fn set_error(&self, error: String) {
        self.state().error.get_or_insert(error);
    }

    pub(crate) fn error(&self) -> Option<String> {
        self.state().error.clone()
    }

    /// Marks the run finished; called once, just before its terminal event.
    pub(crate) fn finish(&self, status: RunStatus) {
        let mut state = self.state();
        state.status = status;
        state.finished_at = Some(Utc::now());
        state.finished = Some(Instant::now());
        state.canceller = None;
    }

    fn finished(&self) -> Option<Instant> {
        self.state().finished
    }
}

/// Threads and runs.
#[derive(Debug)]
pub(crate) struct Registry {
    limits: Limits,
    threads: Mutex<HashMap<Uuid, ThreadRecord>>,
    runs: Mutex<HashMap<Uuid, Arc<Run>>>,
}

impl Registry {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            threads: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    fn threads(&self) -> MutexGuard<'_, HashMap<Uuid, ThreadRecord>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn runs(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<Run>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add_thread(
        &self,
        options: ThreadOptions,
        codex_thread_id: Option<String>,
    ) -> Result<ThreadRecord> {
        let mut threads = self.threads();
        while threads.len() >= self.limits.max_threads {
            let idle = threads
                .values()
                .filter(|thread| thread.active_run.is_none())
                .min_by_key(|thread| thread.last_used)
                .map(|thread| thread.id);
            let Some(idle) = idle else {
                return Err(ApiError::TooMany(format!(
                    "every one of the runner's {} threads has an active run (RUNNER_MAX_THREADS)",
                    threads.len()
                )));
            };
            threads.remove(&idle);
            tracing::info!(thread_id = %idle, "idle thread released to make room (RUNNER_MAX_THREADS)");
        }
        let record = ThreadRecord {
            id: Uuid::new_v4(),
            options,
            codex_thread_id,
            active_run: None,
            created_at: Utc::now(),
            last_used: Instant::now(),
        };
        threads.insert(record.id, record.clone());
        Ok(record)
    }

    pub(crate) fn thread(&self, id: Uuid) -> Result<ThreadRecord> {
        self.threads()
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("thread {id} does not exist")))
    }

    /// Removes a thread, cancelling its active run.
    pub(crate) fn remove_thread(&self, id: Uuid) -> Result<()> {
        let record = self
            .threads()
            .remove(&id)
            .ok_or_else(|| ApiError::NotFound(format!("thread {id} does not exist")))?;
        if let Some(run) = record.active_run.and_then(|run| self.run(run).ok()) {
            run.request_cancel();
        }
        Ok(())
    }

    /// Creates a run on a thread that has none active: the check and the
    /// claim happen under one lock.
    pub(crate) fn start_run(&self, thread_id: Uuid) -> Result<(Arc<Run>, ThreadRecord)> {
        self.prune_finished_runs();
        let mut threads = self.threads();
        let thread = threads
            .get_mut(&thread_id)
            .ok_or_else(|| ApiError::NotFound(format!("thread {thread_id} does not exist")))?;
        if let Some(active) = thread.active_run {
            return Err(ApiError::Conflict(format!(
                "thread {thread_id} already has an active run {active}"
            )));
        }
        let run = Arc::new(Run::new(
            thread_id,
            thread.codex_thread_id.clone(),
            &self.limits,
        ));
        thread.active_run = Some(run.id);
        thread.last_used = Instant::now();
        let record = thread.clone();
        drop(threads);
        self.runs().insert(run.id, run.clone());
        Ok((run, record))
    }

    /// Releases the thread of a finished run and records its Codex thread.
    pub(crate) fn end_run(&self, run: &Run, codex_thread_id: Option<String>) {
        if let Some(thread) = self.threads().get_mut(&run.thread_id) {
            if thread.active_run == Some(run.id) {
                thread.active_run = None;
                thread.last_used = Instant::now();
            }
            if codex_thread_id.is_some() {
                thread.codex_thread_id = codex_thread_id;
            }
        }
    }

    pub(crate) fn run(&self, id: Uuid) -> Result<Arc<Run>> {
        self.runs()
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("run {id} does not exist")))
    }

    /// Drops finished runs past their retention, then the oldest finished
    /// runs beyond the count limit. Running runs are never dropped.
    pub(crate) fn prune_finished_runs(&self) {
        let mut runs = self.runs();
        let now = Instant::now();
        let retention = self.limits.run_retention;
        runs.retain(|_, run| {
            run.finished()
                .is_none_or(|at| now.duration_since(at) < retention)
        });
        let mut finished: Vec<(Instant, Uuid)> = runs
            .values()
            .filter_map(|run| run.finished().map(|at| (at, run.id)))
            .collect();
        if finished.len() > self.limits.max_finished_runs {
            finished.sort();
            let excess = finished.len() - self.limits.max_finished_runs;
            for (_, id) in finished.into_iter().take(excess) {
                runs.remove(&id);
            }
        }
    }

    /// Releases the threads without an active run that have not been used
    /// for `RUNNER_THREAD_IDLE_SECS`; returns how many.
    pub(crate) fn release_idle_threads(&self) -> usize {
        let idle_for = self.limits.thread_idle;
        let now = Instant::now();
        let mut threads = self.threads();
        let before = threads.len();
        threads.retain(|_, thread| {
            thread.active_run.is_some() || now.duration_since(thread.last_used) < idle_for
        });
        before - threads.len()
    }

    /// Runs not finished yet.
    pub(crate) fn active_runs(&self) -> usize {
        self.runs()
            .values()
            .filter(|run| !run.status().has_ended())
            .count()
    }

    /// Asks every active run to stop (the runner is shutting down).
    pub(crate) fn cancel_all(&self) {
        for run in self.runs().values() {
            run.request_cancel();
        }
    }
}
