//! A run through `codex app-server` ([`Driver::AppServer`](crate::Driver)):
//! one server process per run, which starts (or resumes) the thread, starts
//! one turn with the prompt, and ends with the turn.
//!
//! One process per run, not one per thread or one for many threads: a run
//! is then contained exactly as an exec run is (its PID namespace, its
//! hidden folders, its `CODEX_HOME`), an idle thread costs nothing, and a
//! crash takes one run down. The price is the server's start-up at each
//! run, measured in `docs/BENCHMARKS.md`.
//!
//! The stream is the exec driver's: the same `thread.started`,
//! `turn.started`, `item.started|completed`, `turn.completed|failed` and
//! `error` events, their items in the exec shapes (`command_execution` with
//! `aggregated_output`...), so consumers of exec runs read these unchanged.
//! It adds:
//! - `item.delta` `{itemId, kind, delta}`, `kind` one of `agent_message`,
//!   `reasoning`, `command_output`, `file_change`: pieces of an item that
//!   has started and not completed. The completed item is the truth: the
//!   CLI sends no delta for output printed before it announced the item.
//! - `approval.requested` `{approvalId, kind: command|file_change, itemId,
//!   command, cwd, reason}` and `approval.resolved` `{approvalId, decision,
//!   by}`: the server waits for [`RunControl::approve`].
//! - `plan.updated` `{explanation, plan: [{step, status}]}`,
//!   `diff.updated` `{diff}` and `usage.updated` `{usage}`.
//!
//! A turn that ends interrupted ([`RunControl::interrupt`]) ends the stream
//! with [`Error::Cancelled`], as a cancel does; the thread is resumable.

use std::collections::HashMap;

use futures_util::Stream;
use runner_protocol::{ApprovalId, EventName};
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::app_server::{AppServer, AppServerError, AppServerOptions, Incoming, RequestId};
use crate::error::{Error, Result};
use crate::events::EventLine;

/// Controls waiting for the run's task.
const CONTROL_CAPACITY: usize = 16;

/// Who declines the approvals of a thread that refuses them, in
/// `approval.resolved`.
const REFUSER: &str = "repo-runner";

/// What the caller decides about an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    ApproveForSession,
    Deny,
}

impl Decision {
    /// As events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::ApproveForSession => "approve_for_session",
            Decision::Deny => "deny",
        }
    }

    /// As the app-server spells it.
    fn wire(self) -> &'static str {
        match self {
            Decision::Approve => "accept",
            Decision::ApproveForSession => "acceptForSession",
            Decision::Deny => "decline",
        }
    }
}

impl Serialize for Decision {
    /// As events spell it ([`Decision::as_str`]).
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Why a control was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("the run has no approval {0} waiting")]
    NoSuchApproval(ApprovalId),
    #[error("the run is not in a turn yet")]
    NoTurn,
    #[error("the run has ended")]
    Ended,
    #[error("this run's driver cannot do that (exec)")]
    Unsupported,
    #[error("the Codex CLI refused: {0}")]
    Refused(String),
}

pub(crate) enum Command {
    Approve {
        approval_id: ApprovalId,
        decision: Decision,
        by: Option<String>,
        done: oneshot::Sender<std::result::Result<(), ControlError>>,
    },
    Steer {
        prompt: String,
        done: oneshot::Sender<std::result::Result<(), ControlError>>,
    },
    Interrupt {
        done: oneshot::Sender<std::result::Result<(), ControlError>>,
    },
}

/// Approves, steers and interrupts a run; cheap to clone, harmless after
/// the run ended ([`ControlError::Ended`]).
#[derive(Debug, Clone)]
pub struct RunControl(Option<mpsc::Sender<Command>>);

impl RunControl {
    pub(crate) fn unsupported() -> Self {
        Self(None)
    }

    async fn send(
        &self,
        make: impl FnOnce(oneshot::Sender<std::result::Result<(), ControlError>>) -> Command,
    ) -> std::result::Result<(), ControlError> {
        let Some(tx) = &self.0 else {
            return Err(ControlError::Unsupported);
        };
        let (done, answer) = oneshot::channel();
        tx.send(make(done)).await.map_err(|_| ControlError::Ended)?;
        answer.await.map_err(|_| ControlError::Ended)?
    }

