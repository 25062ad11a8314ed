//! A run's end: the outcome and the files it changed are recorded with its
//! terminal event in one transaction, then the terminal event is published
//! and the live tail dropped.

use serde_json::{json, Value};
use uuid::Uuid;

use super::{retry_forever, Engine};
use crate::domain::{RunStatus, Usage};
use crate::git::{self, Snapshot};
use crate::store::{EventRow, RunOutcome, RunRow, SessionRow};

impl Engine {
    /// Records the outcome and the files the run changed, then publishes
    /// the terminal event and drops the live tail.
    pub(super) async fn finish(
        &self,
        session: &SessionRow,
        run: &RunRow,
        terminal: EventRow,
        before: Snapshot,
    ) {
        let dir = self.workspace(session.id);
        let changes = tokio::task::spawn_blocking(move || {
            git::snapshot(&dir)
                .ok()
                .map(|after| git::changes(&before, &after, &dir))
        })
        .await
        .ok()
        .flatten();
        let mut data: Value = serde_json::from_str(&terminal.data).unwrap_or_else(|_| json!({}));
        data["type"] = json!(terminal.event_type);
        data["runId"] = json!(run.id);
        data["files"] = json!(changes);
        let outcome = RunOutcome {
            status: RunStatus::of_terminal(&terminal.event_type),
            final_response: data["finalResponse"].as_str().map(str::to_owned),
            // Usage Codex did not report (or in a shape this build does not
            // know) is no usage; the terminal event keeps what came.
            usage: serde_json::from_value::<Option<Usage>>(data["usage"].clone())
                .ok()
                .flatten(),
            error: data["error"].as_str().map(str::to_owned),
            files: changes,
        };
        let terminal = EventRow {
            data: data.to_string(),
            ..terminal
        };
        let recorded = retry_forever("record the run's outcome", || {
            self.store
                .finish_run(run.id, std::slice::from_ref(&terminal), &outcome)
        })
        .await;
        if recorded {
            tracing::info!(status = %outcome.status, "run finished");
        } else {
            // Deleted with its session while it ended: nothing to record.
            tracing::info!(
                status = %outcome.status,
                "run ended after it was deleted; nothing recorded"
            );
        }
        self.publish_terminal(run.id, terminal);
    }

    pub(super) fn publish_terminal(&self, run_id: Uuid, terminal: EventRow) {
        let hub = self.hubs.open(run_id, terminal.seq as u64);
        if let Err(error) = hub.push_numbered(
            terminal.seq as u64,
            &terminal.event_type,
            terminal.data,
            true,
        ) {
            // Only after the tail refused an earlier event (it is full, see
            // `relay`). The event is stored; a subscriber of this tail
            // reads it from Postgres once it reconnects.
            tracing::warn!(?error, "the live tail refused the terminal event");
        }
        self.hubs.remove(run_id);
    }

    /// Ends a run that the runner never saw (or no longer knows) with one
    /// terminal event of the backend's own.
    pub(super) async fn finish_without_runner(
        &self,
        run: &RunRow,
        kind: &'static str,
        error: Option<String>,
    ) -> crate::store::Result<bool> {
        self.finish_without_runner_if(run, kind, error, false).await
    }

    /// `finish_without_runner` for the worker's own run, retried until
    /// stored: the run is `running`, and nobody else would end it.
    pub(super) async fn end_without_runner(
        &self,
        run: &RunRow,
        kind: &'static str,
        error: Option<String>,
    ) {
        retry_forever("end the run", || {
            self.finish_without_runner(run, kind, error.clone())
        })
        .await;
    }

    pub(super) async fn finish_without_runner_if(
        &self,
        run: &RunRow,
        kind: &'static str,
        error: Option<String>,
        only_queued: bool,
    ) -> crate::store::Result<bool> {
        let seq = self.store.last_seq(run.id).await? + 1;
        let data = json!({"type": kind, "runId": run.id, "error": error, "files": null});
        let terminal = EventRow {
            seq,
            event_type: kind.to_owned(),
            data: data.to_string(),
        };
        let outcome = RunOutcome::bare(RunStatus::of_terminal(kind), error);
        let events = std::slice::from_ref(&terminal);
        let finished = if only_queued {
            self.store
                .finish_queued_run(run.id, events, &outcome)
                .await?
        } else {
            self.store.finish_run(run.id, events, &outcome).await?
        };
        if finished {
            self.publish_terminal(run.id, terminal);
        }
        Ok(finished)
    }
}
