//! Who is calling, and what they may see.
//!
//! With `AUTH_MODE=token` (the default) every route but the public ones
//! (`/health`, `/ready`, the OpenAPI document, `/docs`, and signing in and
//! out) needs a credential: an API token (`Authorization: Bearer rr_…`) or
//! the `rr_session` cookie a browser gets by signing in with one. The
//! [`Authenticator`] middleware resolves it to a [`Principal`] once per
//! request, before any route; handlers take it as a [`Caller`]. A missing,
//! wrong or revoked credential is a 401, whatever the path, so a caller
//! without one learns nothing about the API.
//!
//! A state-changing request that carries the cookie must come from the
//! dashboard's own origin ([`cross_origin_refusal`]): the cookie is
//! `SameSite=Strict`, and the Origin check covers what SameSite does not
//! (a page of the same site on another port, such as a preview, or an old
//! browser).
//!
//! With `AUTH_MODE=none` every request is the anonymous principal, who sees
//! everything: one person on a laptop, as before users existed.
//!
//! Tenancy: a session belongs to the user who created it, and with it its
//! runs, events, files and diff. [`Principal::sees`] is the one rule; a
//! session someone may not see answers 404, as one that does not exist.

mod accounts;
pub mod preview_grant;
pub mod sealed;
pub mod secret;

pub(crate) use accounts::Accounts;

use std::sync::Arc;

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use poem::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use poem::http::{HeaderMap, Method};
use poem::{Endpoint, FromRequest, IntoResponse, Request, RequestBody, Response};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::config::AuthMode;
use crate::http_error::ApiError;
use crate::metrics::Rejection;
use crate::session_changes::{Change, SessionChanges};
use crate::store::{SignedIn, UserRow};

