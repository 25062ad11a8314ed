//! Working directories: a thread may only work under `WORKSPACES_ROOT`, and
//! keeps its own `CODEX_HOME` beside its working directory.

use std::path::{Path, PathBuf};

/// A directory proven to be strictly inside the workspaces root, symlinks
/// resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingDirectory(PathBuf);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkspaceError {
    #[error("workingDirectory must not be empty")]
    Empty,
    #[error("workingDirectory {0} does not exist or is not a directory")]
    Missing(String),
    #[error("workingDirectory {0} is not inside WORKSPACES_ROOT")]
    OutsideRoot(String),
}

impl WorkingDirectory {
    /// `root` must already be canonical.
    pub fn parse(raw: &str, root: &Path) -> Result<Self, WorkspaceError> {
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

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `<parent>/<name>.codex-home`: beside the workspace (so removing a
    /// session's folder removes it too) and outside it (so the agent's diff
    /// and the repository never see it). Threads bound to the same directory
    /// share it, which is what lets a restarted runner resume their sessions.
    pub fn codex_home(&self) -> PathBuf {
        let name = self
            .0
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "workspace".into());
        self.0
            .parent()
            .unwrap_or(&self.0)
            .join(format!("{name}.codex-home"))
    }
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
        assert_eq!(wd.codex_home(), root.join("s1/repo.codex-home"));
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
