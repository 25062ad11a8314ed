//! What a local clone (`ALLOW_LOCAL_REPOS=true`) may read.
//!
//! A local `repo_url` names a folder on the backend's own disk, which also
//! holds every session's workspace, the runner's Codex homes and the
//! service's data. A clone reads none of them: the folder, resolved as the
//! kernel resolves it (symlinks followed, `..` collapsed), must lie outside
//! `WORKSPACES_ROOT` and every `BACKEND_FORBIDDEN_CLONE_PATHS` folder, and so
//! must everything libgit2 reads for the clone: the git directory a `.git`
//! file names, a worktree's common directory, the target of every symlink in
//! them, and every alternate object store. The same walk measures the object
//! stores, which `BACKEND_MAX_CLONE_BYTES` bounds before libgit2 packs
//! anything.
//!
//! The path is checked twice: when the session is created (a 422, nothing
//! stored) and in the clone's thread right before libgit2 opens it, which
//! is then given the canonical path that was checked, not the user's.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use git2::{Repository, RepositoryOpenFlags};

use super::clone_error::CloneError;

/// Why a local `repo_url` is refused when the session is created.
#[derive(Debug, thiserror::Error)]
pub enum LocalSourceError {
    #[error(
        "repo_url is inside a folder local clones may not read: WORKSPACES_ROOT (every session's workspace) or one of BACKEND_FORBIDDEN_CLONE_PATHS"
    )]
    Forbidden,
    /// The check itself failed (its thread panicked): not the user's doing.
    #[error("the local path could not be checked")]
    Unchecked(#[source] tokio::task::JoinError),
}

/// Folders no local clone may read from: `WORKSPACES_ROOT` and
/// `BACKEND_FORBIDDEN_CLONE_PATHS`, as absolute paths. Each is resolved again
/// at every check, so a folder made after start-up (the runner makes its
/// homes when it needs them) or reached through a symlink that changed
/// since is where it is now.
#[derive(Debug, Clone)]
pub struct ForbiddenPaths(Arc<[PathBuf]>);

impl ForbiddenPaths {
    /// `configured` is absolute (the configuration refuses anything else);
    /// `WORKSPACES_ROOT` may be relative to the working directory, as the
    /// backend uses it.
    pub(crate) fn new(workspaces_root: &Path, configured: &[PathBuf]) -> Self {
        let folders = std::iter::once(workspaces_root)
            .chain(configured.iter().map(PathBuf::as_path))
            .map(|folder| std::path::absolute(folder).unwrap_or_else(|_| folder.to_owned()))
            .collect();
        Self(folders)
    }

    fn resolved(&self) -> Vec<PathBuf> {
        self.0.iter().map(|folder| resolve(folder)).collect()
    }
}

/// A local repository whose path passed the check when its session was
/// created; [`LocalSource::open`] checks it all again before the clone.
#[derive(Debug, Clone)]
pub struct LocalSource {
    /// As the user wrote it (absolute).
    path: PathBuf,
    forbidden: ForbiddenPaths,
}

impl LocalSource {
    /// Refuses a path that is, or would be once made, inside a forbidden
    /// folder. A path that does not exist passes: its clone fails with "not
    /// found", or with a refusal if it was made into a forbidden place
    /// meanwhile.
    pub(crate) fn check(path: &Path, forbidden: ForbiddenPaths) -> Result<Self, LocalSourceError> {
        if inside(&resolve(path), &forbidden.resolved()) {
            return Err(LocalSourceError::Forbidden);
        }
        Ok(Self {
            path: path.to_owned(),
            forbidden,
        })
    }

