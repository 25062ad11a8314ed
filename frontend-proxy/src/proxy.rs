//! The reverse proxy: requests and responses stream through untouched but
//! for hop-by-hop headers. An event stream passes each chunk on as it
//! arrives. When the client goes away, the next write to it fails (an idle
//! event stream writes a keep-alive comment every `BACKEND_KEEP_ALIVE_SECS`),
//! the response body is dropped, and with it the upstream response, which
//! closes the upstream connection.

use poem::http::{HeaderMap, HeaderName};
use poem::web::Data;
use poem::{handler, Body, Request, Response};

#[derive(Clone)]
pub struct Upstream {
    pub base: String,
    pub client: reqwest::Client,
}

impl Upstream {
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            // Never decompress or re-encode: bytes pass through as they are.
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
        }
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn end_to_end(
    headers: &HeaderMap,
) -> impl Iterator<Item = (&HeaderName, &poem::http::HeaderValue)> {
    headers.iter().filter(|(name, _)| {
        let name = name.as_str();
        !HOP_BY_HOP.contains(&name) && name != "host" && name != "content-length"
    })
}

#[handler]
pub async fn forward(req: &Request, body: Body, Data(upstream): Data<&Upstream>) -> Response {
    // `original_uri`: a nested route sees its path without the prefix.
    let target = format!(
        "{}{}",
        upstream.base,
        req.original_uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut request = upstream.client.request(req.method().clone(), &target);
    for (name, value) in end_to_end(req.headers()) {
        request = request.header(name, value);
    }
    if let Some(host) = req.headers().get("host") {
        request = request.header("x-forwarded-host", host);
    }
    if let Some(addr) = req.remote_addr().as_socket_addr() {
        request = request.header("x-forwarded-for", addr.ip().to_string());
    }
    if let Some(length) = req.headers().get("content-length") {
        request = request.header("content-length", length);
    }
    let request = request.body(reqwest::Body::wrap_stream(body.into_bytes_stream()));
    let upstream_response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(error = %error.without_url(), "backend unreachable");
            return bad_gateway();
        }
    };
    let mut response = Response::builder().status(upstream_response.status());
    for (name, value) in end_to_end(upstream_response.headers()) {
        response = response.header(name, value);
    }
    if let Some(length) = upstream_response.headers().get("content-length") {
        response = response.header("content-length", length);
    }
    let stream = futures_util::TryStreamExt::map_err(
        upstream_response.bytes_stream(),
        std::io::Error::other,
    );
    response.body(Body::from_bytes_stream(stream))
}

/// The API's error schema, for when the backend cannot be reached.
pub fn bad_gateway() -> Response {
    service_kit::error_response(
        service_kit::ErrorCode::BackendUnavailable,
        "the backend is unreachable; the dashboard retries by itself",
    )
}
