//! What getting the agent's work out keeps (`migrations/V13__shipping.sql`):
//! a session's sealed push token and the pull requests opened for it.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{read_all, Result, Store};

/// A pull (merge) request opened for a session.
#[derive(Debug, Clone)]
pub struct PullRequestRow {
    pub number: i64,
    pub url: String,
    pub head: String,
    pub base: String,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<&Row> for PullRequestRow {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> std::result::Result<Self, Self::Error> {
        Ok(Self {
            number: row.try_get("number")?,
            url: row.try_get("url")?,
            head: row.try_get("head")?,
            base: row.try_get("base")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Most pull requests listed for a session (the newest).
const MAX_LISTED_PULL_REQUESTS: i64 = 50;

impl Store {
    /// Keeps the session's sealed token (`auth::sealed`).
    pub(crate) async fn set_session_token(&self, session: Uuid, sealed: &[u8]) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE sessions SET token_sealed = $2 WHERE id = $1",
                &[&session, &sealed],
            )
            .await?;
        Ok(())
    }

    /// The session's sealed token, when it kept one.
    pub(crate) async fn session_token(&self, session: Uuid) -> Result<Option<Vec<u8>>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT token_sealed FROM sessions WHERE id = $1",
                &[&session],
            )
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Whether a run of the session is queued or running.
    pub(crate) async fn session_busy(&self, session: Uuid) -> Result<bool> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM runs
                 WHERE session_id = $1 AND status IN ('queued', 'running'))",
                &[&session],
            )
            .await?;
        Ok(row.get(0))
    }

    pub(crate) async fn insert_pull_request(
        &self,
        session: Uuid,
        number: i64,
        url: &str,
        head: &str,
        base: &str,
    ) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO session_pull_requests (session_id, number, url, head, base)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&session, &number, &url, &head, &base],
            )
            .await?;
        Ok(())
    }

    /// The newest pull requests of the session, oldest first.
    pub(crate) async fn pull_requests(&self, session: Uuid) -> Result<Vec<PullRequestRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT * FROM (SELECT * FROM session_pull_requests WHERE session_id = $1
                                ORDER BY id DESC LIMIT $2) newest ORDER BY id",
                &[&session, &MAX_LISTED_PULL_REQUESTS],
            )
            .await?;
        read_all(&rows)
    }
}
