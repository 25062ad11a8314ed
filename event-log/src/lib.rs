//! The event log of one run: numbered, append-only, bounded, closed by a
//! terminal event, read by any number of subscribers. The runner keeps one per
//! run; the backend keeps one per active run as the live tail in front of
//! what it persisted.
//!
//! The bound is a count of events and, when set, a total of their `data`
//! bytes; the terminal event fits past either.
//!
//! Architecture Invariant: a subscriber reads by sequence number, never from
//! a broadcast channel, so it cannot miss an event pushed while it was
//! catching up, and it cannot lag out: it just reads further along the log.
//!
//! The events are `runner_protocol::Event`s: a reader gets clones that share
//! the bytes of the one serialisation.

use std::sync::Mutex;

use runner_protocol::{Event, EventKind, Payload};
use tokio::sync::Notify;

#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The event's sequence number is not the next one.
    OutOfOrder { expected: u64, got: u64 },
    /// The run reached its event limit; only the terminal event fits now.
    Full,
    /// The event would take the run past its byte limit; only the terminal
    /// event fits now.
    TooManyBytes,
    /// The run already ended.
    Closed,
}

#[derive(Debug)]
pub struct RunLog {
    inner: Mutex<Inner>,
    notify: Notify,
    max_events: usize,
    max_bytes: usize,
    first_seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<Event>,
    /// The `data` bytes of every event held.
    bytes: usize,
    closed: bool,
}

impl RunLog {
    /// A log whose first event is number 1. `max_events` counts the
    /// terminal event, which always fits.
    pub fn new(max_events: usize) -> Self {
        Self::starting_at(1, max_events)
    }

    /// A log whose first event will be `first_seq`: the events before it are
    /// kept elsewhere (the backend's database after a restart).
    pub fn starting_at(first_seq: u64, max_events: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            max_events: max_events.max(1),
            max_bytes: usize::MAX,
            first_seq: first_seq.max(1),
        }
    }

    /// Bounds the total `data` bytes of the events too (the terminal event
    /// still fits past it).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The number of the first event this log holds.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The number of the last event, or `first_seq - 1` when empty.
    pub fn last_seq(&self) -> u64 {
        self.first_seq - 1 + self.len() as u64
    }

    /// Appends an event of the run, numbered here.
    pub fn push(
        &self,
        kind: impl Into<EventKind>,
        data: impl Into<Payload>,
    ) -> Result<u64, PushError> {
        self.append(None, kind.into(), data.into(), false)
    }

    /// Appends the terminal event, numbered here, and closes the log.
    pub fn close_with(
        &self,
        kind: impl Into<EventKind>,
        data: impl Into<Payload>,
    ) -> Result<u64, PushError> {
        self.append(None, kind.into(), data.into(), true)
    }

    /// Appends an event numbered elsewhere; it must be the next number.
    /// `terminal` closes the log.
    pub fn push_event(&self, event: Event, terminal: bool) -> Result<u64, PushError> {
        self.append(Some(event.seq), event.kind, event.data, terminal)
    }

    fn append(
        &self,
        expected_seq: Option<u64>,
        kind: EventKind,
        data: Payload,
        terminal: bool,
    ) -> Result<u64, PushError> {
        let seq = {
            let mut inner = self.inner.lock().map_err(|_| PushError::Closed)?;
            if inner.closed {
                return Err(PushError::Closed);
            }
            if !terminal && inner.events.len() + 1 >= self.max_events {
                return Err(PushError::Full);
            }
            let bytes = inner.bytes.saturating_add(data.len());
            if !terminal && bytes > self.max_bytes {
                return Err(PushError::TooManyBytes);
            }
            let seq = self.first_seq + inner.events.len() as u64;
            if let Some(got) = expected_seq {
                if got != seq {
                    return Err(PushError::OutOfOrder { expected: seq, got });
                }
            }
            inner.bytes = bytes;
            inner.events.push(Event { seq, kind, data });
            inner.closed = terminal;
            seq
        };
        self.notify.notify_waiters();
        Ok(seq)
    }

    /// Events with a sequence number above `after`, waiting for the next one
    /// when there are none yet. `None` once the log is closed and read.
    pub async fn next_after(&self, after: u64) -> Option<Vec<Event>> {
        loop {
            // Registered before looking, so a push between the look and the
            // wait still wakes us.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.inner.lock().ok()?;
                let start =
                    usize::try_from(after.saturating_sub(self.first_seq - 1)).unwrap_or(usize::MAX);
                if start < inner.events.len() {
                    return Some(inner.events[start..].to_vec());
                }
                if inner.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.events.len()).unwrap_or(0)
    }

    /// The `data` bytes of every event held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().map(|i| i.closed).unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn subscribers_read_from_any_point_and_end_after_close() {
        let log = RunLog::new(10);
        log.push("a", "1").unwrap();
        log.push("b", "2").unwrap();
        let batch = log.next_after(1).await.unwrap();
        assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
        log.close_with("run.completed", "3").unwrap();
        let batch = log.next_after(0).await.unwrap();
        assert_eq!(
            batch.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(log.next_after(3).await, None);
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_on_push() {
        let log = Arc::new(RunLog::new(10));
        let reader = tokio::spawn({
            let log = log.clone();
            async move { log.next_after(0).await }
        });
        tokio::task::yield_now().await;
        log.push("a", "1").unwrap();
        let batch = reader.await.unwrap().unwrap();
        assert_eq!(batch[0].kind, "a");
    }

    #[test]
    fn the_limit_leaves_room_for_the_terminal_event() {
        let log = RunLog::new(3);
        log.push("a", "1").unwrap();
        log.push("a", "2").unwrap();
        assert_eq!(log.push("a", "3"), Err(PushError::Full));
        assert_eq!(log.close_with("run.failed", "x"), Ok(3));
        assert_eq!(log.push("a", "4"), Err(PushError::Closed));
    }

    #[test]
    fn the_byte_limit_leaves_room_for_the_terminal_event() {
        let log = RunLog::new(100).with_max_bytes(10);
        log.push("a", "12345").unwrap();
        log.push("a", "12345").unwrap();
        assert_eq!(log.push("a", "6"), Err(PushError::TooManyBytes));
        assert_eq!(log.bytes(), 10);
        assert_eq!(log.close_with("run.failed", "terminal"), Ok(3));
        assert_eq!(log.bytes(), 18);
    }

    #[tokio::test]
    async fn a_log_can_start_past_one() {
        let log = RunLog::starting_at(5, 10);
        assert_eq!(log.last_seq(), 4);
        assert_eq!(
            log.push_event(Event::new(6, "a", "x"), false),
            Err(PushError::OutOfOrder {
                expected: 5,
                got: 6
            })
        );
        log.push_event(Event::new(5, "a", "x"), false).unwrap();
        log.close_with("run.completed", "y").unwrap();
        let seqs: Vec<u64> = log
            .next_after(0)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![5, 6]);
        let seqs: Vec<u64> = log
            .next_after(5)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![6]);
        assert_eq!(log.next_after(6).await, None);
    }

    #[test]
    fn unsafe_event_names_are_replaced() {
        let log = RunLog::new(5);
        log.push("evil\ndata: x", "1").unwrap();
        log.push("item.completed", "2").unwrap();
        assert!(!log.is_closed());
        let inner = log.inner.lock().unwrap();
        assert_eq!(inner.events[0].kind, "unknown");
        assert_eq!(inner.events[1].kind, "item.completed");
    }
}
