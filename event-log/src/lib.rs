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

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
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

/// What a reader finds after a given event.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T = Vec<Event>> {
    /// The next events, in order (at most the number asked for).
    Events(T),
    /// The events right after the one asked for are no longer (or never
    /// were) held here: read them elsewhere up to `first_held` (excluded),
    /// then ask again.
    Behind { first_held: u64 },
    /// The log is closed and every event was read.
    Closed,
}

/// The SSE frames of consecutive events, in one buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frames {
    /// The number of the last event in `bytes`.
    pub last_seq: u64,
    pub bytes: Bytes,
}

#[derive(Debug)]
pub struct RunLog {
    inner: Mutex<Inner>,
    /// Woken on every push (readers wait on it).
    pushed: Notify,
    /// Woken when events are released (a full log's writer waits on it).
    released: Notify,
    max_events: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct Inner {
    /// The events held, oldest first.
    events: VecDeque<Event>,
    /// Their SSE frames, made once at push (`Event::framed`: each event's
    /// payload is a slice of its frame).
    frames: VecDeque<Bytes>,
    /// The number of `events[0]` (or of the next event, when empty).
    first: u64,
    /// The `data` bytes of every event held.
    bytes: usize,
    closed: bool,
    /// Events up to this number may be dropped to make room: they are kept
    /// elsewhere (the backend's database). The runner never releases any.
    released: u64,
}

impl Inner {
    fn next_seq(&self) -> u64 {
        self.first + self.events.len() as u64
    }

