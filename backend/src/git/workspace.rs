//! Reading a session's workspace: status snapshots and what a run changed,
//! the file tree, file contents, and the diff against the cloned commit.
//!
//! The agent controls every byte of the workspace, `.git` included, so
//! nothing here trusts a path: files are opened with `openat2` beneath a
//! directory handle of the workspace (a symlink or a swapped folder cannot
//! lead out), only regular files are read, and the repository is opened
//! with its work tree pinned to the workspace.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use git2::{DiffFormat, DiffOptions, Oid, Repository, RepositoryOpenFlags, Status, StatusOptions};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::{WorkspacePath, WorkspacePathError};

/// The error of a workspace whose `.git` is gone or replaced (a symlink, a
/// gitfile): the API answers it with a 409, not a 500.
pub(crate) fn not_a_repository() -> git2::Error {
    git2::Error::new(
        git2::ErrorCode::NotFound,
        git2::ErrorClass::Repository,
        "the workspace's .git is not a plain repository folder (a symlink, a gitfile, commondir, alternates, or objects or refs elsewhere)",
    )
}

/// The error of a workspace whose snapshot state another piece of work
/// holds past [`LOCK_WAIT`]: the API answers 409.
pub(crate) fn busy() -> git2::Error {
    git2::Error::new(
        git2::ErrorCode::Locked,
        git2::ErrorClass::Index,
        "the workspace is busy with another snapshot or commit; try again",
    )
}

/// Opens `path` for writing, made anew: an entry of that name (a symlink
/// someone planted, a leftover) is removed first, and the new file is made
/// with `O_EXCL | O_NOFOLLOW`, so no write lands anywhere else.
pub(super) fn fresh_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc_flags::NOFOLLOW)
        .mode(0o600)
        .open(path)
}

/// `O_NOFOLLOW` without a `libc` dependency.
pub(super) mod libc_flags {
    pub const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
}

/// The words of an error that is the workspace's state, not a fault of
/// ours (a `.git` refused by [`open_repo`], a special git file, another
/// snapshot holding the workspace): the API answers these with a 409.
pub(crate) fn refusal(error: &git2::Error) -> Option<&str> {
    let refused = [not_a_repository(), busy()]
        .iter()
        .any(|known| error.class() == known.class() && error.code() == known.code());
    refused.then(|| error.message())
}

/// The error of a workspace whose git files (`.git/config`, a
/// `.gitignore`, …) are not regular files: the API answers it with a 409.
pub(crate) fn not_regular_git_file() -> git2::Error {
    git2::Error::new(
        git2::ErrorCode::NotFound,
        git2::ErrorClass::Repository,
        "a git file of the workspace (.git/config, HEAD, index, info/exclude, a .gitignore or .gitattributes) is a symlink, FIFO or other special file; only regular files are read",
    )
}

/// Opens the workspace's repository from its own `.git` folder, never one
/// found by searching upwards, with the work tree pinned to `workspace`:
/// `core.worktree` (which the agent can set) is ignored.
pub(super) fn open_repo(workspace: &Path) -> Result<Repository, git2::Error> {
    let git_dir = workspace.join(".git");
    // A `.git` that is a symlink or a gitfile would let the agent point the
    // repository (and its config) anywhere.
    let is_dir = std::fs::symlink_metadata(&git_dir).is_ok_and(|meta| meta.is_dir());
    if !is_dir {
        return Err(not_a_repository());
    }
    // What would make libgit2 read another repository's objects or refs
    // (another session's, found by path): a `commondir` or `gitdir` file,
    // alternates, or the object store or refs behind a symlink. A clone
    // makes none of these.
    let elsewhere = ["commondir", "gitdir", "objects/info/alternates"]
        .iter()
        .any(|name| std::fs::symlink_metadata(git_dir.join(name)).is_ok())
        || ["objects", "refs"].iter().any(|name| {
            !std::fs::symlink_metadata(git_dir.join(name)).is_ok_and(|meta| meta.is_dir())
        });
    if elsewhere {
        return Err(not_a_repository());
    }
    // Files libgit2 opens and reads whole by itself: a FIFO would block it
    // for good, a symlink would read a file of the server's.
    let special = [
        "config",
        "HEAD",
        "index",
        "packed-refs",
        "info/exclude",
        "info/attributes",
    ]
    .iter()
    .map(|name| git_dir.join(name))
    .chain(
        [".gitignore", ".gitattributes"]
            .iter()
            .map(|name| workspace.join(name)),
    )
    .any(|path| std::fs::symlink_metadata(path).is_ok_and(|meta| !meta.is_file()));
    if special {
        return Err(not_regular_git_file());
    }
    let repo = Repository::open_ext(&git_dir, RepositoryOpenFlags::NO_SEARCH, [] as [&OsStr; 0])?;
    repo.set_workdir(workspace, false)?;
    Ok(repo)
}

