//! Working directories and homes: a thread may only work under
//! `WORKSPACES_ROOT`, and keeps its `CODEX_HOME` under `RUNNER_CODEX_HOMES`,
//! out of every agent's reach.

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A directory proven to be strictly inside the workspaces root, symlinks
/// resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkingDirectory(PathBuf);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum WorkspaceError {
    #[error("workingDirectory must not be empty")]
    Empty,
    #[error("workingDirectory {0} does not exist or is not a directory")]
    Missing(String),
    #[error("workingDirectory {0} is not inside WORKSPACES_ROOT")]
    OutsideRoot(String),
}

impl WorkingDirectory {
    /// `root` must already be canonical.
    pub(crate) fn parse(raw: &str, root: &Path) -> Result<Self, WorkspaceError> {
        if raw.trim().is_empty() {
            return Err(WorkspaceError::Empty);
        }
        let candidate = Path::new(raw);
        let candidate = if candidate.is_absolute() {
            candidate.to_path_buf()
        } else {
            root.join(candidate)
        };
        let resolved = candidate
            .canonicalize()
            .map_err(|_| WorkspaceError::Missing(raw.to_owned()))?;
        if !resolved.is_dir() {
            return Err(WorkspaceError::Missing(raw.to_owned()));
        }
        if resolved == root || !resolved.starts_with(root) {
            return Err(WorkspaceError::OutsideRoot(raw.to_owned()));
        }
        Ok(Self(resolved))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// The directory's path relative to the workspaces root (`root`,
    /// canonical).
    fn relative_to<'a>(&'a self, root: &Path) -> &'a Path {
        self.0.strip_prefix(root).unwrap_or(&self.0)
    }

    /// The session folder this directory belongs to: the first folder under
    /// the workspaces root (`<root>/<session>/repo` belongs to
    /// `<root>/<session>`).
    pub(crate) fn session_folder(&self, root: &Path) -> PathBuf {
        match self.relative_to(root).components().next() {
            Some(first) => root.join(first),
            None => self.0.clone(),
        }
    }
}

/// The root of every thread's `CODEX_HOME`, apart from `WORKSPACES_ROOT`:
/// an agent writes its workspace, and a `config.toml` it could write would
/// start commands of its choosing outside the sandbox at the next run.
///
/// `<homes>/<key>/` belongs to one working directory, `<key>` being a hash
/// of its path relative to `WORKSPACES_ROOT`, so a restarted runner finds
/// the same home (and can resume the thread's Codex session). It holds:
/// - `workspace`: the working directory's absolute path, for the sweep;
/// - `codex-home/`: the CLI's `CODEX_HOME`, written by the runner and the
///   CLI only;
/// - `tmp/`: the agent's `TMPDIR`, the one folder here its sandbox writes.
#[derive(Debug)]
pub(crate) struct CodexHomes {
    root: PathBuf,
    workspaces: PathBuf,
    /// Held while a home is prepared or the sweep runs, so the sweep never
    /// removes a home that is being made.
    lock: Mutex<()>,
}

/// The folders of one working directory under [`CodexHomes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThreadHome {
    /// `<homes>/<key>`: the folder holding the two below.
    pub base: PathBuf,
    pub codex_home: PathBuf,
    pub tmp: PathBuf,
}

/// The file of a home that names its working directory.
const MARKER: &str = "workspace";

