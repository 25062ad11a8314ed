//! The JSONL events that `codex exec --experimental-json` prints, as Rust types.
//!
//! The shapes follow `codex-rs/exec/src/exec_events.rs`. The CLI adds event and
//! item types between versions, so anything this module does not know (an
//! unknown `type`, or a known type whose fields changed) is kept as raw JSON in
//! an `Unknown` variant and passed on instead of failing the run.
//!
//! The typed events are for understanding what happened; they ignore fields
//! they do not model, so they are not a faithful copy of the line. Each
//! [`EventLine`] therefore carries the CLI's JSON line verbatim next to its
//! parse: whoever passes events on relays the line, and a field a newer CLI
//! adds to a known event type reaches its reader untouched.

use runner_protocol::{EventKind, EventName};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One line of the CLI's output: the JSON object exactly as it was printed,
/// and what it says as a [`ThreadEvent`].
#[derive(Debug, Clone, PartialEq)]
pub struct EventLine {
    line: String,
    event: ThreadEvent,
}

impl EventLine {
    /// Parses one line of output (surrounding whitespace removed); `None`
    /// when it is not a JSON object.
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim();
        match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => Some(Self {
                line: line.to_owned(),
                event: ThreadEvent::from_value(value),
            }),
            _ => None,
        }
    }

    /// An event made here rather than printed by the CLI (the app-server
    /// driver's translations): the line is the object's JSON.
    pub(crate) fn from_object(value: serde_json::Map<String, Value>) -> Self {
        let value = Value::Object(value);
        Self {
            line: value.to_string(),
            event: ThreadEvent::from_value(value),
        }
    }

    /// The typed event.
    pub fn event(&self) -> &ThreadEvent {
        &self.event
    }

    /// The JSON object as the CLI printed it, every field included.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The typed event and the verbatim line.
    pub fn into_parts(self) -> (ThreadEvent, String) {
        (self.event, self.line)
    }
}

/// What one line of `codex exec --experimental-json` output says. Fields of a
/// known type that this SDK does not model are not kept: the verbatim line is
/// in [`EventLine::line`].
#[derive(Debug, Clone, PartialEq)]
pub enum ThreadEvent {
    /// The CLI created or resumed a thread; `thread_id` resumes it later.
    ThreadStarted { thread_id: String },
    /// A turn began: the prompt was sent to the model.
    TurnStarted,
    /// The turn finished; token usage for the whole turn.
    TurnCompleted { usage: Usage },
    /// The turn failed; the CLI exits soon after.
    TurnFailed { error: ThreadError },
    /// An item (message, command, patch, ...) appeared.
    ItemStarted { item: ThreadItem },
    /// An in-progress item changed (for example a to-do list was ticked).
    ItemUpdated { item: ThreadItem },
    /// An item reached its final state.
    ItemCompleted { item: ThreadItem },
    /// A fatal error of the stream itself.
    Error { message: String },
    /// An event this SDK does not know, kept verbatim.
    Unknown(Value),
}

/// Wire form of the known events; `ThreadEvent` wraps it to add `Unknown`.
/// Each `type` is its [`EventName::json_type`] (a test holds them together).
#[derive(Serialize, Deserialize)]
#[serde(tag = "type")]
enum KnownEvent {
    #[serde(rename = "thread.started")]
    ThreadStarted { thread_id: String },
    #[serde(rename = "turn.started")]
    TurnStarted {},
    #[serde(rename = "turn.completed")]
    TurnCompleted { usage: Usage },
    #[serde(rename = "turn.failed")]
    TurnFailed { error: ThreadError },
    #[serde(rename = "item.started")]
    ItemStarted { item: ThreadItem },
    #[serde(rename = "item.updated")]
    ItemUpdated { item: ThreadItem },
    #[serde(rename = "item.completed")]
    ItemCompleted { item: ThreadItem },
    #[serde(rename = "error")]
    Error { message: String },
}

impl ThreadEvent {
    /// Parses one JSON value; never fails for well-formed JSON objects.
    pub fn from_value(value: Value) -> Self {
        match serde_json::from_value::<KnownEvent>(value.clone()) {
            Ok(known) => known.into(),
            Err(_) => ThreadEvent::Unknown(value),
        }
    }

    /// The event's name, for the events this SDK knows (`None` for an
    /// [`ThreadEvent::Unknown`] one).
    pub fn event_name(&self) -> Option<EventName> {
        Some(match self {
            ThreadEvent::ThreadStarted { .. } => EventName::ThreadStarted,
            ThreadEvent::TurnStarted => EventName::TurnStarted,
            ThreadEvent::TurnCompleted { .. } => EventName::TurnCompleted,
            ThreadEvent::TurnFailed { .. } => EventName::TurnFailed,
            ThreadEvent::ItemStarted { .. } => EventName::ItemStarted,
            ThreadEvent::ItemUpdated { .. } => EventName::ItemUpdated,
            ThreadEvent::ItemCompleted { .. } => EventName::ItemCompleted,
            ThreadEvent::Error { .. } => EventName::CodexError,
            ThreadEvent::Unknown(_) => return None,
        })
    }

