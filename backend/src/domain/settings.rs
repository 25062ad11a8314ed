//! What a session's agent runs with: model, reasoning effort, sandbox and
//! approval policy, each chosen at creation or left to the runner.

use runner_protocol::{ApprovalMode, ReasoningEffort, SandboxMode};
use serde::{Deserialize, Serialize};

use super::Invalid;

/// Parsed once at creation; stored as JSON on the session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<ReasoningEffort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<ApprovalMode>,
}

pub const SANDBOXES: [SandboxMode; 3] = [
    SandboxMode::ReadOnly,
    SandboxMode::WorkspaceWrite,
    SandboxMode::DangerFullAccess,
];
pub const APPROVAL_POLICIES: [ApprovalMode; 4] = [
    ApprovalMode::Untrusted,
    ApprovalMode::OnFailure,
    ApprovalMode::OnRequest,
    ApprovalMode::Never,
];
pub const REASONING_EFFORTS: [ReasoningEffort; 5] = [
    ReasoningEffort::Minimal,
    ReasoningEffort::Low,
    ReasoningEffort::Medium,
    ReasoningEffort::High,
    ReasoningEffort::Xhigh,
];

/// A value that was given: present and not blank.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn one_of<T: Copy>(
    field: &str,
    raw: &str,
    known: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, Invalid> {
    known
        .iter()
        .copied()
        .find(|value| name(*value) == raw)
        .ok_or_else(|| {
            let allowed: Vec<&str> = known.iter().map(|v| name(*v)).collect();
            Invalid(format!(
                "{field} must be one of {}; got {raw:?}",
                allowed.join(", ")
            ))
        })
}

impl SessionSettings {
    /// The sandbox, effort and policy of a request, by their names; the
    /// model is checked against the runner's list by the caller.
    pub(crate) fn parse(
        model: Option<&str>,
        reasoning_effort: Option<&str>,
        sandbox: Option<&str>,
        approval_policy: Option<&str>,
    ) -> Result<Self, Invalid> {
        Ok(Self {
            model: given(model).map(str::to_owned),
            reasoning_effort: given(reasoning_effort)
                .map(|raw| {
                    one_of(
                        "reasoning_effort",
                        raw,
                        &REASONING_EFFORTS,
                        ReasoningEffort::as_str,
                    )
                })
                .transpose()?,
            sandbox: given(sandbox)
                .map(|raw| one_of("sandbox", raw, &SANDBOXES, SandboxMode::as_str))
                .transpose()?,
            approval_policy: given(approval_policy)
                .map(|raw| {
                    one_of(
                        "approval_policy",
                        raw,
                        &APPROVAL_POLICIES,
                        ApprovalMode::as_str,
                    )
                })
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_parse_and_others_list_the_allowed_ones() {
        let settings = SessionSettings::parse(
            Some("gpt-5.5"),
            Some("high"),
            Some("read-only"),
            Some("untrusted"),
        )
        .unwrap();
        assert_eq!(settings.reasoning_effort, Some(ReasoningEffort::High));
        assert_eq!(settings.sandbox, Some(SandboxMode::ReadOnly));
        assert_eq!(settings.approval_policy, Some(ApprovalMode::Untrusted));
        assert_eq!(
            SessionSettings::parse(None, Some(" "), None, None).unwrap(),
            SessionSettings::default()
        );
        let error = SessionSettings::parse(None, None, Some("yolo"), None).unwrap_err();
        assert_eq!(
            error.0,
            "sandbox must be one of read-only, workspace-write, danger-full-access; got \"yolo\""
        );
        let error = SessionSettings::parse(None, None, None, Some("sometimes")).unwrap_err();
        assert!(error.0.starts_with(
            "approval_policy must be one of untrusted, on-failure, on-request, never"
        ));
        assert!(SessionSettings::parse(None, Some("max"), None, None).is_err());
    }

    #[test]
    fn stored_as_json_with_the_clis_spellings() {
        let settings = SessionSettings::parse(None, Some("low"), None, Some("on-request")).unwrap();
        let json = serde_json::to_value(&settings).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"reasoning_effort": "low", "approval_policy": "on-request"})
        );
        assert_eq!(
            serde_json::from_value::<SessionSettings>(json).unwrap(),
            settings
        );
    }
}
