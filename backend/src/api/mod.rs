//! The HTTP API: one `OpenApi` struct per area, combined in one service;
//! the spec at `/api/openapi.json`, Swagger UI at `/docs`.

mod access;
mod auth;

mod files;
mod health;
mod models;
mod preview;
mod run_events;
mod runs;
mod sessions;
mod shipping;
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

pub(crate) use crate::http_error::ApiError;

use crate::engine::Engine;

#[derive(Tags)]
enum ApiTags {
    /// Repositories cloned into workspaces, each with one agent thread
    Sessions,
    /// Prompts and their runs, with live event streams
    Runs,
    /// The workspace's files and diff
    Files,
    /// Getting the work out: patches, the workspace's git state, commits,
    /// pushes and pull requests
    Git,
    /// Liveness and readiness
    Health,
    /// Signing a browser in and out, and who the caller is
    Auth,
}

/// Ids are parsed here; one that is not a UUID names nothing: 404.
fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("{what} {raw} does not exist")))
}

pub type Api = (
    health::HealthApi,
    auth::AuthApi,
    sessions::SessionsApi,
    runs::RunsApi,
    files::FilesApi,
    shipping::ShippingApi,
    preview::PreviewApi,
);

pub(crate) fn service(engine: &Arc<Engine>) -> OpenApiService<Api, ()> {
    // One gate of blocking git work (diffs, patches, git state, commits,
    // pushes): `BACKEND_MAX_CONCURRENT_DIFFS`.
    let git_gate = Arc::new(tokio::sync::Semaphore::new(
        engine.config().limits.max_concurrent_diffs.max(1),
    ));
    OpenApiService::new(
        (
            health::HealthApi {
                engine: engine.clone(),
            },
            auth::AuthApi {
                engine: engine.clone(),
            },
            sessions::SessionsApi {
                engine: engine.clone(),
            },
            runs::RunsApi {
                engine: engine.clone(),
            },
            files::FilesApi {
                engine: engine.clone(),
                diffs: git_gate.clone(),
            },
            shipping::ShippingApi::new(engine.clone(), git_gate),
            preview::PreviewApi {
                engine: engine.clone(),
            },
        ),
        "repo-runner",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Work on git repositories through the Codex agent and watch it live.\n\n\
         Every operation but health, readiness and signing in and out needs an API token \
         (`Authorization: Bearer rr_…`, made by `backend admin token create USER`) or the \
         `rr_session` cookie a browser gets by signing in, unless the server runs with \
         `AUTH_MODE=none`.",
    )
}

/// Operations anyone may call: the rest need a credential.
const PUBLIC_OPERATIONS: [&str; 5] = [
    "health",
    "ready",
    "sign_in",
    "sign_out",
    "inspect_signin_code",
];

/// The document with its security schemes: poem-openapi declares a scheme
/// only for operations that take one as a parameter, and ours are checked
/// once, by the middleware, for every route. Every operation needs the
/// bearer token or the cookie but the public ones, so a generated client
/// sends the token.
fn with_security(mut spec: serde_json::Value) -> serde_json::Value {
    use serde_json::json;
    spec["components"]["securitySchemes"] = json!({
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token, `rr_…` (`backend admin token create USER`)"
        },
        "cookieAuth": {
            "type": "apiKey",
            "in": "cookie",
            "name": crate::auth::COOKIE_NAME,
            "description": "A browser's sign-in (`POST /api/auth/session`); named `__Host-rr_session` behind TLS"
        }
    });
    spec["security"] = json!([{"bearerAuth": []}, {"cookieAuth": []}]);
    if let Some(paths) = spec["paths"].as_object_mut() {
        for operation in paths
            .values_mut()
            .filter_map(|p| p.as_object_mut())
            .flat_map(|p| p.values_mut())
        {
            let public = operation["operationId"]
                .as_str()
                .is_some_and(|id| PUBLIC_OPERATIONS.contains(&id));
            if public {
                operation["security"] = json!([]);
            }
        }
    }
    spec
}

