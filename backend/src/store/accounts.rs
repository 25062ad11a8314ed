//! Users, API tokens and browser sign-ins.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{read_all, read_opt, Result, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: Uuid,
    pub name: String,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<&Row> for UserRow {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> std::result::Result<Self, Self::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            is_admin: row.try_get("is_admin")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A user and how many of their tokens are live, for `admin user list`.
#[derive(Debug, Clone)]
pub struct UserSummary {
    pub user: UserRow,
    pub live_tokens: i64,
}

/// Whom a presented secret signs in, and with what.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: UserRow,
    pub token_id: Uuid,
    /// Set when the secret was a browser's cookie.
    pub browser_session_id: Option<Uuid>,
}

impl TryFrom<&Row> for SignedIn {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> std::result::Result<Self, Self::Error> {
        Ok(Self {
            user: UserRow::try_from(row)?,
            token_id: row.try_get("token_id")?,
            browser_session_id: row.try_get("browser_session_id")?,
        })
    }
}

const USER_COLUMNS: &str = "u.id, u.name, u.is_admin, u.created_at";

impl Store {
    /// `None`: the name is taken.
    pub async fn add_user(&self, name: &str, is_admin: bool) -> Result<Option<UserRow>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "INSERT INTO users (id, name, is_admin) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING RETURNING *",
                &[&Uuid::new_v4(), &name, &is_admin],
            )
            .await?;
        read_opt(row)
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT * FROM users WHERE name = $1", &[&name])
            .await?;
        read_opt(row)
    }

    /// Oldest first.
    pub async fn users(&self) -> Result<Vec<UserSummary>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {USER_COLUMNS},
                        (SELECT count(*) FROM api_tokens t
                         WHERE t.user_id = u.id AND t.revoked_at IS NULL) AS live_tokens
                     FROM users u ORDER BY u.created_at, u.name"
                ),
                &[],
            )
            .await?;
        let users: Vec<UserRow> = read_all(&rows)?;
        users
            .into_iter()
            .zip(&rows)
            .map(|(user, row)| {
                Ok(UserSummary {
                    user,
                    live_tokens: row.try_get("live_tokens")?,
                })
            })
            .collect()
    }

    /// Stores a new token's hash; returns the token's id.
    pub async fn add_token(&self, user_id: Uuid, sha256: &[u8]) -> Result<Uuid> {
        let id = Uuid::new_v4();
        self.client()
            .await?
            .execute(
                "INSERT INTO api_tokens (id, user_id, token_sha256) VALUES ($1, $2, $3)",
                &[&id, &user_id, &sha256],
            )
            .await?;
        Ok(id)
    }

    /// `false`: no live token has this id. Its browsers are signed out too
    /// (their rows go, which every backend hears of: `credentials_revoked`).
    pub async fn revoke_token(&self, id: Uuid) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let revoked = tx
            .execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                &[&id],
            )
            .await?
            == 1;
        tx.execute("DELETE FROM browser_sessions WHERE token_id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// The user of a live token.
    pub async fn signed_in_by_token(&self, sha256: &[u8]) -> Result<Option<SignedIn>> {
        self.signed_in(
            &format!(
                "SELECT {USER_COLUMNS}, t.id AS token_id, NULL::uuid AS browser_session_id
                 FROM api_tokens t
                 JOIN users u ON u.id = t.user_id
                 WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL"
            ),
            sha256,
        )
        .await
    }

    /// Runs one of the two sign-in lookups (prepared: every request asks).
    async fn signed_in(&self, sql: &str, sha256: &[u8]) -> Result<Option<SignedIn>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        let row = client.query_opt(&statement, &[&sha256]).await?;
        read_opt(row)
    }

    /// Signs a browser in with a token: stores its cookie's hash until
    /// `expires_at`; returns the browser session's id. Expired sign-ins are
    /// deleted at the same time (and at every sign-out), so they do not pile
    /// up.
    pub async fn add_browser_session(
        &self,
        token_id: Uuid,
        cookie_sha256: &[u8],
        expires_at: DateTime<Utc>,
    ) -> Result<Uuid> {
        let id = Uuid::new_v4();
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM browser_sessions WHERE expires_at <= now()",
                &[],
            )
            .await?;
        client
            .execute(
                "INSERT INTO browser_sessions (id, cookie_sha256, token_id, expires_at)
                 VALUES ($1, $2, $3, $4)",
                &[&id, &cookie_sha256, &token_id, &expires_at],
            )
            .await?;
        Ok(id)
    }

    /// The user of a browser's cookie, while it and its token live.
    pub async fn signed_in_by_cookie(&self, sha256: &[u8]) -> Result<Option<SignedIn>> {
        self.signed_in(
            &format!(
                "SELECT {USER_COLUMNS}, t.id AS token_id, b.id AS browser_session_id
                 FROM browser_sessions b
                 JOIN api_tokens t ON t.id = b.token_id
                 JOIN users u ON u.id = t.user_id
                 WHERE b.cookie_sha256 = $1 AND b.expires_at > now() AND t.revoked_at IS NULL"
            ),
            sha256,
        )
        .await
    }

    /// Signs a browser out. Expired sign-ins go at the same time.
    pub async fn delete_browser_session(&self, id: Uuid) -> Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM browser_sessions WHERE id = $1 OR expires_at <= now()",
                &[&id],
            )
            .await?;
        Ok(())
    }

    /// Whether a token (and, when given, a browser's sign-in with it) still
    /// lives: a stream that may have missed a revocation asks.
    pub async fn credential_lives(
        &self,
        token_id: Uuid,
        browser_session_id: Option<Uuid>,
    ) -> Result<bool> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE id = $1 AND revoked_at IS NULL)
                   AND ($2::uuid IS NULL OR EXISTS (
                       SELECT 1 FROM browser_sessions WHERE id = $2 AND expires_at > now()))",
                &[&token_id, &browser_session_id],
            )
            .await?;
        Ok(row.try_get(0)?)
    }
}

/// A token as `admin token list` shows it (never the secret).
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Store {
    /// A user's tokens, oldest first.
    pub async fn tokens_of(&self, user_id: Uuid) -> Result<Vec<TokenRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, created_at, revoked_at FROM api_tokens
                 WHERE user_id = $1 ORDER BY created_at, id",
                &[&user_id],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(TokenRow {
                    id: row.try_get("id")?,
                    created_at: row.try_get("created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }
}