/// Finds `relative` beneath `workspace` without ever leaving it: symlinks
/// that stay inside are followed, anything that would resolve outside fails
/// like a missing file. The handle is `O_PATH`: opening it has no effect on
/// a FIFO or a device, and its type comes from `fstat` on the handle, so a
/// swap of the path after this point changes nothing.
fn find_beneath(workspace: &Path, relative: &Path) -> Result<(OwnedFd, Metadata), FileError> {
    let root = rustix::fs::open(
        workspace,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let fd = rustix::fs::openat2(
        &root,
        relative,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|errno| match errno {
        // Missing, leaving the workspace (EXDEV), a symlink loop, a file
        // used as a folder, or a rename racing the walk (EAGAIN): all one
        // answer, so what exists outside the workspace cannot be probed.
        Errno::NOENT | Errno::XDEV | Errno::LOOP | Errno::NOTDIR | Errno::AGAIN => {
            FileError::NotFound
        }
        other => FileError::Io(other.into()),
    })?;
    // A symlink inside the workspace may still lead into `.git`; ask the
    // kernel where the handle really is.
    let real = std::fs::read_link(proc_fd(&fd))?;
    if real
        .strip_prefix(workspace)
        .ok()
        .and_then(|rel| rel.components().next())
        .is_some_and(|c| c.as_os_str() == ".git")
    {
        return Err(FileError::Path(WorkspacePathError::GitDir));
    }
    let fd = File::from(fd);
    let meta = fd.metadata()?;
    Ok((OwnedFd::from(fd), meta))
}

/// `/proc/self/fd/N`: reopening it opens the very file the handle holds.
fn proc_fd(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens a regular file beneath `workspace` for reading; a folder, FIFO,
/// socket or device is refused before anything reads it. `shown` names the
/// path in errors.
fn open_regular(
    workspace: &Path,
    relative: &Path,
    shown: &str,
) -> Result<(File, Metadata), FileError> {
    let (handle, meta) = find_beneath(workspace, relative)?;
    if meta.is_dir() {
        return Err(FileError::IsDirectory(shown.to_owned()));
    }
    if !meta.is_file() {
        return Err(FileError::NotRegular(shown.to_owned()));
    }
    // The same inode, now readable; `O_NONBLOCK` in case of the impossible.
    let fd = rustix::fs::open(
        proc_fd(&handle),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    Ok((File::from(fd), meta))
}

/// Path → state (how it differs and a content hash) of every file that
/// differs from `HEAD` or is untracked.
pub type Snapshot = BTreeMap<String, FileState>;

/// How a file differs from `HEAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    New,
    Modified,
    Deleted,
}

impl FileKind {
    fn of(status: Status) -> Self {
        if status.intersects(Status::WT_DELETED | Status::INDEX_DELETED) {
            FileKind::Deleted
        } else if status.intersects(Status::WT_NEW | Status::INDEX_NEW) {
            FileKind::New
        } else {
            FileKind::Modified
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            FileKind::New => "new",
            FileKind::Modified => "modified",
            FileKind::Deleted => "deleted",
        }
    }
}

/// One file of a [`Snapshot`]: its kind and its content's fingerprint
/// (`deleted`, `unreadable`, `link-<oid>` or a SHA-256). Stored (a run's
/// `status_before`) as the text `kind:fingerprint`, the form runs recorded
/// before this type existed, so a run picked up after an upgrade reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub kind: FileKind,
    pub fingerprint: String,
}

impl Serialize for FileState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}:{}", self.kind.as_str(), self.fingerprint))
    }
}

