//! Live tails of active runs, and subscriptions that join them to what is
//! persisted.
//!
//! Architecture Invariant: a subscriber reads by sequence number from the
//! hub, and what the hub no longer holds (or never held) from Postgres: the
//! hub drops only events that are stored (see `engine::relay`), so it sees
//! every event exactly once whenever it connects, however far behind it
//! falls. One upstream stream per run feeds the hub; each event is
//! serialised once and its bytes shared by all subscribers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use event_log::{Next, RunLog};
use futures_util::Stream;
use runner_protocol::{Event, EventName, Terminal};
use service_kit::sse::CHUNK_BYTES;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::Store;

/// Most events in one page of a replay from Postgres.
const REPLAY_PAGE: i64 = 500;
/// Most bytes of event data in one page (or one larger event): what a
/// subscriber that falls behind, then stops reading, may hold. Events are up
/// to the runner's `RUNNER_MAX_EVENT_BYTES` (256 KiB) each, so a count alone
/// would let a page of 500 of them hold 128 MiB.
const REPLAY_BYTES: i64 = 256 * 1024;
/// How often a subscriber of a run that no process here drives looks again
/// (a tail opened here wakes it at once).
const POLL_INTERVAL: Duration = Duration::from_millis(250);

pub struct Hubs {
    logs: Mutex<HashMap<Uuid, Arc<RunLog>>>,
    /// Woken whenever a live tail is opened: a subscriber that came before
    /// its run started waits for it here instead of polling.
    opened: Notify,
    max_events: usize,
    max_bytes: usize,
}

impl Hubs {
    /// Each live tail holds at most `max_events` events and `max_bytes` of
    /// their data; stored events make room for new ones.
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            logs: Mutex::new(HashMap::new()),
            opened: Notify::new(),
            max_events,
            max_bytes,
        }
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<RunLog>>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run's live tail, created to start at `first_seq` if missing.
    pub(crate) fn open(&self, run_id: Uuid, first_seq: u64) -> Arc<RunLog> {
        let mut created = false;
        let hub = self
            .logs()
            .entry(run_id)
            .or_insert_with(|| {
                created = true;
                Arc::new(
                    RunLog::starting_at(first_seq, self.max_events).with_max_bytes(self.max_bytes),
                )
            })
            .clone();
        if created {
            self.opened.notify_waiters();
        }
        hub
    }

    pub(crate) fn get(&self, run_id: Uuid) -> Option<Arc<RunLog>> {
        self.logs().get(&run_id).cloned()
    }

    /// Forgets a finished run's tail; called after its events are persisted.
    pub(crate) fn remove(&self, run_id: Uuid) {
        self.logs().remove(&run_id);
    }
}

