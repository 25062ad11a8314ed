//! Which sessions changed, as Postgres announces them: the feed behind
//! `GET /api/sessions/events`.
//!
//! A trigger (`migrations/V3__session_changes.sql`) notifies the
//! `session_changes` channel with the id of every session row inserted,
//! updated or deleted, by any process. One connection of the backend
//! listens and fans the ids out on a bounded broadcast channel; a subscriber
//! that falls behind, or a listener that lost its connection, gets
//! [`Change::Resync`] and starts again from a full snapshot, so a missed
//! notification can delay a change but never lose it.
//!
//! The same connection listens on `credentials_revoked`
//! (`migrations/V5__users_and_tokens.sql`): a revoked token or a signed-out
//! browser, by id, so that the streams it opened end at once.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Changes a subscriber may be behind before it is told to resync.
const CAPACITY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This session was created, changed or deleted.
    Session(Uuid),
    /// This API token was revoked, or this browser signed out.
    Revoked(Uuid),
    /// Changes may have been missed: read everything again.
    Resync,
}

#[derive(Debug, Clone)]
pub struct SessionChanges {
    sender: broadcast::Sender<Change>,
}

impl SessionChanges {
    /// Starts listening on `database_url` on a task of `tasks`, until
    /// `stopping` is cancelled.
    pub fn listen(database_url: String, tasks: &TaskTracker, stopping: &CancellationToken) -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        let feed = sender.clone();
        let stopping = stopping.clone();
        tasks.spawn(async move {
            let mut pause = Duration::from_millis(100);
            loop {
                let listened = tokio::select! {
                    listened = listen_once(&database_url, &feed) => listened,
                    () = stopping.cancelled() => return,
                };
                match listened {
                    Ok(()) => pause = Duration::from_millis(100),
                    Err(error) => {
                        tracing::warn!(%error, "the session-change listener lost Postgres; retrying");
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
                // Whatever happened while nobody listened is read again.
                // No subscriber is no error: there is nobody to tell.
                let _nobody = feed.send(Change::Resync);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stopping.cancelled() => return,
                }
            }
        });
        Self { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }
}

/// Listens on one connection until it ends.
async fn listen_once(
    database_url: &str,
    feed: &broadcast::Sender<Change>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(database_url, NoTls).await?;
    let (messages_tx, mut messages) = tokio::sync::mpsc::channel(CAPACITY);
    // The connection must be polled for the LISTEN below to complete. When
    // the reader is behind, this stops polling and Postgres holds the
    // notifications.
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            if messages_tx.send(message).await.is_err() {
                break;
            }
        }
    });
    client
        .batch_execute("LISTEN session_changes; LISTEN credentials_revoked")
        .await?;
    // Changes before the LISTEN took effect were not announced.
    let _nobody = feed.send(Change::Resync);
    let mut result = Ok(());
    while let Some(message) = messages.recv().await {
        match message {
            Ok(AsyncMessage::Notification(note)) => {
                if let Ok(id) = Uuid::parse_str(note.payload()) {
                    let change = if note.channel() == "credentials_revoked" {
                        Change::Revoked(id)
                    } else {
                        Change::Session(id)
                    };
                    let _nobody = feed.send(change);
                }
            }
            Ok(_) => {}
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    driver.abort();
    result
}
