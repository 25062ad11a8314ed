//! A shared secret every request must carry (`Authorization: Bearer …`):
//! the runner answers only the backend when `RUNNER_TOKEN` is set.
//!
//! The token is compared in constant time, is never logged, and a request
//! without it gets a 401 in the error schema with `WWW-Authenticate`.

use std::fmt;
use std::sync::Arc;

use poem::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use poem::{Endpoint, IntoResponse, Request, Response};
use subtle::ConstantTimeEq;

/// The token a service requires; `None` requires nothing.
#[derive(Clone, Default)]
pub struct RequiredToken(Option<Arc<str>>);

impl fmt::Debug for RequiredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "<set>" } else { "<none>" })
    }
}

impl RequiredToken {
    /// `token`, unless it is empty or only spaces.
    pub fn new(token: Option<&str>) -> Self {
        Self(
            token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Arc::from),
        )
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `header` (an `Authorization` value) carries the token.
    pub fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some(expected) = &self.0 else {
            return true;
        };
        let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        // Equal lengths first (a token's length is no secret), then every
        // byte, in time that does not depend on where they differ.
        given.ct_eq(expected.as_bytes()).into()
    }

    /// Middleware: the request goes on only with the token.
    pub async fn check<E: Endpoint>(self, ep: Arc<E>, req: Request) -> poem::Result<Response> {
        let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        if self.accepts(header) {
            return ep.call(req).await.map(IntoResponse::into_response);
        }
        tracing::warn!(
            path = req.uri().path(),
            given = header.is_some(),
            "refused a request without the service's token"
        );
        let mut response = crate::error_response(
            crate::ErrorCode::Unauthorized,
            "this service needs its token: Authorization: Bearer <RUNNER_TOKEN>",
        );
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            poem::http::HeaderValue::from_static("Bearer"),
        );
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        let token = RequiredToken::new(Some("s3cret"));
        assert!(token.accepts(Some(b"Bearer s3cret")));
        assert!(!token.accepts(Some(b"Bearer s3cre")));
        assert!(!token.accepts(Some(b"Bearer s3cretx")));
        assert!(!token.accepts(Some(b"bearer s3cret")));
        assert!(!token.accepts(Some(b"s3cret")));
        assert!(!token.accepts(None));
    }

    #[test]
    fn without_a_token_everything_passes() {
        let none = RequiredToken::new(Some("  "));
        assert!(!none.is_set());
        assert!(none.accepts(None));
        assert_eq!(format!("{:?}", RequiredToken::new(Some("s3cret"))), "<set>");
    }
}
