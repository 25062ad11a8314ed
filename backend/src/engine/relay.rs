//! The relay: a run's events from the runner's stream to the live tail at
//! once and to Postgres in batches, without ever dropping one.

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use runner_protocol::{Event, Payload, Terminal};
use serde_json::Value;
use uuid::Uuid;

use super::{retry_forever, Engine};
use crate::git::Snapshot;
use crate::runner_client::RunnerError;
use crate::store::{RunRow, SessionRow, Store};

/// Attempts to reach the runner's event stream before a run is failed.
const RELAY_ATTEMPTS: u32 = 8;

impl Engine {
    /// Follows the runner's stream of a run from `after`: every event goes
    /// to the live tail at once and to Postgres in batches; the terminal
    /// event is written with the run's outcome in one transaction.
    ///
    /// A batch is written before anything after it is read, and a write is
    /// retried until it succeeds (or finds the run deleted), so `last` is
    /// always stored when the relay reads on or reconnects: while Postgres
    /// is away the relay stops reading and the runner keeps the events.
    pub(super) async fn relay(
        &self,
        session: &SessionRow,
        run: &RunRow,
        runner_run: &str,
        after: u64,
        before: Snapshot,
    ) {
        let hub = self.hubs.open(run.id, after + 1);
        let max_batch = self.config.limits.event_batch;
        let mut last = after;
        let mut failures = 0u32;
        let mut writer = EventWriter::new(run.id);
        // The terminal event and its number, and whether the relay saw the
        // run end (else the runner lost it, and when it ended is unknown).
        let (seq, terminal, seen): (u64, Terminal, bool) = 'relay: loop {
            // Each pass follows one connection; one that fails, or ends with
            // nothing new, backs off, so a runner that keeps refusing or
            // closing streams is not hammered.
            let failure = match self.runner.events(runner_run, last).await {
                Err(RunnerError::NotFound(_)) => {
                    break 'relay (last + 1, Terminal::failed(run.id,
                        "the runner no longer knows this run (it was probably restarted); send the prompt again"), false);
                }
                Err(error) => format!("lost the runner: {error}"),
                Ok(mut stream) => {
                    let last_before = last;
                    loop {
                        // Take what is ready without waiting; write the batch
                        // when the stream has nothing more for now or the
                        // batch is full.
                        let next = match stream.next().now_or_never() {
                            Some(next) => next,
                            None => {
                                writer.flush(&self.store).await;
                                tokio::select! {
                                    next = stream.next() => next,
                                    () = self.stopping.cancelled() => {
                                        // What came is stored; the run stays
                                        // `running` and the next process
                                        // re-attaches after `last`.
                                        self.hubs.remove(run.id);
                                        return;
                                    }
                                }
                            }
                        };
                        let event = match next {
                            Some(Ok(event)) => event,
                            Some(Err(_)) | None => break,
                        };
                        if event.seq <= last {
                            continue;
                        }
                        if event.seq != last + 1 {
                            tracing::warn!(
                                expected = last + 1,
                                got = event.seq,
                                "gap in the runner's stream; reconnecting"
                            );
                            break;
                        }
                        failures = 0;
                        last = event.seq;
                        if let Some(terminal) = Terminal::from_event(&event) {
                            writer.flush(&self.store).await;
                            let terminal = terminal.unwrap_or_else(|error| {
                                tracing::error!(%error, "the runner's terminal event is unreadable");
                                Terminal::failed(
                                    run.id,
                                    format!("the runner's {} event is unreadable: {error}", event.kind),
                                )
                            });
                            break 'relay (event.seq, terminal, true);
                        }
                        if event.kind == "thread.started" {
                            self.record_codex_thread(session.id, &event.data).await;
                        }
                        if let Err(error) = hub.push_event(event.clone(), false) {
                            // The live tail is a cache in front of Postgres:
                            // the event is still stored and replayed, only
                            // this process's live subscribers miss it.
                            tracing::warn!(?error, seq = last, "the live tail refused an event");
                        }
                        writer.push(event);
                        if writer.len() >= max_batch {
                            writer.flush(&self.store).await;
                        }
                    }
                    writer.flush(&self.store).await;
                    if last != last_before {
                        continue;
                    }
                    "the runner keeps closing the run's event stream".to_owned()
                }
            };
            failures += 1;
            if failures >= RELAY_ATTEMPTS {
                break 'relay (last + 1, Terminal::failed(run.id, failure), false);
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
        };
        self.finish(session, run, seq, terminal, before, seen).await;
    }

    /// The session's conversation is this Codex thread from now on: a
    /// restarted runner resumes it.
    pub(super) async fn record_codex_thread(&self, session: Uuid, thread_started: &Payload) {
        let id = serde_json::from_slice::<Value>(thread_started.as_bytes())
            .ok()
            .and_then(|v| v["thread_id"].as_str().map(str::to_owned));
        if let Some(id) = id {
            // A deleted session makes this a no-op, not an error.
            retry_forever("record the Codex thread", || {
                self.store.set_codex_thread(session, &id)
            })
            .await;
        }
    }
}

/// A run's events on their way to Postgres.
struct EventWriter {
    run_id: Uuid,
    batch: Vec<Event>,
    /// The run was deleted (with its session): its events are no longer
    /// stored, only relayed to the live tail until the terminal event.
    gone: bool,
}

impl EventWriter {
    pub(super) fn new(run_id: Uuid) -> Self {
        Self {
            run_id,
            batch: Vec::new(),
            gone: false,
        }
    }

    pub(super) fn push(&mut self, event: Event) {
        if !self.gone {
            self.batch.push(event);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.batch.len()
    }

    /// Stores the batch, retrying until it is stored or the run is found
    /// deleted; returns with the batch empty either way.
    pub(super) async fn flush(&mut self, store: &Store) {
        if self.batch.is_empty() {
            return;
        }
        let batch = &self.batch;
        let stored =
            retry_forever("store events", || store.append_events(self.run_id, batch)).await;
        if !stored {
            tracing::info!("the run was deleted; its events are no longer stored");
            self.gone = true;
        }
        self.batch.clear();
    }
}
