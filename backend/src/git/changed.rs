//! Which paths of a work tree may differ from our index, found with the
//! `lstat`s spread over the cores, as git's `core.preloadIndex` does:
//! libgit2 walks a work tree on one thread, and on a large workspace that
//! walk is most of a patch or a snapshot. The answer is a superset (any
//! stat difference, or an entry too recent to trust, counts), which then
//! narrows libgit2's own diff to those paths: it still decides by content,
//! so the result is the result of a full walk.
//!
//! New files are found by reading the folders that hold tracked files and
//! by descending into new folders that are not ignored; an ignored folder
//! (a `node_modules/`) is never read. Files are named as candidates without
//! an ignore check: libgit2 leaves the ignored ones out itself. A folder
//! whose stat data is what it was when the last snapshot began (kept in
//! [`Folders`]) is not read again: a file made, removed or renamed in it
//! would have changed its modification and change times, and the change
//! time cannot be set back. That is git's "untracked cache", with its
//! guards: the record belongs to one writing of our index, a folder
//! changed in the second before it was recorded is read anyway, and a
//! change to a `.gitignore` or to `.git/info/exclude` reads every folder.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use git2::{Index, IndexEntry, Repository};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// A `.gitignore` or `.gitattributes` that is not a regular file: never
/// handed to libgit2, which would open it (the error inside the
/// `io::Error` of [`candidates`]).
#[derive(Debug, thiserror::Error)]
#[error("a .gitignore or .gitattributes is not a regular file")]
pub(super) struct HostileGitFile;

/// Below this many entries one thread does it all: a thread costs more
/// than it saves.
const PARALLEL_FROM: usize = 4096;
/// Most threads for the `lstat`s.
const MAX_THREADS: usize = 4;

/// What decides whether a folder's entries changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FolderStat {
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

fn folder_stat(stat: &rustix::fs::Stat) -> FolderStat {
    // The field types differ by platform.
    #[allow(clippy::unnecessary_cast)]
    FolderStat {
        mtime: (stat.st_mtime as i64, stat.st_mtime_nsec as i64),
        ctime: (stat.st_ctime as i64, stat.st_ctime_nsec as i64),
        ino: stat.st_ino as u64,
    }
}

/// The folders holding tracked files, as they were when a snapshot began,
/// for the index that snapshot wrote.
#[derive(Debug, Default)]
pub(super) struct Folders {
    /// The writing of our index this record goes with.
    index_written: (i64, i64),
    /// When the folders were looked at.
    taken: (i64, i64),
    /// `.git/info/exclude`, which decides what is ignored everywhere.
    exclude: Option<FolderStat>,
    /// Every folder looked at, with its folders that hold no tracked file
    /// and are not ignored (empty, or with ignored files only): those are
    /// still to be looked into when the folder itself is unchanged.
    stats: HashMap<Vec<u8>, (FolderStat, Vec<Vec<u8>>)>,
}

const FOLDERS_MAGIC: &[u8; 4] = b"RRF1";

impl Folders {
    /// Keeps the record for the index written at `index_written`.
    pub(super) fn save(mut self, path: &Path, index_written: (i64, i64)) -> std::io::Result<()> {
        self.index_written = index_written;
        let mut out = Vec::with_capacity(64 + self.stats.len() * 64);
        out.extend_from_slice(FOLDERS_MAGIC);
        let stat_bytes = |out: &mut Vec<u8>, stat: &FolderStat| {
            for n in [stat.mtime.0, stat.mtime.1, stat.ctime.0, stat.ctime.1] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.extend_from_slice(&(stat.ino as i64).to_le_bytes());
        };
        for n in [
            self.index_written.0,
            self.index_written.1,
            self.taken.0,
            self.taken.1,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        match &self.exclude {
            Some(stat) => {
                out.push(1);
                stat_bytes(&mut out, stat);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.stats.len() as i64).to_le_bytes());
        for (folder, (stat, untracked)) in &self.stats {
            out.extend_from_slice(&(folder.len() as i64).to_le_bytes());
            out.extend_from_slice(folder);
            stat_bytes(&mut out, stat);
            out.extend_from_slice(&(untracked.len() as i64).to_le_bytes());
            for sub in untracked {
                out.extend_from_slice(&(sub.len() as i64).to_le_bytes());
                out.extend_from_slice(sub);
            }
        }
        let partial = path.with_extension("new");
        std::io::Write::write_all(&mut super::workspace::fresh_file(&partial)?, &out)?;
        std::fs::rename(&partial, path)
    }

    /// The record kept at `path`, if there is a readable one.
    pub(super) fn load(path: &Path) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        let mut cursor = Cursor(bytes.strip_prefix(FOLDERS_MAGIC)?);
        let index_written = (cursor.number()?, cursor.number()?);
        let taken = (cursor.number()?, cursor.number()?);
        let exclude = match cursor.bytes(1)?[0] {
            1 => Some(cursor.stat()?),
            _ => None,
        };
        let count = usize::try_from(cursor.number()?).ok()?;
        let mut stats = HashMap::with_capacity(count.min(1 << 20));
        for _ in 0..count {
            let len = usize::try_from(cursor.number()?).ok()?;
            let folder = cursor.bytes(len)?.to_vec();
            let stat = cursor.stat()?;
            let subs = usize::try_from(cursor.number()?).ok()?;
            let mut untracked = Vec::with_capacity(subs.min(1 << 16));
            for _ in 0..subs {
                let len = usize::try_from(cursor.number()?).ok()?;
                untracked.push(cursor.bytes(len)?.to_vec());
            }
            stats.insert(folder, (stat, untracked));
        }
        Some(Self {
            index_written,
            taken,
            exclude,
            stats,
        })
    }

