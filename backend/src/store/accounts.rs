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
    /// The email of the commits they make (`backend admin user email`).
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<&Row> for UserRow {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> std::result::Result<Self, Self::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            is_admin: row.try_get("is_admin")?,
            email: row.try_get("email")?,
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

const USER_COLUMNS: &str = "u.id, u.name, u.is_admin, u.email, u.created_at";

impl Store {
    /// Sets (or with `None` clears) a user's commit email; `false` when no
    /// user has that name.
    pub(crate) async fn set_user_email(&self, name: &str, email: Option<&str>) -> Result<bool> {
        let updated = self
            .client()
            .await?
            .execute(
                "UPDATE users SET email = $2 WHERE name = $1",
                &[&name, &email],
            )
            .await?;
        Ok(updated == 1)
    }

    /// `None`: the name is taken.
    pub(crate) async fn add_user(&self, name: &str, is_admin: bool) -> Result<Option<UserRow>> {
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

    pub(crate) async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT * FROM users WHERE name = $1", &[&name])
            .await?;
        read_opt(row)
    }

    /// Oldest first.
    pub(crate) async fn users(&self) -> Result<Vec<UserSummary>> {
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
    pub(crate) async fn add_token(&self, user_id: Uuid, sha256: &[u8]) -> Result<Uuid> {
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
    pub(crate) async fn revoke_token(&self, id: Uuid) -> Result<bool> {
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
    pub(crate) async fn signed_in_by_token(&self, sha256: &[u8]) -> Result<Option<SignedIn>> {
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
    pub(crate) async fn add_browser_session(
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
    pub(crate) async fn signed_in_by_cookie(&self, sha256: &[u8]) -> Result<Option<SignedIn>> {
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
    pub(crate) async fn delete_browser_session(&self, id: Uuid) -> Result<()> {
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
    pub(crate) async fn credential_lives(
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
    /// What it was made for, when not by `admin token create` (a sign-in
    /// link's browser).
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Store {
    /// A user's tokens, oldest first.
    pub(crate) async fn tokens_of(&self, user_id: Uuid) -> Result<Vec<TokenRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, label, created_at, revoked_at FROM api_tokens
                 WHERE user_id = $1 ORDER BY created_at, id",
                &[&user_id],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(TokenRow {
                    id: row.try_get("id")?,
                    label: row.try_get("label")?,
                    created_at: row.try_get("created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }
}

/// A sign-in code as the dashboard shows it before it is used: whom it
/// signs in, until when.
#[derive(Debug, Clone)]
pub struct SigninCodeRow {
    pub user: UserRow,
    pub expires_at: DateTime<Utc>,
}

/// A code traded for a sign-in: the user and the token made for it.
#[derive(Debug, Clone)]
pub struct CodeUsed {
    pub user: UserRow,
    pub token_id: Uuid,
}

/// The label of the token a sign-in code's browser rests on.
const SIGNIN_LINK_LABEL: &str = "sign-in link";

impl Store {
    /// Stores a new sign-in code's hash for `user_id`, usable once until
    /// `expires_at`. Codes past their time go at the same time.
    pub(crate) async fn add_signin_code(
        &self,
        user_id: Uuid,
        code_sha256: &[u8],
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM signin_codes WHERE expires_at <= now() OR used_at IS NOT NULL",
                &[],
            )
            .await?;
        client
            .execute(
                "INSERT INTO signin_codes (id, code_sha256, user_id, expires_at)
                 VALUES ($1, $2, $3, $4)",
                &[&Uuid::new_v4(), &code_sha256, &user_id, &expires_at],
            )
            .await?;
        Ok(())
    }

    /// Whom an unused, unexpired code signs in; the code stays unused.
    pub(crate) async fn signin_code(&self, code_sha256: &[u8]) -> Result<Option<SigninCodeRow>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {USER_COLUMNS}, c.expires_at FROM signin_codes c
                     JOIN users u ON u.id = c.user_id
                     WHERE c.code_sha256 = $1 AND c.used_at IS NULL AND c.expires_at > now()"
                ),
                &[&code_sha256],
            )
            .await?;
        row.map(|row| {
            Ok(SigninCodeRow {
                user: UserRow::try_from(&row)?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Uses a code, once: marks it used and makes the token its browser's
    /// sign-in rests on, in one transaction, so two browsers racing with
    /// the same code get one sign-in between them. `None`: no such code,
    /// used already, or expired.
    pub(crate) async fn use_signin_code(
        &self,
        code_sha256: &[u8],
        token_sha256: &[u8],
    ) -> Result<Option<CodeUsed>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "UPDATE signin_codes SET used_at = now()
                 WHERE code_sha256 = $1 AND used_at IS NULL AND expires_at > now()
                 RETURNING user_id",
                &[&code_sha256],
            )
            .await?
        else {
            return Ok(None);
        };
        let user_id: Uuid = row.try_get(0)?;
        let token_id = Uuid::new_v4();
        tx.execute(
            "INSERT INTO api_tokens (id, user_id, token_sha256, label) VALUES ($1, $2, $3, $4)",
            &[&token_id, &user_id, &token_sha256, &SIGNIN_LINK_LABEL],
        )
        .await?;
        let user = tx
            .query_one("SELECT * FROM users WHERE id = $1", &[&user_id])
            .await?;
        let user = UserRow::try_from(&user)?;
        tx.commit().await?;
        Ok(Some(CodeUsed { user, token_id }))
    }
}
