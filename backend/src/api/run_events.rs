//! The schemas of a run's events, for the spec only: what each event's
//! `data:` carries, one schema per event type, chosen by its `type`
//! (`RunStreamEvent`), and the names themselves (`RunEventType`). The
//! backend relays the runner's JSON as it is and never builds these; they
//! say to a generated client what it will read. Items and usage keep every
//! field the CLI sends (`additionalProperties` is open): only the fields
//! consumers rely on are named.

use poem_openapi::{Enum, Object, Union};
use runner_protocol::EventName;
use serde_json::Value;
use uuid::Uuid;

use super::models::RunFiles;

/// The schema of every event name of a run's stream (its SSE `event:`),
/// made from `runner_protocol::EventName`, the one list of them: the
/// dashboard reads this schema (`RunEventType`) to know which events to
/// listen to. poem-openapi leaves out of the document a schema no operation
/// refers to, and the names are the SSE `event:` of the run stream, which
/// `stream_event::describe_events` writes into the served document itself.
pub struct RunEventType;

impl RunEventType {
    pub(crate) fn schema() -> Value {
        let names: Vec<Value> = EventName::ALL
            .iter()
            .map(|name| Value::from(name.as_str()))
            .collect();
        serde_json::json!({
            "type": "string",
            "description": "The name of a run event (its SSE `event:`); `codex.error` carries a payload of type `error`",
            "enum": names,
        })
    }
}

/// One event of a run's stream, as its SSE `data:` carries it, by its
/// `type`. The SSE `id:` is its sequence number in the run.
#[derive(Debug, Union)]
#[oai(discriminator_name = "type", one_of)]
pub enum RunStreamEvent {
    #[oai(mapping = "thread.started")]
    ThreadStarted(ThreadStartedEvent),
    #[oai(mapping = "turn.started")]
    TurnStarted(TurnStartedEvent),
    #[oai(mapping = "turn.completed")]
    TurnCompleted(TurnCompletedEvent),
    #[oai(mapping = "turn.failed")]
    TurnFailed(TurnFailedEvent),
    #[oai(mapping = "item.started")]
    ItemStarted(ItemStartedEvent),
    #[oai(mapping = "item.updated")]
    ItemUpdated(ItemUpdatedEvent),
    #[oai(mapping = "item.completed")]
    ItemCompleted(ItemCompletedEvent),
    #[oai(mapping = "item.delta")]
    ItemDelta(ItemDeltaEvent),
    #[oai(mapping = "approval.requested")]
    ApprovalRequested(ApprovalRequestedEvent),
    #[oai(mapping = "approval.resolved")]
    ApprovalResolved(ApprovalResolvedEvent),
    #[oai(mapping = "plan.updated")]
    PlanUpdated(PlanUpdatedEvent),
    #[oai(mapping = "diff.updated")]
    DiffUpdated(DiffUpdatedEvent),
    #[oai(mapping = "usage.updated")]
    UsageUpdated(UsageUpdatedEvent),
    /// A Codex error (SSE `event: codex.error`).
    #[oai(mapping = "error")]
    CodexError(CodexErrorEvent),
    #[oai(mapping = "run.completed")]
    RunCompleted(RunCompletedEvent),
    #[oai(mapping = "run.failed")]
    RunFailed(RunFailedEvent),
    #[oai(mapping = "run.cancelled")]
    RunCancelled(RunCancelledEvent),
    /// The server could not read the run's events (its database failed):
    /// the stream ends after this event, which has no SSE `id:`. Reconnect
    /// with the last id received to resume.
    #[oai(mapping = "stream.error")]
    StreamError(StreamErrorEvent),
}

/// The CLI's thread: resume it with this id.
#[derive(Debug, Object)]
pub struct ThreadStartedEvent {
    pub thread_id: String,
}

#[derive(Debug, Object)]
pub struct TurnStartedEvent {}

/// Token counts as the CLI reports them (more fields may come).
#[derive(Debug, Object)]
pub struct TokenUsage {
    pub input_tokens: Option<i64>,
    pub cached_input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub reasoning_output_tokens: Option<i64>,
}

#[derive(Debug, Object)]
pub struct TurnCompletedEvent {
    pub usage: TokenUsage,
}

#[derive(Debug, Object)]
pub struct EventError {
    pub message: String,
}