    /// Answers the approval `approval_id` (from `approval.requested`);
    /// `by` says who, in `approval.resolved`.
    pub async fn approve(
        &self,
        approval_id: &ApprovalId,
        decision: Decision,
        by: Option<String>,
    ) -> std::result::Result<(), ControlError> {
        self.send(|done| Command::Approve {
            approval_id: approval_id.clone(),
            decision,
            by,
            done,
        })
        .await
    }

    /// Sends `prompt` into the running turn; the model reads it at its
    /// next request.
    pub async fn steer(&self, prompt: &str) -> std::result::Result<(), ControlError> {
        let prompt = prompt.to_owned();
        self.send(|done| Command::Steer { prompt, done }).await
    }

    /// Asks the CLI to stop the turn; the stream then ends cancelled.
    pub async fn interrupt(&self) -> std::result::Result<(), ControlError> {
        self.send(|done| Command::Interrupt { done }).await
    }
}

/// What a run needs to start.
pub(crate) struct AppServerRun {
    pub(crate) options: AppServerOptions,
    pub(crate) thread_params: Value,
    pub(crate) resume: Option<String>,
    pub(crate) input: String,
    /// `Some(why)`: every approval the CLI asks for is declined at once,
    /// for this reason (see `ThreadOptions::approvals_run_unsandboxed`).
    pub(crate) refuse_approvals: Option<&'static str>,
}

/// Why approvals are refused on a sandboxed thread of a runner that does
/// not let approved actions out of the sandbox.
pub(crate) const APPROVALS_REFUSED: &str =
    "the Codex CLI would carry out an approved action outside its sandbox, \
     and this runner does not allow that (RUNNER_ALLOW_UNSANDBOXED_APPROVALS)";

pub(crate) fn control_channel() -> (RunControl, mpsc::Receiver<Command>) {
    let (tx, rx) = mpsc::channel(CONTROL_CAPACITY);
    (RunControl(Some(tx)), rx)
}

