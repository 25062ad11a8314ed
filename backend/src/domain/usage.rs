//! Token usage of a run, as Codex reports it in `turn.completed`.

use serde::{Deserialize, Serialize};

/// Fields Codex leaves out count as zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_output_tokens: i64,
}

impl From<&runner_protocol::Usage> for Usage {
    /// The runner's usage, counts it left out as zero.
    fn from(usage: &runner_protocol::Usage) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            output_tokens: usage.output_tokens,
            reasoning_output_tokens: usage.reasoning_output_tokens.unwrap_or_default(),
        }
    }
}
