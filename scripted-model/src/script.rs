//! The script: which answers the model gives, turn by turn.
//!
//! A script is a JSON file:
//!
//! ```json
//! { "turns": [
//!     { "when": "create a file",
//!       "steps": [
//!         [ { "reasoning": "I will write it" }, { "exec": "echo hi > hello.txt" } ],
//!         [ { "message": "Created hello.txt" } ] ] } ] }
//! ```
//!
//! A request is matched to the first turn whose `when` occurs in the latest
//! prompt (case-insensitive; an empty `when` matches any prompt). Its step is
//! the number of tool results the CLI has sent back since that prompt, so the
//! server keeps no state between requests and any number of CLIs can share it.

use serde::Deserialize;
use serde_json::Value;

/// A whole script.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub turns: Vec<Turn>,
    /// Said when no turn matches; `{{prompt}}` is replaced by the prompt.
    #[serde(default = "default_fallback")]
    pub fallback: String,
    /// When set, each message is streamed a word at a time
    /// (`response.output_text.delta`), this many milliseconds apart, as a
    /// hosted model streams its text; unset, it comes whole.
    #[serde(default)]
    pub stream_ms: Option<u64>,
}

fn default_fallback() -> String {
    "The scripted model has no script for: {{prompt}}".into()
}

/// The answers to one kind of prompt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    #[serde(default)]
    pub when: String,
    /// One response per model request; the last should end the turn with a
    /// message and no tool call.
    pub steps: Vec<Vec<Output>>,
}

/// One item of a response.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Output {
    /// An assistant message; `{{prompt}}` is replaced by the prompt.
    Message(String),
    /// A reasoning summary.
    Reasoning(String),
    /// A shell command, through the CLI's `exec_command` tool.
    Exec(Exec),
    /// A patch in the CLI's `apply_patch` format (`*** Begin Patch` ...).
    ApplyPatch(String),
    /// Any other function call.
    FunctionCall { name: String, arguments: Value },
    /// Pauses the response stream, to make a run last.
    WaitMs(u64),
    /// Fails the response with this message.
    Fail(String),
}

/// `exec_command` arguments: a command line, or the full form.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Exec {
    Cmd(String),
    Full {
        cmd: String,
        #[serde(default)]
        yield_time_ms: Option<u64>,
    },
}

/// How long the CLI waits for a command before answering the model; its
/// maximum, so a scripted command normally finishes within one step.
const DEFAULT_YIELD_MS: u64 = 30_000;