impl<'de> serde::Deserialize<'de> for FileState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let (kind, fingerprint) = text
            .split_once(':')
            .ok_or_else(|| serde::de::Error::custom("a file state is kind:fingerprint"))?;
        let kind = match kind {
            "new" => FileKind::New,
            "modified" => FileKind::Modified,
            "deleted" => FileKind::Deleted,
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown file kind {other:?}"
                )))
            }
        };
        Ok(FileState {
            kind,
            fingerprint: fingerprint.to_owned(),
        })
    }
}

/// Files a run created, modified and deleted: the `files` of a run's
/// terminal event, so the wire's type.
pub(crate) use runner_protocol::Changes;

pub(crate) fn snapshot(workspace: &Path) -> Result<Snapshot, git2::Error> {
    let repo = open_repo(workspace)?;
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo.statuses(Some(&mut options))?;
    let mut snapshot = Snapshot::new();
    for entry in statuses.iter() {
        let Ok(path) = entry.path() else { continue };
        let status = entry.status();
        let kind = FileKind::of(status);
        let fingerprint = match kind {
            FileKind::Deleted => "deleted".to_owned(),
            _ => fingerprint(workspace, Path::new(path)),
        };
        snapshot.insert(path.to_owned(), FileState { kind, fingerprint });
    }
    Ok(snapshot)
}

/// The content hash of a file, read the same safe way as `read_file`: a
/// symlink is hashed as its target's name (never followed out), and a
/// FIFO, socket or device is never opened for reading.
fn fingerprint(workspace: &Path, relative: &Path) -> String {
    let Ok(meta) = std::fs::symlink_metadata(workspace.join(relative)) else {
        return "unreadable".to_owned();
    };
    if meta.file_type().is_symlink() {
        return std::fs::read_link(workspace.join(relative))
            .ok()
            .and_then(|target| {
                Oid::hash_object(
                    git2::ObjectType::Blob,
                    target.as_os_str().as_encoded_bytes(),
                )
                .ok()
            })
            .map_or_else(|| "unreadable".to_owned(), |oid| format!("link-{oid}"));
    }
    let shown = relative.to_string_lossy();
    let hashed = open_regular(workspace, relative, &shown).and_then(|(mut file, _)| {
        // Streamed: the file may be far larger than memory should hold.
        let mut hasher = Sha256::new();
        let mut buffer = [0u8; 64 * 1024];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>())
    });
    hashed.unwrap_or_else(|_| "unreadable".to_owned())
}

/// What happened between two snapshots of the same workspace.
pub(crate) fn changes(before: &Snapshot, after: &Snapshot, workspace: &Path) -> Changes {
    let mut changes = Changes::default();
    for (path, now) in after {
        match before.get(path) {
            Some(then) if then == now => {}
            Some(then) => match (then.kind, now.kind) {
                (_, FileKind::Deleted) => changes.deleted.push(path.clone()),
                (FileKind::Deleted, _) => changes.created.push(path.clone()),
                _ => changes.modified.push(path.clone()),
            },
            None => match now.kind {
                FileKind::New => changes.created.push(path.clone()),
                FileKind::Deleted => changes.deleted.push(path.clone()),
                FileKind::Modified => changes.modified.push(path.clone()),
            },
        }
    }
    for (path, then) in before {
        if after.contains_key(path) {
            continue;
        }
        // Back to matching HEAD: restored, reverted, or committed by the agent.
        match then.kind {
            FileKind::Deleted => changes.created.push(path.clone()),
            // The path itself, not what a symlink there points at.
            FileKind::New if std::fs::symlink_metadata(workspace.join(path)).is_err() => {
                changes.deleted.push(path.clone())
            }
            _ => changes.modified.push(path.clone()),
        }
    }
    changes
}