    /// The event's name on the runner's and the backend's streams: its
    /// [`EventName`] (`codex.error` for the CLI's `error`), or for an
    /// unknown event the `type` it came with (`unknown` when it has none or
    /// it is not a safe name, see [`EventKind`]).
    pub fn event_type(&self) -> EventKind {
        match (self.event_name(), self) {
            (Some(name), _) => EventKind::from(name),
            (None, ThreadEvent::Unknown(value)) => EventKind::new(
                value
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown"),
            ),
            (None, _) => EventKind::new("unknown"),
        }
    }

    /// The event as JSON, in the CLI's own wire shape, with the fields this
    /// SDK models (an `Unknown` event whole). To pass an event on, use the
    /// verbatim [`EventLine::line`].
    pub fn to_value(&self) -> Value {
        let known = match self.clone() {
            ThreadEvent::Unknown(value) => return value,
            ThreadEvent::ThreadStarted { thread_id } => KnownEvent::ThreadStarted { thread_id },
            ThreadEvent::TurnStarted => KnownEvent::TurnStarted {},
            ThreadEvent::TurnCompleted { usage } => KnownEvent::TurnCompleted { usage },
            ThreadEvent::TurnFailed { error } => KnownEvent::TurnFailed { error },
            ThreadEvent::ItemStarted { item } => KnownEvent::ItemStarted { item },
            ThreadEvent::ItemUpdated { item } => KnownEvent::ItemUpdated { item },
            ThreadEvent::ItemCompleted { item } => KnownEvent::ItemCompleted { item },
            ThreadEvent::Error { message } => KnownEvent::Error { message },
        };
        // Serialising plain data types with string keys cannot fail.
        serde_json::to_value(known).unwrap_or(Value::Null)
    }
}

impl From<KnownEvent> for ThreadEvent {
    fn from(known: KnownEvent) -> Self {
        match known {
            KnownEvent::ThreadStarted { thread_id } => ThreadEvent::ThreadStarted { thread_id },
            KnownEvent::TurnStarted {} => ThreadEvent::TurnStarted,
            KnownEvent::TurnCompleted { usage } => ThreadEvent::TurnCompleted { usage },
            KnownEvent::TurnFailed { error } => ThreadEvent::TurnFailed { error },
            KnownEvent::ItemStarted { item } => ThreadEvent::ItemStarted { item },
            KnownEvent::ItemUpdated { item } => ThreadEvent::ItemUpdated { item },
            KnownEvent::ItemCompleted { item } => ThreadEvent::ItemCompleted { item },
            KnownEvent::Error { message } => ThreadEvent::Error { message },
        }
    }
}

impl Serialize for ThreadEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ThreadEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(ThreadEvent::from_value)
    }
}

/// Token usage of one turn, in Codex's shape (defined once, in
/// `runner-protocol`).
pub use runner_protocol::Usage;

/// Why a turn failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadError {
    pub message: String,
}

/// An item of a turn: its id plus what kind of item it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadItem {
    pub id: String,
    #[serde(flatten)]
    pub details: ItemDetails,
}

/// The kinds of item the CLI reports; `Unknown` keeps any other kind verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ItemDetails {
    /// Text the agent wrote to the user; the last one is the turn's answer.
    AgentMessage { text: String },
    /// A summary of the model's reasoning.
    Reasoning { text: String },
    /// A shell command the agent ran, with its combined output.
    CommandExecution {
        command: String,
        #[serde(default)]
        aggregated_output: String,
        #[serde(default)]
        exit_code: Option<i32>,
        status: String,
    },
    /// Files the agent added, deleted or updated through a patch.
    FileChange {
        changes: Vec<FileUpdateChange>,
        status: String,
    },
    /// A call to a tool of an MCP server.
    McpToolCall {
        server: String,
        tool: String,
        #[serde(default)]
        arguments: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<Value>,
        status: String,
    },
    /// A web search the agent made.
    WebSearch {
        #[serde(default)]
        query: String,
    },
    /// The agent's to-do list.
    TodoList { items: Vec<TodoItem> },
    /// A non-fatal error reported as an item.
    Error { message: String },
    /// An item type this SDK does not know, kept verbatim (including `type`).
    #[serde(untagged)]
    Unknown(Value),
}

/// One file touched by a `file_change` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileUpdateChange {
    pub path: String,
    pub kind: String,
}

