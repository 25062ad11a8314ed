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