#[derive(Debug, Clone, Serialize)]
pub struct TreeEntry {
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: &'static str,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tree {
    pub entries: Vec<TreeEntry>,
    pub truncated: bool,
}

/// Every file and folder of the workspace, `.git` left out, sorted, depth
/// first; symlinks are listed, not followed. Each folder is opened beneath
/// the workspace with no symlink allowed on the way, so a folder swapped
/// for a symlink while the walk runs is skipped, never listed.
pub(crate) fn tree(workspace: &Path, max_entries: usize) -> std::io::Result<Tree> {
    let root = rustix::fs::open(
        workspace,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut entries = Vec::new();
    let mut truncated = false;
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let dir_fd = if dir.as_os_str().is_empty() {
            None
        } else {
            match rustix::fs::openat2(
                &root,
                &dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            ) {
                Ok(fd) => Some(fd),
                // Gone or replaced since it was listed: nothing to show.
                Err(_) => continue,
            }
        };
        let dir_fd = dir_fd.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
        let mut children = Vec::new();
        for entry in rustix::fs::Dir::read_from(dir_fd)? {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                children.push(OsString::from_vec(name));
            }
        }
        children.sort_by(|a, b| b.cmp(a));
        for name in children {
            let relative = dir.join(&name);
            if relative == Path::new(".git") {
                continue;
            }
            let Ok(stat) = rustix::fs::statat(dir_fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            let kind = match FileType::from_raw_mode(stat.st_mode) {
                FileType::Symlink => "symlink",
                FileType::Directory => {
                    stack.push(relative.clone());
                    "dir"
                }
                _ => "file",
            };
            if entries.len() >= max_entries {
                truncated = true;
                break;
            }
            entries.push(TreeEntry {
                path: relative.to_string_lossy().into_owned(),
                kind,
                size: if kind == "file" {
                    u64::try_from(stat.st_size).unwrap_or(0)
                } else {
                    0
                },
            });
        }
        if truncated {
            break;
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Tree { entries, truncated })
}

#[derive(Debug, Clone, Serialize)]
pub struct FileContent {
    pub path: String,
    pub size: u64,
    /// True when the file is not UTF-8 text; `content` is then base64.
    pub binary: bool,
    /// `utf-8` or `base64`.
    pub encoding: &'static str,
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Path(#[from] WorkspacePathError),
    /// Missing, or reached only by leaving the workspace: one answer for
    /// both, so it is no oracle for what exists outside.
    #[error("no such file")]
    NotFound,
    #[error("{0} is a directory")]
    IsDirectory(String),
    #[error("{0} is not a regular file (a FIFO, socket or device); only regular files are served")]
    NotRegular(String),
    #[error("{path} is {size} bytes; the limit is {limit} (BACKEND_MAX_FILE_BYTES)")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("cannot read the file")]
    Io(#[from] std::io::Error),
}

/// `workspace` must be canonical. The type is checked on the opened file
/// (`fstat`), never on the path, so a swap between the two changes nothing.
pub(crate) fn read_file(
    workspace: &Path,
    path: &WorkspacePath,
    limit: u64,
) -> Result<FileContent, FileError> {
    let shown = path.as_path().to_string_lossy().into_owned();
    let (file, meta) = open_regular(workspace, path.as_path(), &shown)?;
    if meta.len() > limit {
        return Err(FileError::TooLarge {
            path: shown,
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after `fstat`: never read more than the limit.
    file.take(limit).read_to_end(&mut bytes)?;
    let size = bytes.len() as u64;
    let text = (!bytes[..bytes.len().min(8000)].contains(&0))
        .then(|| String::from_utf8(bytes.clone()).ok())
        .flatten();
    Ok(match text {
        Some(content) => FileContent {
            path: shown,
            size,
            binary: false,
            encoding: "utf-8",
            content,
        },
        None => FileContent {
            path: shown,
            size,
            binary: true,
            encoding: "base64",
            content: base64::engine::general_purpose::STANDARD.encode(&bytes),
        },
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub base_commit: String,
    /// A unified diff (`git diff` format), new files included.
    pub patch: String,
    pub files_changed: usize,
    pub insertions: usize,
    pub deletions: usize,
    pub truncated: bool,
    /// Changed files over the per-file limit: listed, their content left
    /// out of `patch`.
    pub too_large: Vec<String>,
}

/// The workspace (index and working tree, untracked files included)
/// against the commit the session cloned. The patch stops at `max_bytes`;
/// a file over `max_file_bytes` is never loaded, only named in `too_large`.
pub(crate) fn diff(
    workspace: &Path,
    base_commit: &str,
    max_bytes: usize,
    max_file_bytes: u64,
) -> Result<Diff, git2::Error> {
    let repo = open_repo(workspace)?;
    let base = repo.find_commit(Oid::from_str(base_commit)?)?.tree()?;
    let mut options = DiffOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .show_untracked_content(true)
        .include_typechange(true)
        // libgit2 treats a larger file as binary and does not load it.
        .max_size(i64::try_from(max_file_bytes).unwrap_or(i64::MAX));
    let diff = repo.diff_tree_to_workdir_with_index(Some(&base), Some(&mut options))?;
    let too_large: Vec<String> = diff
        .deltas()
        .filter(|delta| {
            delta.old_file().size() > max_file_bytes || delta.new_file().size() > max_file_bytes
        })
        .filter_map(|delta| {
            delta
                .new_file()
                .path()
                .or_else(|| delta.old_file().path())
                .map(|p| p.to_string_lossy().into_owned())
        })
        .collect();
    let stats = diff.stats()?;
    let mut patch = String::new();
    let mut truncated = false;
    diff.print(DiffFormat::Patch, |_delta, _hunk, line| {
        let prefix = match line.origin() {
            c @ ('+' | '-' | ' ') => Some(c),
            _ => None,
        };
        let content = String::from_utf8_lossy(line.content());
        if patch.len() + content.len() + 1 > max_bytes {
            // Returning false stops libgit2 building the rest of the patch.
            truncated = true;
            return false;
        }
        if let Some(c) = prefix {
            patch.push(c);
        }
        patch.push_str(&content);
        true
    })
    .or_else(|e| if truncated { Ok(()) } else { Err(e) })?;
    Ok(Diff {
        base_commit: base_commit.to_owned(),
        patch,
        files_changed: stats.files_changed(),
        insertions: stats.insertions(),
        deletions: stats.deletions(),
        truncated,
        too_large,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(entries: &[(&str, &str)]) -> Snapshot {
        entries
            .iter()
            .map(|(p, f)| {
                let state = serde_json::from_value(serde_json::Value::from(*f)).unwrap();
                ((*p).to_owned(), state)
            })
            .collect()
    }

    #[test]
    fn a_file_state_is_stored_as_the_text_runs_recorded_before() {
        for text in [
            "new:abc",
            "modified:link-0123",
            "deleted:deleted",
            "modified:unreadable",
        ] {
            let state: FileState = serde_json::from_value(text.into()).unwrap();
            assert_eq!(serde_json::to_value(&state).unwrap(), text);
        }
        assert_eq!(
            serde_json::from_value::<FileState>("new:a:b".into()).unwrap(),
            FileState {
                kind: FileKind::New,
                fingerprint: "a:b".into()
            }
        );
        for bad in ["renamed:x", "no-colon", ""] {
            assert!(
                serde_json::from_value::<FileState>(bad.into()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn changes_compare_two_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let before = snap(&[
            ("edited-twice", "modified:a"),
            ("restored", "deleted:deleted"),
            ("untouched", "modified:b"),
        ]);
        let after = snap(&[
            ("edited-twice", "modified:c"),
            ("new", "new:d"),
            ("gone", "deleted:deleted"),
            ("untouched", "modified:b"),
        ]);
        let changes = changes(&before, &after, dir.path());
        assert_eq!(
            changes,
            Changes {
                created: vec!["new".into(), "restored".into()],
                modified: vec!["edited-twice".into()],
                deleted: vec!["gone".into()],
            }
        );
    }
}