pub(crate) fn run(
    run: AppServerRun,
    mut cancel: watch::Receiver<bool>,
    mut controls: mpsc::Receiver<Command>,
) -> impl Stream<Item = Result<EventLine>> + Send {
    async_stream::stream! {
        let spawned = tokio::select! {
            biased;
            _ = cancelled(&mut cancel) => {
                yield Err(Error::Cancelled);
                return;
            }
            spawned = AppServer::spawn(run.options) => spawned,
        };
        let (server, mut incoming) = match spawned {
            Ok(pair) => pair,
            Err(error) => {
                yield Err(Error::AppServer(error));
                return;
            }
        };
        let started: std::result::Result<Value, AppServerError> = match &run.resume {
            Some(id) => {
                let mut params = run.thread_params.clone();
                params["threadId"] = Value::String(id.clone());
                server.request("thread/resume", params).await
            }
            None => server.request("thread/start", run.thread_params.clone()).await,
        };
        let thread_id = match started.map(|s| s["thread"]["id"].as_str().map(str::to_owned)) {
            Ok(Some(id)) => id,
            Ok(None) => {
                yield Err(Error::AppServer(AppServerError::Decode {
                    method: "thread/start".into(),
                    message: "no thread.id".into(),
                }));
                return;
            }
            Err(error) => {
                yield Err(Error::AppServer(error));
                return;
            }
        };
        yield Ok(Translated::ThreadStarted { thread_id: thread_id.clone() }.into_line());
        let turn: std::result::Result<Value, AppServerError> = server
            .request(
                "turn/start",
                json!({"threadId": thread_id, "input": [{"type": "text", "text": run.input}]}),
            )
            .await;
        let turn_id = match turn.map(|t| t["turn"]["id"].as_str().map(str::to_owned)) {
            Ok(Some(id)) => id,
            Ok(None) => {
                yield Err(Error::AppServer(AppServerError::Decode {
                    method: "turn/start".into(),
                    message: "no turn.id".into(),
                }));
                return;
            }
            Err(error) => {
                yield Err(Error::AppServer(error));
                return;
            }
        };
        let mut translator = Translator::default();
        // Approvals waiting for an answer: the server's request, by our id.
        let mut waiting: HashMap<ApprovalId, RequestId> = HashMap::new();
        let mut next_approval = 0u64;
        let mut controls_open = true;
        loop {
            tokio::select! {
                biased;
                _ = cancelled(&mut cancel) => {
                    // Gone, with everything it started, before the run ends.
                    server.shutdown().await;
                    yield Err(Error::Cancelled);
                    return;
                }
                command = controls.recv(), if controls_open => {
                    let Some(command) = command else {
                        controls_open = false;
                        continue;
                    };
                    match command {
                        Command::Approve { approval_id, decision, by, done } => {
                            let Some(request) = waiting.remove(&approval_id) else {
                                let _asker_gone = done.send(Err(ControlError::NoSuchApproval(approval_id)));
                                continue;
                            };
                            match server.respond(&request, json!({"decision": decision.wire()})).await {
                                Ok(()) => {
                                    yield Ok(Translated::ApprovalResolved { approval_id, decision, by }.into_line());
                                    let _asker_gone = done.send(Ok(()));
                                }
                                Err(error) => {
                                    let _asker_gone = done.send(Err(ControlError::Refused(error.to_string())));
                                }
                            }
                        }
                        Command::Steer { prompt, done } => {
                            let steered: std::result::Result<Value, AppServerError> = server
                                .request(
                                    "turn/steer",
                                    json!({
                                        "threadId": thread_id,
                                        "expectedTurnId": turn_id,
                                        "input": [{"type": "text", "text": prompt}],
                                    }),
                                )
                                .await;
                            let _asker_gone = done.send(steered.map(|_| ()).map_err(|e| ControlError::Refused(e.to_string())));
                        }
                        Command::Interrupt { done } => {
                            let interrupted: std::result::Result<Value, AppServerError> = server
                                .request("turn/interrupt", json!({"threadId": thread_id, "turnId": turn_id}))
                                .await;
                            let _asker_gone = done.send(interrupted.map(|_| ()).map_err(|e| ControlError::Refused(e.to_string())));
                        }
                    }
                }
                message = incoming.recv() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => {
                            yield Err(Error::AppServer(error));
                            return;
                        }
                        None => {
                            yield Err(Error::AppServer(AppServerError::Io { message: "the server's messages ended".into() }));
                            return;
                        }
                    };
                    match message {
                        Incoming::Notification { method, params } => {
                            let ended = (method == "turn/completed").then(|| params["turn"]["status"].as_str().unwrap_or("").to_owned());
                            for event in translator.translate(&method, &params) {
                                yield Ok(event.into_line());
                            }
                            match ended.as_deref() {
                                Some("interrupted") => {
                                    server.shutdown().await;
                                    yield Err(Error::Cancelled);
                                    return;
                                }
                                Some(_) => {
                                    server.shutdown().await;
                                    return;
                                }
                                None => {}
                            }
                        }
                        Incoming::Request { id, method, params } => {
                            let subject = match method.as_str() {
                                "item/commandExecution/requestApproval" => ApprovalSubject::Command {
                                    command: params["command"].clone(),
                                    cwd: params["cwd"].clone(),
                                },
                                "item/fileChange/requestApproval" => ApprovalSubject::FileChange {
                                    changes: translator.changes_of(params["itemId"].as_str().unwrap_or("")),
                                },
                                _ => {
                                    // Nothing here could answer it: say so, rather
                                    // than leave the turn waiting for ever.
                                    if let Err(error) = server.respond_error(&id, -32601, "repo-runner does not answer this request").await {
                                        yield Err(Error::AppServer(error));
                                        return;
                                    }
                                    continue;
                                }
                            };
                            next_approval += 1;
                            let approval_id = ApprovalId::nth(next_approval);
                            let request = Translated::ApprovalRequested(ApprovalRequested {
                                approval_id: approval_id.clone(),
                                subject,
                                item_id: params["itemId"].clone(),
                                reason: params["reason"].clone(),
                                // Shown, and declined before anyone could say yes.
                                refused: run.refuse_approvals,
                            });
                            if run.refuse_approvals.is_none() {
                                waiting.insert(approval_id, id);
                                yield Ok(request.into_line());
                                continue;
                            }
                            yield Ok(request.into_line());
                            if let Err(error) = server.respond(&id, json!({"decision": Decision::Deny.wire()})).await {
                                yield Err(Error::AppServer(error));
                                return;
                            }
                            yield Ok(Translated::ApprovalResolved {
                                approval_id,
                                decision: Decision::Deny,
                                by: Some(REFUSER.to_owned()),
                            }
                            .into_line());
                        }
                    }
                }
            }
        }
    }
}

