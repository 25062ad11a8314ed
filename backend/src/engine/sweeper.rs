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

use std::sync::Arc;

use tracing::Instrument;
use uuid::Uuid;

use super::clones::Clones;
use super::core::Core;
use crate::store::Expiry;

/// Sessions looked at per query.
const BATCH: i64 = 100;

pub(super) struct Sweeper {
    core: Arc<Core>,
    /// Whose folders and runner threads an expiry removes.
    clones: Arc<Clones>,
}

impl Sweeper {
    pub(super) fn new(core: Arc<Core>, clones: Arc<Clones>) -> Arc<Self> {
        Arc::new(Self { core, clones })
    }

    /// Sweeps now and then every `BACKEND_SWEEP_INTERVAL_SECS` until the
    /// backend stops.
    pub(super) fn spawn(self: &Arc<Self>) {
        let limits = &self.core.config.limits;
        if limits.session_idle_ttl.is_none() && limits.workspaces_max_bytes == 0 {
            tracing::info!("no session expires: no idle time-to-live and no total quota");
            return;
        }
        let sweeper = self.clone();
        let span = tracing::info_span!(parent: None, "sweeper");
        self.core.tasks.spawn(
            async move {
                let core = &sweeper.core;
                loop {
                    if let Err(error) = sweeper.sweep().await {
                        tracing::warn!(error.cause_chain = ?error, "the sweep failed; next time");
                    }
                    if core.stopping.is_cancelled() {
                        return;
                    }
                    core.pause(core.config.limits.sweep_interval).await;
                    if core.stopping.is_cancelled() {
                        return;
                    }
                }
            }
            .instrument(span),
        );
    }

    /// One sweep: the idle sessions, then the quota. Returns how many
    /// sessions expired.
    async fn sweep(&self) -> crate::store::Result<usize> {
        let (config, store) = (&self.core.config, &self.core.store);
        let mut expired = 0;
        if let Some(ttl) = config.limits.session_idle_ttl {
            let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
            let before = chrono::Utc::now() - ttl;
            loop {
                let batch = store.expirable_sessions(Some(before), BATCH).await?;
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
        let max = i64::try_from(config.limits.workspaces_max_bytes).unwrap_or(i64::MAX);
        if max > 0 {
            let mut total = store.total_workspace_bytes().await?;
            while total > max {
                let batch = store.expirable_sessions(None, BATCH).await?;
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
        let Expiry::Expired { thread } = self.core.store.expire_session(session).await? else {
            return Ok(false);
        };
        // The folder first: the runner removes a thread's CODEX_HOME once
        // its workspace is gone, so the thread's deletion takes it too.
        self.clones.remove_session_dir(session).await;
        if let Some(thread) = thread {
            self.clones.delete_runner_thread(&thread).await;
        }
        self.core.metrics.session_expired();
        tracing::info!(session_id = %session, why, "session expired; its workspace is removed");
        Ok(true)
    }
}
