//! The workspace's git state (branch, HEAD, commits on top of the base,
//! files not committed) and commits made through the API.

use std::path::Path;

use git2::{Oid, Repository, Signature, Sort};

use super::snapshot::{capture, open_indexed, SnapshotCache};
use crate::domain::{BranchName, CommitMessage};

/// A commit made in the workspace.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub sha: String,
    pub subject: String,
    pub author_name: String,
    pub author_email: String,
    /// Seconds since the epoch (the author's time).
    pub time: i64,
}

#[derive(Debug, Clone)]
pub struct GitState {
    /// The branch HEAD names; `None` when HEAD is detached.
    pub branch: Option<String>,
    pub head: Option<String>,
    /// Commits on top of the base commit (counted up to `max_ahead`).
    pub ahead: u64,
    /// Files whose state differs from HEAD's (new, changed, deleted).
    pub dirty: u64,
    /// The newest commits on top of the base, newest first.
    pub commits: Vec<CommitInfo>,
    /// More commits exist than `commits` (or `ahead`) holds.
    pub commits_truncated: bool,
}

/// Most commits counted for `ahead`: a history rewritten onto an unrelated
/// root would otherwise be walked whole.
const MAX_AHEAD: u64 = 10_000;

/// Text a person reads from a commit: lossy, bounded.
fn shown(bytes: &[u8], max_chars: usize) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(max_chars)
        .collect()
}

pub(crate) fn state(
    workspace: &Path,
    cache: &SnapshotCache,
    base_commit: Option<&str>,
    max_commits: usize,
) -> Result<GitState, git2::Error> {
    let indexed = open_indexed(workspace, cache)?;
    let repo = &indexed.repo;
    let head = repo.head().ok();
    let branch = head
        .as_ref()
        .filter(|h| h.is_branch())
        .map(|h| shown(h.shorthand_bytes(), 255));
    let head_commit = head.as_ref().and_then(|h| h.peel_to_commit().ok());
    let head_tree = head_commit.as_ref().and_then(|c| c.tree().ok());
    // HEAD against the work tree through our index, written nowhere.
    let mut options = git2::DiffOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_typechange(true);
    let dirty = match &head_tree {
        Some(tree) if !super::patch::narrow(&indexed, workspace, tree, &mut options)? => 0,
        _ => repo
            .diff_tree_to_workdir_with_index(head_tree.as_ref(), Some(&mut options))?
            .deltas()
            .len() as u64,
    };
    let mut commits = Vec::new();
    let mut ahead = 0u64;
    let mut truncated = false;
    if let Some(head_commit) = &head_commit {
        let mut walk = repo.revwalk()?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)?;
        walk.push(head_commit.id())?;
        if let Some(base) = base_commit.and_then(|b| Oid::from_str(b).ok()) {
            // A base the agent removed from the store hides nothing.
            if repo.find_commit(base).is_ok() {
                walk.hide(base)?;
            }
        }
        for oid in walk {
            let oid = oid?;
            if ahead == MAX_AHEAD {
                truncated = true;
                break;
            }
            ahead += 1;
            if commits.len() < max_commits {
                let commit = repo.find_commit(oid)?;
                let message = commit.message_bytes();
                let subject = message.split(|b| *b == b'\n').next().unwrap_or_default();
                let author = commit.author();
                commits.push(CommitInfo {
                    sha: oid.to_string(),
                    subject: shown(subject, 200),
                    author_name: shown(author.name_bytes(), 200),
                    author_email: shown(author.email_bytes(), 200),
                    time: author.when().seconds(),
                });
            } else {
                truncated = true;
            }
        }
    }
    Ok(GitState {
        branch,
        head: head_commit.map(|c| c.id().to_string()),
        ahead,
        dirty,
        commits,
        commits_truncated: truncated,
    })
}

/// The branch HEAD names, right after a clone (`None` when detached or
/// unreadable).
pub(crate) fn head_branch(workspace: &Path) -> Option<String> {
    let repo = super::workspace::open_repo(workspace).ok()?;
    let head = repo.head().ok()?;
    head.is_branch()
        .then(|| head.shorthand().ok().map(str::to_owned))
        .flatten()
}

