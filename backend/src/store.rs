//! Postgres: the pool, the migrations, and every query. Rows are the
//! database's shapes; the API layer converts them into its own types.
//!
//! Architecture Invariant: only this module (and `store/accounts.rs`, its
//! users and credentials, and `store/preview_grants.rs`) writes SQL.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use runner_protocol::{Event, EventName};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use crate::domain::{
    RunStatus, RunnerRunId, RunnerThreadId, SessionSettings, SessionStatus, Usage,
};
use crate::git::{Changes, CloneCounts, Snapshot};

mod accounts;
mod preview_grants;
mod shipping;

pub(crate) use accounts::{CodeUsed, SignedIn, SigninCodeRow, UserRow};
pub(crate) use preview_grants::{NewPreviewGrant, PreviewGrantRow};
pub(crate) use shipping::PullRequestRow;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Any two backends migrating at once take turns on this lock (refinery
/// takes none of its own).
const MIGRATION_LOCK: i64 = 0x0072_6570_6f72_756e;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach Postgres")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("a Postgres query failed")]
    Query(#[from] tokio_postgres::Error),
    #[error("the database migrations failed")]
    Migrate(#[from] refinery::Error),
    #[error("invalid DATABASE_URL: {0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// A row with that key is stored already.
    fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Query(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION))
    }
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: Uuid,
    pub repo_url: String,
    pub git_ref: Option<String>,
    pub depth: Option<i32>,
    pub status: SessionStatus,
    pub error: Option<String>,
    pub clone_progress: Option<CloneCounts>,
    pub base_commit: Option<String>,
    /// The branch the clone checked out (none for a tag or a commit).
    pub cloned_branch: Option<String>,
    pub runner_thread_id: Option<RunnerThreadId>,
    pub codex_thread_id: Option<String>,
    /// The user who created it; `None` when created without authentication.
    pub owner_id: Option<Uuid>,
    /// The folder's size when last measured.
    pub workspace_bytes: Option<i64>,
    pub last_active_at: DateTime<Utc>,
    pub expired_at: Option<DateTime<Utc>>,
    /// What its agent runs with (V7).
    pub settings: SessionSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many times the row changed (V12): a state with a higher number
    /// is newer, whichever process read it.
    pub version: i64,
}

