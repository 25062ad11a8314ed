//! Signing a browser in and out, and who the caller is.
//!
//! `EventSource` cannot send headers, so a browser trades an API token (or
//! a sign-in link's one-time code) for the `rr_session` cookie once
//! (`POST /api/auth/session`, the secret in the body, never in a URL) and
//! every later request, the streams included, carries the cookie:
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site sends
//! it), `Secure` and named `__Host-rr_session` behind TLS.
//!
//! A sign-in link carries a one-time code, not a token, and the dashboard
//! asks before it uses one (`POST /api/auth/code` says whom it signs in):
//! a link that anyone can send must not sign a browser in as its sender
//! unnoticed (sign-in CSRF).

use std::sync::Arc;

use chrono::Utc;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::models::JsonString;
use super::ApiTags;
use crate::auth::{secret, Caller, Principal, COOKIE_NAME, SECURE_COOKIE_NAME};
use crate::config::AuthMode;
use crate::config::CookieSecure;
use crate::engine::Engine;
use crate::http_error::{ApiError, ApiResult};
use crate::store::UserRow;

pub struct AuthApi {
    pub engine: Arc<Engine>,
}

/// A user, as the API shows them.
#[derive(Debug, Clone, Object)]
pub struct User {
    pub id: uuid::Uuid,
    pub name: String,
    /// An admin sees every user's sessions.
    pub is_admin: bool,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            is_admin: row.is_admin,
        }
    }
}

/// Who the caller is.
#[derive(Debug, Clone, Object)]
pub struct Me {
    /// `token` (credentials required) or `none` (no authentication).
    pub auth_mode: String,
    /// `null` with `AUTH_MODE=none`.
    pub user: Option<User>,
}

/// One of `token` and `code`.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SignIn {
    /// An API token (`rr_…`), as `backend admin token create` printed it.
    pub token: Option<JsonString>,
    /// A sign-in link's one-time code (`rrs_…`, `backend admin
    /// signin-link`): it works once, for minutes.
    pub code: Option<JsonString>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct CodeQuery {
    /// A sign-in link's one-time code (`rrs_…`).
    pub code: JsonString,
}

/// Whom a sign-in code signs in, before it is used.
#[derive(Debug, Object)]
pub struct SigninCode {
    pub user: User,
    pub expires_at: chrono::DateTime<Utc>,
}

#[derive(ApiResponse)]
enum SignedIn {
    /// Signed in: the response sets the `rr_session` cookie.
    #[oai(status = 200)]
    Ok(
        Json<Me>,
        /// `rr_session=…; HttpOnly; SameSite=Strict; Path=/; Max-Age=…`,
        /// with `Secure` behind TLS.
        #[oai(header = "Set-Cookie")]
        String,
    ),
}

#[derive(ApiResponse)]
enum SignedOut {
    /// Signed out: the cookie is cleared and its streams end.
    #[oai(status = 204)]
    NoContent(#[oai(header = "Set-Cookie")] String),
}

impl AuthApi {
    fn cookie(&self, req: &Request, value: &str, max_age_secs: u64) -> String {
        let secure = self.secure(req);
        let name = if secure {
            SECURE_COOKIE_NAME
        } else {
            COOKIE_NAME
        };
        format!(
            "{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{}",
            if secure { "; Secure" } else { "" }
        )
    }

