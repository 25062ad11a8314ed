//! `POST /runs`, `GET /runs/{id}`, `POST /runs/{id}/cancel` and `GET
//! /health`: a run is one prompt sent on a thread.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The body of `POST /runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRun {
    /// Kept as text: an id that is not a UUID is a thread that does not
    /// exist (404), not a malformed body.
    pub thread_id: String,
    pub prompt: String,
}

/// The answer to `POST /runs` (202): the run is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunCreated {
    pub run_id: Uuid,
    pub thread_id: Uuid,
    pub status: RunStatus,
}

/// A run's state on the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The CLI is running (or being cancelled).
    Running,
    /// Ended with `run.completed`.
    Completed,
    /// Ended with `run.failed`.
    Failed,
    /// Ended with `run.cancelled`.
    Cancelled,
}

impl RunStatus {
    /// The run has its terminal event: nothing more will happen to it.
    pub fn has_ended(self) -> bool {
        !matches!(self, RunStatus::Running)
    }
}

/// What is known of a run, as `GET /runs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSnapshot {
    pub run_id: Uuid,
    pub thread_id: Uuid,
    pub codex_thread_id: Option<String>,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub final_response: Option<String>,
    pub usage: Option<Usage>,
    pub error: Option<String>,
    pub event_count: usize,
}

/// The answer to `POST /runs/{id}/cancel` (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelAccepted {
    pub run_id: Uuid,
    pub status: CancelStatus,
}

/// Where a cancel stands when the runner answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CancelStatus {
    /// The CLI is being stopped; `run.cancelled` follows once it is gone.
    Cancelling,
}

/// The body of `POST /runs/{id}/approvals/{approvalId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolveApproval {
    pub decision: ApprovalDecision,
    /// Who decided, as `approval.resolved` names them (the backend passes
    /// its user's name).
    #[serde(default)]
    pub by: Option<String>,
}

/// What is decided about an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    /// Run the command (apply the change) this once.
    Approve,
    /// And do not ask again for the like in this session.
    ApproveForSession,
    /// Do not; the model is told and goes on.
    Deny,
}

/// The body of `POST /runs/{id}/steer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SteerRun {
    pub prompt: String,
}

/// The answer to the approval, steer and interrupt routes (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlAccepted {
    pub run_id: Uuid,
}

/// The answer to `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

impl Health {
    pub fn ok() -> Self {
        Self {
            status: "ok".into(),
        }
    }
}

/// Token usage of a run, in Codex's own shape (`turn.completed`'s `usage`):
/// the counts it may leave out are absent, not zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: i64,
    #[serde(default)]
    pub cached_input_tokens: i64,
    #[serde(default)]
    pub output_tokens: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_output_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_input_tokens: Option<i64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_run_request_round_trips() {
        let request = CreateRun {
            thread_id: "not-checked-here".into(),
            prompt: "hello".into(),
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"threadId":"not-checked-here","prompt":"hello"}"#);
        assert_eq!(serde_json::from_str::<CreateRun>(&text).unwrap(), request);
        assert!(
            serde_json::from_str::<CreateRun>(r#"{"threadId":"t","prompt":"p","x":1}"#).is_err()
        );
    }

    #[test]
    fn a_created_run_round_trips() {
        let created = RunCreated {
            run_id: Uuid::new_v4(),
            thread_id: Uuid::new_v4(),
            status: RunStatus::Running,
        };
        let value = serde_json::to_value(&created).unwrap();
        assert_eq!(
            value,
            json!({"runId": created.run_id, "threadId": created.thread_id, "status": "running"})
        );
        assert_eq!(
            serde_json::from_value::<RunCreated>(value).unwrap(),
            created
        );
    }

    #[test]
    fn statuses_are_lowercase_and_only_running_has_not_ended() {
        for (status, text, ended) in [
            (RunStatus::Running, "\"running\"", false),
            (RunStatus::Completed, "\"completed\"", true),
            (RunStatus::Failed, "\"failed\"", true),
            (RunStatus::Cancelled, "\"cancelled\"", true),
        ] {
            assert_eq!(serde_json::to_string(&status).unwrap(), text);
            assert_eq!(serde_json::from_str::<RunStatus>(text).unwrap(), status);
            assert_eq!(status.has_ended(), ended);
        }
    }

    #[test]
    fn a_snapshot_round_trips() {
        let snapshot = RunSnapshot {
            run_id: Uuid::new_v4(),
            thread_id: Uuid::new_v4(),
            codex_thread_id: Some("0199".into()),
            status: RunStatus::Completed,
            created_at: Utc::now(),
            finished_at: Some(Utc::now()),
            final_response: Some("done".into()),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 1,
                ..Usage::default()
            }),
            error: None,
            event_count: 5,
        };
        let value = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(value["status"], "completed");
        assert_eq!(value["eventCount"], 5);
        assert_eq!(
            value["usage"],
            json!({"input_tokens": 3, "cached_input_tokens": 0, "output_tokens": 1})
        );
        assert_eq!(
            serde_json::from_value::<RunSnapshot>(value).unwrap(),
            snapshot
        );
    }

    #[test]
    fn a_cancel_answer_and_health_round_trip() {
        let accepted = CancelAccepted {
            run_id: Uuid::new_v4(),
            status: CancelStatus::Cancelling,
        };
        let value = serde_json::to_value(&accepted).unwrap();
        assert_eq!(
            value,
            json!({"runId": accepted.run_id, "status": "cancelling"})
        );
        assert_eq!(
            serde_json::from_value::<CancelAccepted>(value).unwrap(),
            accepted
        );
        let health = serde_json::to_string(&Health::ok()).unwrap();
        assert_eq!(health, r#"{"status":"ok"}"#);
        assert_eq!(
            serde_json::from_str::<Health>(&health).unwrap(),
            Health::ok()
        );
    }

    #[test]
    fn usage_keeps_absent_counts_absent() {
        let text = r#"{"input_tokens":7,"cached_input_tokens":2,"output_tokens":4,"reasoning_output_tokens":1}"#;
        let usage: Usage = serde_json::from_str(text).unwrap();
        assert_eq!(usage.reasoning_output_tokens, Some(1));
        assert_eq!(usage.cache_write_input_tokens, None);
        assert_eq!(serde_json::to_string(&usage).unwrap(), text);
        let sparse: Usage = serde_json::from_str(r#"{"output_tokens":1}"#).unwrap();
        assert_eq!(sparse.input_tokens, 0);
    }
}

/// Why the runner did not take a control (an approval's answer, a steer,
/// an interrupt): the `reason` of its 404/409 error body. The backend tells
/// its users these words, never the runner's free text, which names the
/// runner's own ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ControlRefusal {
    /// No approval of that id waits on the run (never issued for it, or
    /// answered already). Answered 404.
    #[error("no such approval waits on this run")]
    NoSuchApproval,
    /// The run has finished.
    #[error("the run has ended")]
    Ended,
    /// The run has not started its turn yet.
    #[error("the run is not in a turn yet; try again in a moment")]
    NoTurn,
    /// The run's driver cannot do it (exec).
    #[error("the runner's exec driver cannot do that (RUNNER_DRIVER=app-server can)")]
    Unsupported,
    /// The Codex CLI refused it.
    #[error("the Codex CLI refused it")]
    Refused,
}
