//! A scripted stand-in for the OpenAI Responses API. The real Codex CLI is
//! pointed at it through its ordinary config (a `model_provider` with
//! `base_url` and `wire_api = "responses"`) and runs offline: the script
//! decides which messages, reasoning, shell commands and patches the "model"
//! answers with. It stands in for a hosted model, never for Codex.

mod script;
mod server;

pub use script::{Exec, Output, Script, ScriptError, Turn};
pub use server::{codex_config, ScriptedModel, MAX_LOGGED_REQUESTS};
