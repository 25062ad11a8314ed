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
//! an ignore check: libgit2 leaves the ignored ones out itself.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use git2::{Index, IndexEntry, Repository};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Below this many entries one thread does it all: a thread costs more
/// than it saves.
const PARALLEL_FROM: usize = 4096;
/// Most threads for the `lstat`s.
const MAX_THREADS: usize = 4;

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
) -> std::io::Result<Vec<Vec<u8>>> {
    let root = rustix::fs::open(
        workspace,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
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
    let tracked: HashSet<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
    let mut folders: HashSet<Vec<u8>> = HashSet::new();
    for entry in &entries {
        let path = entry.path.as_slice();
        for (i, byte) in path.iter().enumerate() {
            if *byte == b'/' {
                folders.insert(path[..i].to_vec());
            }
        }
    }
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
            let is_dir = match item.file_type() {
                FileType::Directory => true,
                FileType::Unknown => rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory),
                _ => false,
            };
            if is_dir {
                if folders.contains(&path) {
                    stack.push((path, true));
                } else {
                    // A new folder: read unless ignored (asked as a folder).
                    let mut asked = path.clone();
                    asked.push(b'/');
                    let ignored = repo
                        .is_path_ignored(Path::new(OsStr::from_bytes(&asked)))
                        .unwrap_or(false);
                    if !ignored {
                        stack.push((path, false));
                    }
                }
            } else if !tracked_folder || !tracked.contains(path.as_slice()) {
                changed.push(path);
            }
        }
    }
    changed.sort();
    changed.dedup();
    Ok(changed)
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
            .expect("candidates")
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
}
