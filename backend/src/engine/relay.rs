//! The relay: a run's events from the runner's stream to the live tail at
//! once, and from the live tail to Postgres in batches beside it, without
//! ever dropping one.
//!
//! The relay is handed the run's tail by `runs` (which alone opens tails)
//! and reports how the run ended; recording that end is `runs`' too.
//!
//! Two tasks per active run:
//! - the reader ([`relay`]) follows the runner's stream and pushes
//!   each event into the run's live tail ([`RunLog`]), where subscribers
//!   read it at once: live delivery never waits for Postgres;
//! - the writer ([`persist`]) takes what the tail holds beyond what is
//!   stored, writes it in one insert, and releases it: only stored events
//!   may leave the tail (to make room) and be read from Postgres instead.
//!
//! The tail is bounded (`BACKEND_MAX_EVENTS_PER_RUN`,
//! `BACKEND_LIVE_TAIL_BYTES`). When Postgres falls behind until the tail is
//! full of unstored events, the reader waits, so it stops reading and the
//! runner keeps the events. The run's end is recorded only after every
//! event before it is stored.

use std::sync::Arc;
use std::time::Duration;

use event_log::{Next, RunLog};
use futures_util::{FutureExt, StreamExt};
use runner_protocol::{EventName, Payload, Terminal};
use serde::Deserialize;
use tokio::sync::watch;
use uuid::Uuid;

use super::core::Core;
use super::retry::retry_forever;
use super::runner_client::RunnerError;
use crate::domain::RunnerRunId;
use crate::store::Store;

/// Attempts to reach the runner's event stream before a run is failed.
const RELAY_ATTEMPTS: u32 = 8;

/// How the relay stopped following a run.
pub(super) enum Followed {
    /// The run ended: its terminal event and number, and whether the relay
    /// saw it end (else the runner lost it, and when it ended is unknown).
    /// Every event before it is stored.
    Ended {
        seq: u64,
        terminal: Terminal,
        seen: bool,
    },
    /// The backend is stopping: the run stays `running` and the next
    /// process re-attaches after what is stored.
    Stopping,
    /// The writer task died (it does not panic; were it to, what it did not
    /// store is still on the runner, and the next process re-attaches after
    /// what is stored).
    WriterFailed,
}

/// Follows the runner's stream of a run from `after` into `tail`, with a
/// writer beside it storing the tail in Postgres; returns once everything
/// before the run's end is stored.
pub(super) async fn relay(
    core: &Core,
    session: Uuid,
    run: Uuid,
    runner_run: &RunnerRunId,
    after: u64,
    tail: Arc<RunLog>,
) -> Followed {
    let (last_tx, last_rx) = watch::channel(None);
    let writer = core.tasks.spawn(persist(
        Writer {
            store: core.store.clone(),
            metrics: core.metrics.clone(),
            max_batch: core.config.limits.event_batch,
            batch_wait: core.config.limits.event_batch_wait,
        },
        tail.clone(),
        run,
        after,
        last_rx,
    ));
    let (followed, last) = follow(core, session, run, runner_run, after, &tail).await;
    // The writer stores up to `last`, then ends.
    last_tx.send_replace(Some(last));
    if let Err(error) = writer.await {
        tracing::error!(%error, "the event writer failed");
        return Followed::WriterFailed;
    }
    followed
}