    /// The record of `folder` if, now `stat`, it holds the same entries as
    /// when the record was taken (changed at least a second before).
    fn unchanged(&self, folder: &[u8], stat: &FolderStat) -> Option<&(FolderStat, Vec<Vec<u8>>)> {
        let settled = |t: (i64, i64)| t.0 < self.taken.0 - 1;
        self.stats
            .get(folder)
            .filter(|(kept, _)| kept == stat && settled(kept.mtime) && settled(kept.ctime))
    }
}

/// Reads a saved record front to back; `None` past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn number(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }

    fn stat(&mut self) -> Option<FolderStat> {
        Some(FolderStat {
            mtime: (self.number()?, self.number()?),
            ctime: (self.number()?, self.number()?),
            ino: self.number()? as u64,
        })
    }
}

fn now() -> (i64, i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_secs() as i64, i64::from(now.subsec_nanos()))
}

fn open_root(workspace: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        workspace,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn exclude_stat(root: &OwnedFd) -> Option<FolderStat> {
    rustix::fs::statat(root, ".git/info/exclude", AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|stat| folder_stat(&stat))
}

/// Git's mode for what is on disk: what an index entry's mode is compared
/// with.
fn git_mode(stat: &rustix::fs::Stat) -> u32 {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Symlink => 0o120000,
        FileType::RegularFile if stat.st_mode & 0o100 != 0 => 0o100755,
        FileType::RegularFile => 0o100644,
        FileType::Directory => 0o040000,
        _ => 0,
    }
}

/// Whether the file may differ from its entry: any stat field git keeps,
/// or a modification at or after the index was written ("racily clean").
fn may_differ(root: &OwnedFd, entry: &IndexEntry, index_written: (i64, i64)) -> bool {
    // Submodules are never diffed as files.
    if entry.mode == 0o160000 {
        return false;
    }
    let path = OsStr::from_bytes(&entry.path);
    let Ok(stat) = rustix::fs::statat(root, path, AtFlags::SYMLINK_NOFOLLOW) else {
        return true;
    };
    // The field types differ by platform.
    #[allow(clippy::unnecessary_cast)]
    let (mtime, ctime) = (
        (stat.st_mtime as i64, stat.st_mtime_nsec as i64),
        (stat.st_ctime as i64, stat.st_ctime_nsec as i64),
    );
    let same_time = |kept: &git2::IndexTime, now: (i64, i64)| {
        i64::from(kept.seconds()) == now.0 && i64::from(kept.nanoseconds()) == now.1
    };
    git_mode(&stat) != entry.mode
        || stat.st_size as u32 != entry.file_size
        || stat.st_ino as u32 != entry.ino
        || !same_time(&entry.mtime, mtime)
        || !same_time(&entry.ctime, ctime)
        || mtime >= index_written
}

