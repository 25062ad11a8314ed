//! The API's objects, converted from store rows. A serialisable type is a
//! boundary type: none of these is used inside the engine.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use poem_openapi::registry::MetaSchemaRef;
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Enum, Object};
use serde_json::Value;
use uuid::Uuid;

use crate::store::{RunRow, SessionRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum SessionStatus {
    Cloning,
    Ready,
    Failed,
    /// Idle too long, or the longest idle when the workspaces outgrew their
    /// quota: the workspace is removed; runs and events stay readable.
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl From<crate::domain::SessionStatus> for SessionStatus {
    fn from(status: crate::domain::SessionStatus) -> Self {
        use crate::domain::SessionStatus as S;
        match status {
            S::Cloning => Self::Cloning,
            S::Ready => Self::Ready,
            S::Failed => Self::Failed,
            S::Expired => Self::Expired,
        }
    }
}

impl From<crate::domain::RunStatus> for RunStatus {
    fn from(status: crate::domain::RunStatus) -> Self {
        use crate::domain::RunStatus as S;
        match status {
            S::Queued => Self::Queued,
            S::Running => Self::Running,
            S::Completed => Self::Completed,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
        }
    }
}

/// A string field of a request body: a JSON string and nothing else.
/// poem-openapi's `String` also takes a number or a boolean and makes it
/// text, so `{"prompt": false}` would run the prompt `false`; the document
/// says `string`, and anything else is a 400 like `null` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonString(pub String);

impl std::ops::Deref for JsonString {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Type for JsonString {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromJSON for JsonString {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(text) => Ok(Self(text)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for JsonString {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// `POST /api/sessions`
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct CreateSession {
    /// The git remote: `https://`, `http://`, `ssh://`, `git://` or
    /// `user@host:path` (`file://` and local paths only when the server
    /// allows local repositories).
    pub repo_url: JsonString,
    /// Branch, tag or commit to check out; the default branch when absent.
    /// `x`, `refs/heads/x`, `refs/tags/x`, or a full or abbreviated commit
    /// id; a branch wins over a tag of the same name.
    #[oai(rename = "ref")]
    pub git_ref: Option<JsonString>,
    /// Shallow clone depth (number of commits). Only the ref checked out is
    /// fetched, as `git clone --depth N --single-branch` does. A local
    /// repository is fetched whole (libgit2 cannot fetch it shallow).
    pub depth: Option<i64>,
    /// A token for a private https repository. Used for the clone only
    /// unless `keep_token` is set; never logged or returned.
    #[oai(write_only)]
    pub token: Option<JsonString>,
    /// Keep `token` for the session's pushes and pull requests: it is
    /// stored sealed (XChaCha20-Poly1305 under a key derived from
    /// `BACKEND_SECRET_KEY`; refused when that is unset) and deleted with
    /// the session.
    pub keep_token: Option<bool>,
    /// The model its agent runs: one of the runner's `GET /models` (the
    /// runner's default when absent).
    pub model: Option<JsonString>,
    /// `minimal`, `low`, `medium`, `high` or `xhigh`, among those the model
    /// supports.
    pub reasoning_effort: Option<JsonString>,
    /// `read-only`, `workspace-write` or `danger-full-access`; never wider
    /// than the runner allows (`RUNNER_MAX_SANDBOX`).
    pub sandbox: Option<JsonString>,
    /// `untrusted`, `on-failure`, `on-request` or `never` (the default):
    /// whether the agent asks before commands (see run approvals).
    pub approval_policy: Option<JsonString>,
}

/// Clone progress, as libgit2 reports it.
#[derive(Debug, Clone, Default, Object)]
pub struct CloneProgress {
    pub received_objects: u64,
    pub total_objects: u64,
    pub indexed_deltas: u64,
    pub total_deltas: u64,
    pub received_bytes: u64,
    pub checkout_done: u64,
    pub checkout_total: u64,
}

#[derive(Debug, Clone, Object)]
pub struct Session {
    pub session_id: Uuid,
    pub status: SessionStatus,
    /// The remote, without credentials.
    pub repo_url: String,
    #[oai(rename = "ref")]
    #[oai(nullable)]
    pub git_ref: Option<String>,
    #[oai(nullable)]
    pub depth: Option<i32>,
    /// The workspace on the server: `WORKSPACES_ROOT/<session_id>/repo`.
    pub repo_path: String,
    /// The runner's thread of this session, once it has one.
    #[oai(nullable)]
    pub thread_id: Option<String>,
    /// The Codex thread (conversation) id, after the first run.
    #[oai(nullable)]
    pub codex_thread_id: Option<String>,
    /// The commit the clone checked out: the base of the diff.
    #[oai(nullable)]
    pub base_commit: Option<String>,
    /// Why the clone failed.
    #[oai(nullable)]
    pub error: Option<String>,
    #[oai(nullable)]
    pub clone_progress: Option<CloneProgress>,
    /// The session folder's size when last measured (after the clone and
    /// after each run); counts toward `BACKEND_USER_MAX_WORKSPACE_BYTES`.
    #[oai(nullable)]
    pub workspace_bytes: Option<i64>,
    /// When the session was last created, prompted or ran: its idle time
    /// (`BACKEND_SESSION_IDLE_TTL_HOURS`) counts from here.
    pub last_active_at: DateTime<Utc>,
    /// When the sweeper removed the workspace.
    #[oai(nullable)]
    pub expired_at: Option<DateTime<Utc>>,
    /// The model chosen at creation; `null`: the runner's default.
    #[oai(nullable)]
    pub model: Option<String>,
    // Strings, not the enums' schemas: a nullable `$ref` is an `allOf`
    // that generated clients (openapi-python-client) cannot read. The
    // values are `domain::SessionSettings`' own, spelled by `as_str`.
    /// `minimal`, `low`, `medium`, `high` or `xhigh`; `null`: the model's default.
    #[oai(nullable)]
    pub reasoning_effort: Option<String>,
    /// `read-only`, `workspace-write` or `danger-full-access`; `null`: the runner's.
    #[oai(nullable)]
    pub sandbox: Option<String>,
    /// `untrusted`, `on-failure`, `on-request` or `never`; `null`: the runner's.
    #[oai(nullable)]
    pub approval_policy: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Session {
    pub(crate) fn from_row(row: SessionRow, repo_path: String) -> Self {
        let progress = row.clone_progress.map(|p| CloneProgress {
            received_objects: p.received_objects,
            total_objects: p.total_objects,
            indexed_deltas: p.indexed_deltas,
            total_deltas: p.total_deltas,
            received_bytes: p.received_bytes,
            checkout_done: p.checkout_done,
            checkout_total: p.checkout_total,
        });
        Self {
            session_id: row.id,
            status: row.status.into(),
            repo_url: row.repo_url,
            git_ref: row.git_ref,
            depth: row.depth,
            repo_path,
            thread_id: row.runner_thread_id.map(|t| t.to_string()),
            codex_thread_id: row.codex_thread_id,
            base_commit: row.base_commit,
            error: row.error,
            clone_progress: progress,
            workspace_bytes: row.workspace_bytes,
            last_active_at: row.last_active_at,
            expired_at: row.expired_at,
            model: row.settings.model,
            reasoning_effort: row.settings.reasoning_effort.map(|e| e.as_str().to_owned()),
            sandbox: row.settings.sandbox.map(|s| s.as_str().to_owned()),
            approval_policy: row.settings.approval_policy.map(|p| p.as_str().to_owned()),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct SessionPage {
    /// Newest first.
    pub sessions: Vec<Session>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// One event of `GET /api/sessions/events`; its `type` is also the SSE
/// event name.
#[derive(Debug, Object)]
pub struct SessionChange {
    // No doc comment here: a described `$ref` is an `allOf` that generated
    // clients cannot read; `SessionChangeType` says what each means.
    #[oai(rename = "type")]
    pub kind: SessionChangeType,
    #[oai(skip_serializing_if_is_none)]
    pub sessions: Option<Vec<Session>>,
    #[oai(skip_serializing_if_is_none)]
    pub total: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub session: Option<Session>,
    #[oai(skip_serializing_if_is_none)]
    pub session_id: Option<Uuid>,
}

/// `POST /api/sessions/{id}/prompt`
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct PromptRequest {
    /// What to ask the agent; trimmed, non-empty, bounded.
    pub prompt: JsonString,
}

#[derive(Debug, Object)]
pub struct PromptAccepted {
    pub run_id: Uuid,
    pub session_id: Uuid,
    pub status: RunStatus,
    /// 1 for the session's first run, 2 for the next...
    pub position: i64,
}

/// Token usage of a run.
#[derive(Debug, Clone, Object)]
pub struct Usage {
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_output_tokens: i64,
}

/// Files the run created, modified and deleted (from git status before and
/// after the run).
#[derive(Debug, Clone, Object)]
pub struct RunFiles {
    pub created: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
}

#[derive(Debug, Clone, Object)]
pub struct Run {
    pub run_id: Uuid,
    pub session_id: Uuid,
    pub position: i64,
    pub status: RunStatus,
    pub prompt: String,
    #[oai(nullable)]
    pub final_response: Option<String>,
    #[oai(nullable)]
    pub usage: Option<Usage>,
    #[oai(nullable)]
    pub error: Option<String>,
    #[oai(nullable)]
    pub files: Option<RunFiles>,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<RunRow> for Run {
    fn from(row: RunRow) -> Self {
        let usage = row.usage.map(|u| Usage {
            input_tokens: u.input_tokens,
            cached_input_tokens: u.cached_input_tokens,
            output_tokens: u.output_tokens,
            reasoning_output_tokens: u.reasoning_output_tokens,
        });
        let files = row.files.map(|f| RunFiles {
            created: f.created,
            modified: f.modified,
            deleted: f.deleted,
        });
        Self {
            run_id: row.id,
            session_id: row.session_id,
            position: row.position,
            status: row.status.into(),
            prompt: row.prompt,
            final_response: row.final_response,
            usage,
            error: row.error,
            files,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct RunList {
    /// In the order they run.
    pub runs: Vec<Run>,
}

/// A model a session may choose.
#[derive(Debug, Object)]
pub struct AgentModel {
    pub id: String,
    /// The reasoning efforts it supports, for `reasoning_effort`.
    pub supported_reasoning_efforts: Vec<String>,
}

/// `GET /api/models`.
#[derive(Debug, Object)]
pub struct ModelList {
    pub models: Vec<AgentModel>,
}

/// The body of `POST /api/runs/{run_id}/approvals/{approval_id}`.
#[derive(Debug, Object)]
pub struct ApprovalRequest {
    // Described by `Decision` (a described `$ref` is an `allOf`).
    pub decision: Choice<Decision>,
}

/// The body of `POST /api/runs/{run_id}/steer`.
#[derive(Debug, Object)]
pub struct SteerRequest {
    /// Sent into the running turn; the model reads it at its next request.
    pub prompt: JsonString,
}

/// The answer to the approval, steer and interrupt operations.
#[derive(Debug, Object)]
pub struct ControlAccepted {
    pub run_id: Uuid,
}

#[derive(Debug, Object)]
pub struct CancelAccepted {
    pub run_id: Uuid,
    // Described by `CancelState` (a described `$ref` is an `allOf`).
    pub status: CancelState,
}

#[derive(Debug, Object)]
pub struct TreeEntry {
    /// Relative to the workspace.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub size: u64,
}

#[derive(Debug, Object)]
pub struct FileTree {
    pub entries: Vec<TreeEntry>,
    /// True when the tree has more entries than the limit.
    pub truncated: bool,
}

#[derive(Debug, Object)]
pub struct FileContent {
    pub path: String,
    pub size: u64,
    /// True when the file is not UTF-8 text; `content` is then base64.
    pub binary: bool,
    /// `utf-8` or `base64`.
    pub encoding: String,
    pub content: String,
}

#[derive(Debug, Object)]
pub struct Diff {
    pub base_commit: String,
    /// Unified diff of the workspace against `base_commit`, new files included.
    pub patch: String,
    pub files_changed: u64,
    pub insertions: u64,
    pub deletions: u64,
    /// True when the diff was cut at the size limit.
    pub truncated: bool,
    /// Changed files larger than `BACKEND_MAX_FILE_BYTES`: their content is
    /// left out of `patch`.
    pub too_large: Vec<String>,
}

#[derive(Debug, Object)]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Object)]
pub struct Readiness {
    pub status: String,
    pub database: bool,
    pub runner: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_request_string_is_a_json_string_and_nothing_else() {
        let parse = |value: Value| PromptRequest::parse_from_json(Some(json!({"prompt": value})));

        assert_eq!(
            parse(json!("false")).map(|p| p.prompt).ok(),
            Some(JsonString("false".into()))
        );
        for not_a_string in [json!(false), json!(12), json!(null), json!(["a"])] {
            assert!(
                parse(not_a_string.clone()).is_err(),
                "{not_a_string} is taken as a prompt"
            );
        }
    }
}

/// `GET /api/sessions/{id}/git`: the workspace's git state.
#[derive(Debug, Object)]
pub struct GitState {
    /// The branch HEAD names; null when HEAD is detached.
    pub branch: Option<String>,
    /// The commit HEAD is at.
    pub head: Option<String>,
    /// The commit the session cloned.
    pub base_commit: Option<String>,
    /// The branch the session was cloned from (null for a tag or a
    /// commit); commits made here never go onto it.
    pub cloned_branch: Option<String>,
    /// Commits on top of the base commit (counted up to 10,000).
    pub ahead: u64,
    /// Files that differ from HEAD and are not committed (new, changed or
    /// deleted; ignored files are not counted).
    pub dirty: u64,
    /// The newest commits on top of the base, newest first (at most 100),
    /// the agent's own included.
    pub commits: Vec<WorkspaceCommit>,
    /// More commits exist than `commits` lists.
    pub commits_truncated: bool,
    /// Pull requests opened for the session, oldest first.
    pub pull_requests: Vec<PullRequest>,
}

/// A commit in the workspace.
#[derive(Debug, Object)]
pub struct WorkspaceCommit {
    pub sha: String,
    /// The first line of its message.
    pub subject: String,
    pub author_name: String,
    pub author_email: String,
    /// The author's time.
    pub time: DateTime<Utc>,
}

/// `POST /api/sessions/{id}/commits`
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct CreateCommit {
    /// The commit message (at most 64 KiB).
    pub message: JsonString,
    /// The branch to commit on: created from HEAD when it does not exist;
    /// `repo-runner/<first 8 of the session id>` when absent. Never the
    /// branch the session was cloned from.
    pub branch: Option<JsonString>,
}

/// A commit made through the API.
#[derive(Debug, Object)]
pub struct CommitCreated {
    pub sha: String,
    pub branch: String,
}

/// `POST /api/sessions/{id}/push`
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct PushBranch {
    /// The workspace's branch to push; the one HEAD names when absent.
    pub branch: Option<JsonString>,
    /// The branch on the origin; the same name as `branch` when absent.
    pub remote_branch: Option<JsonString>,
    /// A token that may push; the session's kept token when absent.
    /// Never stored, logged or returned.
    #[oai(write_only)]
    pub token: Option<JsonString>,
    /// Allow pushing onto the origin's default branch.
    pub to_default_branch: Option<bool>,
}

/// A push that the origin took.
#[derive(Debug, Object)]
pub struct Pushed {
    pub remote_branch: String,
    /// The commit the remote branch now points at.
    pub sha: String,
}

/// `POST /api/sessions/{id}/pull-requests`
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct CreatePullRequest {
    pub title: JsonString,
    pub body: Option<JsonString>,
    /// The branch to merge into; the origin's default branch when absent.
    pub base: Option<JsonString>,
    pub draft: Option<bool>,
    /// A token for the forge's API (and the push, if one is needed); the
    /// session's kept token when absent. Never stored, logged or returned.
    #[oai(write_only)]
    pub token: Option<JsonString>,
}

/// A pull (merge) request opened for the session.
#[derive(Debug, Object)]
pub struct PullRequest {
    pub number: u64,
    /// Its page on the forge.
    pub url: String,
    /// The branch it merges.
    pub head: String,
    /// The branch it merges into.
    pub base: String,
    pub created_at: DateTime<Utc>,
}

impl From<crate::store::PullRequestRow> for PullRequest {
    fn from(row: crate::store::PullRequestRow) -> Self {
        Self {
            number: u64::try_from(row.number).unwrap_or_default(),
            url: row.url,
            head: row.head,
            base: row.base,
            created_at: row.created_at,
        }
    }
}

/// The kind of a session change (its SSE event name too). `snapshot`:
/// `sessions` and `total` replace the whole list (the newest 200, as
/// `GET /api/sessions?limit=200`). `updated`: `session` is the session's
/// new state (it may be new). `deleted`: `session_id` is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum SessionChangeType {
    Snapshot,
    Updated,
    Deleted,
}

impl SessionChangeType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SessionChangeType::Snapshot => "snapshot",
            SessionChangeType::Updated => "updated",
            SessionChangeType::Deleted => "deleted",
        }
    }
}

/// Where a cancelled run is: `cancelled` for a queued run, `cancelling`
/// for a running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum CancelState {
    /// It was queued, and is cancelled.
    Cancelled,
    /// It is running; `run.cancelled` follows on its stream once it stops.
    Cancelling,
}

/// An answer to an approval: `approve` (this once), `approve_for_session`
/// (and the like from now on in this session) or `deny` (the model is told
/// and goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum Decision {
    /// This once.
    Approve,
    /// And the like from now on in this session.
    ApproveForSession,
    /// The model is told, and goes on.
    Deny,
}

impl From<Decision> for runner_protocol::ApprovalDecision {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Approve => Self::Approve,
            Decision::ApproveForSession => Self::ApproveForSession,
            Decision::Deny => Self::Deny,
        }
    }
}

/// A string field of a request body that names one of `T`'s values: the
/// spec lists them (it is `T`'s schema), but any JSON string is read, so
/// that an unknown value is a 422 that lists the allowed ones (from
/// [`Choice::get`]) rather than the 400 of a body that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice<T> {
    raw: String,
    of: std::marker::PhantomData<T>,
}

impl<T: Type + ParseFromJSON + ToJSON + Send + Sync> Choice<T> {
    /// The value, or the 422 for `field` with the allowed values.
    pub(crate) fn get(&self, field: &str) -> Result<T, crate::http_error::ApiError> {
        T::parse_from_json(Some(Value::String(self.raw.clone()))).map_err(|_| {
            let mut registry = poem_openapi::registry::Registry::new();
            T::register(&mut registry);
            let allowed: Vec<String> = registry
                .schemas
                .get(&*T::name())
                .map(|schema| {
                    schema
                        .enum_items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            crate::http_error::ApiError::invalid(format!(
                "{field} must be one of {}; got {:?}",
                allowed.join(", "),
                self.raw
            ))
        })
    }
}

impl<T: Type + ParseFromJSON + ToJSON + Send + Sync> Type for Choice<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.raw)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.raw))
    }
}

impl<T: Type + ParseFromJSON + ToJSON + Send + Sync> ParseFromJSON for Choice<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(raw) => Ok(Self {
                raw,
                of: std::marker::PhantomData,
            }),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl<T: Type + ParseFromJSON + ToJSON + Send + Sync> ToJSON for Choice<T> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.raw.clone()))
    }
}
