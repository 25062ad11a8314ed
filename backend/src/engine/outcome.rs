//! A run's end: the outcome and the files it changed are recorded with its
//! terminal event in one transaction, then the terminal event is published
//! and the live tail dropped.

use runner_protocol::{Event, Terminal};
use uuid::Uuid;

use super::{retry_forever, Engine};
use crate::domain::RunStatus;
use crate::git::{self, Snapshot};
use crate::store::{Finished, RunOutcome, RunRow, SessionRow};

impl Engine {
    /// Records the outcome and the files the run changed, then publishes
    /// the terminal event (number `seq`) and drops the live tail.
    pub(super) async fn finish(
        &self,
        session: &SessionRow,
        run: &RunRow,
        seq: u64,
        terminal: Terminal,
        before: Snapshot,
        seen: bool,
    ) {
        let dir = self.workspace(session.id);
        let cache = self.snapshot_cache(session.id);
        let refname = git::run_ref(run.id, "after");
        let (changes, snapshot_after) = tokio::task::spawn_blocking(move || {
            let changes = git::snapshot(&dir)
                .ok()
                .map(|after| git::changes(&before, &after, &dir));
            (changes, super::queue::snapshot(&dir, &cache, &refname))
        })
        .await
        .unwrap_or_default();
        // The runner's event under the backend's run id, with the files.
        let terminal = terminal.with_run_id(run.id).with_files(changes.clone());
        let outcome = RunOutcome {
            status: RunStatus::from(&terminal),
            final_response: terminal.final_response().map(str::to_owned),
            usage: terminal.usage().map(Into::into),
            error: terminal.error().map(str::to_owned),
            files: changes,
            snapshot_after,
            ended_unseen: !seen,
        };
        let terminal = terminal.to_event(seq);
        let recorded = retry_forever("record the run's outcome", || {
            self.store
                .finish_run(run.id, std::slice::from_ref(&terminal), &outcome)
        })
        .await;
        if let Some(finished) = &recorded {
            tracing::info!(status = %outcome.status, "run finished");
            self.metrics
                .run_finished(outcome.status, ran_for(finished), outcome.usage);
            self.metrics.events_persisted(1, None);
        } else {
            // Deleted with its session while it ended: nothing to record.
            tracing::info!(
                status = %outcome.status,
                "run ended after it was deleted; nothing recorded"
            );
        }
        self.publish_terminal(run.id, terminal);
        // After the terminal event, which need not wait for a walk of the
        // workspace.
        if recorded.is_some() {
            self.measure_workspace(session.id).await;
        }
    }

    pub(super) fn publish_terminal(&self, run_id: Uuid, terminal: Event) {
        let hub = self.hubs.open(run_id, terminal.seq);
        if let Err(error) = hub.push_event(terminal, true) {
            // Only after the tail refused an earlier event (it is full, see
            // `relay`). The event is stored; a subscriber of this tail
            // reads it from Postgres once it reconnects.
            tracing::warn!(?error, "the live tail refused the terminal event");
        }
        self.hubs.remove(run_id);
    }

    /// Ends a run that the runner never saw (or no longer knows) with one
    /// terminal event of the backend's own (`Terminal::failed` or
    /// `Terminal::cancelled` of the run's id).
    pub(super) async fn finish_without_runner(
        &self,
        run: &RunRow,
        terminal: Terminal,
    ) -> crate::store::Result<bool> {
        self.finish_without_runner_if(run, terminal, false).await
    }

    /// `finish_without_runner` for the worker's own run, retried until
    /// stored: the run is `running`, and nobody else would end it.
    pub(super) async fn end_without_runner(&self, run: &RunRow, terminal: Terminal) {
        retry_forever("end the run", || {
            self.finish_without_runner(run, terminal.clone())
        })
        .await;
    }

    pub(super) async fn finish_without_runner_if(
        &self,
        run: &RunRow,
        terminal: Terminal,
        only_queued: bool,
    ) -> crate::store::Result<bool> {
        let seq = self.store.last_seq(run.id).await? + 1;
        // No files looked at: `files` is null.
        let terminal = terminal.with_run_id(run.id).with_files(None);
        let outcome = RunOutcome::bare(
            RunStatus::from(&terminal),
            terminal.error().map(str::to_owned),
        );
        let terminal = terminal.to_event(u64::try_from(seq).unwrap_or_default());
        let events = std::slice::from_ref(&terminal);
        let finished = if only_queued {
            self.store
                .finish_queued_run(run.id, events, &outcome)
                .await?
        } else {
            self.store.finish_run(run.id, events, &outcome).await?
        };
        if let Some(finished) = &finished {
            self.metrics
                .run_finished(outcome.status, ran_for(finished), None);
            self.metrics.events_persisted(1, None);
            self.publish_terminal(run.id, terminal);
        }
        Ok(finished.is_some())
    }
}

/// From the run's start to now, if it started.
fn ran_for(finished: &Finished) -> Option<std::time::Duration> {
    let started = finished.started_at?;
    (chrono::Utc::now() - started).to_std().ok()
}
