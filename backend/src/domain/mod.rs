//! Domain types that parse input once: after construction, a value is
//! trusted everywhere.

mod branch;
mod clone_host;
mod git_ref;
mod prompt;
mod repo_url;
mod runner_ids;
mod settings;
mod status;
mod usage;
mod user_name;
mod workspace_path;

pub use branch::{BranchName, CommitMessage};
pub use clone_host::{classify as classify_host, ClonePolicy, HostKind};
pub use git_ref::{Depth, GitRef};
pub use prompt::Prompt;
pub use repo_url::{RepoUrl, RepoUrlError};
pub use runner_ids::{RunnerRunId, RunnerThreadId};
pub use settings::SessionSettings;
pub use status::{RunStatus, SessionStatus, UnknownStatus};
pub use usage::Usage;
pub use user_name::UserName;
pub use workspace_path::{WorkspacePath, WorkspacePathError};

/// A value refused by a domain constructor, with a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