impl TryFrom<&Row> for SessionRow {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> std::result::Result<Self, Self::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            repo_url: row.try_get("repo_url")?,
            git_ref: row.try_get("git_ref")?,
            depth: row.try_get("depth")?,
            status: row.try_get("status")?,
            error: row.try_get("error")?,
            clone_progress: row
                .try_get::<_, Option<Json<CloneCounts>>>("clone_progress")?
                .map(|Json(c)| c),
            base_commit: row.try_get("base_commit")?,
            cloned_branch: row.try_get("cloned_branch")?,
            runner_thread_id: row
                .try_get::<_, Option<String>>("runner_thread_id")?
                .map(RunnerThreadId::from),
            codex_thread_id: row.try_get("codex_thread_id")?,
            owner_id: row.try_get("owner_id")?,
            workspace_bytes: row.try_get("workspace_bytes")?,
            last_active_at: row.try_get("last_active_at")?,
            expired_at: row.try_get("expired_at")?,
            settings: row.try_get::<_, Json<SessionSettings>>("settings")?.0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: Uuid,
    pub session_id: Uuid,
    pub position: i64,
    pub prompt: String,
    pub status: RunStatus,
    pub runner_run_id: Option<RunnerRunId>,
    pub final_response: Option<String>,
    pub usage: Option<Usage>,
    pub error: Option<String>,
    /// The workspace's status when the run started, to tell what it changed.
    pub status_before: Option<Snapshot>,
    pub files: Option<Changes>,
    /// The commits of the workspace's exact state before and after the run
    /// (`git::snapshot_commit`), for its patch.
    pub snapshot_before: Option<String>,
    pub snapshot_after: Option<String>,
    /// A cancel was asked for; the worker honours it once the runner's run
    /// id is recorded (or before it starts the run on the runner).
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<&Row> for RunRow {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> std::result::Result<Self, Self::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            session_id: row.try_get("session_id")?,
            position: row.try_get("position")?,
            prompt: row.try_get("prompt")?,
            status: row.try_get("status")?,
            runner_run_id: row
                .try_get::<_, Option<String>>("runner_run_id")?
                .map(RunnerRunId::from),
            final_response: text_of_bytes(row.try_get("final_response")?),
            usage: row
                .try_get::<_, Option<Json<Usage>>>("usage")?
                .map(|Json(u)| u),
            error: text_of_bytes(row.try_get("error")?),
            status_before: row
                .try_get::<_, Option<Json<Snapshot>>>("status_before")?
                .map(|Json(s)| s),
            snapshot_before: row.try_get("snapshot_before")?,
            snapshot_after: row.try_get("snapshot_after")?,
            files: row
                .try_get::<_, Option<Json<Changes>>>("files")?
                .map(|Json(f)| f),
            cancel_requested: row.try_get("cancel_requested")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

/// Reads every row, or the first that does not fit.
fn read_all<T>(rows: &[Row]) -> Result<Vec<T>>
where
    T: for<'r> TryFrom<&'r Row, Error = tokio_postgres::Error>,
{
    Ok(rows
        .iter()
        .map(T::try_from)
        .collect::<std::result::Result<_, _>>()?)
}

/// A text column kept as bytes (`bytea`, migrations/V9): every character,
/// NUL included, which `text` refuses. Written from a `String`, so valid
/// UTF-8; anything else is read lossily rather than refused.
fn text_of_bytes(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|bytes| {
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    })
}

/// Reads a row if there is one.
fn read_opt<T>(row: Option<Row>) -> Result<Option<T>>
where
    T: for<'r> TryFrom<&'r Row, Error = tokio_postgres::Error>,
{
    Ok(row.as_ref().map(T::try_from).transpose()?)
}

/// Session `id`, read on `client`: the session-change listener reads each
/// changed session once, on a connection of its own, for all its streams.
pub(crate) async fn session_on(
    client: &tokio_postgres::Client,
    id: Uuid,
) -> Result<Option<SessionRow>> {
    let row = client
        .query_opt("SELECT * FROM sessions WHERE id = $1", &[&id])
        .await?;
    read_opt(row)
}

/// What a finished run leaves in its row.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub final_response: Option<String>,
    pub usage: Option<Usage>,
    pub error: Option<String>,
    pub files: Option<Changes>,
    /// The commit of the workspace's state as the run ended.
    pub snapshot_after: Option<String>,
    /// Nobody saw the run end (its runner lost it, e.g. across a restart
    /// of both): it is recorded as ended at its last event, not at the
    /// moment the loss was noticed, so its duration leaves out downtime.
    pub ended_unseen: bool,
}

impl RunOutcome {
    /// An outcome with nothing but a status and an error.
    pub(crate) fn bare(status: RunStatus, error: Option<String>) -> Self {
        Self {
            status,
            final_response: None,
            usage: None,
            error,
            files: None,
            snapshot_after: None,
            ended_unseen: false,
        }
    }
}

/// What a conditional update of a run found: the run in the state the
/// update expected (and whether a cancel was asked for meanwhile), or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// Done; nobody asked to cancel the run.
    Done,
    /// Done, and a cancel was asked for before: ending the run is the
    /// caller's.
    CancelRequested,
    /// Not done: the run was no longer in the expected state (cancelled
    /// while queued) or is gone (deleted with its session).
    Gone,
}

impl Marked {
    fn from_row(row: Option<tokio_postgres::Row>) -> Self {
        match row.map(|r| r.get::<_, bool>(0)) {
            None => Marked::Gone,
            Some(false) => Marked::Done,
            Some(true) => Marked::CancelRequested,
        }
    }
}

/// What an attempt to expire a session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// Expired; the runner thread it had, to delete.
    Expired { thread: Option<RunnerThreadId> },
    /// Kept: it was prompted, deleted or expired meanwhile.
    Kept,
}

/// Whose session a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOwner {
    NoSuchRun,
    /// A session made without authentication (`AUTH_MODE=none`).
    Nobody,
    User(Uuid),
}

/// A run as a cancel request found it.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub status: RunStatus,
    pub runner_run_id: Option<RunnerRunId>,
}

/// Result of trying to queue a prompt.
pub enum Enqueue {
    Queued(Box<RunRow>),
    SessionMissing,
    /// The sweeper removed its workspace.
    SessionExpired,
    QueueFull,
}