/// The sign-in cookie's name over plain HTTP.
pub const COOKIE_NAME: &str = "rr_session";
/// Its name behind TLS: a browser takes a `__Host-` cookie only from a
/// secure page, for `Path=/` and without `Domain`, so no other host of the
/// site (a sibling subdomain) can set one.
pub const SECURE_COOKIE_NAME: &str = "__Host-rr_session";

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None`: the anonymous principal of `AUTH_MODE=none`.
    pub user: Option<UserRow>,
    /// The token the request (or the browser's sign-in) rests on.
    pub token_id: Option<Uuid>,
    /// The browser's sign-in, when the credential was the cookie.
    pub browser_session_id: Option<Uuid>,
}

impl Principal {
    pub(crate) fn anonymous() -> Self {
        Self {
            user: None,
            token_id: None,
            browser_session_id: None,
        }
    }

    fn signed_in(signed_in: SignedIn) -> Self {
        Self {
            user: Some(signed_in.user),
            token_id: Some(signed_in.token_id),
            browser_session_id: signed_in.browser_session_id,
        }
    }

    /// Whether this caller may see a session of `owner`: its owner, an
    /// admin, or anyone when there is no authentication.
    pub(crate) fn sees(&self, owner: Option<Uuid>) -> bool {
        match &self.user {
            None => true,
            Some(user) => user.is_admin || owner == Some(user.id),
        }
    }

    /// The owner whose sessions alone this caller lists; `None`: all.
    pub(crate) fn only_owner(&self) -> Option<Uuid> {
        self.user.as_ref().filter(|u| !u.is_admin).map(|u| u.id)
    }

    /// The owner of a session this caller creates.
    pub(crate) fn user_id(&self) -> Option<Uuid> {
        self.user.as_ref().map(|u| u.id)
    }

    /// The ids whose revocation ends this caller's streams.
    fn credentials(&self) -> Vec<Uuid> {
        self.token_id
            .into_iter()
            .chain(self.browser_session_id)
            .collect()
    }
}

/// A handler's view of the request's [`Principal`], which the
/// [`Authenticator`] put there.
pub struct Caller(pub Principal);

impl<'a> FromRequest<'a> for Caller {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        req.extensions()
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                // Only a route mounted outside the middleware gets here.
                tracing::error!(
                    path = req.uri().path(),
                    "a route ran without authentication"
                );
                poem::Error::from_response(
                    ApiError::unauthorized("this route needs a credential").into_response(),
                )
            })
    }
}

/// The authentication middleware.
pub struct Authenticator {
    pub mode: AuthMode,
    pub accounts: Accounts,
    /// Origins besides the page's own that may send state-changing
    /// requests with the cookie (`CORS_ORIGINS`, without `*`).
    pub trusted_origins: Vec<String>,
    /// The per-user request rate, checked once the caller is known.
    pub rate_limits: Arc<crate::rate_limit::RateLimits>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Paths answered without a credential.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/health"
            | "/ready"
            | "/api/openapi.json"
            | "/docs"
            | "/api/auth/session"
            | "/api/auth/code"
            | "/metrics"
    ) || path.starts_with("/docs/")
}

impl Authenticator {
    pub(crate) async fn check<E: Endpoint>(
        self: Arc<Self>,
        ep: Arc<E>,
        mut req: Request,
    ) -> poem::Result<Response> {
        // A CORS preflight carries no credentials; the CORS layer answers it.
        if req.method() == Method::OPTIONS {
            return ep.call(req).await.map(IntoResponse::into_response);
        }
        let path = req.uri().path().to_owned();
        let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD);
        let signs_in = path.starts_with("/api/auth/");
        if unsafe_method && (session_cookie(req.headers()) != SessionCookie::Absent || signs_in) {
            if let Some(refusal) = cross_origin_refusal(req.headers(), &self.trusted_origins) {
                tracing::warn!(
                    path,
                    refusal,
                    "refused a cross-origin request with the sign-in cookie"
                );
                self.metrics.rejected(Rejection::CrossOrigin);
                return Ok(ApiError::forbidden(refusal).into_response());
            }
        }
        if is_public(&path) {
            return ep.call(req).await.map(IntoResponse::into_response);
        }
        let principal = match self.mode {
            AuthMode::None => Principal::anonymous(),
            AuthMode::Token => match self.authenticate(req.headers()).await {
                Ok(principal) => principal,
                Err(refusal) => {
                    if matches!(refusal, ApiError::Unauthorized(..)) {
                        self.metrics.rejected(Rejection::Unauthorized);
                    }
                    return Ok(refusal.into_response());
                }
            },
        };
        if let Some(user) = principal.user_id() {
            if let Err(refusal) = self.rate_limits.check_user(user) {
                tracing::info!(user_id = %user, path, "request rate limit of a user");
                return Ok(refusal.into_response());
            }
        }
        req.extensions_mut().insert(principal);
        ep.call(req).await.map(IntoResponse::into_response)
    }

    async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        // A request that names a token is judged by it alone, never by a
        // cookie it also carries.
        let signed_in = if let Some(header) = headers.get(AUTHORIZATION) {
            let token = header
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
            self.accounts
                .signed_in_by_token(&secret::hash(token))
                .await?
        } else if let SessionCookie::One(cookie) = session_cookie(headers) {
            self.accounts
                .signed_in_by_cookie(&secret::hash(cookie))
                .await?
        } else if session_cookie(headers) == SessionCookie::Several {
            // A page on another port of this host (cookies ignore ports) can
            // add a cookie of its own beside ours, and a browser sends both:
            // which one is this user's cannot be told, so neither counts.
            return Err(ApiError::unauthorized(
                "this browser sends more than one sign-in cookie (another page on this host \
                 may have set one): clear this site's cookies and sign in again",
            ));
        } else {
            return Err(ApiError::unauthorized(
                "sign in: send `Authorization: Bearer <token>` (an operator makes one with \
                 `backend admin token create USER`), or sign in on the dashboard",
            ));
        };
        signed_in.map(Principal::signed_in).ok_or_else(|| {
            ApiError::unauthorized(
                "the token or sign-in is not valid: it is wrong, revoked or expired",
            )
        })
    }
}

/// The sign-in cookies a request carries, by either name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCookie<'a> {
    Absent,
    One(&'a str),
    /// More than one: none of them is taken.
    Several,
}

/// The request's sign-in cookie (`rr_session` or `__Host-rr_session`).
pub(crate) fn session_cookie(headers: &HeaderMap) -> SessionCookie<'_> {
    let mut values = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE_NAME || *name == SECURE_COOKIE_NAME)
        .map(|(_, value)| value.trim());
    match (values.next(), values.next()) {
        (None, _) => SessionCookie::Absent,
        (Some(value), None) if !value.is_empty() => SessionCookie::One(value),
        // An empty one (a cleared cookie) is none.
        (Some(_), None) => SessionCookie::Absent,
        (Some(_), Some(_)) => SessionCookie::Several,
    }
}

/// Whether the request's `Origin` is the page's own: the scheme and the
/// host the browser used, which is the proxy's `X-Forwarded-Host` or else
/// `Host` (both checked against `ALLOWED_HOSTS` before any route).
pub(crate) fn is_same_origin(headers: &HeaderMap) -> bool {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(HOST))
        .and_then(|h| h.to_str().ok());
    let origin = headers.get(ORIGIN).and_then(|o| o.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => {
            origin.eq_ignore_ascii_case(&format!("http://{host}"))
                || origin.eq_ignore_ascii_case(&format!("https://{host}"))
        }
        _ => false,
    }
}

/// Why a state-changing request with the cookie is refused as cross-origin,
/// if it is. A browser says where a request comes from with `Sec-Fetch-Site`
/// (every current one) or `Origin`; a request with neither is no browser's
/// and so no forgery.
pub(crate) fn cross_origin_refusal(
    headers: &HeaderMap,
    trusted: &[String],
) -> Option<&'static str> {
    let origin = headers.get(ORIGIN).and_then(|o| o.to_str().ok());
    let trusted_origin =
        || origin.is_some_and(|o| trusted.iter().any(|t| t.eq_ignore_ascii_case(o)));
    match headers.get("sec-fetch-site").and_then(|s| s.to_str().ok()) {
        Some("same-origin" | "none") => None,
        Some(_) if trusted_origin() => None,
        Some(_) => Some("a state-changing request with the sign-in cookie must come from the dashboard's own origin"),
        None if origin.is_none() || is_same_origin(headers) || trusted_origin() => None,
        None => Some("a state-changing request with the sign-in cookie must come from the dashboard's own origin"),
    }
}

/// `stream`, until the caller's token is revoked or their browser signs
/// out: a signed-out page stops receiving at once. A stream that may have
/// missed the news (the listener lost Postgres, or fell behind) asks the
/// database whether the credential still lives.
pub(crate) fn until_revoked<T: Send + 'static>(
    stream: impl Stream<Item = T> + Send + 'static,
    principal: &Principal,
    changes: &SessionChanges,
    accounts: Accounts,
) -> BoxStream<'static, T> {
    let ids = principal.credentials();
    let Some(token_id) = principal.token_id else {
        return stream.boxed();
    };
    let browser = principal.browser_session_id;
    let mut news = changes.subscribe();
    async_stream::stream! {
        futures_util::pin_mut!(stream);
        let mut listening = true;
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(item) => yield item,
                    None => break,
                },
                change = news.recv(), if listening => match change {
                    Ok(Change::Revoked(id)) if ids.contains(&id) => break,
                    Ok(Change::Resync) | Err(RecvError::Lagged(_)) => {
                        // A database that is away cannot say: the stream
                        // goes on, and the next resync asks again.
                        if matches!(accounts.credential_lives(token_id, browser).await, Ok(false)) {
                            break;
                        }
                    }
                    Ok(_) => {}
                    // The backend is stopping; its streams end with it.
                    Err(RecvError::Closed) => listening = false,
                },
            }
        }
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_cookie_is_found_among_others_and_two_are_none() {
        // The value as an owned string, for comparing outside the headers.
        let cookie = |pairs: &[(&'static str, &str)]| match session_cookie(&headers(pairs)) {
            SessionCookie::One(value) => Ok(value.to_owned()),
            other => Err(format!("{other:?}")),
        };
        assert_eq!(
            cookie(&[("cookie", "a=1; rr_session=rrc_x; b=2")]),
            Ok("rrc_x".to_owned())
        );
        assert_eq!(
            cookie(&[("cookie", "a=1"), ("cookie", "rr_session=y")]),
            Ok("y".to_owned())
        );
        assert_eq!(
            cookie(&[("cookie", "__Host-rr_session=z")]),
            Ok("z".to_owned())
        );
        assert_eq!(
            cookie(&[("cookie", "xrr_session=1; rr_session=")]),
            Err("Absent".to_owned())
        );
        assert_eq!(cookie(&[]), Err("Absent".to_owned()));
        // Tossed: a second cookie of the name, whatever its path or value.
        assert_eq!(
            cookie(&[("cookie", "rr_session=attacker; rr_session=victim")]),
            Err("Several".to_owned())
        );
        assert_eq!(
            cookie(&[
                ("cookie", "rr_session=a"),
                ("cookie", "__Host-rr_session=b")
            ]),
            Err("Several".to_owned())
        );
        assert_eq!(
            cookie(&[("cookie", "rr_session=; rr_session=b")]),
            Err("Several".to_owned())
        );
    }

    #[test]
    fn a_cookie_request_from_another_origin_is_refused() {
        let trusted = vec!["https://app.example".to_owned()];
        let refused = |pairs: &[(&'static str, &str)]| {
            cross_origin_refusal(&headers(pairs), &trusted).is_some()
        };
        // The dashboard itself, directly or through the proxy.
        assert!(!refused(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:9100")
        ]));
        assert!(!refused(&[
            ("host", "127.0.0.1:9101"),
            ("x-forwarded-host", "127.0.0.1:9100"),
            ("origin", "http://127.0.0.1:9100")
        ]));
        // Not a browser: no forgery possible.
        assert!(!refused(&[("host", "127.0.0.1:9101")]));
        // A listed origin.
        assert!(!refused(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://app.example")
        ]));
        // Another site, and the same site on another port (a preview).
        assert!(refused(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example")
        ]));
        assert!(refused(&[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://127.0.0.1:9104")
        ]));
        assert!(refused(&[
            ("host", "127.0.0.1:9100"),
            ("origin", "http://127.0.0.1:9104")
        ]));
        assert!(refused(&[("host", "127.0.0.1:9100"), ("origin", "null")]));
    }

    #[test]
    fn owners_and_admins_see_a_session_others_do_not() {
        let user = |is_admin| UserRow {
            id: Uuid::new_v4(),
            name: "u".into(),
            is_admin,
            email: None,
            created_at: chrono::Utc::now(),
        };
        let (alice, admin) = (user(false), user(true));
        let as_principal = |user: &UserRow| Principal {
            user: Some(user.clone()),
            token_id: Some(Uuid::new_v4()),
            browser_session_id: None,
        };
        assert!(as_principal(&alice).sees(Some(alice.id)));
        assert!(!as_principal(&alice).sees(Some(admin.id)));
        assert!(!as_principal(&alice).sees(None));
        assert!(as_principal(&admin).sees(Some(alice.id)));
        assert!(as_principal(&admin).sees(None));
        assert!(Principal::anonymous().sees(Some(alice.id)));
        assert_eq!(as_principal(&alice).only_owner(), Some(alice.id));
        assert_eq!(as_principal(&admin).only_owner(), None);
    }
}
