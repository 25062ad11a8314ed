//! A session's clone: run in the background with a deadline and progress,
//! raced safely by its deletion, and folders left by an earlier process
//! removed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument;
use uuid::Uuid;

use super::core::{lock, Core};
use super::retry::retry_bounded;
use super::runner_client::RunnerError;
use super::runs::{Cancel, Runs};
use crate::domain::{RepoUrl, RunnerThreadId};
use crate::git::{
    self, CloneCounts, CloneProgress, CloneRequest, ForbiddenPaths, LocalSource, LocalSourceError,
};
use crate::store::SessionRow;

/// Clone progress is written to Postgres at most this often per clone.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Attempts to mark a finished clone ready (about six seconds in all)
/// before the session is failed instead.
const READY_ATTEMPTS: u32 = 7;

const READY_FAILED_MESSAGE: &str = "the clone finished but the backend could not record it in its database; delete this session and create it again";

/// Sessions' clones, their deletion, and the folders they leave.
pub(super) struct Clones {
    core: Arc<Core>,
    /// Wakes a session's worker once its clone has ended.
    runs: Arc<Runs>,
    /// Clones in progress, by session. Whoever takes a session out of here
    /// while it is marked deleted (the clone task) or finds it absent (a
    /// delete) removes its folder: under this lock exactly one of them does.
    in_progress: Mutex<HashMap<Uuid, CloneTask>>,
    /// Bytes the checkouts in progress are about to write.
    checkout_reserved: Arc<AtomicU64>,
}

/// A clone in progress.
struct CloneTask {
    progress: Arc<CloneProgress>,
    /// Its session was deleted: the clone task cleans up when it ends.
    deleted: bool,
}

impl Clones {
    pub(super) fn new(core: Arc<Core>, runs: Arc<Runs>) -> Arc<Self> {
        Arc::new(Self {
            core,
            runs,
            in_progress: Mutex::new(HashMap::new()),
            checkout_reserved: Arc::default(),
        })
    }

    /// For a local `url`, the check that its path is outside
    /// `WORKSPACES_ROOT` and `BACKEND_FORBIDDEN_CLONE_PATHS`, which a
    /// [`CloneRequest`] for it needs; `None` for a remote.
    pub(super) async fn local_source(
        &self,
        url: &RepoUrl,
    ) -> Result<Option<LocalSource>, LocalSourceError> {
        if !url.is_local() {
            return Ok(None);
        }
        let path = std::path::PathBuf::from(url.fetch_url());
        let forbidden =
            ForbiddenPaths::new(&self.core.root, &self.core.config.forbidden_clone_paths);
        tokio::task::spawn_blocking(move || LocalSource::check(&path, forbidden))
            .await
            .map_err(LocalSourceError::Unchecked)?
            .map(Some)
    }

