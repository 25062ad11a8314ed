//! Preview grants: the one credential of the preview listener.
//!
//! The signed-in dashboard asks for a grant for one session (`POST
//! /api/sessions/{id}/preview`, its owner or an admin) and puts it in the
//! preview's addresses (`/{session}/{grant}/{path}`), so that the
//! sandboxed page's relative subresources carry it too; the preview sends
//! it back here as `Authorization: Preview <grant>`. A grant reads that one
//! session's files and tree (`GET /api/sessions/{id}/files[/{path}]`) and
//! nothing else: any other route is a 401, another session's files a 404.
//! It is 256 random bits (`rrp_…`), stored as its SHA-256 and found by it,
//! never compared byte by byte. It dies when it expires
//! (`BACKEND_PREVIEW_GRANT_TTL_SECS`), when its session is deleted, when the
//! token it was asked with is revoked, and when the browser that asked
//! signs out: the lookup joins them all (`Store::preview_grant`).
//!
//! A request that names a grant is judged by it alone, before and instead
//! of the [`Authenticator`](super::Authenticator): no cookie or token it
//! also carries widens it.

use poem::http::header::AUTHORIZATION;
use poem::http::{HeaderMap, Method};
use uuid::Uuid;

use super::secret::{self, Minted};
use super::Accounts;
use super::Principal;
use crate::config::AuthMode;
use crate::http_error::ApiError;
use crate::metrics::Rejection;

/// The `Authorization` scheme of a grant.
pub const SCHEME: &str = "Preview";

/// A new grant, as handed to the dashboard once, and the hash stored.
pub(crate) fn mint() -> Result<Minted, secret::NoRandomness> {
    secret::mint(secret::Kind::PreviewGrant)
}

/// The grant a request names (`Authorization: Preview <grant>`), if it
/// names one; it may be empty or malformed, which the lookup refuses.
pub(crate) fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, grant) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case(SCHEME).then_some(grant.trim())
}

/// The session a grant is asked to read, if the request is one a grant
/// may make at all: `GET` or `HEAD` of `/api/sessions/{id}/files` or of a
/// path under it. Returns the session's segment, unparsed.
fn readable<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return None;
    }
    let rest = path.strip_prefix("/api/sessions/")?;
    let (session, rest) = rest.split_once('/')?;
    (rest == "files" || rest.starts_with("files/")).then_some(session)
}

/// What a granted request may read: the session the grant is bound to.
/// The routes a grant reaches check their own session against it, so no
/// rewriting of the path between here and there widens a grant.
#[derive(Debug, Clone, Copy)]
pub struct PreviewScope {
    pub session_id: Uuid,
}

/// Checks the grants that requests present.
pub struct PreviewGrants {
    pub mode: AuthMode,
    pub accounts: Accounts,
    pub rate_limits: std::sync::Arc<crate::rate_limit::RateLimits>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl PreviewGrants {
    /// Who a request that presents `grant` acts as, and the one session it
    /// may read; or why it is refused.
    pub(crate) async fn authorize(
        &self,
        method: &Method,
        path: &str,
        grant: &str,
    ) -> Result<(Principal, PreviewScope), ApiError> {
        let Some(wanted) = readable(method, path) else {
            self.metrics.rejected(Rejection::Unauthorized);
            return Err(ApiError::unauthorized(
                "a preview grant reads one session's files and nothing else \
                 (GET /api/sessions/{id}/files[/{path}])",
            ));
        };
        let found = if grant.is_empty() {
            None
        } else {
            self.accounts.preview_grant(&secret::hash(grant)).await?
        };
        // A grant asked for while AUTH_MODE was none names nobody: void
        // once tokens are required.
        let row = match found {
            Some(row) if row.asked_by.is_some() || self.mode == AuthMode::None => row,
            _ => {
                self.metrics.rejected(Rejection::Unauthorized);
                return Err(ApiError::unauthorized(
                    "the preview grant is not valid: it is wrong, expired or revoked \
                     (the dashboard asks for a new one: POST /api/sessions/{id}/preview)",
                ));
            }
        };
        let principal = match &row.asked_by {
            Some(signed_in) => Principal {
                user: Some(signed_in.user.clone()),
                token_id: Some(signed_in.token_id),
                browser_session_id: signed_in.browser_session_id,
            },
            None => Principal::anonymous(),
        };
        // Another session's files: as for any session the caller may not
        // see, it does not exist.
        if Uuid::parse_str(wanted).ok() != Some(row.session_id) {
            return Err(ApiError::not_found(format!(
                "session {wanted} does not exist"
            )));
        }
        if let Some(user) = principal.user_id() {
            self.rate_limits.check_user(user)?;
        }
        Ok((
            principal,
            PreviewScope {
                session_id: row.session_id,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    #[test]
    fn a_grant_is_256_random_bits_behind_its_prefix() {
        let a = mint().unwrap();
        let b = mint().unwrap();
        assert!(a.secret.starts_with("rrp_"));
        assert_eq!(a.secret.len(), 4 + 43);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.sha256, secret::hash(&a.secret));
    }

    #[test]
    fn only_the_preview_scheme_names_a_grant() {
        let headers = |value: &str| {
            let mut map = HeaderMap::new();
            map.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            map
        };
        assert_eq!(presented(&headers("Preview rrp_x")), Some("rrp_x"));
        assert_eq!(presented(&headers("preview  rrp_x ")), Some("rrp_x"));
        assert_eq!(presented(&headers("Bearer rr_x")), None);
        assert_eq!(presented(&headers("Previewrrp_x")), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }

    #[test]
    fn a_grant_reaches_a_sessions_files_alone() {
        let id = "0b8f3a52-8f43-4c8e-9a8e-3f1c2d4e5f60";
        for path in [
            format!("/api/sessions/{id}/files"),
            format!("/api/sessions/{id}/files/"),
            format!("/api/sessions/{id}/files/a/b.js"),
        ] {
            assert_eq!(readable(&Method::GET, &path), Some(id), "{path}");
            assert_eq!(readable(&Method::HEAD, &path), Some(id), "{path}");
            assert_eq!(readable(&Method::POST, &path), None, "{path}");
            assert_eq!(readable(&Method::DELETE, &path), None, "{path}");
        }
        for path in [
            "/api/sessions".to_owned(),
            format!("/api/sessions/{id}"),
            format!("/api/sessions/{id}/diff"),
            format!("/api/sessions/{id}/filesx"),
            format!("/api/sessions/{id}/runs"),
            "/api/auth/me".to_owned(),
            "/metrics".to_owned(),
            format!("/x/api/sessions/{id}/files"),
        ] {
            assert_eq!(readable(&Method::GET, &path), None, "{path}");
        }
    }
}
