//! A run's end: the outcome and the files it changed are recorded with its
//! terminal event in one transaction, then the terminal event is published
//! and the live tail dropped.
//!
//! The files a run changed are the difference between the workspace's state
//! before and after it. Either side may be unreadable (an agent that broke
//! `.git`); then the files are [`FilesReport::Unknown`], logged with why,
//! and the run's `files` is `null`: never an empty "before" that would
//! blame every file already dirty on the run.

use std::path::Path;

use runner_protocol::{Changes, Event, Terminal};
use uuid::Uuid;

use super::Runs;
use crate::domain::RunStatus;
use crate::engine::retry::retry_forever;
use crate::git::{self, Snapshot};
use crate::store::{Finished, RunOutcome, RunRow, SessionRow};

/// The workspace before a run: its status (to tell the run's files) and its
/// snapshot commit (for the run's patch).
pub(super) struct Before {
    status: Result<Snapshot, String>,
    commit: Option<String>,
}

impl Before {
    /// Reads both, in a blocking task.
    pub(super) fn read(dir: &Path, cache: &git::SnapshotCache, refname: &str) -> Self {
        // Logged once, with the files, when the run ends.
        let status = git::snapshot(dir).map_err(|error| {
            format!("the workspace's state before the run could not be read: {error}")
        });
        Self {
            status,
            commit: snapshot_commit(dir, cache, refname),
        }
    }

    /// As recorded when the run started (picked up after a restart).
    pub(super) fn recorded(status: Snapshot) -> Self {
        Self {
            status: Ok(status),
            commit: None,
        }
    }

    pub(super) fn unknown(reason: String) -> Self {
        Self {
            status: Err(reason),
            commit: None,
        }
    }

    /// The status to record with the run; `None` when unknown.
    pub(super) fn status(&self) -> Option<&Snapshot> {
        self.status.as_ref().ok()
    }

    pub(super) fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }
}

/// Which files a run changed, or why that is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FilesReport {
    Known(Changes),
    Unknown { reason: String },
}

impl FilesReport {
    fn of(before: Result<Snapshot, String>, dir: &Path) -> Self {
        let before = match before {
            Ok(before) => before,
            Err(reason) => return FilesReport::Unknown { reason },
        };
        match git::snapshot(dir) {
            Ok(after) => FilesReport::Known(git::changes(&before, &after, dir)),
            Err(error) => FilesReport::Unknown {
                reason: format!("the workspace's state after the run could not be read: {error}"),
            },
        }
    }

    fn known(self) -> Option<Changes> {
        match self {
            FilesReport::Known(changes) => Some(changes),
            FilesReport::Unknown { .. } => None,
        }
    }
}

/// How a run ended, as the relay saw it.
pub(super) struct End {
    /// The terminal event's number.
    pub seq: u64,
    pub terminal: Terminal,
    /// Whether the relay saw the runner end it (else the runner lost it).
    pub seen: bool,
}

impl Runs {
    /// Records the outcome and the files the run changed, lets the
    /// session's workspace lease go, then publishes the terminal event and
    /// drops the live tail.
    pub(super) async fn finish(
        &self,
        session: &SessionRow,
        run: &RunRow,
        end: End,
        before: Before,
        lease: super::Lease,
    ) {
        let End {
            seq,
            terminal,
            seen,
        } = end;
        let core = &self.core;
        let dir = core.workspace(session.id);
        let cache = core.snapshot_cache(session.id);
        let refname = git::run_ref(run.id, "after");
        let (files, snapshot_after) = tokio::task::spawn_blocking(move || {
            let files = FilesReport::of(before.status, &dir);
            (files, snapshot_commit(&dir, &cache, &refname))
        })
        .await
        .unwrap_or_else(|join| {
            let reason = format!("the snapshot task failed: {join}");
            (FilesReport::Unknown { reason }, None)
        });
        if let FilesReport::Unknown { reason } = &files {
            tracing::warn!(%reason, "the files the run changed are unknown");
        }
        let changes = files.known();
        // The runner's event under the backend's run id, with the files.
        let terminal = terminal.with_run_id(run.id).with_files(changes.clone());
        let outcome = RunOutcome {
            status: RunStatus::from(&terminal),
            final_response: terminal.final_response().map(str::to_owned),
            usage: terminal.usage().map(Into::into),
            error: terminal.error().map(str::to_owned),
            files: changes,
            snapshot_after,
            ended_unseen: !seen,
        };
        let terminal = terminal.to_event(seq);
        let recorded = retry_forever("record the run's outcome", || {
            core.store
                .finish_run(run.id, std::slice::from_ref(&terminal), &outcome)
        })
        .await;
        if let Some(finished) = &recorded {
            tracing::info!(status = %outcome.status, "run finished");
            core.metrics
                .run_finished(outcome.status, ran_for(finished), outcome.usage);
            core.metrics.events_persisted(1, None);
        } else {
            // Deleted with its session while it ended: nothing to record.
            tracing::info!(
                status = %outcome.status,
                "run ended after it was deleted; nothing recorded"
            );
        }
        drop(lease);
        self.publish_terminal(run.id, terminal);
        // After the terminal event, which need not wait for a walk of the
        // workspace.
        if recorded.is_some() {
            core.measure_workspace(session.id).await;
        }
    }