#[derive(Debug, Object)]
pub struct TurnFailedEvent {
    pub error: EventError,
}

/// One item of the turn: `agent_message` (`text`), `reasoning` (`text`),
/// `command_execution` (`command`, `aggregated_output`, `exit_code`,
/// `status`), `file_change` (`changes`, `status`), `mcp_tool_call`,
/// `web_search`, `todo_list` (`items`), `error` (`message`), or a type a
/// newer CLI adds; its other fields are as the CLI sends them.
#[derive(Debug, Object)]
pub struct ThreadItem {
    pub id: String,
    #[oai(rename = "type")]
    pub item_type: String,
}

/// An item started (a command that runs, say).
#[derive(Debug, Object)]
pub struct ItemStartedEvent {
    pub item: ThreadItem,
}

/// An item changed (a to-do list ticked).
#[derive(Debug, Object)]
pub struct ItemUpdatedEvent {
    pub item: ThreadItem,
}

/// An item completed: the whole of it, whatever streamed before.
#[derive(Debug, Object)]
pub struct ItemCompletedEvent {
    pub item: ThreadItem,
}

/// What an `item.delta` is a piece of.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum DeltaKind {
    AgentMessage,
    Reasoning,
    CommandOutput,
    FileChange,
}

/// A piece of an item that has started and not completed (app-server
/// driver). A replay leaves out those of completed items.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ItemDeltaEvent {
    pub item_id: String,
    pub kind: DeltaKind,
    pub delta: String,
}

/// The agent waits for `POST /api/runs/{run_id}/approvals/{approvalId}`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ApprovalRequestedEvent {
    pub approval_id: String,
    /// `command` or `file_change`.
    pub kind: String,
    #[oai(nullable)]
    pub item_id: Option<String>,
    #[oai(nullable)]
    pub reason: Option<String>,
    /// The command, for a `command` approval.
    #[oai(nullable)]
    pub command: Option<String>,
    /// Its working directory.
    #[oai(nullable)]
    pub cwd: Option<String>,
    /// The files, for a `file_change` approval: `{path, kind}` each.
    #[oai(nullable)]
    pub changes: Option<Vec<Value>>,
    /// Set when the runner declined the approval itself, before anyone
    /// could answer, and why: the CLI would carry the approved action out
    /// outside its sandbox, which the runner does not allow
    /// (`RUNNER_ALLOW_UNSANDBOXED_APPROVALS`). `approval.resolved` follows
    /// at once, `deny` by `repo-runner`.
    #[oai(skip_serializing_if_is_none)]
    pub refused: Option<String>,
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ApprovalResolvedEvent {
    pub approval_id: String,
    /// `approve`, `approve_for_session` or `deny`.
    pub decision: String,
    /// Who answered: a user's name, or `repo-runner` for an approval the
    /// runner declined itself.
    #[oai(nullable)]
    pub by: Option<String>,
}

#[derive(Debug, Object)]
pub struct PlanStep {
    pub step: String,
    /// `pending`, `inProgress` or `completed`.
    pub status: String,
}

#[derive(Debug, Object)]
pub struct PlanUpdatedEvent {
    #[oai(nullable)]
    pub explanation: Option<String>,
    pub plan: Vec<PlanStep>,
}

/// The turn's diff so far.
#[derive(Debug, Object)]
pub struct DiffUpdatedEvent {
    pub diff: String,
}

/// The turn's tokens so far.
#[derive(Debug, Object)]
pub struct UsageUpdatedEvent {
    pub usage: TokenUsage,
}

#[derive(Debug, Object)]
pub struct CodexErrorEvent {
    pub message: String,
}

#[derive(Debug, Object)]
pub struct StreamErrorEvent {
    pub message: String,
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct RunCompletedEvent {
    pub run_id: Uuid,
    #[oai(nullable)]
    pub final_response: Option<String>,
    #[oai(nullable)]
    pub usage: Option<TokenUsage>,
    #[oai(nullable)]
    pub files: Option<RunFiles>,
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct RunFailedEvent {
    pub run_id: Uuid,
    #[oai(nullable)]
    pub error: Option<String>,
    #[oai(nullable)]
    pub files: Option<RunFiles>,
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct RunCancelledEvent {
    pub run_id: Uuid,
    #[oai(nullable)]
    pub files: Option<RunFiles>,
}