/// Reads the runner's stream into the live tail until the run ends or the
/// backend stops; returns how, and the last event pushed.
async fn follow(
    core: &Core,
    session: Uuid,
    run: Uuid,
    runner_run: &RunnerRunId,
    after: u64,
    tail: &RunLog,
) -> (Followed, u64) {
    let mut last = after;
    let mut failures = 0u32;
    let ended = |seq, terminal, seen| Followed::Ended {
        seq,
        terminal,
        seen,
    };
    loop {
        // Each pass follows one connection; one that fails, or ends with
        // nothing new, backs off, so a runner that keeps refusing or
        // closing streams is not hammered.
        let failure = match core.runner.events(runner_run, last).await {
            Err(RunnerError::NotFound { .. }) => {
                let terminal = Terminal::failed(run,
                    "the runner no longer knows this run (it was probably restarted); send the prompt again");
                return (ended(last + 1, terminal, false), last);
            }
            Err(error) => {
                tracing::debug!(detail = %error.detail(), "cannot follow the runner's stream");
                format!("lost the runner: {error}")
            }
            Ok(mut stream) => {
                let last_before = last;
                // Why the connection ended, when it was an error: the run's
                // failure message says it if the runner stays away.
                let mut stream_error = None;
                loop {
                    // What is ready is taken without a select per event.
                    let next = match stream.next().now_or_never() {
                        Some(next) => next,
                        None => tokio::select! {
                            next = stream.next() => next,
                            () = core.stopping.cancelled() => return (Followed::Stopping, last),
                        },
                    };
                    let event = match next {
                        Some(Ok(event)) => event,
                        Some(Err(error)) => {
                            tracing::debug!(detail = %error.detail(), "the runner's stream broke");
                            stream_error = Some(error);
                            break;
                        }
                        None => break,
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
                    if let Some(terminal) = Terminal::from_event(&event) {
                        let terminal = terminal.unwrap_or_else(|error| {
                            tracing::error!(%error, "the runner's terminal event is unreadable");
                            Terminal::failed(
                                run,
                                format!("the runner's {} event is unreadable: {error}", event.kind),
                            )
                        });
                        return (ended(event.seq, terminal, true), last);
                    }
                    if event.kind == EventName::ThreadStarted {
                        record_codex_thread(&core.store, session, &event.data).await;
                    }
                    let seq = event.seq;
                    let pushed = tokio::select! {
                        pushed = tail.push_event_when_room(event) => pushed,
                        () = core.stopping.cancelled() => return (Followed::Stopping, last),
                    };
                    match pushed {
                        Ok(_) => last = seq,
                        Err(error) => {
                            // Cannot happen: the numbers were checked
                            // above, and only the terminal event closes
                            // the tail. Reconnecting re-reads after what
                            // the tail holds.
                            tracing::error!(?error, seq, "the live tail refused an event");
                            break;
                        }
                    }
                }
                if last != last_before {
                    continue;
                }
                match stream_error {
                    Some(error) => format!("the runner's event stream failed: {error}"),
                    None => "the runner keeps closing the run's event stream".to_owned(),
                }
            }
        };
        failures += 1;
        if failures >= RELAY_ATTEMPTS {
            tracing::warn!(%failure, failures, "giving up on the runner's stream");
            return (ended(last + 1, Terminal::failed(run, failure), false), last);
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
    }
}

/// The payload of `thread.started`.
#[derive(Deserialize)]
struct ThreadStarted {
    thread_id: String,
}

/// The session's conversation is this Codex thread from now on: a
/// restarted runner resumes it. A `thread.started` without a readable
/// `thread_id` is logged as an error: the session then cannot resume its
/// conversation after a restart of the runner.
async fn record_codex_thread(store: &Store, session: Uuid, thread_started: &Payload) {
    match serde_json::from_slice::<ThreadStarted>(thread_started.as_bytes()) {
        // Stored as text and sent back to the CLI to resume: a value
        // Postgres refuses (a NUL) would be retried for ever.
        Ok(ThreadStarted { thread_id }) if !plausible_thread_id(&thread_id) => tracing::error!(
            len = thread_id.len(),
            "thread.started names a thread id that is empty, over 256 bytes or holds a control \
             character: not recorded, so the session cannot resume its conversation after a \
             restart of the runner"
        ),
        Ok(ThreadStarted { thread_id }) => {
            // A deleted session makes this a no-op, not an error.
            retry_forever("record the Codex thread", || {
                store.set_codex_thread(session, &thread_id)
            })
            .await;
        }
        Err(error) => tracing::error!(
            %error,
            "thread.started has no readable thread_id: the session cannot resume its \
             conversation after a restart of the runner"
        ),
    }
}

/// A Codex thread id as the CLI makes them (a UUID): short, printable.
fn plausible_thread_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control)
}

/// What the writer needs besides the run.
struct Writer {
    store: Store,
    metrics: Arc<crate::metrics::Metrics>,
    max_batch: usize,
    batch_wait: Duration,
}

/// The writer: stores the tail's events after `stored` in batches of at most
/// `max_batch` (waiting up to `batch_wait` to fill one), each retried until
/// it is stored (or the run is found deleted), and releases them from the
/// tail; ends once `last` is known and stored.
async fn persist(
    writer: Writer,
    hub: Arc<RunLog>,
    run_id: Uuid,
    mut stored: u64,
    mut last: watch::Receiver<Option<u64>>,
) {
    let Writer {
        store,
        metrics,
        max_batch,
        batch_wait,
    } = writer;
    // The run was deleted (with its session): its events are no longer
    // stored, only released.
    let mut gone = false;
    loop {
        if let Some(last) = *last.borrow_and_update() {
            if stored >= last {
                return;
            }
        }
        let next = tokio::select! {
            next = hub.next_after(stored, max_batch) => next,
            changed = last.changed() => match changed {
                Ok(()) => continue,
                // The reader is gone without saying where it stopped (it
                // was cancelled): what is unstored stays on the runner.
                Err(_) => return,
            },
        };
        let taken = std::time::Instant::now();
        let mut batch = match next {
            Next::Events(batch) => batch,
            // Only stored events are released, so the writer is never
            // behind, and the tail closes only after the writer ends.
            Next::Behind { .. } | Next::Closed => return,
        };
        // A batch that is not full waits a moment for more, so a run that
        // prints steadily costs an insert per `batch_wait`, not per event;
        // subscribers have the events already. Not at the end: the run's
        // outcome waits for this write.
        let deadline = tokio::time::Instant::now() + batch_wait;
        while batch.len() < max_batch && last.borrow().is_none() {
            let newest = batch.last().map_or(stored, |e| e.seq);
            let more = tokio::select! {
                more = tokio::time::timeout_at(deadline, hub.next_after(newest, max_batch - batch.len())) => more,
                _ = last.changed() => break,
            };
            match more {
                Ok(Next::Events(more)) => batch.extend(more),
                _ => break,
            }
        }
        let Some(newest) = batch.last().map(|e| e.seq) else {
            continue;
        };
        if !gone {
            let kept = retry_forever("store events", || store.append_events(run_id, &batch)).await;
            if kept {
                metrics.events_persisted(batch.len(), Some(taken.elapsed()));
            }
            if !kept {
                tracing::info!("the run was deleted; its events are no longer stored");
                gone = true;
            }
        }
        stored = newest;
        hub.release_through(stored);
    }
}

#[cfg(test)]
mod tests {
    use super::plausible_thread_id;

    #[test]
    fn a_thread_id_postgres_or_the_cli_would_refuse_is_not_recorded() {
        assert!(plausible_thread_id("0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"));
        for bad in ["", "a\0b", "line\nbreak", &"x".repeat(257)] {
            assert!(!plausible_thread_id(bad), "{bad:?}");
        }
    }
}