/// One entry of a `todo_list` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoItem {
    pub text: String,
    pub completed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_events_round_trip() {
        let lines = [
            json!({"type":"thread.started","thread_id":"t-1"}),
            json!({"type":"turn.started"}),
            json!({"type":"turn.completed","usage":{"input_tokens":3,"cached_input_tokens":1,"output_tokens":2,"reasoning_output_tokens":0}}),
            json!({"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"hi"}}),
            json!({"type":"item.started","item":{"id":"item_2","type":"command_execution","command":"ls","aggregated_output":"","exit_code":null,"status":"in_progress"}}),
            json!({"type":"item.completed","item":{"id":"item_3","type":"file_change","changes":[{"path":"a.txt","kind":"add"}],"status":"completed"}}),
            json!({"type":"item.updated","item":{"id":"item_4","type":"todo_list","items":[{"text":"a","completed":true}]}}),
            json!({"type":"turn.failed","error":{"message":"boom"}}),
        ];
        for line in lines {
            let event = ThreadEvent::from_value(line.clone());
            assert!(
                !matches!(event, ThreadEvent::Unknown(_)),
                "{line} parsed as unknown"
            );
            assert_eq!(event.to_value(), line);
        }
    }

    #[test]
    fn known_events_are_named_by_the_protocol() {
        let events = [
            ThreadEvent::ThreadStarted {
                thread_id: "t".into(),
            },
            ThreadEvent::TurnStarted,
            ThreadEvent::TurnCompleted {
                usage: Usage::default(),
            },
            ThreadEvent::TurnFailed {
                error: ThreadError {
                    message: "m".into(),
                },
            },
            ThreadEvent::ItemStarted {
                item: ThreadItem {
                    id: "i".into(),
                    details: ItemDetails::Reasoning { text: "r".into() },
                },
            },
            ThreadEvent::ItemUpdated {
                item: ThreadItem {
                    id: "i".into(),
                    details: ItemDetails::Reasoning { text: "r".into() },
                },
            },
            ThreadEvent::ItemCompleted {
                item: ThreadItem {
                    id: "i".into(),
                    details: ItemDetails::Reasoning { text: "r".into() },
                },
            },
            ThreadEvent::Error {
                message: "m".into(),
            },
        ];
        let mut named = Vec::new();
        for event in events {
            let name = event.event_name().unwrap();
            assert_eq!(event.to_value()["type"], name.json_type(), "{event:?}");
            assert_eq!(event.event_type(), name);
            named.push(name);
        }
        assert_eq!(named.last(), Some(&EventName::CodexError));
        assert_eq!(
            ThreadEvent::from_value(json!({"type": "error", "message": "m"})).event_type(),
            "codex.error"
        );
    }

    #[test]
    fn an_unknown_event_without_a_safe_type_is_unknown() {
        for line in [json!({"no_type": 1}), json!({"type": "evil\ndata: x"})] {
            let event = ThreadEvent::from_value(line);
            assert_eq!(event.event_name(), None);
            assert_eq!(event.event_type(), "unknown");
        }
    }

    #[test]
    fn unknown_event_type_is_kept_verbatim() {
        let line = json!({"type":"thread.renamed","name":"x","extra":[1,2]});
        let event = ThreadEvent::from_value(line.clone());
        assert_eq!(event, ThreadEvent::Unknown(line.clone()));
        assert_eq!(event.event_type(), "thread.renamed");
        assert_eq!(event.to_value(), line);
    }

    #[test]
    fn unknown_item_type_is_kept_verbatim() {
        let line = json!({"type":"item.completed","item":{"id":"item_9","type":"image_generation","url":"u"}});
        let event = ThreadEvent::from_value(line.clone());
        let ThreadEvent::ItemCompleted { item } = &event else {
            panic!("expected item.completed, got {event:?}");
        };
        assert_eq!(item.id, "item_9");
        assert_eq!(
            item.details,
            ItemDetails::Unknown(json!({"type":"image_generation","url":"u"}))
        );
        assert_eq!(event.to_value(), line);
    }

    #[test]
    fn an_event_line_keeps_the_line_verbatim_next_to_its_parse() {
        let line = r#"{"type":"thread.started","thread_id":"t-1","zz_new":{"b":2,"a":1}}"#;
        let parsed = EventLine::parse(&format!("  {line}\r")).unwrap();
        assert_eq!(parsed.line(), line);
        assert_eq!(
            parsed.event(),
            &ThreadEvent::ThreadStarted {
                thread_id: "t-1".into()
            }
        );
    }

    #[test]
    fn an_event_line_is_a_json_object() {
        for line in ["not json", "[1]", "\"text\"", "", "{\"type\":"] {
            assert_eq!(EventLine::parse(line), None, "{line}");
        }
    }

    #[test]
    fn known_type_with_changed_shape_falls_back_to_unknown() {
        let line = json!({"type":"thread.started","thread":{"id":"new-shape"}});
        assert_eq!(
            ThreadEvent::from_value(line.clone()),
            ThreadEvent::Unknown(line)
        );
    }
}