async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    // Every canceller gone means no one can cancel: wait for ever then.
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One event the translator makes, in the exec shape (see the module
/// comment). What the CLI said passes on as it said it (a `Value`); what
/// this module decides is typed. Its JSON's `type` is its [`EventName`]'s
/// ([`Translated::name`]), added by [`Translated::into_line`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum Translated {
    /// The thread the run is on, started or resumed.
    ThreadStarted { thread_id: String },
    /// The turn began.
    TurnStarted {},
    /// An item appeared, in the exec shape ([`item`]).
    ItemStarted { item: Value },
    /// An item reached its final state, in the exec shape ([`item`]).
    ItemCompleted { item: Value },
    /// A piece of an item that has started and not completed.
    ItemDelta {
        #[serde(rename = "itemId")]
        item_id: Value,
        kind: DeltaKind,
        delta: Value,
    },
    /// The CLI waits for an answer ([`RunControl::approve`]).
    ApprovalRequested(ApprovalRequested),
    /// An approval was answered.
    ApprovalResolved {
        #[serde(rename = "approvalId", serialize_with = "display")]
        approval_id: ApprovalId,
        decision: Decision,
        /// Who answered, if the caller said.
        by: Option<String>,
    },
    /// The agent's plan.
    PlanUpdated { explanation: Value, plan: Value },
    /// The turn's diff so far.
    DiffUpdated { diff: Value },
    /// The turn's usage so far.
    UsageUpdated { usage: TokenUsage },
    /// The turn ended; its usage.
    TurnCompleted { usage: TokenUsage },
    /// The turn failed.
    TurnFailed { error: TurnError },
    /// A fatal error the CLI will not retry: `error` in the JSON, as exec
    /// writes it (`codex.error` on the stream).
    Error { message: Value },
}

/// What an `item.delta` is a piece of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum DeltaKind {
    AgentMessage,
    Reasoning,
    CommandOutput,
    FileChange,
}

/// An approval the CLI asks for.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct ApprovalRequested {
    #[serde(rename = "approvalId", serialize_with = "display")]
    approval_id: ApprovalId,
    /// What is to be approved, with its `kind`.
    #[serde(flatten)]
    subject: ApprovalSubject,
    #[serde(rename = "itemId")]
    item_id: Value,
    reason: Value,
    /// Why it is declined at once, on a thread that refuses approvals.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<&'static str>,
}

/// What an approval is for: its `kind` and what the caller needs to judge.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ApprovalSubject {
    /// A command, with its working folder, as the CLI sent them.
    Command { command: Value, cwd: Value },
    /// A file change: the item's changes, as `item.started` showed them.
    FileChange { changes: Value },
}

/// Why a turn failed, as the CLI said it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct TurnError {
    message: Value,
}

/// A turn's token counts in exec's shape; a count the CLI left out or did
/// not send as a number is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
struct TokenUsage {
    input_tokens: u64,
    cached_input_tokens: u64,
    output_tokens: u64,
    reasoning_output_tokens: u64,
}

impl TokenUsage {
    /// The counts of one request (`tokenUsage.last` of the app-server).
    fn of_request(last: &Value) -> Self {
        let count = |key: &str| last[key].as_u64().unwrap_or(0);
        Self {
            input_tokens: count("inputTokens"),
            cached_input_tokens: count("cachedInputTokens"),
            output_tokens: count("outputTokens"),
            reasoning_output_tokens: count("reasoningOutputTokens"),
        }
    }