/// A run `finish_run` ended.
pub struct Finished {
    /// When it started; `None` for one that never did.
    pub started_at: Option<DateTime<Utc>>,
}

/// What `insert_owned_session` did.
pub enum OwnedInsert {
    Inserted(Box<SessionRow>),
    /// The owner holds `BACKEND_USER_MAX_SESSIONS` sessions.
    TooManySessions,
    /// The owner's workspaces hold this many bytes, at least
    /// `BACKEND_USER_MAX_WORKSPACE_BYTES`.
    TooManyBytes(i64),
}

/// A session the sweeper may expire.
#[derive(Debug, Clone)]
pub struct IdleSession {
    pub id: Uuid,
    pub workspace_bytes: i64,
}

/// What a new session is made of.
pub struct NewSession<'a> {
    pub repo_url: &'a str,
    pub git_ref: Option<&'a str>,
    pub depth: Option<i32>,
    pub settings: &'a SessionSettings,
}

/// A new session, `cloning`.
const INSERT_SESSION: &str =
    "INSERT INTO sessions (id, repo_url, git_ref, depth, status, owner_id, settings)
     VALUES ($1, $2, $3, $4, 'cloning', $5, $6) RETURNING *";

impl Store {
    /// Connects, and migrates under an advisory lock.
    pub(crate) async fn connect(database_url: &str, pool_size: usize) -> Result<Self> {
        let pg_config: tokio_postgres::Config = database_url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Config(e.to_string()))?;
        let (mut client, connection) = pg_config.connect(NoTls).await?;
        let driver = tokio::spawn(connection);
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let migrated = embedded::migrations::runner().run_async(&mut client).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        drop(client);
        driver.abort();
        let report = migrated?;
        for migration in report.applied_migrations() {
            tracing::info!(migration = %migration, "applied migration");
        }
        let manager = Manager::from_config(
            pg_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        self.client().await?.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    // --- sessions -------------------------------------------------------

    pub(crate) async fn insert_session(
        &self,
        id: Uuid,
        new: NewSession<'_>,
        owner: Option<Uuid>,
    ) -> Result<SessionRow> {
        let settings = Json(new.settings);
        let row = self
            .client()
            .await?
            .query_one(
                INSERT_SESSION,
                &[
                    &id,
                    &new.repo_url,
                    &new.git_ref,
                    &new.depth,
                    &owner,
                    &settings,
                ],
            )
            .await?;
        Ok(SessionRow::try_from(&row)?)
    }

    /// A session of `owner`, unless they hold `max_sessions` sessions or
    /// their workspaces hold `max_bytes` or more (0: no byte limit). The
    /// owner's row is locked, so two creations at once cannot both pass.
    pub(crate) async fn insert_owned_session(
        &self,
        id: Uuid,
        new: NewSession<'_>,
        owner: Uuid,
        max_sessions: i64,
        max_bytes: u64,
    ) -> Result<OwnedInsert> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&owner])
            .await?;
        let row = tx
            .query_one(
                "SELECT count(*), coalesce(sum(workspace_bytes), 0)::bigint FROM sessions
                 WHERE owner_id = $1 AND status <> 'expired'",
                &[&owner],
            )
            .await?;
        let (held, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if held >= max_sessions {
            return Ok(OwnedInsert::TooManySessions);
        }
        if max_bytes > 0 && u64::try_from(bytes).unwrap_or(0) >= max_bytes {
            return Ok(OwnedInsert::TooManyBytes(bytes));
        }
        let settings = Json(new.settings);
        let row = tx
            .query_one(
                INSERT_SESSION,
                &[
                    &id,
                    &new.repo_url,
                    &new.git_ref,
                    &new.depth,
                    &owner,
                    &settings,
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(OwnedInsert::Inserted(Box::new(SessionRow::try_from(&row)?)))
    }

    /// Records the size of the session's folder, as the activity it
    /// follows (a clone or a run). An expired session keeps its zero.
    pub(crate) async fn set_workspace_bytes(&self, id: Uuid, bytes: u64) -> Result<()> {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.client()
            .await?
            .execute(
                "UPDATE sessions SET workspace_bytes = $2, last_active_at = now()
                 WHERE id = $1 AND status <> 'expired'",
                &[&id, &bytes],
            )
            .await?;
        Ok(())
    }

    /// Sessions the sweeper may expire, longest idle first: `ready` or
    /// `failed`, without queued or running runs, idle since before
    /// `idle_before` when given.
    pub(crate) async fn expirable_sessions(
        &self,
        idle_before: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<IdleSession>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, coalesce(workspace_bytes, 0) FROM sessions s
                 WHERE status IN ('ready', 'failed')
                   AND ($1::timestamptz IS NULL OR last_active_at < $1)
                   AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.session_id = s.id
                                   AND r.status IN ('queued', 'running'))
                 ORDER BY last_active_at, id LIMIT $2",
                &[&idle_before, &limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(IdleSession {
                    id: row.try_get(0)?,
                    workspace_bytes: row.try_get(1)?,
                })
            })
            .collect()
    }

    /// Bytes held by every workspace that has not expired.
    pub(crate) async fn total_workspace_bytes(&self) -> Result<i64> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT coalesce(sum(workspace_bytes), 0)::bigint FROM sessions
                 WHERE status <> 'expired'",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Marks the session expired if it still may be (see
    /// `expirable_sessions`), under the lock a prompt takes.
    pub(crate) async fn expire_session(&self, id: Uuid) -> Result<Expiry> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT runner_thread_id FROM sessions
                 WHERE id = $1 AND status IN ('ready', 'failed') FOR UPDATE",
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Expiry::Kept);
        };
        let thread = row
            .try_get::<_, Option<String>>(0)?
            .map(RunnerThreadId::from);
        let active: i64 = tx
            .query_one(
                "SELECT count(*) FROM runs WHERE session_id = $1 AND status IN ('queued', 'running')",
                &[&id],
            )
            .await?
            .try_get(0)?;
        if active > 0 {
            return Ok(Expiry::Kept);
        }
        tx.execute(
            "UPDATE sessions SET status = 'expired', expired_at = now(), workspace_bytes = 0,
                 runner_thread_id = NULL, updated_at = now()
             WHERE id = $1",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        Ok(Expiry::Expired { thread })
    }

    /// Whose session a run belongs to.
    pub(crate) async fn run_owner(&self, run_id: Uuid) -> Result<RunOwner> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT s.owner_id FROM runs r JOIN sessions s ON s.id = r.session_id WHERE r.id = $1",
                &[&run_id],
            )
            .await?;
        Ok(match row {
            None => RunOwner::NoSuchRun,
            Some(row) => match row.try_get(0)? {
                Some(user) => RunOwner::User(user),
                None => RunOwner::Nobody,
            },
        })
    }

    /// Runs of `owner`'s sessions that have not ended.
    pub(crate) async fn active_runs_of_owner(&self, owner: Uuid) -> Result<i64> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT count(*) FROM runs r JOIN sessions s ON s.id = r.session_id
                 WHERE s.owner_id = $1 AND r.status IN ('queued', 'running')",
                &[&owner],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// How many runs are queued and how many running, over every session
    /// (the `runs_active` partial index answers it).
    pub(crate) async fn active_run_counts(&self) -> Result<Vec<(RunStatus, i64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT status, count(*) FROM runs
                 WHERE status IN ('queued', 'running') GROUP BY status",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    pub(crate) async fn session(&self, id: Uuid) -> Result<Option<SessionRow>> {
        let client = self.client().await?;
        session_on(&client, id).await
    }

    /// Newest first; only `owner`'s when given.
    pub(crate) async fn sessions(
        &self,
        limit: i64,
        offset: i64,
        owner: Option<Uuid>,
    ) -> Result<(Vec<SessionRow>, i64)> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM sessions WHERE $3::uuid IS NULL OR owner_id = $3
                 ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2",
                &[&limit, &offset, &owner],
            )
            .await?;
        let total: i64 = client
            .query_one(
                "SELECT count(*) FROM sessions WHERE $1::uuid IS NULL OR owner_id = $1",
                &[&owner],
            )
            .await?
            .get(0);
        Ok((read_all(&rows)?, total))
    }

    pub(crate) async fn set_clone_progress(&self, id: Uuid, progress: &CloneCounts) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE sessions SET clone_progress = $2, updated_at = now()
                 WHERE id = $1 AND status = 'cloning'",
                &[&id, &Json(progress)],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn mark_ready(
        &self,
        id: Uuid,
        base_commit: &str,
        cloned_branch: Option<&str>,
        runner_thread_id: Option<&RunnerThreadId>,
    ) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE sessions SET status = 'ready', base_commit = $2, runner_thread_id = $3,
                        cloned_branch = $4, error = NULL, updated_at = now()
                 WHERE id = $1 AND status = 'cloning'",
                &[
                    &id,
                    &base_commit,
                    &runner_thread_id.map(RunnerThreadId::as_str),
                    &cloned_branch,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    pub(crate) async fn mark_failed(&self, id: Uuid, error: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE sessions SET status = 'failed', error = $2, updated_at = now() WHERE id = $1",
                &[&id, &error],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn set_runner_thread(
        &self,
        id: Uuid,
        runner_thread_id: &RunnerThreadId,
    ) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE sessions SET runner_thread_id = $2, updated_at = now() WHERE id = $1",
                &[&id, &runner_thread_id.as_str()],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn set_codex_thread(&self, id: Uuid, codex_thread_id: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE sessions SET codex_thread_id = $2, updated_at = now() WHERE id = $1",
                &[&id, &codex_thread_id],
            )
            .await?;
        Ok(())
    }

    /// Deletes the session; returns the runner thread the deleted row named.
    pub(crate) async fn delete_session(&self, id: Uuid) -> Result<Option<RunnerThreadId>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "DELETE FROM sessions WHERE id = $1 RETURNING runner_thread_id",
                &[&id],
            )
            .await?;
        Ok(row
            .and_then(|r| r.get::<_, Option<String>>(0))
            .map(RunnerThreadId::from))
    }

    /// Fails a session that is still cloning; a deleted or finished one is
    /// left alone.
    pub(crate) async fn mark_failed_if_cloning(&self, id: Uuid, error: &str) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE sessions SET status = 'failed', error = $2, updated_at = now()
                 WHERE id = $1 AND status = 'cloning'",
                &[&id, &error],
            )
            .await?;
        Ok(n == 1)
    }

    /// Every session's id.
    pub(crate) async fn session_ids(&self) -> Result<HashSet<Uuid>> {
        let rows = self
            .client()
            .await?
            .query("SELECT id FROM sessions", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Sessions left `cloning` by a previous process.
    pub(crate) async fn interrupted_clones(&self) -> Result<Vec<Uuid>> {
        let rows = self
            .client()
            .await?
            .query("SELECT id FROM sessions WHERE status = 'cloning'", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    // --- runs -----------------------------------------------------------

    /// Queues a prompt at the end of its session's queue.
    pub(crate) async fn enqueue_run(
        &self,
        id: Uuid,
        session_id: Uuid,
        prompt: &str,
        max_queued: i64,
    ) -> Result<Enqueue> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Serialises prompts of one session so positions never collide,
        // and with the sweeper, which expires a session only under this
        // lock and only without queued or running runs.
        let session = tx
            .query_opt(
                "SELECT status FROM sessions WHERE id = $1 FOR UPDATE",
                &[&session_id],
            )
            .await?;
        let Some(session) = session else {
            return Ok(Enqueue::SessionMissing);
        };
        if session.try_get::<_, SessionStatus>(0)? == SessionStatus::Expired {
            return Ok(Enqueue::SessionExpired);
        }
        let queued: i64 = tx
            .query_one(
                "SELECT count(*) FROM runs WHERE session_id = $1 AND status = 'queued'",
                &[&session_id],
            )
            .await?
            .get(0);
        if queued >= max_queued {
            return Ok(Enqueue::QueueFull);
        }
        let row = tx
            .query_one(
                "INSERT INTO runs (id, session_id, position, prompt, status)
                 VALUES ($1, $2, (SELECT coalesce(max(position), 0) + 1 FROM runs WHERE session_id = $2),
                         $3, 'queued')
                 RETURNING *",
                &[&id, &session_id, &prompt],
            )
            .await?;
        tx.execute(
            "UPDATE sessions SET last_active_at = now() WHERE id = $1",
            &[&session_id],
        )
        .await?;
        tx.commit().await?;
        Ok(Enqueue::Queued(Box::new(RunRow::try_from(&row)?)))
    }

    pub(crate) async fn run(&self, id: Uuid) -> Result<Option<RunRow>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT * FROM runs WHERE id = $1", &[&id])
            .await?;
        read_opt(row)
    }

    pub(crate) async fn runs_of_session(&self, session_id: Uuid) -> Result<Vec<RunRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT * FROM runs WHERE session_id = $1 ORDER BY position",
                &[&session_id],
            )
            .await?;
        read_all(&rows)
    }

    /// The session's running run, else its oldest queued one.
    pub(crate) async fn next_run(&self, session_id: Uuid) -> Result<Option<RunRow>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT * FROM runs WHERE session_id = $1 AND status IN ('queued', 'running')
                 ORDER BY (status = 'running') DESC, position LIMIT 1",
                &[&session_id],
            )
            .await?;
        read_opt(row)
    }

    /// Moves a queued run to running. A `status_before` of `None` is a
    /// workspace whose state could not be read (the run's files are then
    /// unknown).
    pub(crate) async fn start_run(
        &self,
        id: Uuid,
        status_before: Option<&Snapshot>,
        snapshot_before: Option<&str>,
    ) -> Result<Marked> {
        let row = self
            .client()
            .await?
            .query_opt(
                "UPDATE runs SET status = 'running', started_at = now(), status_before = $2,
                        snapshot_before = $3
                 WHERE id = $1 AND status = 'queued' RETURNING cancel_requested",
                &[&id, &status_before.map(Json), &snapshot_before],
            )
            .await?;
        Ok(Marked::from_row(row))
    }

    /// Records the runner's run id. A cancel request and this update
    /// serialise on the row, so one of the two always sees the other.
    pub(crate) async fn set_runner_run(
        &self,
        id: Uuid,
        runner_run_id: &RunnerRunId,
    ) -> Result<Marked> {
        let row = self
            .client()
            .await?
            .query_opt(
                "UPDATE runs SET runner_run_id = $2 WHERE id = $1 RETURNING cancel_requested",
                &[&id, &runner_run_id.as_str()],
            )
            .await?;
        Ok(Marked::from_row(row))
    }

    /// Records a cancel request on a queued or running run and returns what
    /// the run looked like then; `None` when it already ended or is gone.
    pub(crate) async fn request_cancel(&self, id: Uuid) -> Result<Option<CancelTarget>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "UPDATE runs SET cancel_requested = true
                 WHERE id = $1 AND status IN ('queued', 'running')
                 RETURNING status, runner_run_id",
                &[&id],
            )
            .await?;
        row.map(|r| {
            Ok(CancelTarget {
                status: r.try_get(0)?,
                runner_run_id: r.try_get::<_, Option<String>>(1)?.map(RunnerRunId::from),
            })
        })
        .transpose()
    }

    /// Writes the run's last events and its outcome in one transaction.
    /// Returns `None` when the run had already finished or no longer
    /// exists; then nothing is written.
    pub(crate) async fn finish_run(
        &self,
        id: Uuid,
        events: &[Event],
        outcome: &RunOutcome,
    ) -> Result<Option<Finished>> {
        self.finish_if(
            id,
            events,
            outcome,
            &[RunStatus::Queued, RunStatus::Running],
        )
        .await
    }

    /// `finish_run` for a run that has not started: `None` when it started
    /// meanwhile (its worker ends it), finished, or is gone.
    pub(crate) async fn finish_queued_run(
        &self,
        id: Uuid,
        events: &[Event],
        outcome: &RunOutcome,
    ) -> Result<Option<Finished>> {
        self.finish_if(id, events, outcome, &[RunStatus::Queued])
            .await
    }

    async fn finish_if(
        &self,
        id: Uuid,
        events: &[Event],
        outcome: &RunOutcome,
        statuses: &[RunStatus],
    ) -> Result<Option<Finished>> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The row first: its lock keeps a concurrent delete of the session
        // waiting until the events are in, and when the run has ended or is
        // gone no event is written (an early terminal event would shadow
        // the relay's own event of the same number).
        let row = tx
            .query_opt(
                "UPDATE runs SET status = $2, final_response = $3, usage = $4, error = $5,
                        files = $6, snapshot_after = coalesce($9, snapshot_after),
                        finished_at = CASE WHEN $8 THEN coalesce(
                            (SELECT max(created_at) FROM run_events WHERE run_id = $1),
                            started_at, now()) ELSE now() END
                 WHERE id = $1 AND status = ANY($7::text[])
                 RETURNING started_at",
                &[
                    &id,
                    &outcome.status,
                    &outcome.final_response.as_deref().map(str::as_bytes),
                    &outcome.usage.as_ref().map(Json),
                    &outcome.error.as_deref().map(str::as_bytes),
                    &outcome.files.as_ref().map(Json),
                    &statuses,
                    &outcome.ended_unseen,
                    &outcome.snapshot_after,
                ],
            )
            .await?;
        let Some(row) = row else {
            // Dropping the transaction rolls it back; nothing was written.
            return Ok(None);
        };
        let finished = Finished {
            started_at: row.try_get(0)?,
        };
        // The terminal event skips a duplicate, as the relay's own event of
        // that number came first.
        insert_events(&tx, id, events, Duplicates::Skip).await?;
        tx.commit().await?;
        Ok(Some(finished))
    }

    /// Runs that were queued or running when the previous process stopped.
    pub(crate) async fn active_runs(&self) -> Result<Vec<RunRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT * FROM runs WHERE status IN ('queued', 'running') ORDER BY position",
                &[],
            )
            .await?;
        read_all(&rows)
    }

    // --- events ---------------------------------------------------------

    /// Stores a batch of a run's events. `Ok(false)` when the run no longer
    /// exists (its session was deleted): a normal end, not an error.
    pub(crate) async fn append_events(&self, run_id: Uuid, events: &[Event]) -> Result<bool> {
        if events.is_empty() {
            return Ok(true);
        }
        let client = self.client().await?;
        match insert_events(&client, run_id, events, Duplicates::Refuse).await {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            // Some are stored already: only after a re-attach that started
            // before what another process stored. Store the rest.
            Err(error) if error.is_unique_violation() => {
                insert_events(&client, run_id, events, Duplicates::Skip).await?;
                Ok(self.run(run_id).await?.is_some())
            }
            Err(error) => Err(error),
        }
    }

    /// Events with `after < seq < before`, in order, at most `limit` and
    /// `max_bytes` of data (the first one whatever its size); each one's
    /// text becomes its payload as stored. `compact` leaves out the
    /// `item.delta` events of items the run has completed (the completed
    /// item carries their whole): a replay's rule, see `hub::subscribe`.
    pub(crate) async fn events(
        &self,
        run_id: Uuid,
        after: i64,
        before: i64,
        limit: i64,
        max_bytes: i64,
        compact: bool,
    ) -> Result<Vec<Event>> {
        let client = self.client().await?;
        // The count limit first, then the running size over those rows
        // only: the budget never makes Postgres read the whole run. Deltas
        // go by `item_id`, taken out of each event's JSON as it was stored
        // (`item_id_of`): `data` is never cast to jsonb, which refuses some
        // text JSON allows.
        let statement = client
            .prepare_cached(
                "SELECT seq, event_type, data FROM (
                     SELECT seq, event_type, data,
                            sum(octet_length(data)) OVER (ORDER BY seq) - octet_length(data)
                                AS before_it
                     FROM (SELECT seq, event_type, data FROM run_events
                           WHERE run_id = $1 AND seq > $2 AND seq < $3
                             AND NOT ($6 AND event_type = 'item.delta'
                                      AND coalesce(item_id IN (
                                          SELECT done.item_id FROM run_events done
                                          WHERE done.run_id = $1
                                            AND done.event_type = 'item.completed'
                                            AND done.item_id IS NOT NULL), false))
                           ORDER BY seq LIMIT $4) page
                 ) sized
                 WHERE before_it < $5 ORDER BY seq",
            )
            .await?;
        let rows = client
            .query(
                &statement,
                &[&run_id, &after, &before, &limit, &max_bytes, &compact],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Event::new(
                    // Written from a `u64`: never negative.
                    u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or_default(),
                    r.try_get::<_, &str>(1)?,
                    r.try_get::<_, String>(2)?,
                ))
            })
            .collect()
    }

    pub(crate) async fn last_seq(&self, run_id: Uuid) -> Result<i64> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT coalesce(max(seq), 0) FROM run_events WHERE run_id = $1",
                &[&run_id],
            )
            .await?;
        Ok(row.get(0))
    }
}