    /// Drops released events from the front until `extra` more events of
    /// `extra_bytes` fit, or nothing more may be dropped.
    fn make_room(&mut self, max_events: usize, max_bytes: usize, extra_bytes: usize) {
        while let Some(oldest) = self.events.front() {
            let fits = self.events.len() + 1 < max_events
                && self.bytes.saturating_add(extra_bytes) <= max_bytes;
            if fits || oldest.seq > self.released {
                break;
            }
            self.bytes -= oldest.data.len();
            self.events.pop_front();
            self.frames.pop_front();
            self.first += 1;
        }
    }
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
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                frames: VecDeque::new(),
                first: first_seq.max(1),
                bytes: 0,
                closed: false,
                released: 0,
            }),
            pushed: Notify::new(),
            released: Notify::new(),
            max_events: max_events.max(1),
            max_bytes: usize::MAX,
        }
    }

    /// Bounds the total `data` bytes of the events too (the terminal event
    /// still fits past it).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing here panics while holding the lock; if something did, the
        // data is still consistent (every update is a single step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number of the first event this log holds (of the next one, when
    /// it holds none).
    pub fn first_seq(&self) -> u64 {
        self.inner().first
    }

    /// The number of the last event, or `first_seq - 1` when empty.
    pub fn last_seq(&self) -> u64 {
        self.inner().next_seq() - 1
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

    /// `push_event`, waiting while the log is full until released events
    /// make room (see [`RunLog::release_through`]).
    pub async fn push_event_when_room(&self, event: Event) -> Result<u64, PushError> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.push_event(event.clone(), false) {
                Err(PushError::Full | PushError::TooManyBytes) => released.await,
                other => return other,
            }
        }
    }

    /// Events up to `seq` are kept elsewhere from now on: they may be
    /// dropped when the log needs room, and readers behind them are told to
    /// read them elsewhere ([`Next::Behind`]).
    pub fn release_through(&self, seq: u64) {
        {
            let mut inner = self.inner();
            if seq <= inner.released {
                return;
            }
            inner.released = seq;
        }
        self.released.notify_waiters();
    }

    fn append(
        &self,
        expected_seq: Option<u64>,
        kind: EventKind,
        data: Payload,
        terminal: bool,
    ) -> Result<u64, PushError> {
        let seq = {
            let mut inner = self.inner();
            if inner.closed {
                return Err(PushError::Closed);
            }
            let seq = inner.next_seq();
            if let Some(got) = expected_seq {
                if got != seq {
                    return Err(PushError::OutOfOrder { expected: seq, got });
                }
            }
            if !terminal {
                inner.make_room(self.max_events, self.max_bytes, data.len());
                if inner.events.len() + 1 >= self.max_events {
                    return Err(PushError::Full);
                }
                // An event larger than the whole bound still fits into an
                // empty log: refusing it would stop its run for good.
                if inner.bytes.saturating_add(data.len()) > self.max_bytes
                    && !inner.events.is_empty()
                {
                    return Err(PushError::TooManyBytes);
                }
            }
            inner.bytes = inner.bytes.saturating_add(data.len());
            let (frame, event) = Event { seq, kind, data }.framed();
            inner.events.push_back(event);
            inner.frames.push_back(frame);
            inner.closed = terminal;
            seq
        };
        self.pushed.notify_waiters();
        Ok(seq)
    }

    /// At most `max` events with a sequence number above `after`, waiting
    /// for the next one when there are none yet.
    pub async fn next_after(&self, after: u64, max: usize) -> Next {
        self.wait_after(after, max, |inner, range| {
            inner.events.range(range).cloned().collect()
        })
        .await
    }

    /// `next_after` as SSE: the frames of the next events, in one buffer of
    /// at most `max_bytes` (or the one next frame, if it is larger). They are
    /// copied together only when there are several, i.e. when the reader is
    /// behind: one write then carries them all.
    pub async fn frames_after(&self, after: u64, max_bytes: usize) -> Next<Frames> {
        self.wait_after(after, usize::MAX, |inner, range| {
            let mut end = range.start + 1;
            let mut total = inner.frames[range.start].len();
            while end < range.end && total + inner.frames[end].len() <= max_bytes {
                total += inner.frames[end].len();
                end += 1;
            }
            let last_seq = inner.first + end as u64 - 1;
            let bytes = if end == range.start + 1 {
                inner.frames[range.start].clone()
            } else {
                let mut buffer = Vec::with_capacity(total);
                for frame in inner.frames.range(range.start..end) {
                    buffer.extend_from_slice(frame);
                }
                Bytes::from(buffer)
            };
            Frames { last_seq, bytes }
        })
        .await
    }

    async fn wait_after<T>(
        &self,
        after: u64,
        max: usize,
        take: impl Fn(&Inner, std::ops::Range<usize>) -> T,
    ) -> Next<T> {
        loop {
            // Registered before looking, so a push between the look and the
            // wait still wakes us.
            let notified = self.pushed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.inner();
                if after + 1 < inner.first {
                    return Next::Behind {
                        first_held: inner.first,
                    };
                }
                let start = usize::try_from(after + 1 - inner.first).unwrap_or(usize::MAX);
                if start < inner.events.len() {
                    let end = start.saturating_add(max.max(1)).min(inner.events.len());
                    return Next::Events(take(&inner, start..end));
                }
                if inner.closed {
                    return Next::Closed;
                }
            }
            notified.await;
        }
    }

    /// The number of events held.
    pub fn len(&self) -> usize {
        self.inner().events.len()
    }

    /// The `data` bytes of every event held.
    pub fn bytes(&self) -> usize {
        self.inner().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_closed(&self) -> bool {
        self.inner().closed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The numbers of the events read; a read that found no events
    /// (`Behind`, `Closed`) fails the test, naming what it found.
    fn seqs(next: Next) -> Vec<u64> {
        match next {
            Next::Events(events) => events.iter().map(|e| e.seq).collect(),
            other => panic!("expected events, the log said {other:?}"),
        }
    }

    #[test]
    fn released_events_make_room_and_readers_behind_them_are_told() {
        let log = RunLog::new(4);
        for n in 1..=3 {
            log.push("a", n.to_string()).unwrap();
        }
        assert_eq!(log.push("a", "4"), Err(PushError::Full));
        log.release_through(2);
        assert_eq!(log.push("a", "4"), Ok(4));
        assert_eq!(log.first_seq(), 2);
        assert_eq!(log.len(), 3);
        assert_eq!(log.push("a", "5"), Ok(5));
        // Only released events go: 3 is not, so the log is full again.
        assert_eq!(log.first_seq(), 3);
        assert_eq!(log.push("a", "6"), Err(PushError::Full));
        assert_eq!(
            futures_now(log.next_after(1, 10)),
            Next::Behind { first_held: 3 }
        );
        assert_eq!(seqs(futures_now(log.next_after(2, 10))), vec![3, 4, 5]);
        // The terminal event always fits.
        assert_eq!(log.close_with("run.completed", "x"), Ok(6));
    }

    #[tokio::test]
    async fn frames_come_one_by_one_or_together_when_behind() {
        let log = RunLog::new(10);
        log.push("a", "1").unwrap();
        log.push("b", "2").unwrap();
        log.push("c", "3").unwrap();
        let one = log.frames_after(2, 1000).await;
        assert_eq!(
            one,
            Next::Events(Frames {
                last_seq: 3,
                bytes: Bytes::from_static(b"id: 3\nevent: c\ndata: 3\n\n")
            })
        );
        // Two frames of 24 bytes fit in 50, three do not.
        let Next::Events(two) = log.frames_after(0, 50).await else {
            panic!("no frames")
        };
        assert_eq!(two.last_seq, 2);
        assert_eq!(
            &two.bytes[..],
            b"id: 1\nevent: a\ndata: 1\n\nid: 2\nevent: b\ndata: 2\n\n"
        );
        log.release_through(1);
        log.close_with("run.completed", "4").unwrap();
        let Next::Events(big) = log.frames_after(0, 1).await else {
            panic!("no frames")
        };
        assert_eq!(big.last_seq, 1, "a frame larger than the bound comes alone");
        assert_eq!(log.frames_after(4, 1000).await, Next::Closed);
    }

    #[test]
    fn released_bytes_make_room() {
        let log = RunLog::new(100).with_max_bytes(10);
        log.push("a", "12345").unwrap();
        log.push("a", "12345").unwrap();
        assert_eq!(log.push("a", "6"), Err(PushError::TooManyBytes));
        log.release_through(1);
        assert_eq!(log.push("a", "6"), Ok(3));
        assert_eq!(log.bytes(), 6);
    }

    #[test]
    fn an_event_larger_than_the_byte_bound_fits_an_empty_log() {
        let log = RunLog::new(100).with_max_bytes(4);
        assert_eq!(log.push("a", "123456"), Ok(1));
        assert_eq!(log.push("a", "1"), Err(PushError::TooManyBytes));
        log.release_through(1);
        assert_eq!(log.push("a", "1"), Ok(2));
    }

    #[tokio::test]
    async fn a_full_log_takes_the_next_event_once_room_is_released() {
        let log = Arc::new(RunLog::new(3));
        log.push("a", "1").unwrap();
        log.push("a", "2").unwrap();
        let writer = tokio::spawn({
            let log = log.clone();
            async move { log.push_event_when_room(Event::new(3, "a", "3")).await }
        });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        log.release_through(1);
        assert_eq!(writer.await.unwrap(), Ok(3));
        assert_eq!(seqs(log.next_after(1, 10).await), vec![2, 3]);
    }

    /// The value of a future that is ready at once.
    fn futures_now<F: std::future::Future>(future: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(future);
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the future is not ready"),
        }
    }

    #[tokio::test]
    async fn subscribers_read_from_any_point_and_end_after_close() {
        let log = RunLog::new(10);
        log.push("a", "1").unwrap();
        log.push("b", "2").unwrap();
        assert_eq!(seqs(log.next_after(1, 10).await), vec![2]);
        log.close_with("run.completed", "3").unwrap();
        assert_eq!(seqs(log.next_after(0, 10).await), vec![1, 2, 3]);
        assert_eq!(seqs(log.next_after(0, 2).await), vec![1, 2]);
        assert_eq!(log.next_after(3, 10).await, Next::Closed);
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_on_push() {
        let log = Arc::new(RunLog::new(10));
        let reader = tokio::spawn({
            let log = log.clone();
            async move { log.next_after(0, 10).await }
        });
        tokio::task::yield_now().await;
        log.push("a", "1").unwrap();
        let Next::Events(batch) = reader.await.unwrap() else {
            panic!("no events")
        };
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
        assert_eq!(log.next_after(0, 10).await, Next::Behind { first_held: 5 });
        assert_eq!(log.next_after(3, 10).await, Next::Behind { first_held: 5 });
        assert_eq!(seqs(log.next_after(4, 10).await), vec![5, 6]);
        assert_eq!(seqs(log.next_after(5, 10).await), vec![6]);
        assert_eq!(log.next_after(6, 10).await, Next::Closed);
    }

    #[test]
    fn unsafe_event_names_are_replaced() {
        let log = RunLog::new(5);
        log.push("evil\ndata: x", "1").unwrap();
        log.push("item.completed", "2").unwrap();
        assert!(!log.is_closed());
        let inner = log.inner();
        assert_eq!(inner.events[0].kind, "unknown");
        assert_eq!(inner.events[1].kind, "item.completed");
    }
}