    /// The repository's canonical path, for libgit2, once everything the
    /// clone reads was checked and its object stores add up to at most
    /// `max_bytes`.
    ///
    /// libgit2 is given the canonical path, so a symlink on the user's path
    /// is not followed a second time, and the walk just before checked what
    /// libgit2 will find. That is enough against anyone who cannot write to
    /// the source: an API user, or an agent confined to its own workspace
    /// (which is forbidden). What remains: libgit2 opens files by path (it
    /// resolves even `/proc/self/fd/N` back to a path, so holding the
    /// folder open would not pin it), so a process that can write inside
    /// the repository or a folder on its path can swap a file for a symlink
    /// between this walk and libgit2's reads, or make a FIFO that a config
    /// `include.path` names. A hard link is a file like any other, but
    /// making one to a forbidden file needs access to that file already.
    /// Local repositories are for folders that no one untrusted writes to.
    pub(super) fn open(&self, max_bytes: u64, cancel: &AtomicBool) -> Result<String, CloneError> {
        let forbidden = self.forbidden.resolved();
        let mut walk = Walk {
            forbidden: &forbidden,
            visited: HashSet::new(),
            bytes: 0,
            max_bytes,
            cancel,
        };
        let Ok(path) = self.path.canonicalize() else {
            walk.allowed(&resolve(&self.path))?;
            return Err(CloneError::NotFound);
        };
        walk.allowed(&path)?;
        // As libgit2's local transport opens it (`git_repository_open`).
        let repo = Repository::open_ext(&path, RepositoryOpenFlags::NO_SEARCH, [] as [&OsStr; 0])
            .map_err(|_| CloneError::NotFound)?;
        let real = |p: &Path| p.canonicalize().map_err(unreadable);
        let (git_dir, common_dir) = (real(repo.path())?, real(repo.commondir())?);
        drop(repo);
        walk.allowed(&git_dir)?;
        walk.allowed(&common_dir)?;
        walk.object_stores(common_dir.join("objects"))?;
        // Refs, packed-refs, HEAD, config: read, not counted.
        walk.folder(&common_dir, false)?;
        walk.folder(&git_dir, false)?;
        path.into_os_string()
            .into_string()
            .map_err(|_| CloneError::Other("the repository's path is not UTF-8".to_owned()))
    }
}

/// Everything a clone reads, checked and measured.
struct Walk<'a> {
    forbidden: &'a [PathBuf],
    /// Folders walked, by device and inode: each once, however reached.
    visited: HashSet<(u64, u64)>,
    /// The object stores' bytes: every file's length, a file with several
    /// names counted under each and a sparse file at its full length, so
    /// neither makes a large store look small.
    bytes: u64,
    max_bytes: u64,
    cancel: &'a AtomicBool,
}

impl Walk<'_> {
    fn allowed(&self, path: &Path) -> Result<(), CloneError> {
        if inside(path, self.forbidden) {
            return Err(CloneError::ForbiddenSource);
        }
        Ok(())
    }

    /// The object store at `objects` and its alternates, as libgit2 reads
    /// them: one path a line of `info/alternates`, a line starting with `.`
    /// relative to the store, `#` a comment. Every level is followed (libgit2
    /// stops at five), and an alternate that does not exist is skipped, as
    /// libgit2 does, once its place is checked.
    fn object_stores(&mut self, objects: PathBuf) -> Result<(), CloneError> {
        let mut stores = vec![objects];
        let mut read = HashSet::new();
        while let Some(store) = stores.pop() {
            let Ok(real) = store.canonicalize() else {
                self.allowed(&resolve(&store))?;
                continue;
            };
            self.allowed(&real)?;
            // A store naming itself, or one already read, is read once.
            if !real.is_dir() || !read.insert(real.clone()) {
                continue;
            }
            self.folder(&real, true)?;
            // The walk above checked the file, a symlink included.
            let list = match std::fs::read(real.join("info").join("alternates")) {
                Ok(list) => list,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unreadable(e)),
            };
            for line in String::from_utf8_lossy(&list).split(['\r', '\n']) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                stores.push(if line.starts_with('.') {
                    real.join(line)
                } else {
                    PathBuf::from(line)
                });
            }
        }
        Ok(())
    }

    /// Checks every name under `root` (a canonical folder) and the target of
    /// every symlink, follows the symlinks that lead to folders, refuses
    /// FIFOs, sockets and devices (a read of them can block a clone's
    /// thread for good), and with `count` adds up the files' lengths.
    fn folder(&mut self, root: &Path, count: bool) -> Result<(), CloneError> {
        let mut folders = vec![root.to_owned()];
        while let Some(folder) = folders.pop() {
            self.allowed(&folder)?;
            let meta = std::fs::metadata(&folder).map_err(unreadable)?;
            if !self.visited.insert((meta.dev(), meta.ino())) {
                continue;
            }
            for entry in std::fs::read_dir(&folder).map_err(unreadable)? {
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(CloneError::Cancelled);
                }
                let entry = entry.map_err(unreadable)?;
                // `folder` holds no symlink, so neither does this path.
                let path = entry.path();
                self.allowed(&path)?;
                let (path, meta) = if entry.file_type().map_err(unreadable)?.is_symlink() {
                    match path.canonicalize() {
                        Ok(target) => {
                            self.allowed(&target)?;
                            let meta = std::fs::metadata(&target).map_err(unreadable)?;
                            (target, meta)
                        }
                        // Dangling: libgit2 cannot read it either, as long
                        // as it stays so.
                        Err(_) => {
                            self.allowed(&resolve(&path))?;
                            continue;
                        }
                    }
                } else {
                    let meta = entry.metadata().map_err(unreadable)?;
                    (path, meta)
                };
                if meta.is_dir() {
                    folders.push(path);
                } else if !meta.is_file() {
                    return Err(CloneError::SpecialFile);
                } else if count {
                    self.bytes = self.bytes.saturating_add(meta.len());
                    if self.bytes > self.max_bytes {
                        return Err(CloneError::TooLarge(self.max_bytes));
                    }
                }
            }
        }
        Ok(())
    }
}

