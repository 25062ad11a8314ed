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

    /// Where the session's workspace snapshots keep their index.
    pub(crate) fn snapshot_cache(&self, session: Uuid) -> crate::git::SnapshotCache {
        self.core.snapshot_cache(session)
    }
}
