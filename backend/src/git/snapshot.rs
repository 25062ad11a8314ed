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

use super::workspace::{busy, fresh_file, libc_flags, open_repo};

/// Longest wait for another snapshot or commit of the same workspace.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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

/// The folder of a session's snapshot state: `<WORKSPACES_ROOT>/.snapshots/
/// <session>`, outside the session's own folder, so out of every agent's
/// sight (the runner hides the workspaces' root but for the session's own
/// folder). Nothing in it is trusted to be what was written, all the same:
/// files are written to fresh names opened without following symlinks and
/// renamed into place.
pub struct SnapshotCache {
    dir: PathBuf,
}

impl SnapshotCache {
    /// `dir` is the session's own folder of snapshot state.
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index")
    }

    /// The folders' record that goes with our index (`changed::Folders`).
    fn folders_path(&self) -> PathBuf {
        self.dir.join("folders")
    }

    /// Creates the folder and the pinned configuration; takes the lock that
    /// one snapshot (or commit) at a time holds, across processes too.
    /// Nothing is made for a workspace that is gone (a session deleted
    /// meanwhile).
    fn lock(&self, workspace: &Path) -> Result<Locked, git2::Error> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| git2::Error::from_str(&format!("snapshot state: {e}"));
        if !std::fs::symlink_metadata(workspace.join(".git")).is_ok_and(|m| m.is_dir()) {
            return Err(super::workspace::not_a_repository());
        }
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let real_dir = std::fs::symlink_metadata(&self.dir).is_ok_and(|m| m.is_dir());
        if !real_dir {
            return Err(git2::Error::from_str("snapshot state: not a folder"));
        }
        // Never truncated, never followed.
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc_flags::NOFOLLOW)
            .mode(0o600)
            .open(self.dir.join("lock"))
            .map_err(io)?;
        // Bounded: work stuck on this workspace (a snapshot, a commit) is
        // not waited for without end.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(
                lock.as_fd(),
                rustix::fs::FlockOperation::NonBlockingLockExclusive,
            ) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => return Err(busy()),
                Err(e) => return Err(io(e.into())),
            }
        }
        // Written each time: a file found there is not taken for ours.
        let config = self.dir.join("config");
        let partial = self.dir.join("config.new");
        fresh_file(&partial)
            .and_then(|mut file| file.write_all(PINNED_CONFIG.as_bytes()))
            .and_then(|()| std::fs::rename(&partial, &config))
            .map_err(io)?;
        Ok(Locked {
            _lock: lock,
            config,
        })
    }

    /// Seeds our index from the repository's, right after the clone wrote
    /// it (the agent has not run yet, so its stat data is ours): the first
    /// snapshot then reads no unchanged file.
    pub(crate) fn seed(&self, workspace: &Path) -> Result<(), git2::Error> {
        let _locked = self.lock(workspace)?;
        let source = workspace.join(".git").join("index");
        let partial = self.dir.join("index.seed");
        std::fs::read(&source)
            .and_then(|bytes| {
                use std::io::Write;
                fresh_file(&partial)?.write_all(&bytes)
            })
            .and_then(|()| std::fs::rename(&partial, self.index_path()))
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

/// Paths that may differ from our index, and the record of the folders
/// looked at to find them.
pub(super) type Candidates = (Vec<Vec<u8>>, super::changed::Folders);

/// The workspace's repository with our index in place of its own, under
/// the lock; nothing written yet.
pub(super) struct Indexed {
    pub repo: Repository,
    pub index: Index,
    pub index_path: PathBuf,
    /// When our index file was last written (seconds, nanoseconds): a
    /// file changed since may match its entry's stat data and still differ.
    written: Option<(i64, i64)>,
    folders_path: PathBuf,
    /// Taken out by [`Indexed::release`].
    locked: std::cell::Cell<Option<Locked>>,
}

impl Indexed {
    /// Lets the next snapshot of the workspace go on: what was read under
    /// the lock (our index, in memory) stays usable. A patch releases it
    /// once its diff is made, before it is written to a client at the
    /// client's pace.
    pub(super) fn release(&self) {
        drop(self.locked.take());
    }

    /// The paths that may differ from our index (`changed::candidates`),
    /// and the record of the folders looked at; `None` when they cannot be
    /// told, and everything must be walked.
    pub(crate) fn candidates(&self, workspace: &Path) -> Result<Option<Candidates>, git2::Error> {
        let Some(written) = self.written else {
            return Ok(None);
        };
        let folders = super::changed::Folders::load(&self.folders_path);
        match super::changed::candidates(
            workspace,
            &self.repo,
            &self.index,
            written,
            folders.as_ref(),
        ) {
            Ok(found) => Ok(Some(found)),
            // Never handed to libgit2, which would open it.
            Err(error)
                if error
                    .get_ref()
                    .is_some_and(|inner| inner.is::<super::changed::HostileGitFile>()) =>
            {
                Err(super::workspace::not_regular_git_file())
            }
            Err(error) => {
                tracing::debug!(%error, "walking the whole work tree instead");
                Ok(None)
            }
        }
    }
}

pub(super) fn open_indexed(
    workspace: &Path,
    cache: &SnapshotCache,
) -> Result<Indexed, git2::Error> {
    let locked = cache.lock(workspace)?;
    let repo = open_pinned(workspace, &locked.config)?;
    let index_path = cache.index_path();
    let written = std::fs::metadata(&index_path).ok().map(|meta| {
        use std::os::unix::fs::MetadataExt;
        (meta.mtime(), meta.mtime_nsec())
    });
    let mut index = Index::open(&index_path)?;
    if written.is_none() {
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
        written,
        folders_path: cache.folders_path(),
        locked: std::cell::Cell::new(Some(locked)),
    })
}

