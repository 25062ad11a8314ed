//! `POST /threads` and `GET /threads/{id}`: a runner thread is a Codex
//! conversation bound to one working directory.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The body of `POST /threads`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateThread {
    /// Inside the runner's `WORKSPACES_ROOT`.
    pub working_directory: String,
    #[serde(default)]
    pub skip_git_repo_check: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Narrows the runner's sandbox; never widens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_mode: Option<SandboxMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<ApprovalMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_reasoning_effort: Option<ReasoningEffort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_access_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search_enabled: Option<bool>,
    /// Inside the session folder of `working_directory`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_directories: Vec<String>,
    /// The Codex thread to continue (after the runner forgot its thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_thread_id: Option<String>,
}

/// A thread, as `POST /threads` (201) and `GET /threads/{id}` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadView {
    pub thread_id: Uuid,
    /// Known after the first run's `thread.started`, or given to resume.
    pub codex_thread_id: Option<String>,
    pub working_directory: Option<PathBuf>,
    pub active_run_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// The CLI's `--sandbox`, ordered from the narrowest to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    /// Reads anywhere, writes nowhere.
    ReadOnly,
    /// Writes inside the working directory (and the additional ones).
    WorkspaceWrite,
    /// No sandbox.
    DangerFullAccess,
}

/// The CLI's `approval_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalMode {
    /// Never asks.
    Never,
    /// The model decides when to ask.
    OnRequest,
    /// Asks when a sandboxed command fails.
    OnFailure,
    /// Asks before any command not known to be safe.
    Untrusted,
}

/// The CLI's `model_reasoning_effort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    /// The least.
    Minimal,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// The most.
    Xhigh,
}

impl SandboxMode {
    /// The CLI's spelling (`--sandbox`).
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::ReadOnly => "read-only",
            SandboxMode::WorkspaceWrite => "workspace-write",
            SandboxMode::DangerFullAccess => "danger-full-access",
        }
    }
}

impl ApprovalMode {
    /// The CLI's spelling (`approval_policy`).
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalMode::Never => "never",
            ApprovalMode::OnRequest => "on-request",
            ApprovalMode::OnFailure => "on-failure",
            ApprovalMode::Untrusted => "untrusted",
        }
    }
}

impl ReasoningEffort {
    /// The CLI's spelling (`model_reasoning_effort`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::Minimal => "minimal",
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
            ReasoningEffort::Xhigh => "xhigh",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_thread_request_round_trips_with_every_field() {
        let request = CreateThread {
            working_directory: "/w/s/repo".into(),
            skip_git_repo_check: true,
            model: Some("o3".into()),
            sandbox_mode: Some(SandboxMode::WorkspaceWrite),
            approval_policy: Some(ApprovalMode::OnRequest),
            model_reasoning_effort: Some(ReasoningEffort::Xhigh),
            network_access_enabled: Some(false),
            web_search_enabled: Some(true),
            additional_directories: vec!["/w/s/other".into()],
            resume_thread_id: Some("0199-abc".into()),
        };
        let value = serde_json::to_value(&request).unwrap();
        assert_eq!(
            value,
            json!({"workingDirectory": "/w/s/repo", "skipGitRepoCheck": true, "model": "o3",
                   "sandboxMode": "workspace-write", "approvalPolicy": "on-request",
                   "modelReasoningEffort": "xhigh", "networkAccessEnabled": false,
                   "webSearchEnabled": true, "additionalDirectories": ["/w/s/other"],
                   "resumeThreadId": "0199-abc"})
        );
        assert_eq!(
            serde_json::from_value::<CreateThread>(value).unwrap(),
            request
        );
    }

    #[test]
    fn a_minimal_thread_request_is_sent_as_the_backend_sends_it() {
        let request = CreateThread {
            working_directory: "/w/s/repo".into(),
            skip_git_repo_check: true,
            ..CreateThread::default()
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"workingDirectory":"/w/s/repo","skipGitRepoCheck":true}"#
        );
        let back: CreateThread =
            serde_json::from_str(r#"{"workingDirectory":"/w/s/repo"}"#).unwrap();
        assert!(!back.skip_git_repo_check);
    }

    #[test]
    fn unknown_fields_and_values_are_refused() {
        let unknown = serde_json::from_str::<CreateThread>(r#"{"workingDirectory":"x","mode":1}"#);
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `mode`"));
        let wrong =
            serde_json::from_str::<CreateThread>(r#"{"workingDirectory":"x","sandboxMode":"all"}"#);
        assert!(wrong
            .unwrap_err()
            .to_string()
            .contains("unknown variant `all`"));
    }

    #[test]
    fn sandboxes_are_ordered_from_narrowest_to_widest() {
        assert!(SandboxMode::ReadOnly < SandboxMode::WorkspaceWrite);
        assert!(SandboxMode::WorkspaceWrite < SandboxMode::DangerFullAccess);
        for (mode, text) in [
            (SandboxMode::ReadOnly, "\"read-only\""),
            (SandboxMode::WorkspaceWrite, "\"workspace-write\""),
            (SandboxMode::DangerFullAccess, "\"danger-full-access\""),
        ] {
            assert_eq!(serde_json::to_string(&mode).unwrap(), text);
            assert_eq!(serde_json::from_str::<SandboxMode>(text).unwrap(), mode);
        }
        for (mode, text) in [
            (ApprovalMode::Never, "\"never\""),
            (ApprovalMode::OnRequest, "\"on-request\""),
            (ApprovalMode::OnFailure, "\"on-failure\""),
            (ApprovalMode::Untrusted, "\"untrusted\""),
        ] {
            assert_eq!(serde_json::to_string(&mode).unwrap(), text);
            assert_eq!(serde_json::from_str::<ApprovalMode>(text).unwrap(), mode);
        }
        for effort in [
            ReasoningEffort::Minimal,
            ReasoningEffort::Low,
            ReasoningEffort::Medium,
            ReasoningEffort::High,
            ReasoningEffort::Xhigh,
        ] {
            let text = serde_json::to_string(&effort).unwrap();
            assert_eq!(
                serde_json::from_str::<ReasoningEffort>(&text).unwrap(),
                effort
            );
        }
    }

    #[test]
    fn a_thread_view_round_trips() {
        let view = ThreadView {
            thread_id: Uuid::new_v4(),
            codex_thread_id: None,
            working_directory: Some("/w/s/repo".into()),
            active_run_id: Some(Uuid::new_v4()),
            created_at: Utc::now(),
        };
        let value = serde_json::to_value(&view).unwrap();
        assert_eq!(value["codexThreadId"], serde_json::Value::Null);
        assert_eq!(value["workingDirectory"], "/w/s/repo");
        assert_eq!(serde_json::from_value::<ThreadView>(value).unwrap(), view);
    }
}
