//! One span per request, and its outcome logged at DEBUG: at INFO a
//! service logs what a person needs (start, its address, sessions and runs
//! coming and going, errors), not every poll of a dashboard. A 5xx is a
//! WARN, since someone should look at it.
//!
//! Use with `EndpointExt::around(service_kit::log_request)`.

use std::sync::Arc;
use std::time::Instant;

use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::Instrument;

/// Calls `endpoint` inside a `request` span (method and path, never the
/// query, which may carry an event cursor but nothing secret, or headers,
/// which may) and logs how it ended.
pub async fn log_request<E: Endpoint>(
    endpoint: Arc<E>,
    request: Request,
) -> poem::Result<Response> {
    let path = request.uri().path().to_owned();
    log_request_as(endpoint, request, path).await
}

/// [`log_request`] with the path as `path` says, for a service whose paths
/// may carry a secret (the preview's grants): the span shows `path`, never
/// the request's own.
pub async fn log_request_as<E: Endpoint>(
    endpoint: Arc<E>,
    request: Request,
    path: String,
) -> poem::Result<Response> {
    let span = tracing::info_span!("request", method = %request.method(), path = %path);
    async move {
        let started = Instant::now();
        let result = endpoint
            .call(request)
            .await
            .map(IntoResponse::into_response);
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(response) if response.status().is_server_error() => {
                tracing::warn!(status = %response.status(), elapsed_ms, "request failed");
            }
            Ok(response) => tracing::debug!(status = %response.status(), elapsed_ms, "request"),
            Err(error) if error.status().is_server_error() => {
                tracing::warn!(status = %error.status(), %error, elapsed_ms, "request failed");
            }
            Err(error) => tracing::debug!(status = %error.status(), %error, elapsed_ms, "request"),
        }
        result
    }
    .instrument(span)
    .await
}