/// What to do with events already stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Duplicates {
    /// Fail with a unique violation (the fast statement).
    Refuse,
    /// Skip them (`ON CONFLICT DO NOTHING`, which costs about twice as much
    /// per row).
    Skip,
}

/// One statement for a whole batch; the number of rows stored.
///
/// The run's row is locked (`FOR KEY SHARE`) once for the batch, as a
/// foreign key would per row: a delete of the run waits until the batch is
/// in (and its trigger removes it, migrations/V4), and a batch after the
/// delete stores nothing, because the run is gone.
async fn insert_events(
    client: &impl deadpool_postgres::GenericClient,
    run_id: Uuid,
    events: &[Event],
    duplicates: Duplicates,
) -> Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| i64::try_from(e.seq).unwrap_or(i64::MAX))
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let texts: Vec<_> = events.iter().map(|e| e.data.text()).collect();
    let data: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
    let items: Vec<Option<String>> = events
        .iter()
        .zip(&data)
        .map(|(e, text)| item_id_of(e.kind.as_str(), text))
        .collect();
    let statement = match duplicates {
        Duplicates::Refuse => INSERT_EVENTS,
        Duplicates::Skip => INSERT_EVENTS_SKIPPING_DUPLICATES,
    };
    // Prepared once per connection: parsing and planning the statement
    // each time cost Postgres more than storing the rows of a small batch.
    let statement = client.prepare_cached(statement).await?;
    let rows = client
        .execute(&statement, &[&run_id, &seqs, &types, &data, &items])
        .await?;
    Ok(rows)
}

