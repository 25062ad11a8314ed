//! The last event of every run: `run.completed`, `run.failed` or
//! `run.cancelled`, written by the runner and passed on (with the files the
//! run changed) by the backend. A stream ends after it.

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::event::{Event, EventKind, Payload};
use crate::runs::Usage;
use crate::EventName;

/// A run's terminal event. Its name on the stream (`event:`) is its `type`.
///
/// `files` tells three things apart: absent on the runner's stream (the
/// runner does not look at files), `null` on the backend's when it could not
/// tell, and the lists otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Terminal {
    /// The CLI finished the turn.
    #[serde(rename = "run.completed", rename_all = "camelCase")]
    Completed {
        run_id: Uuid,
        /// The last agent message.
        final_response: Option<String>,
        usage: Option<Usage>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        files: Option<Option<Changes>>,
    },
    /// The turn failed, the CLI could not run, or the run went past a limit.
    #[serde(rename = "run.failed", rename_all = "camelCase")]
    Failed {
        run_id: Uuid,
        error: Option<String>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        files: Option<Option<Changes>>,
    },
    /// Cancelled on request; the CLI and everything it started are gone.
    #[serde(rename = "run.cancelled", rename_all = "camelCase")]
    Cancelled {
        run_id: Uuid,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        files: Option<Option<Changes>>,
    },
}

/// Files a run created, modified and deleted, relative to the workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub created: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
}