/// The workspace as a tree, written through our index, which is left up
/// to date.
pub(super) struct Captured {
    pub repo: Repository,
    pub tree: Oid,
    /// Our index as it is now (the tree's entries with fresh stat data).
    pub index_path: PathBuf,
    _locked: Option<Locked>,
}

pub(super) fn capture(workspace: &Path, cache: &SnapshotCache) -> Result<Captured, git2::Error> {
    let mut indexed = open_indexed(workspace, cache)?;
    // A diff of the index against the work tree adds new and changed files
    // and drops deleted ones; ignored files stay out, as in `git add -A`.
    // Narrowed to the paths that may have changed, when they are known.
    let found = indexed.candidates(workspace)?;
    let folders = match found {
        Some((paths, folders)) => {
            update_paths(workspace, &indexed.repo, &mut indexed.index, &paths)?;
            Some(folders)
        }
        None => {
            indexed
                .index
                .add_all(["*"], IndexAddOption::DEFAULT, None)?;
            None
        }
    };
    let Indexed {
        repo,
        mut index,
        index_path,
        locked,
        ..
    } = indexed;
    let _locked = locked.into_inner();
    let tree = index.write_tree()?;
    index.write()?;
    let folders_path = cache.folders_path();
    let written = std::fs::metadata(&index_path).ok().map(|meta| {
        use std::os::unix::fs::MetadataExt;
        (meta.mtime(), meta.mtime_nsec())
    });
    match (folders, written) {
        (Some(folders), Some(written)) => {
            if let Err(error) = folders.save(&folders_path, written) {
                tracing::debug!(%error, "no record of the folders: the next look reads them all");
            }
        }
        // A record of another index would mislead the next look.
        _ => drop(std::fs::remove_file(&folders_path)),
    }
    Ok(Captured {
        repo,
        tree,
        index_path,
        _locked,
    })
}

/// Brings our index up to date for `paths` (from `changed::candidates`)
/// as `git add -A` would: a regular file or a symlink is added (read and
/// hashed), a tracked path that is gone (or no longer a file) is dropped,
/// and a new path that is ignored stays out. libgit2's `add_all` narrowed
/// to these paths still walks every folder; this reads only them.
///
/// A path whose folders are not all real folders (a symlink on the way) is
/// not in the work tree as git sees it: it is dropped, never read through
/// the symlink. Snapshots run while no agent command does (before and after
/// a run, or for a commit while none runs), so what is checked here is what
/// libgit2 then opens.
fn update_paths(
    workspace: &Path,
    repo: &Repository,
    index: &mut Index,
    paths: &[Vec<u8>],
) -> Result<(), git2::Error> {
    use std::os::unix::ffi::OsStrExt;
    let io = |e: std::io::Error| git2::Error::from_str(&format!("snapshot: {e}"));
    let root = rustix::fs::open(
        workspace,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    for path in paths {
        let relative = Path::new(std::ffi::OsStr::from_bytes(path));
        if relative.components().any(|c| c.as_os_str() == ".git") {
            continue;
        }
        let tracked = index.get_path(relative, 0).is_some();
        let parent_real = match relative.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => true,
            Some(parent) => rustix::fs::openat2(
                &root,
                parent,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
                rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
            )
            .is_ok(),
        };
        let kind = parent_real
            .then(|| {
                rustix::fs::statat(&root, relative, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()
            })
            .flatten()
            .map(|stat| rustix::fs::FileType::from_raw_mode(stat.st_mode));
        match kind {
            Some(rustix::fs::FileType::RegularFile | rustix::fs::FileType::Symlink) => {
                if !tracked && repo.is_path_ignored(relative)? {
                    continue;
                }
                index.add_path(relative)?;
            }
            _ if tracked => index.remove_path(relative)?,
            _ => {}
        }
    }
    Ok(())
}

/// Who writes snapshot commits: they are never pushed, only kept under
/// `refs/repo-runner/`.
fn snapshot_signature() -> Result<Signature<'static>, git2::Error> {
    Signature::now("repo-runner", "snapshots@repo-runner.invalid")
}

/// Writes the workspace's state as a commit on top of HEAD (none on an
/// unborn branch) and points `refname` (under `refs/repo-runner/`) at it.
/// Returns the commit's id.
pub(crate) fn snapshot_commit(
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
pub(crate) fn run_ref(run: uuid::Uuid, when: &str) -> String {
    format!("refs/repo-runner/runs/{run}/{when}")
}