fn unreadable(error: std::io::Error) -> CloneError {
    // An io::Error names no path: the message shows nothing of the disk.
    CloneError::Other(format!("cannot read the local repository: {error}"))
}

/// Whether `path` is one of `folders` or inside one (by whole components).
fn inside(path: &Path, folders: &[PathBuf]) -> bool {
    folders.iter().any(|folder| path.starts_with(folder))
}

/// `path` (absolute) as the kernel resolves it: its longest existing
/// ancestor canonicalized (symlinks followed, `..` collapsed), a dangling
/// symlink after it followed to where it points, and the rest appended with
/// `..` taking off a name. A path that does not exist yet lands where it
/// would be made.
fn resolve(path: &Path) -> PathBuf {
    let mut path = path.to_owned();
    // The kernel's own bound on the symlinks of one lookup.
    for _ in 0..40 {
        let (mut resolved, rest) = existing_prefix(&path);
        if let Some(first) = rest.first() {
            let link = resolved.join(first);
            if let Ok(target) = std::fs::read_link(&link) {
                path = resolved.join(target);
                path.extend(&rest[1..]);
                continue;
            }
        }
        for part in rest {
            if part == ".." {
                resolved.pop();
            } else {
                resolved.push(part);
            }
        }
        return resolved;
    }
    path
}

