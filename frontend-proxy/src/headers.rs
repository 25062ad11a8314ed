//! The security headers of the dashboard's listener (`PROXY_ADDR`). Every
//! response there, the dashboard's files, `/mode.json`, the proxy's own
//! errors and whatever is forwarded to the backend alike, says that no
//! other page may frame it (`frame-ancestors 'none'`, and
//! `X-Frame-Options: DENY` for browsers without CSP 2), that its content
//! type is not to be sniffed, and that the referrer stays on this origin.
//! Framing is refused because a signed-in dashboard in a frame of another
//! page (another local port is enough: cookies do not isolate by port) can
//! be clicked through unseen, and the approve button is there.
//!
//! The `Content-Security-Policy` lets scripts, styles and connections come
//! from this origin only: the dashboard has no inline script, style or
//! event handler, so a tag that slipped into model text past the escaping
//! would run nothing. Frames may show only the preview listener (the
//! Preview tab). Swagger UI (`/docs`, the backend's page, forwarded) is one
//! page with its script and style inline, so it gets a policy of its own
//! that allows those and loosens nothing else.

use std::sync::Arc;

use poem::http::{header, HeaderValue};
use poem::{Endpoint, IntoResponse, Request, Response};

/// The headers' values, made once at start-up.
#[derive(Clone)]
pub struct DashboardHeaders {
    /// The dashboard's policy, for every response but `/docs`.
    page: HeaderValue,
    /// Swagger UI's policy.
    docs: HeaderValue,
}

/// What both policies share: nothing from elsewhere, never framed, no
/// `<base>`, no plugins, forms posted here only.
const COMMON: &str = "default-src 'self'; img-src 'self' data:; connect-src 'self'; \
                      frame-ancestors 'none'; base-uri 'none'; form-action 'self'; \
                      object-src 'none'";

impl DashboardHeaders {
    /// `frame_src`: the CSP sources of the preview listener, as the
    /// dashboard's pages reach it (see `preview::preview_origins`).
    pub fn new(frame_src: &str) -> Self {
        let page = format!("{COMMON}; script-src 'self'; style-src 'self'; frame-src {frame_src}");
        let docs = format!(
            "{COMMON}; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
             frame-src 'none'"
        );
        Self {
            // The sources come from addresses and ALLOWED_HOSTS, which are
            // header-safe; should they not be, the dashboard frames
            // nothing rather than go without a policy.
            page: HeaderValue::from_str(&page).unwrap_or_else(|_| {
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; frame-src 'none'; \
                     frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
                )
            }),
            docs: HeaderValue::from_str(&docs).unwrap_or_else(|_| {
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'")
            }),
        }
    }

    /// The `Content-Security-Policy` of a response to `path`.
    fn policy(&self, path: &str) -> &HeaderValue {
        if path == "/docs" || path.starts_with("/docs/") {
            &self.docs
        } else {
            &self.page
        }
    }
}

/// Adds the dashboard's security headers to every response, errors
/// included, over whatever the backend said.
pub async fn secure<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    headers: Arc<DashboardHeaders>,
) -> poem::Result<Response> {
    let policy = headers.policy(req.uri().path()).clone();
    let mut response = match ep.call(req).await {
        Ok(response) => response.into_response(),
        Err(error) => service_kit::json_error(error).await,
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // No other origin learns the page's address. `same-origin` rather than
    // `no-referrer`: under `no-referrer` a form's POST says `Origin: null`,
    // and the backend judges a request without `Sec-Fetch-Site` by `Origin`.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swagger_ui_alone_may_run_inline_code() {
        let headers = DashboardHeaders::new("http://127.0.0.1:9104");
        for path in ["/", "/app.js", "/api/sessions", "/docsx", "/mode.json"] {
            let policy = headers.policy(path).to_str().unwrap_or_default();
            assert!(!policy.contains("unsafe"), "{path}: {policy}");
            assert!(
                policy.contains("frame-src http://127.0.0.1:9104"),
                "{path}: {policy}"
            );
        }
        for path in ["/docs", "/docs/"] {
            let policy = headers.policy(path).to_str().unwrap_or_default();
            assert!(
                policy.contains("script-src 'self' 'unsafe-inline'"),
                "{policy}"
            );
            assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        }
    }
}