    fn publish_terminal(&self, run_id: Uuid, terminal: Event) {
        let hub = self.core.hubs.open(run_id, terminal.seq);
        if let Err(error) = hub.push_event(terminal, true) {
            // Only after the tail refused an earlier event (it is full, see
            // `relay`). The event is stored; a subscriber of this tail
            // reads it from Postgres once it reconnects.
            tracing::warn!(?error, "the live tail refused the terminal event");
        }
        self.core.hubs.remove(run_id);
    }

    /// Ends the worker's own run, one the runner never saw (or no longer
    /// knows), with one terminal event of the backend's own, retried until
    /// stored: the run is `running`, and nobody else would end it.
    pub(super) async fn end_without_runner(&self, run: &RunRow, terminal: Terminal) {
        retry_forever("end the run", || {
            self.finish_without_runner_if(run, terminal.clone(), false)
        })
        .await;
    }

    /// Ends a run with `terminal` (`Terminal::failed` or
    /// `Terminal::cancelled` of the run's id) and no files looked at; with
    /// `only_queued`, only if it is still queued. Whether it ended it.
    pub(super) async fn finish_without_runner_if(
        &self,
        run: &RunRow,
        terminal: Terminal,
        only_queued: bool,
    ) -> crate::store::Result<bool> {
        let store = &self.core.store;
        let seq = store.last_seq(run.id).await? + 1;
        // No files looked at: `files` is null.
        let terminal = terminal.with_run_id(run.id).with_files(None);
        let outcome = RunOutcome::bare(
            RunStatus::from(&terminal),
            terminal.error().map(str::to_owned),
        );
        let terminal = terminal.to_event(u64::try_from(seq).unwrap_or_default());
        let events = std::slice::from_ref(&terminal);
        let finished = if only_queued {
            store.finish_queued_run(run.id, events, &outcome).await?
        } else {
            store.finish_run(run.id, events, &outcome).await?
        };
        if let Some(finished) = &finished {
            self.core
                .metrics
                .run_finished(outcome.status, ran_for(finished), None);
            self.core.metrics.events_persisted(1, None);
            self.publish_terminal(run.id, terminal);
        }
        Ok(finished.is_some())
    }
}

/// The workspace's state as a commit under `refname`, for the run's patch.
/// A workspace whose `.git` the agent broke has none: the run goes on, and
/// its patch answers that the snapshot is missing.
fn snapshot_commit(dir: &Path, cache: &git::SnapshotCache, refname: &str) -> Option<String> {
    match git::snapshot_commit(dir, cache, refname) {
        Ok(commit) => Some(commit.to_string()),
        Err(error) => {
            tracing::warn!(%error, refname, "cannot snapshot the workspace");
            None
        }
    }
}

/// From the run's start to now, if it started.
fn ran_for(finished: &Finished) -> Option<std::time::Duration> {
    let started = finished.started_at?;
    (chrono::Utc::now() - started).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        std::fs::write(dir.path().join("a.txt"), "a\n").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("a.txt")).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let who = git2::Signature::now("t", "t@example.invalid").unwrap();
        repo.commit(Some("HEAD"), &who, &who, "one", &tree, &[])
            .unwrap();
        dir
    }

    #[test]
    fn an_unreadable_before_makes_the_files_unknown_not_everything_new() {
        let dir = repo();
        std::fs::write(dir.path().join("dirty.txt"), "was here before\n").unwrap();
        let report = FilesReport::of(Err("no status".into()), dir.path());
        assert_eq!(
            report,
            FilesReport::Unknown {
                reason: "no status".into()
            }
        );
        assert_eq!(report.known(), None);
    }

    #[test]
    fn an_unreadable_after_makes_the_files_unknown_with_the_reason() {
        let dir = repo();
        let before = git::snapshot(dir.path()).unwrap();
        // The agent broke `.git`.
        std::fs::remove_dir_all(dir.path().join(".git")).unwrap();
        match FilesReport::of(Ok(before), dir.path()) {
            FilesReport::Unknown { reason } => assert!(
                reason.starts_with("the workspace's state after the run could not be read"),
                "{reason}"
            ),
            known => panic!("expected Unknown, got {known:?}"),
        }
    }

    #[test]
    fn a_readable_workspace_reports_what_changed() {
        let dir = repo();
        std::fs::write(dir.path().join("dirty.txt"), "before the run\n").unwrap();
        let before = git::snapshot(dir.path()).unwrap();
        std::fs::write(dir.path().join("new.txt"), "made by the run\n").unwrap();
        std::fs::write(dir.path().join("a.txt"), "changed\n").unwrap();
        let report = FilesReport::of(Ok(before), dir.path());
        let FilesReport::Known(changes) = report else {
            panic!("expected Known, got {report:?}")
        };
        assert_eq!(changes.created, vec!["new.txt".to_owned()]);
        assert_eq!(changes.modified, vec!["a.txt".to_owned()]);
        assert!(changes.deleted.is_empty());
    }

    #[test]
    fn a_before_that_cannot_be_read_is_unknown_and_records_no_status() {
        let dir = tempfile::tempdir().unwrap(); // not a repository
        let cache = git::SnapshotCache::new(&dir.path().join("cache"));
        let before = Before::read(dir.path(), &cache, "refs/repo-runner/runs/x/before");
        assert!(before.status().is_none());
        assert!(before.commit().is_none());
    }
}
