//! The HTTP API: one `OpenApi` struct per area, combined in one service;
//! the spec at `/api/openapi.json`, Swagger UI at `/docs`.

mod error;
mod files;
mod health;
mod models;
mod runs;
mod sessions;
mod stream_event;

use std::sync::Arc;

use poem::http::Method;
use poem::middleware::Cors;
use poem::web::Path;
use poem::{handler, EndpointExt, IntoEndpoint, IntoResponse, Request, Response};
use poem_openapi::{OpenApiService, Tags};
use service_kit::methods::get;
use service_kit::{AllowedMethods, Routes};
use uuid::Uuid;

pub use error::{ApiError, ErrorBody};

use crate::engine::Engine;

#[derive(Tags)]
enum ApiTags {
    /// Repositories cloned into workspaces, each with one agent thread
    Sessions,
    /// Prompts and their runs, with live event streams
    Runs,
    /// The workspace's files and diff
    Files,
    /// Liveness and readiness
    Health,
}

/// Ids are parsed here; one that is not a UUID names nothing: 404.
fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("{what} {raw} does not exist")))
}

pub type Api = (
    health::HealthApi,
    sessions::SessionsApi,
    runs::RunsApi,
    files::FilesApi,
);

pub fn service(engine: &Arc<Engine>) -> OpenApiService<Api, ()> {
    OpenApiService::new(
        (
            health::HealthApi {
                engine: engine.clone(),
            },
            sessions::SessionsApi {
                engine: engine.clone(),
            },
            runs::RunsApi {
                engine: engine.clone(),
            },
            files::FilesApi::new(engine.clone()),
        ),
        "repo-runner",
        env!("CARGO_PKG_VERSION"),
    )
    .description("Work on git repositories through the Codex agent and watch it live.")
}

/// The whole HTTP application. A method a path does not answer is a 405
/// whose `Allow` comes from the OpenAPI document's paths and the few routes
/// outside it.
pub fn app(engine: Arc<Engine>) -> impl IntoEndpoint {
    let api = service(&engine);
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let documented = serde_json::from_str(&api.spec()).unwrap_or_else(|error| {
        // poem-openapi writes this document itself; should it ever not be
        // JSON, a 405 still answers, with an empty `Allow`, and the log
        // says why.
        tracing::error!(%error, "the OpenAPI document is not JSON: 405s lack Allow");
        serde_json::Value::Null
    });
    let max_body = engine.config().limits.max_body_bytes;
    let cors = engine.config().cors_origins.clone();
    let (route, outside_spec) = Routes::new()
        .at("/api/openapi.json", get(spec))
        .at(
            "/api/sessions/:session_id/files/*path",
            get(file_with_slashes.data(engine.clone())),
        )
        .into_parts();
    let allowed = Arc::new(
        AllowedMethods::from_openapi(&documented)
            .merge(outside_spec)
            .route("/docs", [Method::GET])
            .route("/docs/*file", [Method::GET]),
    );
    let route = route
        .nest("/docs", poem::get(docs))
        .nest("/", api)
        .around(move |ep, req| limit_body(ep, req, max_body))
        .around(move |ep, req| allowed.clone().check(ep, req));
    let mut cors_mw = Cors::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(["content-type", "last-event-id"])
        .expose_headers(["content-type"]);
    // `*` means any origin: poem's `Cors` with no origin listed echoes the
    // request's origin, and credentials stay off.
    if !cors.iter().any(|o| o == "*") {
        for origin in &cors {
            cors_mw = cors_mw.allow_origin(origin.as_str());
        }
    }
    let route = route.boxed();
    let route = if cors.is_empty() {
        route
    } else {
        route.with(cors_mw).around(same_origin_is_not_cors).boxed()
    };
    route
        .around(service_kit::log_request)
        .catch_all_error(error::catch_all)
}

/// A request whose `Origin` is the page's own origin is not a cross-origin
/// request, whatever `CORS_ORIGINS` lists: the dashboard, served by the
/// proxy, sends `Origin` on its POSTs. The page's host is the proxy's
/// `X-Forwarded-Host` or else `Host`; a browser cannot set either itself
/// on a cross-origin request without a preflight the CORS layer refuses.
/// Such a request loses its `Origin` before the CORS layer sees it.
async fn same_origin_is_not_cors<E: poem::Endpoint>(
    ep: Arc<E>,
    mut req: Request,
) -> poem::Result<Response> {
    let headers = req.headers();
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(poem::http::header::HOST))
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let same = match (
        host,
        headers
            .get(poem::http::header::ORIGIN)
            .and_then(|o| o.to_str().ok()),
    ) {
        (Some(host), Some(origin)) => {
            origin.eq_ignore_ascii_case(&format!("http://{host}"))
                || origin.eq_ignore_ascii_case(&format!("https://{host}"))
        }
        _ => false,
    };
    if same {
        req.headers_mut().remove(poem::http::header::ORIGIN);
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

/// `GET /api/sessions/{id}/files/{path...}` with the path's slashes as is.
#[handler]
async fn file_with_slashes(
    Path((session_id, path)): Path<(String, String)>,
    engine: poem::web::Data<&Arc<Engine>>,
) -> Response {
    let files = files::FilesApi::new(engine.0.clone());
    match files.read(&session_id, &path).await {
        Ok(json) => json.into_response(),
        Err(error) => error.into_response(),
    }
}

/// Refuses bodies over `BACKEND_MAX_BODY_BYTES`, with or without a
/// `Content-Length`.
async fn limit_body<E: poem::Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    max: usize,
) -> poem::Result<Response> {
    // The body is left unread, so the connection cannot carry another
    // request: say so, or a client may reuse it and lose its next request.
    let too_large = || {
        let mut response = ApiError::too_large(format!(
            "the request body is larger than {max} bytes (BACKEND_MAX_BODY_BYTES)"
        ))
        .into_response();
        response
            .headers_mut()
            .insert("connection", poem::http::HeaderValue::from_static("close"));
        response
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(len) if len > max => return Ok(too_large()),
        Some(_) => {}
        None if req.headers().contains_key("transfer-encoding") => {
            let body = req.take_body();
            match body.into_bytes_limit(max).await {
                Ok(bytes) => req.set_body(bytes),
                Err(_) => return Ok(too_large()),
            }
        }
        None => {}
    }
    Ok(ep.call(req).await?.into_response())
}