/// Every event of the run after `after` as SSE frames, in order, each once:
/// from the live tail while there is one, from Postgres for what it does not
/// hold; the stream ends after the terminal event. Ends early if Postgres
/// fails (the client reconnects with `Last-Event-ID`).
pub(crate) fn subscribe(
    store: Store,
    hubs: Arc<Hubs>,
    run_id: Uuid,
    after: u64,
) -> impl Stream<Item = Bytes> + Send {
    async_stream::stream! {
        let mut after = after;
        loop {
            // Registered before looking, so a tail opened between the look
            // and the wait still wakes this subscriber.
            let opened = hubs.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if let Some(hub) = hubs.get(run_id) {
                loop {
                    match hub.frames_after(after, CHUNK_BYTES).await {
                        Next::Events(frames) => {
                            after = frames.last_seq;
                            yield frames.bytes;
                        }
                        // Stored, and no longer (or never) in the hub.
                        Next::Behind { first_held } => {
                            // Boxed, as every database call here: a suspended
                            // subscriber then holds a small state, not room
                            // for the largest query future.
                            let page = match Box::pin(store.events(run_id, seq(after), seq(first_held), REPLAY_PAGE, REPLAY_BYTES, false)).await {
                                Ok(page) => page,
                                Err(error) => {
                                    yield broken(run_id, &error);
                                    return;
                                }
                            };
                            let Some(last) = page.last().map(|e| e.seq) else {
                                // Not stored after all: the run was deleted.
                                return;
                            };
                            after = last;
                            for chunk in frames_of(page) {
                                yield chunk;
                            }
                        }
                        Next::Closed => return,
                    }
                }
            }
            // A replay from Postgres is compact: the deltas of items the run
            // completed are left out (their ids are skipped; what is sent
            // stays in order, once each). A live tail (above) sends every one.
            let mut page = match Box::pin(store.events(run_id, seq(after), i64::MAX, REPLAY_PAGE, REPLAY_BYTES, true)).await {
                Ok(page) => page,
                Err(error) => {
                    yield broken(run_id, &error);
                    return;
                }
            };
            // Up to and with the terminal event, if the page has it.
            let end = page
                .iter()
                .position(|e| Terminal::is_terminal_kind(e.kind.as_str()))
                .map(|i| i + 1);
            if let Some(end) = end {
                page.truncate(end);
            }
            // A page cut by its count or its bytes may have more after it:
            // only an empty one says this subscriber has caught up.
            let more = !page.is_empty();
            if let Some(last) = page.last() {
                after = last.seq;
                for chunk in frames_of(page) {
                    yield chunk;
                }
            }
            if end.is_some() {
                return;
            }
            if more {
                continue;
            }
            // Caught up with no terminal event and no live tail here: the
            // run is driven elsewhere or was deleted.
            match Box::pin(store.run(run_id)).await {
                Ok(Some(run)) if run.status.is_active() => {
                    // Not re-attached yet after a restart, or driven by
                    // another process (whose events only Postgres shows).
                    tokio::select! {
                        () = &mut opened => {}
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
                Ok(_) => return,
                Err(error) => {
                    yield broken(run_id, &error);
                    return;
                }
            }
        }
    }
}

/// The frame that ends a stream Postgres failed: a `stream.error` event
/// without an id (the client's `Last-Event-ID` stays at what it has, and it
/// reconnects from there), so a client sees the break instead of a stream
/// that just stops. What failed goes to the log, not to the client.
fn broken(run_id: Uuid, error: &crate::store::StoreError) -> Bytes {
    tracing::error!(%run_id, error.cause_chain = ?error, "a run's stream cannot read its events");
    Bytes::from_static(
        b"event: stream.error\ndata: {\"type\":\"stream.error\",\"message\":\"the server could not read this run's events; reconnect to resume\"}\n\n",
    )
}

/// Stored events as SSE frames, in buffers of at most `CHUNK_BYTES` (or
/// one larger frame), like the live tail's. Events stored before the runner
/// named Codex's error `codex.error` keep the name EventSource reserves for
/// a dropped connection: they go out as `codex.error` too.
///
/// The page is consumed as its chunks are taken: a subscriber that stops
/// reading holds what is left of one page (at most about
/// [`REPLAY_BYTES`]), never a second copy of it.
fn frames_of(events: Vec<Event>) -> impl Iterator<Item = Bytes> + Send {
    let mut events = events.into_iter();
    let mut carried: Option<Bytes> = None;
    std::iter::from_fn(move || {
        let mut buffer = Vec::new();
        loop {
            let Some(frame) = carried
                .take()
                .or_else(|| events.next().map(|e| frame_of(&e)))
            else {
                break;
            };
            if buffer.is_empty() && frame.len() >= CHUNK_BYTES {
                // A large frame goes alone, without a copy.
                return Some(frame);
            }
            if buffer.len() + frame.len() > CHUNK_BYTES {
                carried = Some(frame);
                break;
            }
            buffer.extend_from_slice(&frame);
        }
        (!buffer.is_empty()).then(|| Bytes::from(buffer))
    })
}

fn frame_of(event: &Event) -> Bytes {
    // `error` is the CLI's own name (`json_type`), stored by runners from
    // before the SDK renamed it: on the stream it is `codex.error`.
    if event.kind == EventName::CodexError.json_type() {
        Event::new(event.seq, EventName::CodexError, event.data.clone()).sse_frame()
    } else {
        event.sse_frame()
    }
}

fn seq(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_error_event_goes_out_as_codex_error() {
        let event = |kind: &str| Event::new(4, kind, r#"{"type":"error","message":"boom"}"#);

        let legacy: Vec<Bytes> = frames_of(vec![event("error")]).collect();
        let current: Vec<Bytes> = frames_of(vec![event("codex.error")]).collect();

        assert_eq!(
            &legacy[0][..],
            b"id: 4\nevent: codex.error\ndata: {\"type\":\"error\",\"message\":\"boom\"}\n\n"
        );
        assert_eq!(legacy, current);
    }

    #[test]
    fn a_page_of_stored_events_goes_out_in_bounded_buffers() {
        let events: Vec<Event> = (1..=100)
            .map(|seq| Event::new(seq, "item.completed", "x".repeat(200)))
            .collect();

        let expected: Vec<u8> = events.iter().flat_map(|e| e.sse_frame().to_vec()).collect();
        let chunks: Vec<Bytes> = frames_of(events).collect();

        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_BYTES));
        let all: Vec<u8> = chunks.concat();
        assert_eq!(all, expected, "every frame once, in order");
    }

    #[test]
    fn a_frame_larger_than_a_chunk_goes_alone_between_small_ones() {
        let sizes = [10, CHUNK_BYTES * 3, 10, 10];
        let events: Vec<Event> = sizes
            .iter()
            .zip(1..)
            .map(|(size, seq)| Event::new(seq, "item.completed", "x".repeat(*size)))
            .collect();
        let expected: Vec<u8> = events.iter().flat_map(|e| e.sse_frame().to_vec()).collect();

        let chunks: Vec<Bytes> = frames_of(events).collect();

        let lens: Vec<usize> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(lens.len(), 3, "{lens:?}");
        assert!(
            lens[1] > CHUNK_BYTES && lens[0] < 100 && lens[2] < 200,
            "{lens:?}"
        );
        assert_eq!(chunks.concat(), expected);
    }
}