    fn secure(&self, req: &Request) -> bool {
        match self.engine.config().cookie_secure {
            CookieSecure::True => true,
            CookieSecure::False => false,
            CookieSecure::Auto => req
                .headers()
                .get("x-forwarded-proto")
                .and_then(|p| p.to_str().ok())
                .is_some_and(|p| p.eq_ignore_ascii_case("https")),
        }
    }
}

#[OpenApi(prefix_path = "/api/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Sign a browser in with an API token or a sign-in code
    ///
    /// Sets the `rr_session` cookie (`__Host-rr_session` behind TLS), which
    /// then authenticates every request of this browser, event streams
    /// included, until it signs out, the sign-in expires
    /// (`BACKEND_SIGNIN_TTL_HOURS`) or its token is revoked. A sign-in
    /// code works once: the browser's sign-in then rests on a token made
    /// for it (labelled `sign-in link` in `backend admin token list`).
    #[oai(path = "/session", method = "post", operation_id = "sign_in")]
    async fn sign_in(&self, req: &Request, body: Json<SignIn>) -> ApiResult<SignedIn> {
        let config = self.engine.config();
        if config.auth_mode == AuthMode::None {
            return Err(ApiError::conflict(
                "AUTH_MODE=none: there is nothing to sign in to",
            ));
        }
        let accounts = self.engine.accounts();
        let (user, token_id) = match (&body.token, &body.code) {
            (Some(token), None) => {
                let signed_in = accounts
                    .signed_in_by_token(&secret::hash(token.trim()))
                    .await?
                    .ok_or_else(|| {
                        ApiError::unauthorized("the token is not valid: it is wrong or revoked")
                    })?;
                (signed_in.user, signed_in.token_id)
            }
            (None, Some(code)) => {
                // The browser's sign-in rests on a token of its own, whose
                // secret nobody ever sees.
                let token =
                    secret::mint(secret::Kind::ApiToken).map_err(|e| ApiError::internal(&e))?;
                let used = accounts
                    .use_signin_code(&secret::hash(code.trim()), &token.sha256)
                    .await?
                    .ok_or_else(invalid_code)?;
                (used.user, used.token_id)
            }
            _ => {
                return Err(ApiError::invalid(
                    "send one of token (an API token) and code (a sign-in link's code)",
                ))
            }
        };
        // The new cookie replaces this browser's old one: so does the
        // sign-in it stood for, whose open streams (other tabs) end.
        if let crate::auth::SessionCookie::One(old) = crate::auth::session_cookie(req.headers()) {
            if let Some(replaced) = accounts.signed_in_by_cookie(&secret::hash(old)).await? {
                if let Some(id) = replaced.browser_session_id {
                    accounts.delete_browser_session(id).await?;
                }
            }
        }
        let cookie = secret::mint(secret::Kind::Cookie).map_err(|e| ApiError::internal(&e))?;
        let ttl = config.signin_ttl;
        let expires =
            Utc::now() + chrono::Duration::from_std(ttl).map_err(|e| ApiError::internal(&e))?;
        accounts
            .add_browser_session(token_id, &cookie.sha256, expires)
            .await?;
        tracing::info!(user = %user.name, with_code = body.code.is_some(), "a browser signed in");
        Ok(SignedIn::Ok(
            Json(Me {
                auth_mode: config.auth_mode.as_str().into(),
                user: Some(user.into()),
            }),
            self.cookie(req, &cookie.secret, ttl.as_secs()),
        ))
    }

    /// Whom a sign-in code signs in
    ///
    /// Says whose sign-in link it is and until when it works, without using
    /// it: the dashboard shows this and asks before it signs in.
    #[oai(path = "/code", method = "post", operation_id = "inspect_signin_code")]
    async fn inspect_code(&self, body: Json<CodeQuery>) -> ApiResult<Json<SigninCode>> {
        let found = self
            .engine
            .accounts()
            .signin_code(&secret::hash(body.code.trim()))
            .await?
            .ok_or_else(invalid_code)?;
        Ok(Json(SigninCode {
            user: found.user.into(),
            expires_at: found.expires_at,
        }))
    }

    /// Sign this browser out
    ///
    /// Clears the cookie and forgets the sign-in: streams opened with it
    /// end. Answers 204 whether or not the browser was signed in.
    #[oai(path = "/session", method = "delete", operation_id = "sign_out")]
    async fn sign_out(&self, req: &Request) -> ApiResult<SignedOut> {
        if let crate::auth::SessionCookie::One(cookie) = crate::auth::session_cookie(req.headers())
        {
            let accounts = self.engine.accounts();
            if let Some(signed_in) = accounts.signed_in_by_cookie(&secret::hash(cookie)).await? {
                if let Some(id) = signed_in.browser_session_id {
                    accounts.delete_browser_session(id).await?;
                    tracing::info!(user = %signed_in.user.name, "a browser signed out");
                }
            }
        }
        Ok(SignedOut::NoContent(self.cookie(req, "", 0)))
    }

    /// Who am I
    #[oai(path = "/me", method = "get", operation_id = "who_am_i")]
    async fn me(&self, caller: Caller) -> ApiResult<Json<Me>> {
        let Caller(Principal { user, .. }) = caller;
        Ok(Json(Me {
            auth_mode: self.engine.config().auth_mode.as_str().into(),
            user: user.map(User::from),
        }))
    }
}

fn invalid_code() -> ApiError {
    ApiError::unauthorized(
        "the sign-in code is not valid: it is wrong, was used already, or expired; \
         ask for a new sign-in link",
    )
}
