//! `WorkspacePath`: a relative path inside a session's workspace, as a client
//! names it in `/files/{path}`.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspacePathError {
    #[error("path must be relative to the workspace")]
    Absolute,
    #[error("path must not contain '..' or '.' components")]
    Traversal,
    #[error("path must not name the .git folder")]
    GitDir,
    #[error("path must not be empty or contain NUL or backslash characters")]
    Malformed,
}

/// A path relative to a workspace, made only of normal components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspacePath(PathBuf);

impl WorkspacePath {
    /// Parses the path as the client sent it (already percent-decoded once
    /// by the router; a decoded `%2e%2e` is `..` and is refused here).
    pub(crate) fn parse(raw: &str) -> Result<Self, WorkspacePathError> {
        if raw.is_empty() || raw.contains('\0') || raw.contains('\\') || raw.len() > 4096 {
            return Err(WorkspacePathError::Malformed);
        }
        if raw.starts_with('/') {
            return Err(WorkspacePathError::Absolute);
        }
        let path = Path::new(raw);
        let mut clean = PathBuf::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => clean.push(part),
                Component::CurDir | Component::ParentDir => {
                    return Err(WorkspacePathError::Traversal)
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(WorkspacePathError::Absolute)
                }
            }
        }
        // `Path::components` silently drops interior `.`; refuse it outright.
        if raw.split('/').any(|part| part == "." || part == "..") {
            return Err(WorkspacePathError::Traversal);
        }
        if clean
            .components()
            .next()
            .is_some_and(|c| c.as_os_str() == ".git")
        {
            return Err(WorkspacePathError::GitDir);
        }
        if clean.as_os_str().is_empty() {
            return Err(WorkspacePathError::Malformed);
        }
        Ok(Self(clean))
    }

    pub(crate) fn as_path(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_are_accepted() {
        assert_eq!(
            WorkspacePath::parse("src/main.rs").unwrap().as_path(),
            Path::new("src/main.rs")
        );
    }

    #[test]
    fn traversal_and_absolute_paths_are_refused() {
        use WorkspacePathError::*;
        for (raw, error) in [
            ("/etc/passwd", Absolute),
            ("../x", Traversal),
            ("a/../../x", Traversal),
            ("a/./b", Traversal),
            (".git/config", GitDir),
            ("a\\..\\b", Malformed),
            ("", Malformed),
        ] {
            assert_eq!(WorkspacePath::parse(raw), Err(error), "{raw}");
        }
    }
}
