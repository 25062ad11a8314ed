//! The event streams each user holds open, run streams and session-change
//! streams together, and the most one user may hold
//! (`BACKEND_USER_MAX_STREAMS`).
//!
//! A stream takes a [`StreamSlot`] before any work of its own (a query, a
//! subscription) and its body owns the slot: when the stream ends, or its
//! client is gone, hyper drops the body, the body drops the stream and the
//! stream its slot. hyper learns that a client is gone when a write to it
//! fails, not when the client closes the connection of an idle stream: a
//! client that went away holds its slot until the next keep-alive comment
//! or the one after (`BACKEND_KEEP_ALIVE_SECS`), when its socket has
//! answered the first with a reset.
//!
//! Admins are counted as everyone else. With `AUTH_MODE=none` there are no
//! users, and every stream counts in one bucket: the cap is then the
//! server's.
//!
//! Memory: one entry per user with a stream open, removed when their last
//! stream ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use uuid::Uuid;

/// Whose streams count together: a user, or (`None`) everyone when there
/// is no authentication.
pub type Holder = Option<Uuid>;

pub struct OpenStreams {
    /// `0`: no limit (the streams are counted all the same).
    max: usize,
    /// Held only to count, never across an await.
    held: Mutex<HashMap<Holder, usize>>,
}

/// `holder` holds as many streams as they may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyStreams {
    pub max: usize,
}

impl OpenStreams {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// One more stream of `holder`, counted until the slot is dropped.
    pub(crate) fn take(self: &Arc<Self>, holder: Holder) -> Result<StreamSlot, TooManyStreams> {
        let mut held = self.lock();
        let count = held.entry(holder).or_insert(0);
        if self.max > 0 && *count >= self.max {
            // The entry exists: `count` is at least `max`, so not zero.
            return Err(TooManyStreams { max: self.max });
        }
        *count += 1;
        Ok(StreamSlot {
            streams: self.clone(),
            holder,
        })
    }

    /// The streams `holder` holds now.
    #[cfg(test)]
    pub(crate) fn held_by(&self, holder: Holder) -> usize {
        self.lock().get(&holder).copied().unwrap_or(0)
    }

    /// How many holders hold a stream now.
    #[cfg(test)]
    pub(crate) fn holders(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Holder, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, holder: Holder) {
        let left = {
            let mut held = self.lock();
            match held.get_mut(&holder) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    *count
                }
                _ => {
                    held.remove(&holder);
                    0
                }
            }
        };
        tracing::debug!(user_id = ?holder, left, "an event stream ended");
    }
}

/// One open stream of a holder; dropping it frees the slot.
pub struct StreamSlot {
    streams: Arc<OpenStreams>,
    holder: Holder,
}

impl StreamSlot {
    /// `stream`, holding this slot until it is dropped.
    pub(crate) fn hold<S>(self, stream: S) -> BoxStream<'static, S::Item>
    where
        S: Stream + Send + 'static,
    {
        // The closure owns the slot, so the stream does.
        stream
            .inspect(move |_| {
                let _held = &self;
            })
            .boxed()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.streams.release(self.holder);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_gets_max_slots_and_another_after_dropping_one() {
        let streams = OpenStreams::new(2);
        let (alice, bob) = (Some(Uuid::new_v4()), Some(Uuid::new_v4()));
        let first = streams.take(alice).unwrap();
        let _second = streams.take(alice).unwrap();
        assert_eq!(streams.take(alice).err(), Some(TooManyStreams { max: 2 }));
        // Others are not affected, the anonymous bucket neither.
        let _bobs = streams.take(bob).unwrap();
        let _anonymous = streams.take(None).unwrap();
        drop(first);
        assert_eq!(streams.held_by(alice), 1);
        let _third = streams.take(alice).unwrap();
        assert_eq!(streams.held_by(alice), 2);
    }

    #[test]
    fn a_holder_without_streams_leaves_no_entry() {
        let streams = OpenStreams::new(1);
        let alice = Some(Uuid::new_v4());
        let slot = streams.take(alice).unwrap();
        // A refusal leaves the count as it was.
        assert!(streams.take(alice).is_err());
        assert_eq!(streams.held_by(alice), 1);
        drop(slot);
        assert_eq!(streams.holders(), 0);
    }

    #[test]
    fn zero_is_no_limit_and_still_counts() {
        let streams = OpenStreams::new(0);
        let slots: Vec<_> = (0..1000).map(|_| streams.take(None).unwrap()).collect();
        assert_eq!(streams.held_by(None), 1000);
        drop(slots);
        assert_eq!(streams.holders(), 0);
    }

    #[tokio::test]
    async fn a_dropped_stream_frees_its_slot() {
        let streams = OpenStreams::new(1);
        let held = streams
            .take(None)
            .unwrap()
            .hold(futures_util::stream::pending::<()>());
        assert!(streams.take(None).is_err());
        drop(held);
        assert!(streams.take(None).is_ok());
    }
}