    fn plus(self, other: Self) -> Self {
        Self {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            cached_input_tokens: self
                .cached_input_tokens
                .saturating_add(other.cached_input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            reasoning_output_tokens: self
                .reasoning_output_tokens
                .saturating_add(other.reasoning_output_tokens),
        }
    }
}

/// Serialises a value by its `Display` (an [`ApprovalId`]).
fn display<T: std::fmt::Display, S: Serializer>(
    value: &T,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl Translated {
    /// The event's name.
    fn name(&self) -> EventName {
        match self {
            Translated::ThreadStarted { .. } => EventName::ThreadStarted,
            Translated::TurnStarted {} => EventName::TurnStarted,
            Translated::ItemStarted { .. } => EventName::ItemStarted,
            Translated::ItemCompleted { .. } => EventName::ItemCompleted,
            Translated::ItemDelta { .. } => EventName::ItemDelta,
            Translated::ApprovalRequested(_) => EventName::ApprovalRequested,
            Translated::ApprovalResolved { .. } => EventName::ApprovalResolved,
            Translated::PlanUpdated { .. } => EventName::PlanUpdated,
            Translated::DiffUpdated { .. } => EventName::DiffUpdated,
            Translated::UsageUpdated { .. } => EventName::UsageUpdated,
            Translated::TurnCompleted { .. } => EventName::TurnCompleted,
            Translated::TurnFailed { .. } => EventName::TurnFailed,
            Translated::Error { .. } => EventName::CodexError,
        }
    }

    /// The event as the stream's line: serialised once, not printed and
    /// parsed again.
    fn into_line(self) -> EventLine {
        let name = self.name();
        let mut object = match serde_json::to_value(&self) {
            Ok(Value::Object(object)) => object,
            // Plain data with string keys always serialises to an object;
            // were it not to, the stream says so rather than lose the event.
            other => {
                let mut object = Map::new();
                object.insert("type".into(), EventName::CodexError.json_type().into());
                object.insert(
                    "message".into(),
                    format!("not an event ({}): {other:?}", name.as_str()).into(),
                );
                return EventLine::from_object(object);
            }
        };
        object.insert("type".into(), name.json_type().into());
        EventLine::from_object(object)
    }
}

/// The app-server's notifications as exec events (see the module comment).
#[derive(Default)]
struct Translator {
    /// The turn's usage so far, for `turn.completed`.
    usage: Option<TokenUsage>,
    /// The changes of file-change items, for their approvals.
    changes: HashMap<String, Value>,
}

impl Translator {
    fn changes_of(&self, item_id: &str) -> Value {
        self.changes
            .get(item_id)
            .cloned()
            .unwrap_or(Value::Array(Vec::new()))
    }

    fn translate(&mut self, method: &str, params: &Value) -> Vec<Translated> {
        let delta = |kind: DeltaKind| {
            vec![Translated::ItemDelta {
                item_id: params["itemId"].clone(),
                kind,
                delta: params["delta"].clone(),
            }]
        };
        match method {
            "turn/started" => vec![Translated::TurnStarted {}],
            "item/started" | "item/completed" => {
                let Some(item) = item(&params["item"]) else {
                    return Vec::new();
                };
                if item["type"] == "file_change" {
                    if let Some(id) = item["id"].as_str() {
                        self.changes.insert(id.to_owned(), item["changes"].clone());
                    }
                }
                if method == "item/started" {
                    vec![Translated::ItemStarted { item }]
                } else {
                    vec![Translated::ItemCompleted { item }]
                }
            }
            "item/agentMessage/delta" => delta(DeltaKind::AgentMessage),
            "item/reasoning/summaryTextDelta" | "item/reasoning/textDelta" => {
                delta(DeltaKind::Reasoning)
            }
            "item/commandExecution/outputDelta" => delta(DeltaKind::CommandOutput),
            "item/fileChange/outputDelta" => delta(DeltaKind::FileChange),
            "turn/plan/updated" => vec![Translated::PlanUpdated {
                explanation: params["explanation"].clone(),
                plan: params["plan"].clone(),
            }],
            "turn/diff/updated" => vec![Translated::DiffUpdated {
                diff: params["diff"].clone(),
            }],
            "thread/tokenUsage/updated" => {
                let request = TokenUsage::of_request(&params["tokenUsage"]["last"]);
                // A turn's usage is the sum of its requests'.
                let usage = self.usage.unwrap_or_default().plus(request);
                self.usage = Some(usage);
                vec![Translated::UsageUpdated { usage }]
            }
            "error" if params["willRetry"] != true => vec![Translated::Error {
                message: params["error"]["message"].clone(),
            }],
            "turn/completed" => match params["turn"]["status"].as_str() {
                Some("failed") => vec![Translated::TurnFailed {
                    error: TurnError {
                        message: params["turn"]["error"]["message"].clone(),
                    },
                }],
                Some("interrupted") => Vec::new(),
                _ => vec![Translated::TurnCompleted {
                    usage: self.usage.unwrap_or_default(),
                }],
            },
            _ => Vec::new(),
        }
    }
}

fn status(status: &Value) -> Value {
    match status.as_str() {
        Some("inProgress") => "in_progress".into(),
        _ => status.clone(),
    }
}

/// An app-server item in the shape `codex exec` prints it; `None` for what
/// exec does not print (the user's own message).
fn item(item: &Value) -> Option<Value> {
    let id = &item["id"];
    let mapped = match item["type"].as_str()? {
        "userMessage" | "hookPrompt" => return None,
        "agentMessage" => json!({"id": id, "type": "agent_message", "text": item["text"]}),
        "reasoning" => {
            let parts = |key: &str| -> Vec<String> {
                item[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let summary = parts("summary");
            let text = if summary.is_empty() {
                parts("content")
            } else {
                summary
            };
            json!({"id": id, "type": "reasoning", "text": text.join("\n\n")})
        }
        "commandExecution" => json!({
            "id": id,
            "type": "command_execution",
            "command": item["command"],
            "aggregated_output": item["aggregatedOutput"].as_str().unwrap_or(""),
            "exit_code": item["exitCode"],
            "status": status(&item["status"]),
            "cwd": item["cwd"],
        }),
        "fileChange" => json!({
            "id": id,
            "type": "file_change",
            "changes": item["changes"]
                .as_array()
                .map(|changes| changes
                    .iter()
                    .map(|c| json!({"path": c["path"], "kind": c["kind"]["type"]}))
                    .collect::<Vec<_>>())
                .unwrap_or_default(),
            "status": status(&item["status"]),
        }),
        "mcpToolCall" => json!({
            "id": id,
            "type": "mcp_tool_call",
            "server": item["server"],
            "tool": item["tool"],
            "arguments": item["arguments"],
            "result": item["result"],
            "error": item["error"],
            "status": status(&item["status"]),
        }),
        "webSearch" => json!({"id": id, "type": "web_search", "query": item["query"]}),
        other => {
            // Passed on with its fields, under the exec-style name.
            let mut copy = item.clone();
            copy["type"] = Value::String(snake_case(other));
            copy
        }
    };
    Some(mapped)
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    impl Translator {
        /// The events translated from one notification, as the JSON of
        /// the lines the stream carries.
        fn notification(&mut self, method: &str, params: &Value) -> Vec<Value> {
            self.translate(method, params)
                .into_iter()
                .map(|event| serde_json::from_str(event.into_line().line()).unwrap())
                .collect()
        }
    }

    #[test]
    fn every_event_the_translator_makes_is_named_by_the_protocol() {
        let mut translator = Translator::default();
        let command = json!({"type": "commandExecution", "id": "c1", "command": "ls",
            "cwd": "/w", "aggregatedOutput": "", "exitCode": null, "status": "inProgress"});
        let mut made = Vec::new();
        for (method, params) in [
            ("turn/started", json!({})),
            ("item/started", json!({"item": command})),
            ("item/completed", json!({"item": command})),
            (
                "item/agentMessage/delta",
                json!({"itemId": "i", "delta": "x"}),
            ),
            (
                "turn/plan/updated",
                json!({"explanation": null, "plan": []}),
            ),
            ("turn/diff/updated", json!({"diff": "+a"})),
            (
                "thread/tokenUsage/updated",
                json!({"tokenUsage": {"last": {"inputTokens": 1}}}),
            ),
            (
                "error",
                json!({"willRetry": false, "error": {"message": "m"}}),
            ),
            ("turn/completed", json!({"turn": {"status": "completed"}})),
            (
                "turn/completed",
                json!({"turn": {"status": "failed", "error": {"message": "m"}}}),
            ),
        ] {
            made.extend(translator.translate(method, &params));
        }
        // What `run` makes itself.
        made.push(Translated::ThreadStarted {
            thread_id: "t".into(),
        });
        for subject in [
            ApprovalSubject::Command {
                command: json!("ls"),
                cwd: json!("/w"),
            },
            ApprovalSubject::FileChange { changes: json!([]) },
        ] {
            made.push(Translated::ApprovalRequested(ApprovalRequested {
                approval_id: ApprovalId::nth(1),
                subject,
                item_id: json!("i"),
                reason: Value::Null,
                refused: Some(APPROVALS_REFUSED),
            }));
        }
        made.push(Translated::ApprovalResolved {
            approval_id: ApprovalId::nth(1),
            decision: Decision::ApproveForSession,
            by: None,
        });

        let mut named = HashSet::new();
        for event in made {
            let name = event.name();
            let line = event.into_line();
            let value: Value = serde_json::from_str(line.line()).unwrap();
            let json_type = value["type"].as_str().unwrap();
            let parsed = EventName::ALL
                .into_iter()
                .find(|known| known.json_type() == json_type);
            assert_eq!(parsed, Some(name), "{value}");
            // Its name on the stream is the same EventName.
            assert_eq!(line.event().event_type(), name, "{value}");
            named.insert(name);
        }
        assert_eq!(named.len(), 13, "every kind of event was made: {named:?}");
    }

    #[test]
    fn approvals_keep_their_wire_shape() {
        let request = Translated::ApprovalRequested(ApprovalRequested {
            approval_id: ApprovalId::nth(2),
            subject: ApprovalSubject::Command {
                command: json!("rm -rf x"),
                cwd: Value::Null,
            },
            item_id: json!("c1"),
            reason: json!("why"),
            refused: None,
        });
        assert_eq!(
            request.into_line().line(),
            r#"{"approvalId":"approval-2","command":"rm -rf x","cwd":null,"itemId":"c1","kind":"command","reason":"why","type":"approval.requested"}"#
        );
        let refused = Translated::ApprovalRequested(ApprovalRequested {
            approval_id: ApprovalId::nth(3),
            subject: ApprovalSubject::FileChange {
                changes: json!([{"path": "a", "kind": "add"}]),
            },
            item_id: json!("f1"),
            reason: Value::Null,
            refused: Some("no"),
        });
        assert_eq!(
            serde_json::from_str::<Value>(refused.into_line().line()).unwrap(),
            json!({"type": "approval.requested", "approvalId": "approval-3", "kind": "file_change",
                   "itemId": "f1", "reason": null, "changes": [{"path": "a", "kind": "add"}],
                   "refused": "no"})
        );
        let resolved = Translated::ApprovalResolved {
            approval_id: ApprovalId::nth(3),
            decision: Decision::Deny,
            by: Some(REFUSER.into()),
        };
        assert_eq!(
            resolved.into_line().line(),
            r#"{"approvalId":"approval-3","by":"repo-runner","decision":"deny","type":"approval.resolved"}"#
        );
    }

    #[test]
    fn items_take_the_exec_shapes() {
        let command = item(&json!({
            "type": "commandExecution", "id": "c1", "command": "ls", "cwd": "/w",
            "aggregatedOutput": "a\n", "exitCode": 0, "status": "completed", "commandActions": []
        }))
        .unwrap();
        assert_eq!(
            command,
            json!({"id": "c1", "type": "command_execution", "command": "ls",
                   "aggregated_output": "a\n", "exit_code": 0, "status": "completed", "cwd": "/w"})
        );
        let started = item(&json!({
            "type": "commandExecution", "id": "c1", "command": "ls", "cwd": "/w",
            "aggregatedOutput": null, "exitCode": null, "status": "inProgress", "commandActions": []
        }))
        .unwrap();
        assert_eq!(started["status"], "in_progress");
        assert_eq!(started["aggregated_output"], "");
        let change = item(&json!({
            "type": "fileChange", "id": "f1", "status": "completed",
            "changes": [{"path": "a.txt", "kind": {"type": "add"}, "diff": "+a"}]
        }))
        .unwrap();
        assert_eq!(change["changes"], json!([{"path": "a.txt", "kind": "add"}]));
        let reasoning = item(
            &json!({"type": "reasoning", "id": "r", "summary": ["one", "two"], "content": []}),
        )
        .unwrap();
        assert_eq!(reasoning["text"], "one\n\ntwo");
        assert!(item(&json!({"type": "userMessage", "id": "u", "content": []})).is_none());
        assert_eq!(
            item(&json!({"type": "contextCompaction", "id": "x"})).unwrap()["type"],
            "context_compaction"
        );
    }

    #[test]
    fn plans_diffs_and_deltas_keep_what_the_cli_said() {
        let mut translator = Translator::default();
        let plan = translator.notification(
            "turn/plan/updated",
            &json!({"threadId": "t", "turnId": "u", "explanation": "two steps",
                    "plan": [{"step": "look", "status": "completed"}, {"step": "write", "status": "inProgress"}]}),
        );
        assert_eq!(
            plan,
            vec![json!({"type": "plan.updated", "explanation": "two steps",
                        "plan": [{"step": "look", "status": "completed"}, {"step": "write", "status": "inProgress"}]})]
        );
        let diff = translator.notification(
            "turn/diff/updated",
            &json!({"diff": "+a", "threadId": "t", "turnId": "u"}),
        );
        assert_eq!(diff, vec![json!({"type": "diff.updated", "diff": "+a"})]);
        for (method, kind) in [
            ("item/agentMessage/delta", "agent_message"),
            ("item/reasoning/summaryTextDelta", "reasoning"),
            ("item/reasoning/textDelta", "reasoning"),
            ("item/commandExecution/outputDelta", "command_output"),
            ("item/fileChange/outputDelta", "file_change"),
        ] {
            let delta = translator.notification(
                method,
                &json!({"itemId": "i", "delta": "x", "threadId": "t"}),
            );
            assert_eq!(
                delta,
                vec![json!({"type": "item.delta", "itemId": "i", "kind": kind, "delta": "x"})]
            );
        }
        // What the exec events have no word for is not invented.
        assert!(translator
            .notification("account/rateLimits/updated", &json!({}))
            .is_empty());
    }

    #[test]
    fn usage_adds_up_over_a_turn_and_ends_it() {
        let mut translator = Translator::default();
        let usage = |input: u64| json!({"tokenUsage": {"last": {"inputTokens": input, "cachedInputTokens": 1, "outputTokens": 2, "reasoningOutputTokens": 0, "totalTokens": 0}}});
        translator.notification("thread/tokenUsage/updated", &usage(10));
        let updated = translator.notification("thread/tokenUsage/updated", &usage(5));
        assert_eq!(updated[0]["usage"]["input_tokens"], 15);
        let done =
            translator.notification("turn/completed", &json!({"turn": {"status": "completed"}}));
        assert_eq!(
            done,
            vec![
                json!({"type": "turn.completed", "usage": {"input_tokens": 15, "cached_input_tokens": 2, "output_tokens": 4, "reasoning_output_tokens": 0}})
            ]
        );
        let failed = translator.notification(
            "turn/completed",
            &json!({"turn": {"status": "failed", "error": {"message": "boom"}}}),
        );
        assert_eq!(
            failed,
            vec![json!({"type": "turn.failed", "error": {"message": "boom"}})]
        );
        assert!(translator
            .notification(
                "error",
                &json!({"willRetry": true, "error": {"message": "retrying"}})
            )
            .is_empty());
    }
}
