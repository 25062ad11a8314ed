//! Which sessions changed, as Postgres announces them: the feed behind
//! `GET /api/sessions/events`.
//!
//! A trigger (`migrations/V3__session_changes.sql`, its payload from
//! `V12__session_change_owner.sql`) notifies the `session_changes` channel
//! of every session row inserted, updated or deleted, by any process, with
//! the session's id and owner. One connection of the backend listens; a
//! second one reads each changed session once, and the row goes out on a
//! bounded broadcast channel to every stream, which keeps it or not by its
//! owner: a change costs one query however many streams follow it, and
//! none when nobody does. A subscriber that falls behind, or a listener
//! that lost its connection, gets [`Change::Resync`] and starts again from
//! a full snapshot, so a missed notification can delay a change but never
//! lose it.
//!
//! The same connection listens on `credentials_revoked`
//! (`migrations/V5__users_and_tokens.sql`): a revoked token or a signed-out
//! browser, by id, so that the streams it opened end at once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::store::SessionRow;

/// Changes a subscriber may be behind before it is told to resync.
const CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
pub enum Change {
    /// This session was created or changed: its row, read once for every
    /// subscriber.
    Session(Arc<SessionRow>),
    /// This session, of this owner, was deleted.
    Deleted { id: Uuid, owner: Option<Uuid> },
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
    pub(crate) fn listen(
        database_url: String,
        tasks: &TaskTracker,
        stopping: &CancellationToken,
    ) -> Self {
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
                        tracing::warn!(error.cause_chain = ?error, "the session-change listener lost Postgres; retrying");
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

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }
}

/// A `session_changes` notification's payload (V12).
#[derive(serde::Deserialize)]
struct Notice {
    id: Uuid,
    owner: Option<Uuid>,
    deleted: bool,
}

#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error("the listening connection failed")]
    Listen(#[from] tokio_postgres::Error),
    #[error("reading a changed session failed")]
    Read(#[from] crate::store::StoreError),
}

/// Listens on one connection until it, or the one that reads the changed
/// sessions, ends.
async fn listen_once(
    database_url: &str,
    feed: &broadcast::Sender<Change>,
) -> Result<(), ListenError> {
    // Rows are read on a connection of their own: on the listening one, a
    // read would wait behind the notifications this loop has not taken
    // yet, which wait for the read.
    let (reads, reads_connection) = tokio_postgres::connect(database_url, NoTls).await?;
    let reads_driver = tokio::spawn(reads_connection);
    let listened = listen_on(database_url, &reads, feed).await;
    reads_driver.abort();
    listened
}

async fn listen_on(
    database_url: &str,
    reads: &tokio_postgres::Client,
    feed: &broadcast::Sender<Change>,
) -> Result<(), ListenError> {
    let (client, mut connection) = tokio_postgres::connect(database_url, NoTls).await?;
    let (messages_tx, mut messages) = tokio::sync::mpsc::channel(CAPACITY);
    // The connection must be polled for the LISTEN below to complete. When
    // the loop below is behind, this stops polling and Postgres holds the
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
                let change = if note.channel() == "credentials_revoked" {
                    match Uuid::parse_str(note.payload()) {
                        Ok(id) => Change::Revoked(id),
                        Err(_) => continue,
                    }
                } else {
                    // Nobody follows: the row is not read.
                    if feed.receiver_count() == 0 {
                        continue;
                    }
                    let Ok(notice) = serde_json::from_str::<Notice>(note.payload()) else {
                        tracing::warn!(
                            payload = note.payload(),
                            "a session change this backend cannot read (a trigger of another version?)"
                        );
                        continue;
                    };
                    match read(reads, &notice).await {
                        Ok(change) => change,
                        Err(error) => {
                            result = Err(error);
                            break;
                        }
                    }
                };
                let _nobody = feed.send(change);
            }
            Ok(_) => {}
            Err(error) => {
                result = Err(error.into());
                break;
            }
        }
    }
    driver.abort();
    result
}

/// The change `notice` announces: the session as it is now, or its
/// deletion (also when it went between the notice and the read).
async fn read(reads: &tokio_postgres::Client, notice: &Notice) -> Result<Change, ListenError> {
    let row = if notice.deleted {
        None
    } else {
        crate::store::session_on(reads, notice.id).await?
    };
    Ok(match row {
        Some(row) => Change::Session(Arc::new(row)),
        None => Change::Deleted {
            id: notice.id,
            owner: notice.owner,
        },
    })
}
