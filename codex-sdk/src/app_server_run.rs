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
use runner_protocol::ApprovalId;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::app_server::{AppServer, AppServerError, AppServerOptions, Incoming, RequestId};
use crate::error::{Error, Result};
use crate::events::EventLine;

/// Controls waiting for the run's task.
const CONTROL_CAPACITY: usize = 16;

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
    pub options: AppServerOptions,
    pub thread_params: Value,
    pub resume: Option<String>,
    pub input: String,
    /// `Some(why)`: every approval the CLI asks for is declined at once,
    /// for this reason (see `ThreadOptions::approvals_run_unsandboxed`).
    pub refuse_approvals: Option<&'static str>,
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

/// A translated event (always a `json!` object) as the stream's line:
/// serialised once, not printed and parsed again.
fn line(value: Value) -> EventLine {
    match value {
        Value::Object(object) => EventLine::from_object(object),
        other => {
            let mut object = serde_json::Map::new();
            object.insert("type".into(), "error".into());
            object.insert("message".into(), format!("not an event: {other}").into());
            EventLine::from_object(object)
        }
    }
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
        yield Ok(line(json!({"type": "thread.started", "thread_id": thread_id})));
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
                                    yield Ok(line(json!({
                                        "type": "approval.resolved",
                                        "approvalId": approval_id.to_string(),
                                        "decision": decision.as_str(),
                                        "by": by,
                                    })));
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
                            for event in translator.notification(&method, &params) {
                                yield Ok(line(event));
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
                            let kind = match method.as_str() {
                                "item/commandExecution/requestApproval" => "command",
                                "item/fileChange/requestApproval" => "file_change",
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
                            let mut event = json!({
                                "type": "approval.requested",
                                "approvalId": approval_id.to_string(),
                                "kind": kind,
                                "itemId": params["itemId"],
                                "reason": params["reason"],
                            });
                            if kind == "command" {
                                event["command"] = params["command"].clone();
                                event["cwd"] = params["cwd"].clone();
                            } else {
                                event["changes"] = translator.changes_of(params["itemId"].as_str().unwrap_or(""));
                            }
                            let Some(refused) = run.refuse_approvals else {
                                waiting.insert(approval_id, id);
                                yield Ok(line(event));
                                continue;
                            };
                            // Shown, and declined before anyone could say yes.
                            event["refused"] = refused.into();
                            yield Ok(line(event));
                            if let Err(error) = server.respond(&id, json!({"decision": Decision::Deny.wire()})).await {
                                yield Err(Error::AppServer(error));
                                return;
                            }
                            yield Ok(line(json!({
                                "type": "approval.resolved",
                                "approvalId": approval_id.to_string(),
                                "decision": Decision::Deny.as_str(),
                                "by": "repo-runner",
                            })));
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

/// The app-server's notifications as exec events (see the module comment).
#[derive(Default)]
struct Translator {
    /// The turn's usage so far, for `turn.completed`.
    usage: Option<Value>,
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

    fn notification(&mut self, method: &str, params: &Value) -> Vec<Value> {
        let delta = |kind: &str| {
            vec![json!({
                "type": "item.delta",
                "itemId": params["itemId"],
                "kind": kind,
                "delta": params["delta"],
            })]
        };
        match method {
            "turn/started" => vec![json!({"type": "turn.started"})],
            "item/started" | "item/completed" => {
                let Some(item) = item(&params["item"]) else {
                    return Vec::new();
                };
                if item["type"] == "file_change" {
                    if let Some(id) = item["id"].as_str() {
                        self.changes.insert(id.to_owned(), item["changes"].clone());
                    }
                }
                let kind = if method == "item/started" {
                    "item.started"
                } else {
                    "item.completed"
                };
                vec![json!({"type": kind, "item": item})]
            }
            "item/agentMessage/delta" => delta("agent_message"),
            "item/reasoning/summaryTextDelta" | "item/reasoning/textDelta" => delta("reasoning"),
            "item/commandExecution/outputDelta" => delta("command_output"),
            "item/fileChange/outputDelta" => delta("file_change"),
            "turn/plan/updated" => vec![json!({
                "type": "plan.updated",
                "explanation": params["explanation"],
                "plan": params["plan"],
            })],
            "turn/diff/updated" => vec![json!({"type": "diff.updated", "diff": params["diff"]})],
            "thread/tokenUsage/updated" => {
                let last = &params["tokenUsage"]["last"];
                let usage = json!({
                    "input_tokens": last["inputTokens"],
                    "cached_input_tokens": last["cachedInputTokens"],
                    "output_tokens": last["outputTokens"],
                    "reasoning_output_tokens": last["reasoningOutputTokens"],
                });
                // A turn's usage is the sum of its requests'.
                self.usage = Some(match self.usage.take() {
                    Some(before) => add_usage(&before, &usage),
                    None => usage,
                });
                vec![json!({"type": "usage.updated", "usage": self.usage})]
            }
            "error" if params["willRetry"] != true => vec![json!({
                "type": "error",
                "message": params["error"]["message"],
            })],
            "turn/completed" => match params["turn"]["status"].as_str() {
                Some("failed") => vec![json!({
                    "type": "turn.failed",
                    "error": {"message": params["turn"]["error"]["message"]},
                })],
                Some("interrupted") => Vec::new(),
                _ => vec![json!({
                    "type": "turn.completed",
                    "usage": self.usage.clone().unwrap_or_else(|| add_usage(&Value::Null, &Value::Null)),
                })],
            },
            _ => Vec::new(),
        }
    }
}

fn add_usage(a: &Value, b: &Value) -> Value {
    let sum = |key: &str| a[key].as_u64().unwrap_or(0) + b[key].as_u64().unwrap_or(0);
    json!({
        "input_tokens": sum("input_tokens"),
        "cached_input_tokens": sum("cached_input_tokens"),
        "output_tokens": sum("output_tokens"),
        "reasoning_output_tokens": sum("reasoning_output_tokens"),
    })
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
    use super::*;

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
