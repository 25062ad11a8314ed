//! A Rust SDK for the Codex CLI, with the thread model of the TypeScript
//! package `@openai/codex-sdk`: a [`Codex`] client starts or resumes
//! [`Thread`]s; each run spawns `codex exec --experimental-json`, writes the
//! prompt to its stdin and streams the JSONL events it prints, each as an
//! [`EventLine`]: the line verbatim and its typed [`ThreadEvent`].

pub mod app_server;
mod app_server_run;
mod error;
mod events;
mod exec_run;
mod options;
mod process;
mod thread;

pub use app_server::{AppServer, AppServerError, AppServerOptions, Incoming, RequestId};
pub use app_server_run::{ControlError, Decision, RunControl};
pub use error::{Error, Result};
pub use events::{
    EventLine, FileUpdateChange, ItemDetails, ThreadError, ThreadEvent, ThreadItem, TodoItem, Usage,
};
pub use options::{
    ApiKey, ApprovalMode, CodexOptions, Driver, ReasoningEffort, SandboxMode, ThreadOptions,
};
pub use process::{
    kill_marked, Containment, MappedUser, NamespaceTools, ProbeError, MAX_LINE_BYTES, OWNER_MARKER,
    RUN_MARKER, STDERR_TAIL_BYTES, TERM_GRACE,
};
pub use thread::{Canceller, Codex, RunStream, Thread, Turn};
