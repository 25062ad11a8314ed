//! Pushing a workspace's branch to the session's origin: the URL the user
//! cloned (never the workspace's `.git/config`, which the agent writes),
//! through the same checks as a clone (pinned addresses, the egress proxy
//! for https, our transport for http, no redirects, bounded time), and with
//! credentials sent only to that origin.

use std::path::Path;
use std::sync::Arc;

use git2::{Direction, ErrorClass, ErrorCode, PushOptions, RemoteRedirect};

use super::clone::{callbacks, pinned_url, proxy_options};
use super::http_transport::{self, HttpContext};
use super::workspace::open_repo;
use super::{CloneError, CloneProgress, CloneRequest};
use crate::domain::BranchName;

pub struct PushRequest {
    /// The origin, its credentials and the clone settings that bound the
    /// connection (`git_ref` and `depth` are not used).
    pub remote: CloneRequest,
    /// The workspace's branch.
    pub branch: BranchName,
    /// The branch on the origin.
    pub remote_branch: BranchName,
    /// Whether the origin's default branch may be pushed to.
    pub to_default_branch: bool,
}

#[derive(Debug, Clone)]
pub struct Pushed {
    pub remote_branch: String,
    pub sha: String,
    /// The origin's default branch (short name), when it names one.
    pub default_branch: Option<String>,
}

/// Why a push did not happen, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the workspace has no branch {0}")]
    NoSuchBranch(String),
    #[error(
        "{0} is the repository's default branch: pushing onto it needs to_default_branch: true"
    )]
    DefaultBranch(String),
    #[error("the remote rejected the push: {0}")]
    Rejected(String),
    #[error("the remote refused the credentials: give a token that may push to the repository")]
    CredentialsRefused,
    #[error(
        "the workspace's git configuration rewrites the origin's address (url.<base>.insteadOf or pushInsteadOf in .git/config): remove it to push"
    )]
    Rewritten,
    #[error("{0}")]
    Remote(CloneError),
    #[error(transparent)]
    Git(#[from] git2::Error),
}

impl From<CloneError> for PushError {
    fn from(error: CloneError) -> Self {
        match error {
            CloneError::AuthRequired => PushError::CredentialsRefused,
            other => PushError::Remote(other),
        }
    }
}

pub(crate) fn push(workspace: &Path, request: &PushRequest) -> Result<Pushed, PushError> {
    let repo = open_repo(workspace)?;
    let local = repo
        .find_reference(&request.branch.refname())
        .and_then(|r| r.peel_to_commit())
        .map_err(|_| PushError::NoSuchBranch(request.branch.to_string()))?;
    let remote_request = &request.remote;
    let progress = Arc::new(CloneProgress::default());
    let git = |e: git2::Error| CloneError::from_git(&e, &progress, remote_request.max_bytes);
    let url = match (&remote_request.local, remote_request.url.is_local()) {
        (Some(source), true) => source.open(remote_request.max_bytes, &progress.cancel)?,
        (None, false) => pinned_url(remote_request)?,
        _ => {
            return Err(
                CloneError::Other("a local repository's path was not checked".to_owned()).into(),
            )
        }
    };
    let _origin = remote_request
        .url
        .is_http()
        .then(|| super::egress::grant(remote_request.url.fetch_url()));
    let _http = if url.starts_with("http://") {
        let context = HttpContext::new(
            &url,
            &remote_request.policy,
            remote_request.credentials.clone(),
            remote_request.connect_timeout,
            remote_request.io_timeout,
            remote_request.max_bytes,
        )
        .ok_or_else(|| CloneError::Other("no runtime for an http push".to_owned()))?;
        Some(http_transport::Scope::enter(context))
    } else {
        None
    };
    let mut remote = repo.remote_anonymous(&url)?;
    // libgit2 rewrites a remote's URLs by the repository's
    // `url.<base>.insteadOf` and `pushInsteadOf`, which the agent can set:
    // a push (and its credentials) would go where the agent chose.
    let rewritten = remote.url_bytes() != url.as_bytes()
        || remote
            .pushurl_bytes()
            .is_some_and(|push| push != url.as_bytes());
    if rewritten {
        return Err(PushError::Rewritten);
    }

    // The default branch is told only to fetches (receive-pack does not
    // name HEAD): ask first.
    let connection = remote
        .connect_auth(
            Direction::Fetch,
            Some(callbacks(remote_request, &progress)),
            proxy_options(remote_request),
        )
        .map_err(git)?;
    let default_branch = connection
        .default_branch()
        .ok()
        .and_then(|name| name.as_str().ok().map(str::to_owned));
    drop(connection);
    let target = request.remote_branch.refname();
    if default_branch.as_deref() == Some(target.as_str()) && !request.to_default_branch {
        return Err(PushError::DefaultBranch(request.remote_branch.to_string()));
    }

    let mut rejection = None;
    let mut push_callbacks = callbacks(remote_request, &progress);
    push_callbacks.push_update_reference(|_refname, status| {
        if let Some(status) = status {
            rejection = Some(status.to_owned());
        }
        Ok(())
    });
    let mut options = PushOptions::new();
    options.remote_callbacks(push_callbacks);
    if let Some(proxy) = proxy_options(remote_request) {
        options.proxy_options(proxy);
    }
    options.follow_redirects(RemoteRedirect::None);
    // No `+`: never a forced update.
    let refspec = format!("{}:{target}", request.branch.refname());
    let pushed = remote.push(&[refspec.as_str()], Some(&mut options));
    drop(options);
    match pushed {
        Ok(()) => {}
        // libgit2 refuses a non-fast-forward itself, before sending.
        Err(e)
            if e.code() == ErrorCode::NotFastForward
                || (e.class() == ErrorClass::Reference && e.message().contains("cannot push")) =>
        {
            return Err(PushError::Rejected(format!(
                "{} is not a fast-forward of {}: {}",
                request.branch,
                request.remote_branch,
                e.message()
            )))
        }
        Err(e) => return Err(git(e).into()),
    }
    if let Some(reason) = rejection {
        return Err(PushError::Rejected(reason));
    }
    Ok(Pushed {
        remote_branch: request.remote_branch.to_string(),
        sha: local.id().to_string(),
        default_branch: default_branch
            .as_deref()
            .map(|name| name.strip_prefix("refs/heads/").unwrap_or(name).to_owned()),
    })
}
