//! The workspace lifecycle: how much each session's folder holds, and the
//! sweeper that expires sessions.
//!
//! A session's folder is measured after its clone and after each run, and
//! the measure is stored with the session (it is what the per-user quota,
//! `BACKEND_USER_MAX_WORKSPACE_BYTES`, adds up). Every
//! `BACKEND_SWEEP_INTERVAL_SECS` the sweeper expires the sessions idle for
//! longer than `BACKEND_SESSION_IDLE_TTL_HOURS`, then, while the workspaces
//! together hold more than `BACKEND_WORKSPACES_MAX_BYTES`, the longest idle
//! ones. A session with a queued or running run is never expired, and a
//! prompt cannot slip in between the check and the expiry (both take the
//! session's row lock).
//!
//! Expiring removes the session's folder and its runner thread (with the
//! thread's `CODEX_HOME`), and keeps the row, its runs and their events,
//! marked `expired`. Removal never leaves `WORKSPACES_ROOT`: the folder is
//! `WORKSPACES_ROOT/<uuid>`, and `remove_dir_all` unlinks a symlink it
//! meets (the folder itself included) instead of following it.

use std::path::Path;
use std::sync::Arc;

use tracing::Instrument;
use uuid::Uuid;

use super::Engine;

/// Sessions looked at per query.
const BATCH: i64 = 100;

impl Engine {
    /// Measures the session's folder and stores the figure (and the
    /// activity).
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

    /// Sweeps now and then every `BACKEND_SWEEP_INTERVAL_SECS` until the
    /// backend stops.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let ttl = self.config.limits.session_idle_ttl;
        let max_bytes = self.config.limits.workspaces_max_bytes;
        if ttl.is_none() && max_bytes == 0 {
            tracing::info!("no session expires: no idle time-to-live and no total quota");
            return;
        }
        let engine = self.clone();
        let span = tracing::info_span!(parent: None, "sweeper");
        self.tasks.spawn(
            async move {
                loop {
                    if let Err(error) = engine.sweep().await {
                        tracing::warn!(error.cause_chain = ?error, "the sweep failed; next time");
                    }
                    if engine.stopping.is_cancelled() {
                        return;
                    }
                    engine.pause(engine.config.limits.sweep_interval).await;
                    if engine.stopping.is_cancelled() {
                        return;
                    }
                }
            }
            .instrument(span),
        );
    }

    /// One sweep: the idle sessions, then the quota. Returns how many
    /// sessions expired.
    pub(super) async fn sweep(&self) -> crate::store::Result<usize> {
        let mut expired = 0;
        if let Some(ttl) = self.config.limits.session_idle_ttl {
            let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
            let before = chrono::Utc::now() - ttl;
            loop {
                let batch = self.store.expirable_sessions(Some(before), BATCH).await?;
                let mut progressed = false;
                for session in &batch {
                    if self.expire(session.id, "idle").await? {
                        expired += 1;
                        progressed = true;
                    }
                }
                if batch.len() < BATCH as usize || !progressed {
                    break;
                }
            }
        }
        let max = i64::try_from(self.config.limits.workspaces_max_bytes).unwrap_or(i64::MAX);
        if max > 0 {
            let mut total = self.store.total_workspace_bytes().await?;
            while total > max {
                let batch = self.store.expirable_sessions(None, BATCH).await?;
                let mut progressed = false;
                for session in &batch {
                    if total <= max {
                        break;
                    }
                    if self.expire(session.id, "over the total quota").await? {
                        total -= session.workspace_bytes;
                        expired += 1;
                        progressed = true;
                    }
                }
                if !progressed {
                    tracing::warn!(
                        total,
                        max,
                        "the workspaces hold more than BACKEND_WORKSPACES_MAX_BYTES, and \
                         every session is busy: nothing to expire now"
                    );
                    break;
                }
            }
        }
        Ok(expired)
    }

    /// Expires one session if it still may be; whether it did.
    async fn expire(&self, session: Uuid, why: &str) -> crate::store::Result<bool> {
        let Some(thread) = self.store.expire_session(session).await? else {
            return Ok(false);
        };
        // The folder first: the runner removes a thread's CODEX_HOME once
        // its workspace is gone, so the thread's deletion takes it too.
        self.remove_session_dir(session).await;
        if let Some(thread) = thread {
            self.delete_runner_thread(&thread).await;
        }
        self.metrics.session_expired();
        tracing::info!(session_id = %session, why, "session expired; its workspace is removed");
        Ok(true)
    }
}

/// The disk space (allocated blocks) of everything under `dir`, without
/// following symlinks; a folder that is gone holds nothing.
fn folder_bytes(dir: &Path) -> std::io::Result<u64> {
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
