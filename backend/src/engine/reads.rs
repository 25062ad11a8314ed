//! [`Reads`]: the read-only queries the API answers from, with no way to
//! change anything. Every change goes through the engine's intentions.

use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use super::core::Core;
use crate::domain::RunStatus;
use crate::store::{PullRequestRow, Result, RunOwner, RunRow, SessionRow};

/// A cheap handle (clone it freely) on the engine's state, for reading.
#[derive(Clone)]
pub struct Reads {
    core: Arc<Core>,
}

impl Reads {
    pub(super) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Whether the database answers.
    pub(crate) async fn database_answers(&self) -> bool {
        self.core.store.ping().await.is_ok()
    }

    pub(crate) async fn session(&self, id: Uuid) -> Result<Option<SessionRow>> {
        self.core.store.session(id).await
    }

    /// A page of sessions, newest first, and how many there are; only
    /// `owner`'s when given.
    pub(crate) async fn sessions(
        &self,
        limit: i64,
        offset: i64,
        owner: Option<Uuid>,
    ) -> Result<(Vec<SessionRow>, i64)> {
        self.core.store.sessions(limit, offset, owner).await
    }

    pub(crate) async fn run(&self, id: Uuid) -> Result<Option<RunRow>> {
        self.core.store.run(id).await
    }

    pub(crate) async fn run_owner(&self, id: Uuid) -> Result<RunOwner> {
        self.core.store.run_owner(id).await
    }

    pub(crate) async fn runs_of_session(&self, session: Uuid) -> Result<Vec<RunRow>> {
        self.core.store.runs_of_session(session).await
    }

    /// The number of the run's last stored event (0: none).
    pub(crate) async fn last_seq(&self, run: Uuid) -> Result<i64> {
        self.core.store.last_seq(run).await
    }

    /// Whether the run has a live tail here: it exists and has not ended.
    pub(crate) fn is_live(&self, run: Uuid) -> bool {
        self.core.hubs.get(run).is_some()
    }

    /// Whether a run of the session is queued or running.
    pub(crate) async fn session_busy(&self, session: Uuid) -> Result<bool> {
        self.core.store.session_busy(session).await
    }

    /// The session's kept token, sealed.
    pub(crate) async fn session_token(&self, session: Uuid) -> Result<Option<Vec<u8>>> {
        self.core.store.session_token(session).await
    }

    pub(crate) async fn pull_requests(&self, session: Uuid) -> Result<Vec<PullRequestRow>> {
        self.core.store.pull_requests(session).await
    }

    /// Queued and running runs, by status (for `/metrics`).
    pub(crate) async fn active_run_counts(&self) -> Result<Vec<(RunStatus, i64)>> {
        self.core.store.active_run_counts().await
    }

    /// `WORKSPACES_ROOT/<session>/repo`: the clone the agent works in.
    pub(crate) fn workspace(&self, session: Uuid) -> PathBuf {
        self.core.workspace(session)
    }

    /// Git's view of the session's workspace `dir` (its state, its patch),
    /// made through the engine's snapshot index of the session. The index
    /// is the engine's: these reads take its lock (a read and a run's
    /// snapshot wait for each other, a patch only while its diff is made)
    /// and make its folder if it is missing, and write nothing else.
    pub(crate) fn workspace_git(&self, session: Uuid, dir: PathBuf) -> WorkspaceGit {
        WorkspaceGit {
            cache: self.core.snapshot_cache(session),
            dir,
        }
    }
}

/// See [`Reads::workspace_git`]. Its calls block: run them on a blocking
/// thread.
pub(crate) struct WorkspaceGit {
    dir: PathBuf,
    cache: crate::git::SnapshotCache,
}

impl WorkspaceGit {
    /// Branch, HEAD, ahead, dirty and the newest `max_commits` commits.
    pub(crate) fn state(
        &self,
        base_commit: Option<&str>,
        max_commits: usize,
    ) -> std::result::Result<crate::git::GitState, git2::Error> {
        crate::git::state(&self.dir, &self.cache, base_commit, max_commits)
    }

    /// The workspace against `base_commit`, as a patch written to `sink`.
    pub(crate) fn patch(
        &self,
        base_commit: &str,
        sink: crate::git::Sink<'_>,
    ) -> std::result::Result<(), crate::git::PatchError> {
        crate::git::workspace_patch(&self.dir, &self.cache, base_commit, sink)
    }
}
