//! Workspace snapshots: the workspace's exact state (committed, changed and
//! new files, modes and symlinks; ignored files left out, as git leaves
//! them out) written as a commit into the workspace's own object store.
//!
//! The state goes through an index of our own, kept beside the workspace
//! (`<session>/snapshot/index`), never the repository's: the user's index
//! and branches are untouched, and the agent, which can write `.git`,
//! cannot make a snapshot trust stat data it forged. Our index keeps stat
//! data from one snapshot to the next, so a snapshot reads only the files
//! that changed since the last one, as `git status` does.
//!
//! The repository's own configuration is the agent's to write, so a
//! snapshot reads it under a file of ours at the highest level that pins
//! what decides which bytes and modes are seen (`core.trustctime`,
//! `core.filemode`, `core.autocrlf`, …).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use git2::{Index, IndexAddOption, Oid, Repository, Signature};

use super::workspace::open_repo;

/// Settings read above the repository's own (see the module's header).
const PINNED_CONFIG: &str = "\
[core]
\ttrustctime = true
\tcheckstat = default
\tfilemode = true
\tsymlinks = true
\tignorecase = false
\tprecomposeunicode = false
\tautocrlf = false
\tsafecrlf = false
\tfsmonitor = false
";

/// The folder of a session's snapshot state, beside (never inside) its
/// workspace `repo`.
pub struct SnapshotCache {
    dir: PathBuf,
}

impl SnapshotCache {
    /// `session_dir` is the folder that holds the session's `repo`.
    pub fn new(session_dir: &Path) -> Self {
        Self {
            dir: session_dir.join("snapshot"),
        }
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index")
    }

    /// Creates the folder and the pinned configuration; takes the lock that
    /// one snapshot (or commit) at a time holds, across processes too.
    fn lock(&self) -> Result<Locked, git2::Error> {
        let io = |e: std::io::Error| git2::Error::from_str(&format!("snapshot state: {e}"));
        // Never `create_dir_all`: a session deleted meanwhile must not get
        // its folder back.
        match std::fs::create_dir(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
            _ => {}
        }
        let config = self.dir.join("config");
        if !config.exists() {
            let partial = self.dir.join("config.new");
            std::fs::write(&partial, PINNED_CONFIG).map_err(io)?;
            std::fs::rename(&partial, &config).map_err(io)?;
        }
        let lock = File::create(self.dir.join("lock")).map_err(io)?;
        rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(e.into()))?;
        Ok(Locked {
            _lock: lock,
            config,
        })
    }

    /// Seeds our index from the repository's, right after the clone wrote
    /// it (the agent has not run yet, so its stat data is ours): the first
    /// snapshot then reads no unchanged file.
    pub fn seed(&self, workspace: &Path) -> Result<(), git2::Error> {
        let _locked = self.lock()?;
        let source = workspace.join(".git").join("index");
        let partial = self.dir.join("index.seed");
        std::fs::copy(&source, &partial)
            .and_then(|_| std::fs::rename(&partial, self.index_path()))
            .map_err(|e| git2::Error::from_str(&format!("cannot seed the snapshot index: {e}")))
    }
}

struct Locked {
    _lock: File,
    config: PathBuf,
}

/// The workspace's repository, opened with the pinned configuration.
pub(super) fn open_pinned(workspace: &Path, config: &Path) -> Result<Repository, git2::Error> {
    let repo = open_repo(workspace)?;
    repo.config()?
        .add_file(config, git2::ConfigLevel::App, true)?;
    Ok(repo)
}

/// The workspace's repository with our index in place of its own, under
/// the lock; nothing written yet.
pub(super) struct Indexed {
    pub repo: Repository,
    pub index: Index,
    pub index_path: PathBuf,
    _locked: Locked,
}

pub(super) fn open_indexed(
    workspace: &Path,
    cache: &SnapshotCache,
) -> Result<Indexed, git2::Error> {
    let locked = cache.lock()?;
    let repo = open_pinned(workspace, &locked.config)?;
    let index_path = cache.index_path();
    let mut index = Index::open(&index_path)?;
    if !index_path.exists() {
        // Never seeded (a workspace from before snapshots): start from HEAD,
        // and every file is read once.
        if let Ok(head) = repo.head().and_then(|h| h.peel_to_tree()) {
            index.read_tree(&head)?;
        }
    }
    repo.set_index(&mut index)?;
    Ok(Indexed {
        repo,
        index,
        index_path,
        _locked: locked,
    })
}

/// The workspace as a tree, written through our index, which is left up
/// to date.
pub(super) struct Captured {
    pub repo: Repository,
    pub tree: Oid,
    /// Our index as it is now (the tree's entries with fresh stat data).
    pub index_path: PathBuf,
    _locked: Locked,
}

pub(super) fn capture(workspace: &Path, cache: &SnapshotCache) -> Result<Captured, git2::Error> {
    let Indexed {
        repo,
        mut index,
        index_path,
        _locked,
    } = open_indexed(workspace, cache)?;
    // One walk of the work tree (a diff of the index against it) adds new
    // and changed files and drops deleted ones; ignored files stay out, as
    // in `git add -A`.
    index.add_all(["*"], IndexAddOption::DEFAULT, None)?;
    let tree = index.write_tree()?;
    index.write()?;
    Ok(Captured {
        repo,
        tree,
        index_path,
        _locked,
    })
}

/// Who writes snapshot commits: they are never pushed, only kept under
/// `refs/repo-runner/`.
fn snapshot_signature() -> Result<Signature<'static>, git2::Error> {
    Signature::now("repo-runner", "snapshots@repo-runner.invalid")
}

/// Writes the workspace's state as a commit on top of HEAD (none on an
/// unborn branch) and points `refname` (under `refs/repo-runner/`) at it.
/// Returns the commit's id.
pub fn snapshot_commit(
    workspace: &Path,
    cache: &SnapshotCache,
    refname: &str,
) -> Result<Oid, git2::Error> {
    debug_assert!(refname.starts_with("refs/repo-runner/"));
    let captured = capture(workspace, cache)?;
    let repo = &captured.repo;
    let tree = repo.find_tree(captured.tree)?;
    let head = repo.head().and_then(|h| h.peel_to_commit()).ok();
    let parents: Vec<&git2::Commit<'_>> = head.iter().collect();
    let signature = snapshot_signature()?;
    let commit = repo.commit(
        None,
        &signature,
        &signature,
        "repo-runner workspace snapshot",
        &tree,
        &parents,
    )?;
    repo.reference(refname, commit, true, "repo-runner snapshot")?;
    Ok(commit)
}

/// The ref of a run's snapshot before (`before`) or after it.
pub fn run_ref(run: uuid::Uuid, when: &str) -> String {
    format!("refs/repo-runner/runs/{run}/{when}")
}
