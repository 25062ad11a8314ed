//! Preview grants (`migrations/V11__preview_grants.sql`): the credential
//! the preview listener reads one session's files with. Only a grant's
//! SHA-256 is stored, and a live one is found by it.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{read_opt, Result, SignedIn, Store};

/// Live grants one caller may hold for one session; a new one past this
/// ends the oldest (a dashboard holds one per open tab).
pub const MAX_GRANTS_PER_SESSION: i64 = 32;

/// A grant to store.
pub struct NewPreviewGrant<'a> {
    pub sha256: &'a [u8],
    pub session_id: Uuid,
    /// The token the caller asked with; `None` with `AUTH_MODE=none`.
    pub token_id: Option<Uuid>,
    /// The browser's sign-in, when the caller asked with the cookie.
    pub browser_session_id: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
}

/// A live grant: the one session it reads, and who asked for it.
#[derive(Debug, Clone)]
pub struct PreviewGrantRow {
    pub session_id: Uuid,
    /// `None`: asked for without a credential (`AUTH_MODE=none`).
    pub asked_by: Option<SignedIn>,
}

impl TryFrom<&Row> for PreviewGrantRow {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> std::result::Result<Self, Self::Error> {
        let token_id: Option<Uuid> = row.try_get("token_id")?;
        Ok(Self {
            session_id: row.try_get("session_id")?,
            asked_by: match token_id {
                Some(_) => Some(SignedIn::try_from(row)?),
                None => None,
            },
        })
    }
}

impl Store {
    /// Stores a grant. Expired grants go at the same time, and the oldest
    /// of the caller's grants for the session past
    /// [`MAX_GRANTS_PER_SESSION`], so they do not pile up.
    pub(crate) async fn add_preview_grant(&self, grant: NewPreviewGrant<'_>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM preview_grants WHERE expires_at <= now()", &[])
            .await?;
        tx.execute(
            "DELETE FROM preview_grants WHERE id IN (
                 SELECT id FROM preview_grants
                 WHERE session_id = $1 AND token_id IS NOT DISTINCT FROM $2
                 ORDER BY created_at DESC, id
                 OFFSET $3)",
            &[
                &grant.session_id,
                &grant.token_id,
                &(MAX_GRANTS_PER_SESSION - 1),
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO preview_grants
                 (id, grant_sha256, session_id, token_id, browser_session_id, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &Uuid::new_v4(),
                &grant.sha256,
                &grant.session_id,
                &grant.token_id,
                &grant.browser_session_id,
                &grant.expires_at,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live grant with this hash: not expired, its session there, and
    /// the token (and browser sign-in) it was asked with still live.
    pub(crate) async fn preview_grant(&self, sha256: &[u8]) -> Result<Option<PreviewGrantRow>> {
        let client = self.client().await?;
        // Prepared: every file a preview page loads asks.
        let statement = client
            .prepare_cached(
                "SELECT g.session_id, g.expires_at, g.token_id, g.browser_session_id,
                        u.id, u.name, u.is_admin, u.email, u.created_at
                 FROM preview_grants g
                 LEFT JOIN api_tokens t ON t.id = g.token_id
                 LEFT JOIN users u ON u.id = t.user_id
                 LEFT JOIN browser_sessions b ON b.id = g.browser_session_id
                 WHERE g.grant_sha256 = $1 AND g.expires_at > now()
                   AND (g.token_id IS NULL OR t.revoked_at IS NULL)
                   AND (g.browser_session_id IS NULL OR b.expires_at > now())",
            )
            .await?;
        let row = client.query_opt(&statement, &[&sha256]).await?;
        read_opt(row)
    }
}