/// Relative paths (bytes, `/`-separated) that may differ from `index`
/// (written at `index_written`, seconds and nanoseconds): tracked files
/// whose stat changed or that are gone, and files in no entry.
pub(super) fn candidates(
    workspace: &Path,
    repo: &Repository,
    index: &Index,
    index_written: (i64, i64),
    folders: Option<&Folders>,
) -> std::io::Result<(Vec<Vec<u8>>, Folders)> {
    let root = open_root(workspace)?;
    let taken = now();
    let entries: Vec<IndexEntry> = index.iter().collect();
    let threads = if entries.len() < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS)
    };
    let chunk = entries.len().div_ceil(threads).max(1);
    let mut changed: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let root = &root;
        let workers: Vec<_> = entries
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .filter(|e| may_differ(root, e, index_written))
                        .map(|e| e.path.clone())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    // The record of the folders holds only for the index it was taken
    // for, and while what is ignored stays as it was.
    let ignores_changed = changed
        .iter()
        .any(|p| p.ends_with(b".gitignore") || p.ends_with(b".gitattributes"));
    let folders = folders.filter(|f| {
        f.index_written == index_written && !ignores_changed && f.exclude == exclude_stat(&root)
    });
    let tracked: HashSet<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
    // Every folder holding a tracked file, and the tracked folders in each.
    let mut subfolders: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
    subfolders.insert(Vec::new(), Vec::new());
    for entry in &entries {
        let path = entry.path.as_slice();
        let mut parent: &[u8] = &[];
        for (i, byte) in path.iter().enumerate() {
            if *byte == b'/' {
                let folder = &path[..i];
                if !subfolders.contains_key(folder) {
                    subfolders.insert(folder.to_vec(), Vec::new());
                    if let Some(siblings) = subfolders.get_mut(parent) {
                        siblings.push(folder.to_vec());
                    }
                }
                parent = folder;
            }
        }
    }
    let mut record = HashMap::new();
    let mut stack: Vec<(Vec<u8>, bool)> = vec![(Vec::new(), true)];
    while let Some((folder, tracked_folder)) = stack.pop() {
        let dir = if folder.is_empty() {
            rustix::fs::openat(
                &root,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        } else {
            rustix::fs::openat(
                &root,
                OsStr::from_bytes(&folder),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        // Gone, or swapped for a symlink: its files are candidates as
        // tracked entries already, or libgit2 sees no folder either.
        let Ok(dir) = dir else { continue };
        // Looked at before its entries are read: a change made while they
        // are read changes it from what is recorded.
        let Ok(stat) = rustix::fs::fstat(&dir).map(|stat| folder_stat(&stat)) else {
            continue;
        };
        let tracked_subfolders = subfolders.get(&folder).into_iter().flatten();
        if let Some((_, untracked)) = folders.and_then(|f| f.unchanged(&folder, &stat)) {
            // Its entries are as they were: only the folders in it may
            // hold news.
            for sub in tracked_subfolders {
                stack.push((sub.clone(), true));
            }
            for sub in untracked {
                stack.push((sub.clone(), false));
            }
            record.insert(folder, (stat, untracked.clone()));
            continue;
        }
        let mut untracked = Vec::new();
        for item in rustix::fs::Dir::read_from(dir.as_fd())? {
            let item = item?;
            let name = item.file_name().to_bytes();
            if name == b"." || name == b".." || (folder.is_empty() && name == b".git") {
                continue;
            }
            let mut path = folder.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name);
            // libgit2 opens and reads these as it walks: a FIFO would block
            // it, a symlink would read outside the workspace.
            if matches!(name, b".gitignore" | b".gitattributes")
                && item.file_type() != FileType::RegularFile
            {
                return Err(std::io::Error::other(HostileGitFile));
            }
            let is_dir = match item.file_type() {
                FileType::Directory => true,
                FileType::Unknown => rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory),
                _ => false,
            };
            if is_dir {
                if subfolders.contains_key(&path) {
                    stack.push((path, true));
                } else {
                    // A new folder: read unless ignored (asked as a folder).
                    let mut asked = path.clone();
                    asked.push(b'/');
                    let ignored = repo
                        .is_path_ignored(Path::new(OsStr::from_bytes(&asked)))
                        .unwrap_or(false);
                    // A repository of its own inside is not the
                    // workspace's to snapshot, as git leaves it out.
                    let nested = rustix::fs::statat(
                        &dir,
                        OsStr::from_bytes(&[name, b"/.git"].concat()),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .is_ok();
                    if !ignored && !nested {
                        untracked.push(path.clone());
                        stack.push((path, false));
                    }
                }
            } else if !tracked_folder || !tracked.contains(path.as_slice()) {
                changed.push(path);
            }
        }
        record.insert(folder, (stat, untracked));
    }
    changed.sort();
    changed.dedup();
    let record = Folders {
        index_written: (0, 0),
        taken,
        exclude: exclude_stat(&root),
        stats: record,
    };
    Ok((changed, record))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use test_support::{git, init_repo};

    use super::*;
    use crate::git::snapshot::{capture, open_indexed, SnapshotCache};

    fn workspace() -> (tempfile::TempDir, PathBuf, SnapshotCache) {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("session");
        let workspace = session.join("repo");
        init_repo(&workspace);
        for i in 0..50 {
            let folder = workspace.join(format!("d{}", i % 5));
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join(format!("f{i}.txt")), format!("file {i}\n")).unwrap();
        }
        std::fs::write(workspace.join(".gitignore"), "ignored/\n").unwrap();
        git(&workspace, &["add", "."]);
        git(&workspace, &["commit", "-q", "-m", "files"]);
        let cache = SnapshotCache::new(&session);
        cache.seed(&workspace).unwrap();
        // A snapshot makes every entry's stat data ours and settled.
        capture(&workspace, &cache).unwrap();
        (dir, workspace, cache)
    }

    fn candidates_of(workspace: &Path, cache: &SnapshotCache) -> Vec<String> {
        let indexed = open_indexed(workspace, cache).unwrap();
        indexed
            .candidates(workspace)
            .unwrap()
            .expect("candidates")
            .0
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect()
    }

    #[test]
    fn every_kind_of_change_is_a_candidate_and_nothing_else() {
        let (_dir, workspace, cache) = workspace();
        // Settled: the index was written after every file, so no entry is
        // too recent to trust and nothing is named.
        std::thread::sleep(std::time::Duration::from_millis(20));
        capture(&workspace, &cache).unwrap();
        assert_eq!(candidates_of(&workspace, &cache), Vec::<String>::new());

        // Same size, and the old modification time put back: only the
        // change time, which no one can set, tells.
        let forged = workspace.join("d1/f1.txt");
        let before = std::fs::metadata(&forged).unwrap().modified().unwrap();
        std::fs::write(&forged, "FILE 1\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&forged)
            .unwrap()
            .set_modified(before)
            .unwrap();
        std::fs::remove_file(workspace.join("d2/f2.txt")).unwrap();
        std::fs::write(workspace.join("d3/new.txt"), "new\n").unwrap();
        std::fs::create_dir_all(workspace.join("fresh/deep")).unwrap();
        std::fs::write(workspace.join("fresh/deep/x.txt"), "x\n").unwrap();
        std::fs::create_dir_all(workspace.join("ignored/huge")).unwrap();
        std::fs::write(workspace.join("ignored/huge/y.txt"), "y\n").unwrap();
        std::fs::remove_file(workspace.join("d4/f4.txt")).unwrap();
        std::fs::create_dir(workspace.join("d4/f4.txt")).unwrap();
        std::fs::write(workspace.join("d4/f4.txt/inside"), "z\n").unwrap();
        let script = workspace.join("d0/f0.txt");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

        assert_eq!(
            candidates_of(&workspace, &cache),
            [
                "d0/f0.txt",
                "d1/f1.txt",
                "d2/f2.txt",
                "d3/new.txt",
                "d4/f4.txt",
                "d4/f4.txt/inside",
                "fresh/deep/x.txt",
            ]
        );
        // And a snapshot narrowed to them is the snapshot of a full walk.
        let narrowed = capture(&workspace, &cache).unwrap().tree;
        git(&workspace, &["add", "-A"]);
        assert_eq!(narrowed.to_string(), git(&workspace, &["write-tree"]));
    }

    #[test]
    fn an_unchanged_folder_is_not_read_and_its_empty_folders_still_are() {
        let (_dir, workspace, cache) = workspace();
        std::fs::create_dir(workspace.join("d0/empty")).unwrap();
        capture(&workspace, &cache).unwrap();
        // The record trusts only folders changed a second or more before
        // it was taken: the clock has to pass that second.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        capture(&workspace, &cache).unwrap();
        let indexed = open_indexed(&workspace, &cache).unwrap();
        let (found, record) = indexed.candidates(&workspace).unwrap().unwrap();
        assert!(found.is_empty(), "{found:?}");
        // Every folder was settled, and `d0/empty` is kept as one to look
        // into although it holds no tracked file.
        let (_, untracked) = &record.stats[b"d0".as_slice()];
        assert_eq!(untracked, &[b"d0/empty".to_vec()]);
        drop(indexed);

        // A file in it changes `d0/empty`, not `d0`: it is found all the same.
        std::fs::write(workspace.join("d0/empty/new.txt"), "new\n").unwrap();
        assert_eq!(candidates_of(&workspace, &cache), ["d0/empty/new.txt"]);
        let narrowed = capture(&workspace, &cache).unwrap().tree;
        git(&workspace, &["add", "-A"]);
        assert_eq!(narrowed.to_string(), git(&workspace, &["write-tree"]));
    }
}
