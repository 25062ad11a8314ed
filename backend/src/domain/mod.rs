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

pub(crate) use branch::{BranchName, CommitMessage};
pub(crate) use clone_host::{classify as classify_host, ClonePolicy, HostKind};
pub(crate) use git_ref::{Depth, GitRef};
pub(crate) use prompt::Prompt;
pub(crate) use repo_url::RepoUrl;
pub(crate) use runner_ids::{RunnerRunId, RunnerThreadId};
pub(crate) use settings::SessionSettings;
pub(crate) use status::{RunStatus, SessionStatus};
pub(crate) use usage::Usage;
pub(crate) use user_name::UserName;
pub(crate) use workspace_path::{WorkspacePath, WorkspacePathError};

/// A value refused by a domain constructor, with a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
