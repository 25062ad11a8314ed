//! Reading a session's workspace: status snapshots and what a run changed,
//! the file tree, file contents, and the diff against the cloned commit.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use base64::Engine;
use git2::{DiffFormat, DiffOptions, Oid, Repository, Status, StatusOptions};
use serde::Serialize;

use crate::domain::{WorkspacePath, WorkspacePathError};

/// Path → fingerprint (status and content hash) of every file that differs
/// from `HEAD` or is untracked.
pub type Snapshot = BTreeMap<String, String>;

/// Files a run created, modified and deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Changes {
    pub created: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
}

pub fn snapshot(workspace: &Path) -> Result<Snapshot, git2::Error> {
    let repo = Repository::open(workspace)?;
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
        let content = if status.intersects(Status::WT_DELETED | Status::INDEX_DELETED) {
            "deleted".to_owned()
        } else {
            Oid::hash_file(git2::ObjectType::Blob, workspace.join(path))
                .map(|oid| oid.to_string())
                .unwrap_or_else(|_| "unreadable".to_owned())
        };
        snapshot.insert(path.to_owned(), format!("{}:{content}", kind(status)));
    }
    Ok(snapshot)
}

fn kind(status: Status) -> &'static str {
    if status.intersects(Status::WT_DELETED | Status::INDEX_DELETED) {
        "deleted"
    } else if status.intersects(Status::WT_NEW | Status::INDEX_NEW) {
        "new"
    } else {
        "modified"
    }
}

/// What happened between two snapshots of the same workspace.
pub fn changes(before: &Snapshot, after: &Snapshot, workspace: &Path) -> Changes {
    let mut changes = Changes::default();
    let state = |fingerprint: &str| fingerprint.split(':').next().unwrap_or("").to_owned();
    for (path, now) in after {
        match before.get(path) {
            Some(then) if then == now => {}
            Some(then) => match (state(then).as_str(), state(now).as_str()) {
                (_, "deleted") => changes.deleted.push(path.clone()),
                ("deleted", _) => changes.created.push(path.clone()),
                _ => changes.modified.push(path.clone()),
            },
            None => match state(now).as_str() {
                "new" => changes.created.push(path.clone()),
                "deleted" => changes.deleted.push(path.clone()),
                _ => changes.modified.push(path.clone()),
            },
        }
    }
    for (path, then) in before {
        if after.contains_key(path) {
            continue;
        }
        // Back to matching HEAD: restored, reverted, or committed by the agent.
        match state(then).as_str() {
            "deleted" => changes.created.push(path.clone()),
            "new" if !workspace.join(path).exists() => changes.deleted.push(path.clone()),
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
/// first; symlinks are listed, not followed.
pub fn tree(workspace: &Path, max_entries: usize) -> std::io::Result<Tree> {
    let mut entries = Vec::new();
    let mut truncated = false;
    let mut stack = vec![workspace.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut children: Vec<_> = std::fs::read_dir(&dir)?.flatten().collect();
        children.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for child in children {
            let path = child.path();
            let Ok(relative) = path.strip_prefix(workspace) else {
                continue;
            };
            if relative == Path::new(".git") {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let kind = if meta.file_type().is_symlink() {
                "symlink"
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir"
            } else {
                "file"
            };
            if entries.len() >= max_entries {
                truncated = true;
                break;
            }
            entries.push(TreeEntry {
                path: relative.to_string_lossy().into_owned(),
                kind,
                size: if kind == "file" { meta.len() } else { 0 },
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
    #[error("{0} is a directory")]
    IsDirectory(String),
    #[error("{path} is {size} bytes; the limit is {limit} (BACKEND_MAX_FILE_BYTES)")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("cannot read the file")]
    Io(#[from] std::io::Error),
}

/// `workspace` must be canonical.
pub fn read_file(
    workspace: &Path,
    path: &WorkspacePath,
    limit: u64,
) -> Result<FileContent, FileError> {
    let resolved = path.resolve(workspace)?;
    let shown = path.as_path().to_string_lossy().into_owned();
    let meta = std::fs::metadata(&resolved)?;
    if meta.is_dir() {
        return Err(FileError::IsDirectory(shown));
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge {
            path: shown,
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(&resolved)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
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
}

/// The workspace (index and working tree, untracked files included)
/// against the commit the session cloned.
pub fn diff(workspace: &Path, base_commit: &str, max_bytes: usize) -> Result<Diff, git2::Error> {
    let repo = Repository::open(workspace)?;
    let base = repo.find_commit(Oid::from_str(base_commit)?)?.tree()?;
    let mut options = DiffOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .show_untracked_content(true)
        .include_typechange(true);
    let diff = repo.diff_tree_to_workdir_with_index(Some(&base), Some(&mut options))?;
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(entries: &[(&str, &str)]) -> Snapshot {
        entries
            .iter()
            .map(|(p, f)| ((*p).to_owned(), (*f).to_owned()))
            .collect()
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