impl CodexHomes {
    /// Both roots must be canonical and apart (see
    /// `Config::canonical_codex_homes`).
    pub(crate) fn new(root: PathBuf, workspaces: PathBuf) -> Self {
        Self {
            root,
            workspaces,
            lock: Mutex::new(()),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the home of `dir` if needed and writes `template` as its
    /// `config.toml`, replacing whatever was there. Blocking.
    pub(crate) fn prepare(
        &self,
        dir: &WorkingDirectory,
        template: Option<&str>,
    ) -> std::io::Result<ThreadHome> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let relative = dir.relative_to(&self.workspaces);
        let base = self.root.join(key(relative));
        let home = ThreadHome {
            codex_home: base.join("codex-home"),
            tmp: base.join("tmp"),
            base: base.clone(),
        };
        std::fs::create_dir_all(&home.codex_home)?;
        std::fs::create_dir_all(&home.tmp)?;
        // The absolute path: a sweep by a runner of another
        // `WORKSPACES_ROOT` sharing this folder knows the home is not its.
        std::fs::write(base.join(MARKER), dir.path().as_os_str().as_bytes())?;
        adopt_legacy_sessions(dir, &home.codex_home);
        if let Some(template) = template {
            std::fs::write(home.codex_home.join("config.toml"), template)?;
        }
        Ok(home)
    }

    /// Removes the homes of this runner's `WORKSPACES_ROOT` whose working
    /// directory no longer exists: the backend removes a session's folder
    /// when the session is deleted or expires, then deletes its thread.
    /// Blocking; returns how many homes went.
    ///
    /// Only what is provably ours goes: a folder named by [`key`] whose
    /// marker names an absolute path under our root. A home of another
    /// deployment sharing this folder (another root), one whose marker is
    /// from before markers were absolute (relative: whose root, it cannot
    /// say; it is made absolute the next time its thread is prepared), or
    /// one without a marker (being made by another runner now, perhaps) is
    /// left alone.
    pub(crate) fn sweep(&self) -> std::io::Result<usize> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name();
            if !is_key(&name.to_string_lossy()) {
                continue;
            }
            let base = entry.path();
            let workspace = match std::fs::read(base.join(MARKER)) {
                Ok(path) => PathBuf::from(std::ffi::OsString::from_vec(path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let ours = workspace.is_absolute()
                && workspace.starts_with(&self.workspaces)
                && workspace != self.workspaces;
            if ours && !workspace.is_dir() {
                std::fs::remove_dir_all(&base)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// [`CodexHomes::sweep`] off the async threads; a failure is logged and
/// retried at the next sweep, as it only costs disk space.
pub(crate) async fn sweep_homes(homes: Arc<CodexHomes>) {
    let root = homes.root().display().to_string();
    match tokio::task::spawn_blocking(move || homes.sweep()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => {
            tracing::info!(removed, %root, "codex homes of removed workspaces swept")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, %root, "cannot sweep codex homes"),
        Err(e) => tracing::warn!(error = %e, %root, "codex homes sweep panicked"),
    }
}

/// Homes used to sit beside the workspace (`<parent>/<name>.codex-home`),
/// where the agent could write them. Their Codex sessions (only them: a
/// planted `config.toml` or anything else stays behind) move into the new
/// home so that threads made before can still be resumed; the old folder
/// goes. Only real folders are taken, never symlinks. Best effort: a
/// failure is logged, and costs only the old threads' history.
fn adopt_legacy_sessions(dir: &WorkingDirectory, codex_home: &Path) {
    let Some(name) = dir.0.file_name() else {
        return;
    };
    let mut legacy_name = name.to_os_string();
    legacy_name.push(".codex-home");
    let legacy = dir.0.with_file_name(legacy_name);
    let is_real_dir =
        |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_dir());
    if !is_real_dir(&legacy) {
        return;
    }
    let target = codex_home.join("sessions");
    if is_real_dir(&legacy.join("sessions")) && !target.exists() {
        // Another filesystem (a volume of its own) cannot take a rename.
        let moved = std::fs::rename(legacy.join("sessions"), &target)
            .or_else(|_| copy_tree(&legacy.join("sessions"), &target));
        if let Err(error) = moved {
            tracing::warn!(%error, legacy = %legacy.display(), "cannot move old Codex sessions");
            return;
        }
    }
    match std::fs::remove_dir_all(&legacy) {
        Ok(()) => tracing::info!(legacy = %legacy.display(), "old CODEX_HOME adopted and removed"),
        Err(error) => {
            tracing::warn!(%error, legacy = %legacy.display(), "cannot remove an old CODEX_HOME")
        }
    }
}

/// Copies folders and regular files; symlinks (which the agent could have
/// planted) are left behind.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// A home's folder name: the SHA-256 of the relative path, in hex. Stable
/// across runner versions and restarts, and free of any character a path
/// could smuggle in.
fn key(relative: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(relative.as_os_str().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_key(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("s1/repo")).unwrap();
        let root = root.canonicalize().unwrap();
        (dir, root)
    }

    #[test]
    fn directory_under_root_is_accepted() {
        let (_dir, root) = root();
        let wd = WorkingDirectory::parse(root.join("s1/repo").to_str().unwrap(), &root).unwrap();
        assert_eq!(wd.path(), root.join("s1/repo"));
    }

    #[test]
    fn session_folder_is_the_first_folder_under_root() {
        let (_dir, root) = root();
        std::fs::create_dir_all(root.join("s1/repo/sub")).unwrap();
        let wd = WorkingDirectory::parse("s1/repo/sub", &root).unwrap();
        assert_eq!(wd.session_folder(&root), root.join("s1"));
    }

    #[test]
    fn a_home_is_kept_while_its_workspace_exists_and_foreign_folders_always() {
        let (dir, root) = root();
        let homes = CodexHomes::new(dir.path().join("homes"), root.clone());
        std::fs::create_dir_all(homes.root().join("not-a-home")).unwrap();
        std::fs::create_dir_all(root.join("s2/repo")).unwrap();
        let s1 = WorkingDirectory::parse("s1/repo", &root).unwrap();
        let s2 = WorkingDirectory::parse("s2/repo", &root).unwrap();
        let home = homes.prepare(&s1, Some("model = \"m\"")).unwrap();
        let gone = homes.prepare(&s2, None).unwrap();
        assert_eq!(
            home,
            homes.prepare(&s1, None).unwrap(),
            "stable per directory"
        );
        assert_ne!(home, gone);

        std::fs::remove_dir_all(root.join("s2")).unwrap();
        assert_eq!(homes.sweep().unwrap(), 1);

        assert!(home.codex_home.join("config.toml").is_file());
        assert!(home.tmp.is_dir());
        assert!(!gone.codex_home.exists());
        assert!(homes.root().join("not-a-home").is_dir());
    }

    /// Two deployments (two roots) sharing one homes folder, and homes
    /// from before markers were absolute: a sweep removes only the homes of
    /// its own root whose workspace is gone.
    #[test]
    fn a_sweep_never_touches_what_is_not_provably_its_own() {
        let (dir, root) = root();
        let other_root = dir.path().join("other-root");
        std::fs::create_dir_all(other_root.join("s9/repo")).unwrap();
        let other_root = other_root.canonicalize().unwrap();
        let shared = dir.path().join("homes");
        let ours = CodexHomes::new(shared.clone(), root.clone());
        let theirs = CodexHomes::new(shared.clone(), other_root.clone());
        std::fs::create_dir_all(root.join("s2/repo")).unwrap();
        let kept = ours
            .prepare(&WorkingDirectory::parse("s1/repo", &root).unwrap(), None)
            .unwrap();
        let gone = ours
            .prepare(&WorkingDirectory::parse("s2/repo", &root).unwrap(), None)
            .unwrap();
        let foreign = theirs
            .prepare(
                &WorkingDirectory::parse("s9/repo", &other_root).unwrap(),
                None,
            )
            .unwrap();
        // A home from before (its marker relative) and one being made.
        let legacy = shared.join(key(Path::new("s3/repo")));
        std::fs::create_dir_all(legacy.join("codex-home")).unwrap();
        std::fs::write(legacy.join(MARKER), "s3/repo").unwrap();
        let unfinished = shared.join(key(Path::new("s4/repo")));
        std::fs::create_dir_all(unfinished.join("codex-home")).unwrap();

        std::fs::remove_dir_all(root.join("s2")).unwrap();
        // The other deployment's sweep sees none of our workspaces: it
        // removes nothing of ours.
        assert_eq!(theirs.sweep().unwrap(), 0);
        assert!(kept.codex_home.is_dir() && gone.codex_home.is_dir());
        assert_eq!(ours.sweep().unwrap(), 1);
        assert!(!gone.base.exists());
        assert!(kept.codex_home.is_dir());
        assert!(foreign.codex_home.is_dir(), "another root's home stays");
        assert!(legacy.is_dir(), "a home whose root is unknown stays");
        assert!(unfinished.is_dir(), "a home without a marker stays");

        // Prepared again, a home from before is marked absolute, and is
        // ours to sweep once its workspace goes.
        std::fs::create_dir_all(root.join("s3/repo")).unwrap();
        let s3 = ours
            .prepare(&WorkingDirectory::parse("s3/repo", &root).unwrap(), None)
            .unwrap();
        assert_eq!(s3.base, legacy);
        std::fs::remove_dir_all(root.join("s3")).unwrap();
        assert_eq!(ours.sweep().unwrap(), 1);
        assert!(!legacy.exists());
    }

    #[test]
    fn sessions_of_a_home_beside_the_workspace_move_into_the_new_home() {
        let (dir, root) = root();
        let legacy = root.join("s1/repo.codex-home");
        std::fs::create_dir_all(legacy.join("sessions/2026")).unwrap();
        std::fs::write(legacy.join("sessions/2026/rollout.jsonl"), "{}").unwrap();
        std::fs::write(legacy.join("config.toml"), "[mcp_servers.esc]").unwrap();
        let homes = CodexHomes::new(dir.path().join("homes"), root.clone());
        let s1 = WorkingDirectory::parse("s1/repo", &root).unwrap();

        let home = homes.prepare(&s1, None).unwrap();

        let moved = home.codex_home.join("sessions/2026/rollout.jsonl");
        assert_eq!(std::fs::read_to_string(moved).unwrap(), "{}");
        assert!(!home.codex_home.join("config.toml").exists());
        assert!(!legacy.exists());
    }

    #[test]
    fn old_sessions_are_copied_without_symlinks_to_another_filesystem() {
        let (dir, root) = root();
        let legacy = root.join("s1/repo.codex-home/sessions");
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(legacy.join("rollout.jsonl"), "{}").unwrap();
        std::os::unix::fs::symlink(dir.path(), legacy.join("escape")).unwrap();
        // /dev/shm is a tmpfs: a rename from the temp folder fails there.
        let other_fs = tempfile::tempdir_in("/dev/shm").unwrap();
        let homes = CodexHomes::new(other_fs.path().join("homes"), root.clone());
        let s1 = WorkingDirectory::parse("s1/repo", &root).unwrap();

        let home = homes.prepare(&s1, None).unwrap();

        let sessions = home.codex_home.join("sessions");
        assert_eq!(
            std::fs::read_to_string(sessions.join("rollout.jsonl")).unwrap(),
            "{}"
        );
        assert!(std::fs::symlink_metadata(sessions.join("escape")).is_err());
        assert!(!root.join("s1/repo.codex-home").exists());
    }

    #[test]
    fn relative_directory_is_taken_from_root() {
        let (_dir, root) = root();
        let wd = WorkingDirectory::parse("s1/repo", &root).unwrap();
        assert_eq!(wd.path(), root.join("s1/repo"));
    }

    #[test]
    fn dot_dot_out_of_root_is_refused() {
        let (_dir, root) = root();
        let raw = format!("{}/s1/../..", root.display());
        assert_eq!(
            WorkingDirectory::parse(&raw, &root),
            Err(WorkspaceError::OutsideRoot(raw.clone()))
        );
    }

    #[test]
    fn root_itself_is_refused() {
        let (_dir, root) = root();
        let raw = root.display().to_string();
        assert_eq!(
            WorkingDirectory::parse(&raw, &root),
            Err(WorkspaceError::OutsideRoot(raw.clone()))
        );
    }

    #[test]
    fn symlink_leaving_root_is_refused() {
        let (dir, root) = root();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("s1/link")).unwrap();
        let raw = root.join("s1/link").display().to_string();
        assert_eq!(
            WorkingDirectory::parse(&raw, &root),
            Err(WorkspaceError::OutsideRoot(raw.clone()))
        );
    }

    #[test]
    fn missing_directory_is_refused() {
        let (_dir, root) = root();
        assert_eq!(
            WorkingDirectory::parse("nope", &root),
            Err(WorkspaceError::Missing("nope".into()))
        );
    }
}
