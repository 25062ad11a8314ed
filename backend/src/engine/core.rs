//! What every part of the engine shares, and nothing outside it sees: the
//! configuration, the store, the runner's client, the live tails, the
//! metrics, and the set of tasks with the signal that stops them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::hub::Hubs;
use super::runner_client::RunnerClient;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

pub(super) struct Core {
    pub(super) config: Arc<Config>,
    pub(super) store: Store,
    pub(super) runner: RunnerClient,
    pub(super) hubs: Arc<Hubs>,
    pub(super) metrics: Arc<Metrics>,
    /// Canonical `WORKSPACES_ROOT`.
    pub(super) root: PathBuf,
    /// Every task the engine spawns: clones, session workers (with the
    /// relays they run), the sweeper and the session-change listener.
    pub(super) tasks: TaskTracker,
    /// Cancelled when the backend stops.
    pub(super) stopping: CancellationToken,
}

impl Core {
    /// `WORKSPACES_ROOT/<session>`: the session's folder.
    pub(super) fn session_dir(&self, session: Uuid) -> PathBuf {
        self.root.join(session.to_string())
    }

    /// `WORKSPACES_ROOT/<session>/repo`: the clone the agent works in.
    pub(super) fn workspace(&self, session: Uuid) -> PathBuf {
        self.session_dir(session).join("repo")
    }

    /// `<WORKSPACES_ROOT>/.snapshots/<session>`: out of the session's
    /// folder, which the session's agent sees (see `git::SnapshotCache`).
    pub(super) fn snapshot_dir(&self, session: Uuid) -> PathBuf {
        self.root.join(".snapshots").join(session.to_string())
    }

    /// Where the session's workspace snapshots keep their index.
    pub(super) fn snapshot_cache(&self, session: Uuid) -> crate::git::SnapshotCache {
        crate::git::SnapshotCache::new(&self.snapshot_dir(session))
    }

    /// Sleeps, or returns at once when the backend stops.
    pub(super) async fn pause(&self, duration: Duration) {
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = self.stopping.cancelled() => {}
        }
    }

    /// Measures the session's folder and stores the figure (and the
    /// activity): after a clone and after each run. It is what the per-user
    /// quota (`BACKEND_USER_MAX_WORKSPACE_BYTES`) and the sweeper add up.
    pub(super) async fn measure_workspace(&self, session: Uuid) {
        let dir = self.session_dir(session);
        let measured = tokio::task::spawn_blocking(move || folder_bytes(&dir)).await;
        let bytes = match measured {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot measure the workspace");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot measure the workspace");
                return;
            }
        };
        if let Err(error) = self.store.set_workspace_bytes(session, bytes).await {
            // The next clone or run measures again; until then the quota
            // sees the last figure.
            tracing::warn!(error.cause_chain = ?error, "cannot record the workspace's size");
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The disk space (allocated blocks) of everything under `dir`, without
/// following symlinks; a folder that is gone holds nothing.
fn folder_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            // `DirEntry::metadata` does not follow a symlink.
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                // Removed while we looked (an agent at work).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            total = total.saturating_add(metadata.blocks().saturating_mul(512));
            if metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_counts_its_files_but_not_what_its_symlinks_point_at() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![7u8; 1 << 20]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/file"), vec![1u8; 64 * 1024]).unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("dirlink")).unwrap();
        let bytes = folder_bytes(dir.path()).unwrap();
        assert!(bytes >= 64 * 1024, "{bytes}");
        assert!(bytes < 1 << 20, "{bytes}: a symlink's target was counted");
        assert_eq!(folder_bytes(&dir.path().join("gone")).unwrap(), 0);
    }
}
