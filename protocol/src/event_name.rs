//! The names of a run's events, defined once with their wire spelling.
//!
//! Every crate that makes, reads or routes an event by name uses
//! [`EventName`]: the SDK's translators, the runner, the backend's relay and
//! hub, and the backend's OpenAPI document (whose `RunEventType` schema the
//! dashboard reads at start). A name is never spelled as a string literal
//! outside this module.
//!
//! The stream stays open to names this enum does not know: a newer CLI's
//! event passes through as an [`EventKind`](crate::EventKind) with the name
//! it came with. `EventName` is the set the product itself makes and
//! understands.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One name of a run's event: its SSE `event:` on the runner's and the
/// backend's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventName {
    /// The CLI created or resumed a thread (payload has `thread_id`).
    #[serde(rename = "thread.started")]
    ThreadStarted,
    #[serde(rename = "turn.started")]
    TurnStarted,
    #[serde(rename = "turn.completed")]
    TurnCompleted,
    #[serde(rename = "turn.failed")]
    TurnFailed,
    #[serde(rename = "item.started")]
    ItemStarted,
    #[serde(rename = "item.updated")]
    ItemUpdated,
    #[serde(rename = "item.completed")]
    ItemCompleted,
    /// A streamed piece of an item (app-server engine only).
    #[serde(rename = "item.delta")]
    ItemDelta,
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    #[serde(rename = "approval.resolved")]
    ApprovalResolved,
    #[serde(rename = "plan.updated")]
    PlanUpdated,
    #[serde(rename = "diff.updated")]
    DiffUpdated,
    #[serde(rename = "usage.updated")]
    UsageUpdated,
    /// The CLI's `error` event. Not `error` on the stream: that name is
    /// EventSource's own event for a dropped connection, so a browser could
    /// not tell them apart. The `type` inside the JSON stays `error`.
    #[serde(rename = "codex.error")]
    CodexError,
    #[serde(rename = "run.completed")]
    RunCompleted,
    #[serde(rename = "run.failed")]
    RunFailed,
    #[serde(rename = "run.cancelled")]
    RunCancelled,
    /// The backend could not read a run's events; it ends the stream and
    /// has no SSE `id:`.
    #[serde(rename = "stream.error")]
    StreamError,
}

impl EventName {
    /// Every name, in the order above.
    pub const ALL: [EventName; 18] = [
        EventName::ThreadStarted,
        EventName::TurnStarted,
        EventName::TurnCompleted,
        EventName::TurnFailed,
        EventName::ItemStarted,
        EventName::ItemUpdated,
        EventName::ItemCompleted,
        EventName::ItemDelta,
        EventName::ApprovalRequested,
        EventName::ApprovalResolved,
        EventName::PlanUpdated,
        EventName::DiffUpdated,
        EventName::UsageUpdated,
        EventName::CodexError,
        EventName::RunCompleted,
        EventName::RunFailed,
        EventName::RunCancelled,
        EventName::StreamError,
    ];

    /// The three names that end a run's stream.
    pub const TERMINAL: [EventName; 3] = [
        EventName::RunCompleted,
        EventName::RunFailed,
        EventName::RunCancelled,
    ];

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventName::ThreadStarted => "thread.started",
            EventName::TurnStarted => "turn.started",
            EventName::TurnCompleted => "turn.completed",
            EventName::TurnFailed => "turn.failed",
            EventName::ItemStarted => "item.started",
            EventName::ItemUpdated => "item.updated",
            EventName::ItemCompleted => "item.completed",
            EventName::ItemDelta => "item.delta",
            EventName::ApprovalRequested => "approval.requested",
            EventName::ApprovalResolved => "approval.resolved",
            EventName::PlanUpdated => "plan.updated",
            EventName::DiffUpdated => "diff.updated",
            EventName::UsageUpdated => "usage.updated",
            EventName::CodexError => "codex.error",
            EventName::RunCompleted => "run.completed",
            EventName::RunFailed => "run.failed",
            EventName::RunCancelled => "run.cancelled",
            EventName::StreamError => "stream.error",
        }
    }

    /// The `type` inside the event's JSON line: the name itself, except
    /// `error` for [`EventName::CodexError`] (the CLI's own spelling, kept
    /// in the line; see there).
    pub const fn json_type(self) -> &'static str {
        match self {
            EventName::CodexError => "error",
            other => other.as_str(),
        }
    }

    /// The name spelled `name`, if the product knows it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.as_str() == name)
    }

    /// Whether this name ends a run's stream.
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for EventName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_and_as_str_spell_every_name_the_same() {
        for name in EventName::ALL {
            let json = serde_json::to_value(name).unwrap();
            assert_eq!(json, serde_json::Value::from(name.as_str()));
            assert_eq!(serde_json::from_value::<EventName>(json).unwrap(), name);
            assert_eq!(EventName::parse(name.as_str()), Some(name));
            assert_eq!(crate::EventKind::from(name).as_str(), name.as_str());
        }
        assert_eq!(EventName::parse("error"), None);
        assert_eq!(EventName::CodexError.json_type(), "error");
        for name in EventName::ALL
            .into_iter()
            .filter(|n| *n != EventName::CodexError)
        {
            assert_eq!(name.json_type(), name.as_str());
        }
        assert_eq!(EventName::parse("thread.renamed"), None);
    }

    #[test]
    fn all_lists_every_name_once() {
        let mut spelled: Vec<&str> = EventName::ALL.iter().map(|n| n.as_str()).collect();
        spelled.sort_unstable();
        spelled.dedup();
        assert_eq!(spelled.len(), EventName::ALL.len());
        assert!(EventName::TERMINAL.iter().all(|n| n.is_terminal()));
        assert!(!EventName::TurnCompleted.is_terminal());
    }
}
