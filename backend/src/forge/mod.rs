//! Forges: opening a pull request (GitHub, Gitea/Forgejo) or merge request
//! (GitLab) for a session's branch through the forge's REST API.
//!
//! [`Forges`] says which forge serves a host and where its API is: a few
//! public forges are known, and the operator names the others in `FORGES`.
//! [`Forges::for_origin`] reads a session's origin URL into a
//! [`ForgeRepo`], the forge and the repository's path; only the host of the
//! origin chooses among configured API bases, so a user's URL never points
//! the backend at an address of its own choosing.
//!
//! Architecture Invariant: user-derived text (the repository's path) enters
//! an API URL only through the `url` crate's path-segment encoder, never by
//! concatenation, so an owner named `a%2F..` or `x?y#z` stays one segment
//! and cannot reach another route.
//!
//! The [`client`] resolves names through the clones' [`ClonePolicy`] check
//! and never follows redirects. An API base written as an IP literal is not
//! resolved, so the policy does not see it: such a base is the operator's
//! own configuration, as an `ALLOWED_CLONE_HOSTS` entry is.

mod pull_request;
mod registry;

use std::sync::Arc;
use std::time::Duration;

use crate::domain::ClonePolicy;
use crate::git::CheckedResolver;

pub(crate) use pull_request::PullRequest;
pub(crate) use registry::Forges;

/// Which API a forge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeKind {
    GitHub,
    GitLab,
    /// Gitea and Forgejo, which kept Gitea's API.
    Gitea,
}

impl std::fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ForgeKind::GitHub => "github",
            ForgeKind::GitLab => "gitlab",
            ForgeKind::Gitea => "gitea",
        })
    }
}

/// A repository on a forge: which API, where, and the repository's path.
/// Made by [`Forges::for_origin`], which refuses a path with empty, `.` or
/// `..` segments; after that the value is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeRepo {
    kind: ForgeKind,
    api_base: url::Url,
    /// `owner`, `repo`; GitLab may have more (nested groups). Decoded.
    segments: Vec<String>,
}

impl ForgeRepo {
    #[cfg(test)]
    pub(crate) fn kind(&self) -> ForgeKind {
        self.kind
    }

    /// The API's base URL, as configured.
    #[cfg(test)]
    pub(crate) fn api_base(&self) -> &url::Url {
        &self.api_base
    }

    /// `owner/repo`, or `group/sub/repo` on GitLab.
    pub(crate) fn path(&self) -> String {
        self.segments.join("/")
    }
}

/// What went wrong finding a forge or opening a pull request. No variant
/// carries the token.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("the origin is not a forge repository's URL: {0}")]
    BadOrigin(&'static str),
    #[error(
        "no forge is configured for host {host}: add `{host}=<github|gitlab|gitea>:<API base URL>` to FORGES"
    )]
    UnknownForge { host: String },
    #[error("the forge refused the token: {0}")]
    Refused(String),
    #[error("the forge rejected the pull request: {0}")]
    Rejected(String),
    #[error(
        "repository {repository} was not found on the forge, or the token cannot see it: {message}"
    )]
    NotFound { repository: String, message: String },
    #[error("the forge is unavailable: {0}")]
    Unavailable(String),
    #[error("the forge client could not be built")]
    Client(#[source] reqwest::Error),
}

pub type Result<T, E = ForgeError> = std::result::Result<T, E>;

/// The HTTP client for forge APIs: names resolve only to addresses `policy`
/// allows (the clones' check, the same addresses connected to), redirects
/// are never followed (a token must not travel to where a redirect points),
/// no proxy from the environment (it would resolve names unchecked), and
/// `timeout` bounds each whole request, answer included.
pub(crate) fn client(
    policy: &ClonePolicy,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(CheckedResolver(policy.clone())))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        // GitHub refuses a request without one.
        .user_agent(concat!("repo-runner/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ForgeError::Client)
}