/// The longest ancestor of `path` that canonicalizes, canonicalized, and
/// the names after it.
fn existing_prefix(path: &Path) -> (PathBuf, Vec<std::ffi::OsString>) {
    let mut rest = Vec::new();
    let mut current = path;
    loop {
        if let Ok(real) = current.canonicalize() {
            rest.reverse();
            return (real, rest);
        }
        match (current.parent(), current.components().next_back()) {
            (Some(parent), Some(last)) => {
                if !matches!(last, Component::CurDir) {
                    rest.push(last.as_os_str().to_owned());
                }
                current = parent;
            }
            _ => {
                rest.reverse();
                return (PathBuf::new(), rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::os::unix::fs::symlink;

    use super::*;

    /// A folder with `workspaces/` (forbidden) and `repos/` (allowed).
    fn layout() -> (tempfile::TempDir, ForbiddenPaths) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("workspaces/alice/repo")).unwrap();
        std::fs::create_dir_all(dir.path().join("repos/project")).unwrap();
        let forbidden = ForbiddenPaths::new(&dir.path().join("workspaces"), &[]);
        (dir, forbidden)
    }

    #[test]
    fn paths_into_a_forbidden_folder_are_refused_in_every_spelling() {
        let (dir, forbidden) = layout();
        let root = dir.path();
        symlink(root.join("workspaces"), root.join("repos/link")).unwrap();
        symlink(root.join("workspaces/bob"), root.join("repos/dangling")).unwrap();
        for path in [
            root.join("workspaces"),
            root.join("workspaces/alice/repo"),
            root.join("workspaces/alice/repo/"),
            root.join("repos/project/../../workspaces/alice/repo"),
            root.join("repos/link/alice/repo"),
            root.join("repos/link"),
            // Not there yet, but where it would be made.
            root.join("workspaces/bob/repo"),
            root.join("repos/nothing/../../workspaces/alice"),
            root.join("repos/dangling"),
            root.join("repos/dangling/repo"),
        ] {
            let refused = LocalSource::check(&path, forbidden.clone());
            assert!(
                matches!(refused, Err(LocalSourceError::Forbidden)),
                "{}: {refused:?}",
                path.display()
            );
        }
        for path in [
            root.join("repos/project"),
            root.join("repos/nothing"),
            root.join("workspaces-not"),
        ] {
            assert!(
                LocalSource::check(&path, forbidden.clone()).is_ok(),
                "{}",
                path.display()
            );
        }
    }

    /// A repository under `repos/<name>` with one commit of `bytes` random
    /// bytes.
    fn repo(root: &Path, name: &str, bytes: usize) -> PathBuf {
        use std::io::Read;
        let dir = root.join("repos").join(name);
        let repo = Repository::init(&dir).unwrap();
        let mut data = Vec::new();
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .take(bytes as u64)
            .read_to_end(&mut data)
            .unwrap();
        let blob = repo.blob(&data).unwrap();
        let mut tree = repo.treebuilder(None).unwrap();
        tree.insert("noise", blob, 0o100644).unwrap();
        let tree = repo.find_tree(tree.write().unwrap()).unwrap();
        let signature = git2::Signature::now("t", "t@example.invalid").unwrap();
        repo.commit(Some("HEAD"), &signature, &signature, "noise", &tree, &[])
            .unwrap();
        dir
    }

    fn open(path: &Path, forbidden: &ForbiddenPaths, max: u64) -> Result<String, CloneError> {
        LocalSource::check(path, forbidden.clone())
            .unwrap()
            .open(max, &AtomicBool::new(false))
    }

    #[test]
    fn a_repository_is_opened_by_its_canonical_path() {
        let (dir, forbidden) = layout();
        let repo = repo(dir.path(), "real", 1000);
        symlink(&repo, dir.path().join("repos/alias")).unwrap();

        let opened = open(&dir.path().join("repos/alias/"), &forbidden, 1_000_000).unwrap();

        assert_eq!(Path::new(&opened), repo.canonicalize().unwrap());
    }

    #[test]
    fn links_inside_a_repository_into_a_forbidden_folder_are_refused() {
        let (dir, forbidden) = layout();
        let root = dir.path();
        let victim = repo(root, "../workspaces/alice", 1000);
        let victim_git = victim.join(".git");
        // A `.git` file naming the victim's git folder.
        let gitfile = root.join("repos/gitfile");
        std::fs::create_dir_all(&gitfile).unwrap();
        std::fs::write(
            gitfile.join(".git"),
            format!("gitdir: {}\n", victim_git.display()),
        )
        .unwrap();
        // Alternates, absolute and relative.
        let absolute = repo(root, "absolute", 10);
        std::fs::write(
            absolute.join(".git/objects/info/alternates"),
            format!("# borrowed\n{}\n", victim_git.join("objects").display()),
        )
        .unwrap();
        let relative = repo(root, "relative", 10);
        std::fs::write(
            relative.join(".git/objects/info/alternates"),
            "../../../../workspaces/alice/.git/objects\n",
        )
        .unwrap();
        // A symlinked ref folder, and a dangling symlink into the victim.
        let refs = repo(root, "refs", 10);
        std::fs::remove_dir_all(refs.join(".git/refs/heads")).unwrap();
        symlink(victim_git.join("refs/heads"), refs.join(".git/refs/heads")).unwrap();
        let dangling = repo(root, "dangling", 10);
        symlink(
            victim_git.join("objects/not-yet"),
            dangling.join(".git/objects/pack/pack-x.pack"),
        )
        .unwrap();

        for repo in [gitfile, absolute, relative, refs, dangling] {
            let refused = open(&repo, &forbidden, 1_000_000);
            assert!(
                matches!(refused, Err(CloneError::ForbiddenSource)),
                "{}: {refused:?}",
                repo.display()
            );
        }
    }

    #[test]
    fn the_object_stores_are_measured_with_their_alternates_and_links() {
        let (dir, forbidden) = layout();
        let root = dir.path();
        let lender = repo(root, "lender", 300_000);
        let borrower = repo(root, "borrower", 10);
        std::fs::write(
            borrower.join(".git/objects/info/alternates"),
            format!("{}\n", lender.join(".git/objects").display()),
        )
        .unwrap();
        assert!(open(&lender, &forbidden, 400_000).is_ok());
        assert!(matches!(
            open(&borrower, &forbidden, 250_000),
            Err(CloneError::TooLarge(250_000))
        ));
        // The same object under two names counts twice: a link costs no
        // disk but cannot hide bytes.
        let linked = repo(root, "linked", 200_000);
        let objects = linked.join(".git/objects");
        let loose = std::fs::read_dir(&objects)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().len() == 2)
            .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
            .max_by_key(|p| p.metadata().unwrap().len())
            .unwrap();
        std::fs::hard_link(&loose, objects.join("info/copy")).unwrap();
        assert!(open(&linked, &forbidden, 300_000).is_err());
        assert!(open(&linked, &forbidden, 500_000).is_ok());
    }

    #[test]
    fn a_fifo_in_a_repository_is_refused_before_anything_reads_it() {
        let (dir, forbidden) = layout();
        let repo = repo(dir.path(), "fifo", 10);
        let fifo = repo.join(".git/packed-refs");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());

        assert!(matches!(
            open(&repo, &forbidden, 1_000_000),
            Err(CloneError::SpecialFile)
        ));
    }

    #[test]
    fn a_resolved_path_collapses_what_does_not_exist_yet() {
        let (dir, _) = layout();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(
            resolve(&root.join("repos/a/b/../../project/c")),
            root.join("repos/project/c")
        );
        assert_eq!(
            resolve(&root.join("repos/project/")),
            root.join("repos/project")
        );
    }
}
