//! [`Accounts`]: the handle through which the HTTP layer reads and changes
//! users' sign-ins and preview grants. Routes hold this, never the store:
//! sessions and runs change only through the engine, accounts only here
//! (and through the operator's `backend admin` commands).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::{
    CodeUsed, NewPreviewGrant, PreviewGrantRow, Result, SignedIn, SigninCodeRow, Store,
};

#[derive(Clone)]
pub struct Accounts {
    store: Store,
}

impl Accounts {
    pub(crate) fn new(store: Store) -> Self {
        Self { store }
    }

    /// Who an API token (by its hash) signs in, if it is valid.
    pub(crate) async fn signed_in_by_token(&self, sha256: &[u8]) -> Result<Option<SignedIn>> {
        self.store.signed_in_by_token(sha256).await
    }

    /// Who a browser's cookie (by its hash) signs in, if it is valid.
    pub(crate) async fn signed_in_by_cookie(&self, sha256: &[u8]) -> Result<Option<SignedIn>> {
        self.store.signed_in_by_cookie(sha256).await
    }

    /// Whether a sign-in's token (and browser session) still work.
    pub(crate) async fn credential_lives(
        &self,
        token_id: Uuid,
        browser_session_id: Option<Uuid>,
    ) -> Result<bool> {
        self.store
            .credential_lives(token_id, browser_session_id)
            .await
    }

    /// Whose sign-in code this is, without using it.
    pub(crate) async fn signin_code(&self, code_sha256: &[u8]) -> Result<Option<SigninCodeRow>> {
        self.store.signin_code(code_sha256).await
    }

    /// Uses a sign-in code once, making the token (by its hash) it becomes.
    pub(crate) async fn use_signin_code(
        &self,
        code_sha256: &[u8],
        token_sha256: &[u8],
    ) -> Result<Option<CodeUsed>> {
        self.store.use_signin_code(code_sha256, token_sha256).await
    }

    /// A browser's sign-in resting on `token_id`, until `expires_at`.
    pub(crate) async fn add_browser_session(
        &self,
        token_id: Uuid,
        cookie_sha256: &[u8],
        expires_at: DateTime<Utc>,
    ) -> Result<Uuid> {
        self.store
            .add_browser_session(token_id, cookie_sha256, expires_at)
            .await
    }

    pub(crate) async fn delete_browser_session(&self, id: Uuid) -> Result<()> {
        self.store.delete_browser_session(id).await
    }

    pub(crate) async fn add_preview_grant(&self, grant: NewPreviewGrant<'_>) -> Result<()> {
        self.store.add_preview_grant(grant).await
    }

    pub(crate) async fn preview_grant(&self, sha256: &[u8]) -> Result<Option<PreviewGrantRow>> {
        self.store.preview_grant(sha256).await
    }
}
