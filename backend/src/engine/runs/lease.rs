//! Each session's workspace lease: one `tokio` mutex per session, made
//! when someone asks for it and forgotten when nobody holds or waits for
//! it. A run holds its session's lease from before it starts until its end
//! is recorded; a commit or push holds it for its length, or is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, Weak};

use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use crate::engine::core::lock;

/// A session's workspace lease, held.
pub(in crate::engine) type Lease = OwnedMutexGuard<()>;

#[derive(Default)]
pub(super) struct Leases {
    /// Held only to look up or add an entry.
    by_session: StdMutex<HashMap<Uuid, Weak<Mutex<()>>>>,
}

impl Leases {
    /// The session's lease, to take.
    pub(super) fn of(&self, session: Uuid) -> Arc<Mutex<()>> {
        let mut leases = lock(&self.by_session);
        if let Some(lease) = leases.get(&session).and_then(Weak::upgrade) {
            return lease;
        }
        // Entries nobody holds go as new ones come: the map is as large as
        // the sessions at work.
        leases.retain(|_, lease| lease.strong_count() > 0);
        let lease = Arc::new(Mutex::new(()));
        leases.insert(session, Arc::downgrade(&lease));
        lease
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.by_session).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_lease_refuses_others_until_it_is_dropped() {
        let leases = Leases::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let held = leases.of(a).try_lock_owned().unwrap();
        assert!(leases.of(a).try_lock_owned().is_err(), "taken twice");
        let other = leases.of(b).try_lock_owned();
        assert!(other.is_ok(), "another session's lease is its own");
        let waiter = {
            let lease = leases.of(a);
            tokio::spawn(async move { drop(lease.lock_owned().await) })
        };
        drop(held);
        waiter.await.unwrap();
        assert!(leases.of(a).try_lock_owned().is_ok());
    }

    #[test]
    fn leases_nobody_holds_are_forgotten() {
        let leases = Leases::default();
        for _ in 0..100 {
            drop(leases.of(Uuid::new_v4()).try_lock_owned().unwrap());
        }
        let kept = leases.of(Uuid::new_v4()).try_lock_owned().unwrap();
        assert_eq!(leases.len(), 1, "only the one held is kept");
        drop(kept);
    }
}