impl Exec {
    pub fn arguments(&self) -> Value {
        let (cmd, yield_ms) = match self {
            Exec::Cmd(cmd) => (cmd, None),
            Exec::Full { cmd, yield_time_ms } => (cmd, *yield_time_ms),
        };
        // A plain shell, not a login shell: a login profile may fork
        // background work (a version manager's rehash, say) that outlives
        // the command and clutters its output.
        serde_json::json!({
            "cmd": cmd,
            "login": false,
            "yield_time_ms": yield_ms.unwrap_or(DEFAULT_YIELD_MS),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot read the script {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the script is not valid")]
    Parse(#[from] serde_json::Error),
}

impl Script {
    pub fn from_json(text: &str) -> Result<Self, ScriptError> {
        Ok(serde_json::from_str(text)?)
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// The script with every `wait_ms` multiplied by `factor` (0 removes
    /// the pauses): the demo paces itself like a real agent, and a test of
    /// the same script need not wait.
    pub fn paced(mut self, factor: f64) -> Self {
        let factor = if factor.is_finite() {
            factor.max(0.0)
        } else {
            1.0
        };
        if let Some(ms) = &mut self.stream_ms {
            *ms = (*ms as f64 * factor).round() as u64;
        }
        for output in self
            .turns
            .iter_mut()
            .flat_map(|turn| turn.steps.iter_mut())
            .flatten()
        {
            if let Output::WaitMs(ms) = output {
                *ms = (*ms as f64 * factor).round() as u64;
            }
        }
        self
    }

    /// The outputs for a request whose latest prompt is `prompt` and that
    /// carries `step` rounds of tool results since it.
    pub fn outputs(&self, prompt: &str, step: usize) -> Vec<Output> {
        let lower = prompt.to_lowercase();
        let turn = self
            .turns
            .iter()
            .find(|turn| lower.contains(&turn.when.to_lowercase()));
        let fill = |text: &str| text.replace("{{prompt}}", prompt.trim());
        let outputs = match turn {
            Some(turn) => match turn.steps.get(step) {
                Some(outputs) => outputs.clone(),
                None => vec![Output::Message("Done.".into())],
            },
            None => vec![Output::Message(self.fallback.clone())],
        };
        outputs
            .into_iter()
            .map(|output| match output {
                Output::Message(text) => Output::Message(fill(&text)),
                other => other,
            })
            .collect()
    }
}

/// The latest prompt of a Responses API request and the number of tool
/// result rounds after it.
pub fn prompt_and_step(input: &[Value]) -> (String, usize) {
    let is_prompt = |item: &Value| {
        item.get("type").and_then(Value::as_str) == Some("message")
            && item.get("role").and_then(Value::as_str) == Some("user")
            && !message_text(item).trim_start().starts_with('<')
    };
    let Some(start) = input.iter().rposition(is_prompt) else {
        return (String::new(), 0);
    };
    let is_output = |item: &Value| {
        item.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("_call_output"))
    };
    let rest = &input[start + 1..];
    let step = rest
        .iter()
        .enumerate()
        .filter(|(i, item)| is_output(item) && !rest.get(i + 1).is_some_and(is_output))
        .count();
    (message_text(&input[start]), step)
}

/// The text of a message item (its `input_text`/`output_text` parts).
pub fn message_text(item: &Value) -> String {
    match item.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_scales_every_pause_and_zero_removes_them() {
        let text = r#"{"turns":[{"when":"x","steps":[[{"wait_ms":1000},{"message":"a"}],[{"wait_ms":300}]]}]}"#;
        let waits = |script: &Script| -> Vec<u64> {
            script.turns[0]
                .steps
                .iter()
                .flatten()
                .filter_map(|o| match o {
                    Output::WaitMs(ms) => Some(*ms),
                    _ => None,
                })
                .collect()
        };

        assert_eq!(
            waits(&Script::from_json(text).unwrap().paced(1.0)),
            vec![1000, 300]
        );
        assert_eq!(
            waits(&Script::from_json(text).unwrap().paced(0.5)),
            vec![500, 150]
        );
        assert_eq!(
            waits(&Script::from_json(text).unwrap().paced(0.0)),
            vec![0, 0]
        );
    }

    #[test]
    fn the_demo_script_parses_and_pauses_like_an_agent() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/script.json");
        let script = Script::from_file(&path).unwrap();
        assert_eq!(script.stream_ms, Some(30), "text streams at a reading pace");
        for when in ["count", "make a file"] {
            assert!(script.turns.iter().any(|t| t.when == when), "{when}");
        }
        let snake = script.turns.iter().find(|t| t.when == "snake").unwrap();
        for step in &snake.steps {
            assert!(
                matches!(step.first(), Some(Output::WaitMs(ms)) if *ms >= 1000),
                "{step:?}"
            );
        }
    }
    use serde_json::json;

    fn user(text: &str) -> Value {
        json!({"type":"message","role":"user","content":[{"type":"input_text","text":text}]})
    }

    #[test]
    fn step_counts_rounds_of_tool_results_after_the_latest_prompt() {
        let input = vec![
            user("<environment_context>cwd</environment_context>"),
            user("old prompt"),
            json!({"type":"function_call_output","call_id":"a"}),
            user("make a file"),
            json!({"type":"function_call","call_id":"b"}),
            json!({"type":"custom_tool_call","call_id":"c"}),
            json!({"type":"function_call_output","call_id":"b"}),
            json!({"type":"custom_tool_call_output","call_id":"c"}),
            json!({"type":"function_call","call_id":"d"}),
            json!({"type":"function_call_output","call_id":"d"}),
        ];
        assert_eq!(prompt_and_step(&input), ("make a file".to_owned(), 2));
    }

    #[test]
    fn first_matching_turn_wins_and_prompt_is_substituted() {
        let script = Script::from_json(
            r#"{"turns":[{"when":"FILE","steps":[[{"message":"one {{prompt}}"}]]},{"steps":[[{"message":"any"}]]}]}"#,
        )
        .unwrap();
        let Output::Message(text) = &script.outputs("make a file", 0)[0] else {
            panic!("expected a message");
        };
        assert_eq!(text, "one make a file");
        let Output::Message(text) = &script.outputs("hello", 0)[0] else {
            panic!("expected a message");
        };
        assert_eq!(text, "any");
    }

    #[test]
    fn unknown_output_kind_is_refused() {
        let error = Script::from_json(r#"{"turns":[{"steps":[[{"shout":"x"}]]}]}"#).unwrap_err();
        assert!(matches!(error, ScriptError::Parse(_)));
    }
}