/// The whole HTTP application. A method a path does not answer is a 405
/// whose `Allow` comes from the OpenAPI document's paths and the few routes
/// outside it.
pub(crate) fn app(engine: Arc<Engine>) -> impl IntoEndpoint {
    let api = service(&engine);
    let raw_spec = api.spec();
    let documented = serde_json::from_str(&raw_spec).unwrap_or_else(|error| {
        // poem-openapi writes this document itself; should it ever not be
        // JSON, a 405 still answers, with an empty `Allow`, and the log
        // says why.
        tracing::error!(%error, "the OpenAPI document is not JSON: 405s lack Allow");
        serde_json::Value::Null
    });
    // The document as served: with its security schemes, and each event
    // stream described as one event.
    let mut served = with_security(documented.clone());
    stream_event::describe_events(&mut served);
    let served = served.to_string();
    // Swagger UI embeds its document; it gets the served one, so its
    // Authorize button takes a token.
    let docs_html = api.swagger_ui_html().replacen(
        &format!("let spec = {raw_spec};"),
        &format!("let spec = {served};"),
        1,
    );
    let spec = poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(served.clone())
    });
    let docs = poem::endpoint::make_sync(move |_| poem::web::Html(docs_html.clone()));
    let max_body = engine.config().limits.max_body_bytes;
    let body_metrics = engine.metrics().clone();
    let cors = engine.config().cors_origins.clone();
    let config = engine.config();
    let rate_limits = Arc::new(crate::rate_limit::RateLimits::new(
        config.limits.ip_rate,
        config.limits.user_rate,
        config.trusted_proxies.clone(),
        engine.metrics().clone(),
    ));
    rate_limits.spawn_cleaner();
    let authenticator = Arc::new(crate::auth::Authenticator {
        mode: config.auth_mode,
        accounts: engine.accounts().clone(),
        trusted_origins: cors.iter().filter(|o| *o != "*").cloned().collect(),
        rate_limits: rate_limits.clone(),
        metrics: engine.metrics().clone(),
    });
    // A request with a preview grant is judged by the grant alone, before
    // the authenticator, and reaches the session's files and nothing else.
    let grants = Arc::new(crate::auth::preview_grant::PreviewGrants {
        mode: config.auth_mode,
        accounts: engine.accounts().clone(),
        rate_limits: rate_limits.clone(),
        metrics: engine.metrics().clone(),
    });
    let granted = Arc::new(preview::granted_routes(engine.clone()));
    let metrics_token = service_kit::RequiredToken::new(config.metrics_token.as_deref());
    let (route, outside_spec) = Routes::new()
        .at("/api/openapi.json", get(spec))
        .at(
            "/metrics",
            get(serve_metrics.data(engine.clone()).data(metrics_token)),
        )
        .at(
            "/api/sessions/:session_id/files/*path",
            get(file_with_slashes.data(engine.clone())),
        )
        .into_parts();
    let allowed = Arc::new(
        AllowedMethods::from_openapi(&documented)
            .merge(outside_spec)
            .route("/docs", [Method::GET]),
    );
    let route = route
        .at("/docs", poem::get(docs))
        .nest("/", api)
        .around(move |ep, req| limit_body(ep, req, max_body, body_metrics.clone()))
        .around(move |ep, req| allowed.clone().check(ep, req));
    let mut cors_mw = Cors::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(["content-type", "last-event-id", "authorization"])
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
        .around(move |ep, req| authenticator.clone().check(ep, req))
        .around(move |ep, req| preview::dispatch(ep, req, grants.clone(), granted.clone()))
        // Boxed, so that the type of the layers' futures stays within the
        // compiler's depth limit.
        .boxed()
        .around(move |ep, req| rate_limits.clone().check_ip(ep, req))
        .around(service_kit::log_request)
        .catch_all_error(crate::http_error::catch_all)
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
    if crate::auth::is_same_origin(req.headers()) {
        req.headers_mut().remove(poem::http::header::ORIGIN);
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

/// `GET /api/sessions/{id}/files/{path...}` with the path's slashes as is.
#[handler]
async fn file_with_slashes(
    Path((session_id, path)): Path<(String, String)>,
    engine: poem::web::Data<&Arc<Engine>>,
    crate::auth::Caller(caller): crate::auth::Caller,
) -> Response {
    match files::read(&engine, &session_id, &path, &caller).await {
        Ok(json) => json.into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /metrics`: the Prometheus text format, for the holder of
/// `BACKEND_METRICS_TOKEN` only; a 404 when it is not set.
#[handler]
async fn serve_metrics(
    req: &Request,
    engine: poem::web::Data<&Arc<Engine>>,
    token: poem::web::Data<&service_kit::RequiredToken>,
) -> Response {
    if !token.is_set() {
        return ApiError::not_found("metrics are off: set BACKEND_METRICS_TOKEN to turn them on")
            .into_response();
    }
    let header = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !token.accepts(header) {
        engine
            .metrics()
            .rejected(crate::metrics::Rejection::Unauthorized);
        return ApiError::unauthorized(
            "/metrics needs `Authorization: Bearer <BACKEND_METRICS_TOKEN>`",
        )
        .into_response();
    }
    let active = match engine.reads().active_run_counts().await {
        Ok(active) => active,
        Err(error) => return ApiError::from(error).into_response(),
    };
    match engine.metrics().encode(&active) {
        Ok(text) => Response::builder()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .header("cache-control", "no-store")
            .body(text),
        Err(error) => ApiError::internal(&error).into_response(),
    }
}

/// Refuses bodies over `BACKEND_MAX_BODY_BYTES`, with or without a
/// `Content-Length`.
async fn limit_body<E: poem::Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    max: usize,
    metrics: Arc<crate::metrics::Metrics>,
) -> poem::Result<Response> {
    // The body is left unread, so the connection cannot carry another
    // request: say so, or a client may reuse it and lose its next request.
    let too_large = || {
        metrics.rejected(crate::metrics::Rejection::BodyTooLarge);
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

#[cfg(test)]
mod architecture {
    /// Routes reach the backend's state only through the engine (its
    /// intentions, `Reads` and `Accounts`): no file of the API names the
    /// store, the live tails or the runner's client, which `engine/` keeps
    /// private. A tidy-style check of the source, as rust-analyzer's.
    #[test]
    fn no_route_reaches_past_the_engine() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let forbidden = [
            "Store",
            "store()",
            "Hubs",
            "hubs()",
            "RunnerClient",
            "runner()",
        ];
        let mut found = Vec::new();
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            files += 1;
            // This test names them.
            let text = text.split("mod architecture").next().unwrap_or_default();
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for word in forbidden {
                    let named = code.match_indices(word).any(|(at, _)| {
                        let before = code[..at].chars().next_back();
                        let after = code[at + word.len()..].chars().next();
                        let ident =
                            |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                        // `Refused::Store(error)` is an error's variant.
                        let variant = after == Some('(');
                        !ident(before) && (word.ends_with(')') || !(ident(after) || variant))
                    });
                    if named {
                        found.push(format!(
                            "{}:{}: {}",
                            path.display(),
                            number + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
        assert!(files >= 10, "read only {files} files of {}", dir.display());
        assert!(
            found.is_empty(),
            "the API reaches past the engine:\n{}",
            found.join("\n")
        );
    }
}