/// Why a commit was not made.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("nothing to commit: the workspace matches HEAD")]
    NothingToCommit,
    #[error(
        "commits never go onto {0}, the branch the session was cloned from; name another branch"
    )]
    ClonedBranch(String),
    #[error("branch {0} exists at another commit than the workspace's HEAD; name another branch")]
    BranchElsewhere(String),
    #[error("the workspace has no commit to build on")]
    NoHead,
    #[error("branch {0} cannot be made beside the workspace's branches (a branch of that name or a folder of branches is in the way): name another branch")]
    BranchClash(String),
    #[error(transparent)]
    Git(#[from] git2::Error),
}

pub struct CommitRequest<'a> {
    pub message: &'a CommitMessage,
    pub branch: &'a BranchName,
    /// The branch the session was cloned from, which is never committed on.
    pub cloned_branch: Option<&'a str>,
    pub author_name: &'a str,
    pub author_email: &'a str,
}

#[derive(Debug, Clone)]
pub struct Committed {
    pub sha: String,
    pub branch: String,
}

/// Commits every change in the workspace (as `git add -A && git commit`)
/// onto `branch`, created from HEAD when it does not exist, and makes it
/// HEAD; the repository's index then matches the commit.
pub(crate) fn commit(
    workspace: &Path,
    cache: &SnapshotCache,
    request: &CommitRequest<'_>,
) -> Result<Committed, CommitError> {
    if request.cloned_branch == Some(request.branch.as_str()) {
        return Err(CommitError::ClonedBranch(request.branch.to_string()));
    }
    let captured = capture(workspace, cache)?;
    let repo = &captured.repo;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|_| CommitError::NoHead)?;
    if head.tree_id() == captured.tree {
        return Err(CommitError::NothingToCommit);
    }
    let refname = request.branch.refname();
    let existing = repo.find_reference(&refname).ok().map(|r| r.target());
    if let Some(tip) = existing {
        if tip != Some(head.id()) {
            return Err(CommitError::BranchElsewhere(request.branch.to_string()));
        }
    }
    let author = Signature::now(request.author_name, request.author_email)?;
    let tree = repo.find_tree(captured.tree)?;
    let sha = repo.commit(
        None,
        &author,
        &author,
        request.message.as_str(),
        &tree,
        &[&head],
    )?;
    let log = "repo-runner: commit";
    let moved = match existing {
        // Moved only from where it was read: a concurrent change fails.
        Some(_) => repo.reference_matching(&refname, sha, true, head.id(), log),
        None => repo.reference(&refname, sha, false, log),
    };
    if let Err(error) = moved {
        // `a` beside `a/b`, or a name taken meanwhile.
        return Err(match error.class() {
            git2::ErrorClass::Reference | git2::ErrorClass::Filesystem | git2::ErrorClass::Os => {
                CommitError::BranchClash(request.branch.to_string())
            }
            _ => CommitError::Git(error),
        });
    }
    repo.set_head(&refname)?;
    sync_index(repo, &captured.index_path)?;
    Ok(Committed {
        sha: sha.to_string(),
        branch: request.branch.to_string(),
    })
}

/// Makes the repository's index our index, which now matches the commit,
/// stat data included (`git status` is then clean without re-reading).
fn sync_index(repo: &Repository, ours: &Path) -> Result<(), git2::Error> {
    let io = |e: std::io::Error| git2::Error::from_str(&format!("cannot update the index: {e}"));
    use std::io::Write;
    let git_dir = repo.path();
    let partial = git_dir.join("index.repo-runner");
    // A fresh file, never one the agent may have planted (a symlink to a
    // file of the server's); the rename replaces `index` itself, whatever
    // it is.
    let bytes = std::fs::read(ours).map_err(io)?;
    super::workspace::fresh_file(&partial)
        .and_then(|mut file| file.write_all(&bytes))
        .map_err(io)?;
    std::fs::rename(&partial, git_dir.join("index")).map_err(io)
}