const INSERT_EVENTS: &str = "
    WITH run AS (SELECT id FROM runs WHERE id = $1 FOR KEY SHARE)
    INSERT INTO run_events (run_id, seq, event_type, data, item_id)
    SELECT run.id, e.seq, e.event_type, e.data, e.item_id
    FROM run, unnest($2::bigint[], $3::text[], $4::text[], $5::text[])
        AS e(seq, event_type, data, item_id)";

const INSERT_EVENTS_SKIPPING_DUPLICATES: &str = "
    WITH run AS (SELECT id FROM runs WHERE id = $1 FOR KEY SHARE)
    INSERT INTO run_events (run_id, seq, event_type, data, item_id)
    SELECT run.id, e.seq, e.event_type, e.data, e.item_id
    FROM run, unnest($2::bigint[], $3::text[], $4::text[], $5::text[])
        AS e(seq, event_type, data, item_id)
    ON CONFLICT (run_id, seq) DO NOTHING";

/// The item an `item.delta` (`itemId`) or `item.completed` (`item.id`)
/// event is about, for a replay's compaction; `None` for other events, and
/// for one whose JSON does not say (it is then replayed whole). Only the
/// id is decoded: the rest of the text (a lone surrogate, a `\u0000`) is
/// skipped, never refused.
fn item_id_of(kind: &str, text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Delta {
        #[serde(rename = "itemId")]
        item_id: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        id: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Completed {
        item: Option<Item>,
    }
    // Asked of every stored event: two comparisons, not a parse of every
    // name.
    if kind == EventName::ItemDelta.as_str() {
        serde_json::from_str::<Delta>(text).ok()?.item_id
    } else if kind == EventName::ItemCompleted.as_str() {
        serde_json::from_str::<Completed>(text).ok()?.item?.id
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::item_id_of;

    #[test]
    fn an_events_item_is_read_whatever_else_its_text_holds() {
        let delta = r#"{"type":"item.delta","kind":"command_output","itemId":"c1","delta":"a\u0000b\ud800\udc00\udfff"}"#;
        assert_eq!(item_id_of("item.delta", delta).as_deref(), Some("c1"));
        let done = r#"{"type":"item.completed","item":{"aggregated_output":"\ud800","id":"c1"}}"#;
        assert_eq!(item_id_of("item.completed", done).as_deref(), Some("c1"));
        assert_eq!(item_id_of("item.started", done), None);
        assert_eq!(item_id_of("item.delta", "not json"), None);
        assert_eq!(item_id_of("item.completed", r#"{"item":null}"#), None);
    }
}