    /// Clones in the background; the session becomes `ready` or `failed`.
    pub(super) fn spawn(self: &Arc<Self>, session: Uuid, request: CloneRequest) {
        let progress = Arc::new(CloneProgress::default());
        lock(&self.in_progress).insert(
            session,
            CloneTask {
                progress: progress.clone(),
                deleted: false,
            },
        );
        let clones = self.clone();
        let span = tracing::info_span!(parent: None, "clone", session_id = %session);
        let stopping = self.core.stopping.clone();
        self.core.tasks.spawn(
            async move {
                // A backend that stops ends its clones; the next start
                // fails them as interrupted.
                let thread = tokio::select! {
                    thread = clones.clone_session(session, request, &progress) => thread,
                    () = stopping.cancelled() => {
                        progress.cancel.store(true, Ordering::Relaxed);
                        None
                    }
                };
                let deleted = lock(&clones.in_progress)
                    .remove(&session)
                    .is_some_and(|task| task.deleted);
                if deleted {
                    // The delete left the folder (and any thread made here)
                    // to this task, which is the last to touch them.
                    if let Some(thread) = thread {
                        clones.delete_runner_thread(&thread).await;
                    }
                    clones.remove_session_dir(session).await;
                    tracing::info!("deleted session's clone cleaned up");
                }
                clones.runs.kick(session).await;
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
    ) -> Option<RunnerThreadId> {
        let core = &self.core;
        let dest = core.workspace(session);
        let limits = &core.config.limits;
        let disk = git::DiskLimits {
            max_checkout_bytes: limits.max_checkout_bytes,
            min_free_bytes: limits.min_free_disk_bytes,
            reserved: self.checkout_reserved.clone(),
        };
        tracing::info!(url = %request.url.as_str(), "clone started");
        let started = std::time::Instant::now();
        let blocking = {
            let progress = progress.clone();
            let dest = dest.clone();
            let span = tracing::Span::current();
            let snapshots = core.snapshot_cache(session);
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                std::fs::create_dir_all(dest.parent().unwrap_or(&dest))
                    .map_err(|e| git::CloneError::Disk(e.to_string()))?;
                let commit = git::clone(&request, &dest, &progress, &disk)?;
                // Before the agent runs: the index the checkout wrote is
                // ours, so its stat data may be trusted (see git/snapshot.rs).
                if let Err(error) = snapshots.seed(&dest) {
                    tracing::warn!(%error, "cannot seed the workspace's snapshot index");
                }
                Ok::<_, git::CloneError>((commit, git::head_branch(&dest)))
            })
        };
        tokio::pin!(blocking);
        let deadline = tokio::time::sleep(limits.clone_timeout);
        tokio::pin!(deadline);
        let mut timed_out = false;
        let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut written = None;
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
                    if let Err(error) = core.store.mark_failed_if_cloning(session, &timeout_message(limits.clone_timeout)).await {
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
            Ok(Ok((oid, branch))) if !deleted => Ok((oid.to_string(), branch)),
            Ok(Ok(_)) => Err("the session was deleted".to_owned()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(join) => Err(format!("the clone task failed: {join}")),
        };
        let (commit, cloned_branch) = match outcome {
            Ok(cloned) => cloned,
            Err(message) => {
                tracing::warn!(%message, "clone failed");
                // libgit2's and the OS's words may name the server's folders.
                let message = without_server_paths(&message, &core.config.workspaces_root, session);
                if !deleted {
                    core.metrics.clone_ended(false, started.elapsed());
                }
                self.remove_session_dir(session).await;
                if !deleted {
                    if let Err(error) = core.store.mark_failed_if_cloning(session, &message).await {
                        tracing::error!(error.cause_chain = ?error, "cannot fail the clone");
                    }
                }
                return None;
            }
        };
        // A thread now saves a round trip on the first prompt; if the runner
        // is away, the first run creates it.
        // The session's settings; a row that went (a delete) makes no
        // thread, and a failed read leaves it to the first run.
        let settings = match core.store.session(session).await {
            Ok(Some(row)) => Some(row.settings),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(error.cause_chain = ?error, "cannot read the session's settings");
                None
            }
        };
        let created = match &settings {
            Some(settings) => core
                .runner
                .create_thread(&dest, None, settings)
                .await
                .map(Some),
            None => Ok(None),
        };
        let thread = match created {
            Ok(Some(thread)) => Some(thread),
            Ok(None) => None,
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
            core.store
                .mark_ready(session, &commit, cloned_branch.as_deref(), thread.as_ref())
        })
        .await;
        if let Ok(true) = ready {
            tracing::info!(%commit, "clone ready");
            core.metrics.clone_ended(true, started.elapsed());
            core.measure_workspace(session).await;
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
                    core.store
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
    async fn write_progress(
        &self,
        session: Uuid,
        progress: &CloneProgress,
        written: &mut Option<CloneCounts>,
    ) {
        let now = progress.counts();
        if Some(now) == *written {
            return;
        }
        match self.core.store.set_clone_progress(session, &now).await {
            Ok(()) => *written = Some(now),
            // The next tick tries again.
            Err(error) => {
                tracing::warn!(error.cause_chain = ?error, "cannot record clone progress")
            }
        }
    }

    pub(super) async fn delete_runner_thread(&self, thread: &RunnerThreadId) {
        match self.core.runner.delete_thread(thread).await {
            Ok(()) | Err(RunnerError::NotFound { .. }) => {}
            Err(error) => tracing::warn!(%error, "the runner did not delete the thread"),
        }
    }

    /// Removes the session's folder; one already gone is fine.
    pub(super) async fn remove_session_dir(&self, session: Uuid) {
        let dir = self.core.session_dir(session);
        let snapshots = self.core.snapshot_dir(session);
        let removed =
            tokio::task::spawn_blocking(move || remove_dir(&dir).and(remove_dir(&snapshots))).await;
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
    pub(super) async fn delete_session(&self, session: &SessionRow) -> crate::store::Result<()> {
        // A clone still running owns the folder from here on; one that has
        // ended (or never ran in this process) leaves it to us.
        let cloning = match lock(&self.in_progress).get_mut(&session.id) {
            Some(task) => {
                task.deleted = true;
                task.progress.cancel.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        };
        for run in self.core.store.runs_of_session(session.id).await? {
            let _: Cancel = self.runs.cancel(&run).await?;
        }
        // The row as deleted, not as read before: a clone that became ready
        // meanwhile recorded its thread there.
        let thread = self.core.store.delete_session(session.id).await?;
        if let Some(thread) = thread.or_else(|| session.runner_thread_id.clone()) {
            self.delete_runner_thread(&thread).await;
        }
        if !cloning {
            self.remove_session_dir(session.id).await;
        }
        tracing::info!(session_id = %session.id, "session deleted");
        Ok(())
    }

    /// Picks up what a previous process left: interrupted clones fail
    /// (their token, if any, was never stored) and lose their partial
    /// folder, and folders of sessions that no longer exist go. Runs before
    /// the API serves, so no clone is in progress.
    pub(super) async fn recover(&self) -> crate::store::Result<()> {
        for session in self.core.store.interrupted_clones().await? {
            tracing::warn!(session_id = %session, "clone interrupted by a restart");
            self.remove_session_dir(session).await;
            self.core.store
                .mark_failed(session, "the clone was interrupted by a restart of the backend; delete this session and create it again")
                .await?;
        }
        self.remove_orphans().await
    }

    /// Removes the folders of sessions deleted while their clone ran when
    /// the process died (or deleted by hand in the database).
    async fn remove_orphans(&self) -> crate::store::Result<()> {
        let sessions = self.core.store.session_ids().await?;
        let root = self.core.root.clone();
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
}

/// Removes a folder and everything in it; one already gone is fine. A
/// process that is still ending (a cancelled agent's command) may write
/// into it meanwhile, which makes the removal fail with "not empty": it is
/// tried again, a few times.
fn remove_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempts < 5 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50 * attempts));
            }
            other => return other,
        }
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
/// Snapshot state (`.snapshots/<id>`) counts the same way.
fn orphans(root: &std::path::Path, sessions: &HashSet<Uuid>) -> std::io::Result<Vec<Uuid>> {
    let mut found = Vec::new();
    let snapshots = match std::fs::read_dir(root.join(".snapshots")) {
        Ok(entries) => entries.collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    for entry in std::fs::read_dir(root)?.chain(snapshots) {
        let entry = entry?;
        let id = entry
            .file_name()
            .to_str()
            .and_then(|n| Uuid::parse_str(n).ok());
        if let Some(id) = id {
            if entry.file_type()?.is_dir() && !sessions.contains(&id) && !found.contains(&id) {
                found.push(id);
            }
        }
    }
    Ok(found)
}

/// `message` as users read it in the session's `error`: the session's own
/// folder is `<workspace>`, and any other path under `WORKSPACES_ROOT`
/// (the server's layout, other sessions' ids) `<workspaces>/…`.
fn without_server_paths(message: &str, root: &std::path::Path, session: Uuid) -> String {
    let root = root.display().to_string();
    if root.len() <= 1 {
        return message.to_owned();
    }
    let own = format!("{root}/{session}/repo");
    message
        .replace(&own, "<workspace>")
        .replace(&format!("{root}/{session}"), "<session folder>")
        .replace(&root, "<workspaces>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_error_names_no_server_folder() {
        let session = Uuid::nil();
        let root = std::path::Path::new("/srv/ws");
        let said = format!(
            "failed to make directory '/srv/ws/{session}/repo/.git': cannot lock /srv/ws/{session}/x \
             or /srv/ws/other"
        );
        assert_eq!(
            without_server_paths(&said, root, session),
            "failed to make directory '<workspace>/.git': cannot lock <session folder>/x or <workspaces>/other"
        );
    }
}