/// A field that is present is `Some`, even when `null`; an absent one is
/// `None` by `#[serde(default)]`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl Terminal {
    /// The names of the terminal events, in the order of the variants.
    pub const KINDS: [EventName; 3] = EventName::TERMINAL;

    /// `run.failed` with `error`, saying nothing of files.
    pub fn failed(run_id: Uuid, error: impl Into<String>) -> Self {
        Terminal::Failed {
            run_id,
            error: Some(error.into()),
            files: None,
        }
    }

    /// `run.cancelled`, saying nothing of files.
    pub fn cancelled(run_id: Uuid) -> Self {
        Terminal::Cancelled {
            run_id,
            files: None,
        }
    }

    /// Whether an event of this name ends a run's stream.
    pub fn is_terminal_kind(kind: &str) -> bool {
        // Asked of every event a subscriber reads: three comparisons, not
        // a parse of every name.
        Self::KINDS.iter().any(|terminal| terminal.as_str() == kind)
    }

    /// The event's name: its `type`.
    pub fn kind(&self) -> EventName {
        match self {
            Terminal::Completed { .. } => Self::KINDS[0],
            Terminal::Failed { .. } => Self::KINDS[1],
            Terminal::Cancelled { .. } => Self::KINDS[2],
        }
    }

    pub fn run_id(&self) -> Uuid {
        match self {
            Terminal::Completed { run_id, .. }
            | Terminal::Failed { run_id, .. }
            | Terminal::Cancelled { run_id, .. } => *run_id,
        }
    }

    pub fn final_response(&self) -> Option<&str> {
        match self {
            Terminal::Completed { final_response, .. } => final_response.as_deref(),
            _ => None,
        }
    }

    pub fn usage(&self) -> Option<&Usage> {
        match self {
            Terminal::Completed { usage, .. } => usage.as_ref(),
            _ => None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Terminal::Failed { error, .. } => error.as_deref(),
            _ => None,
        }
    }

    /// The files the run changed, if the event says.
    pub fn files(&self) -> Option<&Changes> {
        match self {
            Terminal::Completed { files, .. }
            | Terminal::Failed { files, .. }
            | Terminal::Cancelled { files, .. } => files.as_ref().and_then(Option::as_ref),
        }
    }

    /// The same event for another run id (the backend's id of the run the
    /// runner calls by its own).
    pub fn with_run_id(mut self, id: Uuid) -> Self {
        match &mut self {
            Terminal::Completed { run_id, .. }
            | Terminal::Failed { run_id, .. }
            | Terminal::Cancelled { run_id, .. } => *run_id = id,
        }
        self
    }

    /// The same event saying which files changed (`None`: could not tell).
    pub fn with_files(mut self, changes: Option<Changes>) -> Self {
        match &mut self {
            Terminal::Completed { files, .. }
            | Terminal::Failed { files, .. }
            | Terminal::Cancelled { files, .. } => *files = Some(changes),
        }
        self
    }

    /// The event's JSON, serialised once.
    pub fn payload(&self) -> Payload {
        match Payload::json(self) {
            Ok(payload) => payload,
            // serde_json writes strings, numbers, UUIDs and lists without
            // fail, so this cannot happen; were it to, subscribers still get
            // an event of the right name and end their stream.
            Err(_) => Payload::from(format!(r#"{{"type":"{}"}}"#, self.kind())),
        }
    }

    /// The event numbered `seq`.
    pub fn to_event(&self, seq: u64) -> Event {
        Event {
            seq,
            kind: EventKind::from(self.kind()),
            data: self.payload(),
        }
    }

    /// Reads a terminal event: `None` when the event is not one, an error
    /// when its JSON is not a terminal event of its name.
    pub fn from_event(event: &Event) -> Option<serde_json::Result<Self>> {
        if !Self::is_terminal_kind(event.kind.as_str()) {
            return None;
        }
        Some(
            serde_json::from_slice::<Self>(event.data.as_bytes()).and_then(|terminal| {
                if event.kind == terminal.kind() {
                    Ok(terminal)
                } else {
                    Err(serde::de::Error::custom(format!(
                        "an event named {} holds a {}",
                        event.kind,
                        terminal.kind()
                    )))
                }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn usage() -> Usage {
        Usage {
            input_tokens: 3,
            cached_input_tokens: 0,
            output_tokens: 1,
            reasoning_output_tokens: None,
            cache_write_input_tokens: None,
        }
    }

    fn value(terminal: &Terminal) -> Value {
        serde_json::from_slice(terminal.payload().as_bytes()).unwrap()
    }

    #[test]
    fn the_runners_events_have_their_type_and_no_files() {
        let run = Uuid::new_v4();
        let completed = Terminal::Completed {
            run_id: run,
            final_response: Some("hi".into()),
            usage: Some(usage()),
            files: None,
        };
        let failed = Terminal::Failed {
            run_id: run,
            error: Some("boom".into()),
            files: None,
        };
        let cancelled = Terminal::Cancelled {
            run_id: run,
            files: None,
        };

        assert_eq!(
            value(&completed),
            json!({"type": "run.completed", "runId": run, "finalResponse": "hi",
                   "usage": {"input_tokens": 3, "cached_input_tokens": 0, "output_tokens": 1}})
        );
        assert_eq!(
            value(&failed),
            json!({"type": "run.failed", "runId": run, "error": "boom"})
        );
        assert_eq!(
            value(&cancelled),
            json!({"type": "run.cancelled", "runId": run})
        );
        assert_eq!(
            completed.payload().text(),
            format!(
                r#"{{"type":"run.completed","runId":"{run}","finalResponse":"hi","usage":{{"input_tokens":3,"cached_input_tokens":0,"output_tokens":1}}}}"#
            )
        );
    }

    #[test]
    fn absent_values_are_null() {
        let run = Uuid::new_v4();
        let completed = Terminal::Completed {
            run_id: run,
            final_response: None,
            usage: None,
            files: None,
        };
        assert_eq!(
            value(&completed),
            json!({"type": "run.completed", "runId": run, "finalResponse": null, "usage": null})
        );
    }

    #[test]
    fn files_are_absent_null_or_listed_and_read_back_as_such() {
        let run = Uuid::new_v4();
        let changes = Changes {
            created: vec!["a.txt".into()],
            modified: vec![],
            deleted: vec!["b/c.rs".into()],
        };
        for files in [None, Some(None), Some(Some(changes.clone()))] {
            for terminal in [
                Terminal::Completed {
                    run_id: run,
                    final_response: Some("x".into()),
                    usage: Some(usage()),
                    files: files.clone(),
                },
                Terminal::Failed {
                    run_id: run,
                    error: None,
                    files: files.clone(),
                },
                Terminal::Cancelled {
                    run_id: run,
                    files: files.clone(),
                },
            ] {
                let json = value(&terminal);
                match &files {
                    None => assert!(json.get("files").is_none(), "{json}"),
                    Some(None) => assert_eq!(json["files"], Value::Null),
                    Some(Some(_)) => assert_eq!(
                        json["files"],
                        json!({"created": ["a.txt"], "modified": [], "deleted": ["b/c.rs"]})
                    ),
                }
                let event = terminal.to_event(9);
                assert_eq!(event.seq, 9);
                assert_eq!(event.kind, terminal.kind());
                assert_eq!(Terminal::from_event(&event).unwrap().unwrap(), terminal);
            }
        }
    }

    #[test]
    fn the_backends_edits_keep_the_rest() {
        let runner_run = Uuid::new_v4();
        let backend_run = Uuid::new_v4();
        let terminal = Terminal::Completed {
            run_id: runner_run,
            final_response: Some("done".into()),
            usage: Some(usage()),
            files: None,
        }
        .with_run_id(backend_run)
        .with_files(Some(Changes::default()));

        assert_eq!(terminal.run_id(), backend_run);
        assert_eq!(terminal.final_response(), Some("done"));
        assert_eq!(terminal.usage(), Some(&usage()));
        assert_eq!(terminal.error(), None);
        assert_eq!(terminal.files(), Some(&Changes::default()));
        let failed = Terminal::failed(runner_run, "no").with_files(None);
        assert_eq!(failed.error(), Some("no"));
        assert_eq!(failed.files(), None);
        assert_eq!(value(&failed)["files"], Value::Null);
        let cancelled = Terminal::cancelled(runner_run);
        assert_eq!(
            value(&cancelled),
            json!({"type": "run.cancelled", "runId": runner_run})
        );
    }

    #[test]
    fn only_terminal_names_are_read_as_terminal_events() {
        assert_eq!(
            Terminal::KINDS.map(|kind| Terminal::is_terminal_kind(kind.as_str())),
            [true, true, true]
        );
        assert!(!Terminal::is_terminal_kind("turn.completed"));
        let other = Event::new(1, "turn.completed", r#"{"type":"turn.completed"}"#);
        assert!(Terminal::from_event(&other).is_none());
    }

    #[test]
    fn a_terminal_event_that_does_not_say_what_its_name_says_is_an_error() {
        let run = Uuid::new_v4();
        let mislabelled = Event::new(
            4,
            "run.completed",
            format!(r#"{{"type":"run.failed","runId":"{run}","error":"x"}}"#),
        );
        let error = Terminal::from_event(&mislabelled).unwrap().unwrap_err();
        assert!(error
            .to_string()
            .contains("an event named run.completed holds a run.failed"));
        let garbled = Event::new(4, "run.failed", "not json");
        assert!(Terminal::from_event(&garbled).unwrap().is_err());
        let unknown_fields_are_ignored = Event::new(
            4,
            "run.cancelled",
            format!(r#"{{"type":"run.cancelled","runId":"{run}","error":null,"extra":1}}"#),
        );
        assert_eq!(
            Terminal::from_event(&unknown_fields_are_ignored)
                .unwrap()
                .unwrap(),
            Terminal::Cancelled {
                run_id: run,
                files: None
            }
        );
    }
}
