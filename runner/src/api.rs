//! The runner's HTTP API, route for route that of the seed design's Node
//! runner (same paths, same camelCase JSON fields). The bodies are
//! `runner_protocol`'s types, which the backend's client shares.

use std::path::PathBuf;
use std::sync::Arc;

use codex_sdk::{Codex, SandboxMode, ThreadOptions};
use event_log::Next;
use poem::error::ReadBodyError;
use poem::http::{HeaderMap, StatusCode};
use poem::web::{Data, Json, Path, Query};
use poem::{handler, Body, EndpointExt, IntoEndpoint, IntoResponse, Response};
use runner_protocol::{
    ApprovalDecision, ApprovalId, CancelAccepted, CancelStatus, ControlAccepted, ControlRefusal,
    CreateRun, CreateThread, Cursor, Health, ResolveApproval, RunCreated, RunSnapshot, SteerRun,
    ThreadView,
};
use serde::Deserialize;
use service_kit::methods::{get, post};
use service_kit::Routes;
use uuid::Uuid;

use crate::config::Config;
use crate::error::{catch_all, ApiError, Result};
use crate::execution::spawn_run;
use crate::registry::{Registry, RunStatus};
use crate::workspace::{sweep_homes, CodexHomes, WorkingDirectory};

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub config: Arc<Config>,
    /// `WORKSPACES_ROOT`, canonical.
    pub root: Arc<PathBuf>,
    /// The threads' `CODEX_HOME`s, under `RUNNER_CODEX_HOMES`.
    pub homes: Arc<CodexHomes>,
    pub codex: Codex,
    /// `GET /models`.
    pub models: Arc<crate::models::Catalog>,
    pub registry: Arc<Registry>,
    /// Cancelled when the runner stops: every event stream ends at once.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// The routes; a method a path does not answer is a 405 with `Allow`,
/// from the same table.
pub(crate) fn routes(state: AppState) -> impl IntoEndpoint {
    let (route, allowed) = Routes::new()
        .at("/health", get(health))
        .at("/models", get(list_models))
        .at("/threads", post(create_thread))
        .at("/threads/:id", get(get_thread).delete(delete_thread))
        .at("/runs", post(create_run))
        .at("/runs/:id", get(get_run))
        .at("/runs/:id/cancel", post(cancel_run))
        .at("/runs/:id/approvals/:approval_id", post(resolve_approval))
        .at("/runs/:id/steer", post(steer_run))
        .at("/runs/:id/interrupt", post(interrupt_run))
        .at("/runs/:id/events", get(run_events))
        .into_parts();
    let allowed = Arc::new(allowed);
    let token = state.config.token.clone();
    route
        .around(move |ep, req| allowed.clone().check(ep, req))
        // Before any route, the 405s included: without the token a client
        // learns nothing about the API.
        .around(move |ep, req| token.clone().check(ep, req))
        .around(service_kit::log_request)
        .data(state)
        .catch_all_error(catch_all)
}

#[handler]
fn health() -> Json<Health> {
    Json(Health::ok())
}

/// The models the CLI offers (`model/list`), kept for a few minutes.
#[handler]
async fn list_models(Data(state): Data<&AppState>) -> Result<Json<crate::models::ModelList>> {
    let list = state.models.list().await.map_err(ApiError::Internal)?;
    Ok(Json((*list).clone()))
}

fn thread_view(record: crate::registry::ThreadRecord) -> ThreadView {
    ThreadView {
        thread_id: record.id,
        codex_thread_id: record.codex_thread_id,
        working_directory: record.options.working_directory,
        active_run_id: record.active_run,
        created_at: record.created_at,
    }
}

/// Reads a JSON body of at most `RUNNER_MAX_BODY_BYTES`, with or without a
/// `Content-Length`. The body must say it is JSON (415 otherwise, as the
/// backend answers); a body that is not the request's JSON is a 400, a
/// value in it that is refused later a 422.
async fn read_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T> {
    match headers.get(poem::http::header::CONTENT_TYPE) {
        None => {
            return Err(ApiError::UnsupportedMediaType(
                "the request has no Content-Type; send application/json".into(),
            ))
        }
        Some(value) if !value.to_str().is_ok_and(is_json) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the request body must be application/json, not {}",
                String::from_utf8_lossy(value.as_bytes())
            )))
        }
        Some(_) => {}
    }
    let limit = state.config.limits.max_body_bytes;
    let bytes = body.into_bytes_limit(limit).await.map_err(|e| match e {
        ReadBodyError::PayloadTooLarge => ApiError::TooLarge(format!(
            "the request body is larger than {limit} bytes (RUNNER_MAX_BODY_BYTES)"
        )),
        other => ApiError::BadRequest(format!("cannot read the request body: {other}")),
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// `application/json` or `application/<anything>+json`, parameters aside:
/// what the backend (poem-openapi) accepts as JSON.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", subtype)) => subtype == "json" || subtype.ends_with("+json"),
        _ => false,
    }
}

#[handler]
async fn create_thread(
    Data(state): Data<&AppState>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let request: CreateThread = read_json(state, headers, body).await?;
    let invalid = |e: crate::workspace::WorkspaceError| ApiError::Validation(e.to_string());
    let working =
        WorkingDirectory::parse(&request.working_directory, &state.root).map_err(invalid)?;
    let session = working.session_folder(&state.root);
    let mut additional = Vec::with_capacity(request.additional_directories.len());
    for dir in &request.additional_directories {
        let dir = WorkingDirectory::parse(dir, &state.root).map_err(invalid)?;
        // Another session's folder would be writable by this agent.
        if !dir.path().starts_with(&session) {
            return Err(ApiError::Forbidden(format!(
                "additionalDirectories {} is not in the session folder of workingDirectory",
                dir.path().display()
            )));
        }
        additional.push(dir.path().to_path_buf());
    }
    if let Some(model) = &request.model {
        if model.trim().is_empty() || model.len() > 200 {
            return Err(ApiError::Validation(
                "model must be 1 to 200 characters".into(),
            ));
        }
    }
    let policy = sandbox_policy(&state.config, &request)?;
    let resume = match request.resume_thread_id {
        Some(id) if !valid_codex_thread_id(&id) => {
            return Err(ApiError::Validation(
                "resumeThreadId must be a Codex thread id (letters, digits and dashes)".into(),
            ))
        }
        other => other,
    };
    let homes = state.homes.clone();
    let template = state.config.codex_config.clone();
    let dir = working.clone();
    let home = tokio::task::spawn_blocking(move || homes.prepare(&dir, template.as_deref()))
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?
        .map_err(|e| {
            ApiError::Internal(
                anyhow::Error::new(e).context("cannot prepare the thread's CODEX_HOME"),
            )
        })?;
    let options = ThreadOptions {
        model: request.model,
        sandbox_mode: Some(policy.sandbox),
        working_directory: Some(working.path().to_path_buf()),
        skip_git_repo_check: request.skip_git_repo_check,
        model_reasoning_effort: request.model_reasoning_effort,
        network_access_enabled: policy.network,
        web_search_enabled: policy.web_search,
        approval_policy: Some(
            request
                .approval_policy
                .unwrap_or(state.config.default_approval),
        ),
        additional_directories: additional,
        codex_home: Some(home.codex_home),
        private_tmp: (policy.sandbox == SandboxMode::WorkspaceWrite).then_some(home.tmp),
        // All the CLI may see of the hidden workspaces and homes roots: its
        // session's folder (the working and additional directories are in
        // it) and its own home.
        exposed: vec![session, home.base],
        approvals_run_unsandboxed: state.config.sandbox.allow_unsandboxed_approvals,
    };
    let record = state.registry.add_thread(options, resume)?;
    tracing::info!(
        thread_id = %record.id,
        dir = %working.path().display(),
        sandbox = policy.sandbox.as_str(),
        "thread created"
    );
    Ok((StatusCode::CREATED, Json(thread_view(record))).into_response())
}

/// The sandbox a thread gets: the operator's configuration, narrowed (never
/// widened) by the request.
struct SandboxPolicy {
    sandbox: SandboxMode,
    network: Option<bool>,
    web_search: Option<bool>,
}

fn sandbox_policy(config: &Config, request: &CreateThread) -> Result<SandboxPolicy> {
    let limits = &config.sandbox;
    let sandbox = request.sandbox_mode.unwrap_or(config.default_sandbox);
    if sandbox > limits.max_sandbox {
        return Err(ApiError::Forbidden(format!(
            "sandboxMode {} is wider than this runner allows ({}, RUNNER_MAX_SANDBOX)",
            sandbox.as_str(),
            limits.max_sandbox.as_str()
        )));
    }
    if request.network_access_enabled == Some(true) && !limits.allow_network {
        return Err(ApiError::Forbidden(
            "networkAccessEnabled is not allowed by this runner (RUNNER_ALLOW_NETWORK)".into(),
        ));
    }
    if request.web_search_enabled == Some(true) && !limits.allow_web_search {
        return Err(ApiError::Forbidden(
            "webSearchEnabled is not allowed by this runner (RUNNER_ALLOW_WEB_SEARCH)".into(),
        ));
    }
    // Said explicitly when not allowed, so that no config.toml turns them on.
    Ok(SandboxPolicy {
        sandbox,
        network: if limits.allow_network {
            request.network_access_enabled
        } else {
            Some(false)
        },
        web_search: if limits.allow_web_search {
            request.web_search_enabled
        } else {
            Some(false)
        },
    })
}

/// Codex thread ids are UUIDs; anything else could smuggle a flag or a path
/// into the CLI's command line.
fn valid_codex_thread_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && !id.starts_with('-')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[handler]
fn get_thread(Data(state): Data<&AppState>, Path(id): Path<String>) -> Result<Json<ThreadView>> {
    let id = parse_id(&id, "thread")?;
    Ok(Json(thread_view(state.registry.thread(id)?)))
}

#[handler]
async fn delete_thread(Data(state): Data<&AppState>, Path(id): Path<String>) -> Result<StatusCode> {
    let id = parse_id(&id, "thread")?;
    state.registry.remove_thread(id)?;
    // A backend that removed the session's folder first (the sweeper does)
    // sees the thread's CODEX_HOME go now, not at the next periodic sweep.
    sweep_homes(state.homes.clone()).await;
    Ok(StatusCode::NO_CONTENT)
}

#[handler]
async fn create_run(
    Data(state): Data<&AppState>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let request: CreateRun = read_json(state, headers, body).await?;
    let thread_id = parse_id(&request.thread_id, "thread")?;
    let prompt = checked_prompt(state, &request.prompt)?;
    let (run, thread) = state.registry.start_run(thread_id)?;
    let run_id = run.id;
    spawn_run(
        state.codex.clone(),
        state.registry.clone(),
        run,
        thread,
        prompt.to_owned(),
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(RunCreated {
            run_id,
            thread_id,
            status: RunStatus::Running,
        }),
    )
        .into_response())
}

#[handler]
fn get_run(Data(state): Data<&AppState>, Path(id): Path<String>) -> Result<Json<RunSnapshot>> {
    let id = parse_id(&id, "run")?;
    Ok(Json(state.registry.run(id)?.snapshot()))
}

#[handler]
fn cancel_run(Data(state): Data<&AppState>, Path(id): Path<String>) -> Result<Response> {
    let id = parse_id(&id, "run")?;
    let run = state.registry.run(id)?;
    if !run.request_cancel() {
        return Err(ApiError::Conflict(format!(
            "run {id} already finished ({:?})",
            run.status()
        )));
    }
    tracing::info!(run_id = %id, "cancel requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelAccepted {
            run_id: id,
            status: CancelStatus::Cancelling,
        }),
    )
        .into_response())
}

/// The run's control, or why there is none: ended (409), or a driver that
/// cannot (409, saying which).
fn control_of(state: &AppState, id: &str) -> Result<(Uuid, codex_sdk::RunControl)> {
    let id = parse_id(id, "run")?;
    let run = state.registry.run(id)?;
    let control = run
        .control()
        .ok_or(ApiError::Refused(ControlRefusal::Ended))?;
    Ok((id, control))
}

/// The refusal in the protocol's words; what the CLI said stays in the log.
fn control_error(id: Uuid, error: codex_sdk::ControlError) -> ApiError {
    use codex_sdk::ControlError;
    ApiError::Refused(match error {
        ControlError::NoSuchApproval(_) => ControlRefusal::NoSuchApproval,
        ControlError::Unsupported => ControlRefusal::Unsupported,
        ControlError::Ended => ControlRefusal::Ended,
        ControlError::NoTurn => ControlRefusal::NoTurn,
        ControlError::Refused(why) => {
            tracing::warn!(run_id = %id, %why, "the Codex CLI refused a control");
            ControlRefusal::Refused
        }
    })
}

fn accepted(run_id: Uuid) -> Response {
    (StatusCode::ACCEPTED, Json(ControlAccepted { run_id })).into_response()
}

/// Answers an `approval.requested` of the run.
#[handler]
async fn resolve_approval(
    Data(state): Data<&AppState>,
    Path((id, approval_id)): Path<(String, String)>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let request: ResolveApproval = read_json(state, headers, body).await?;
    if request.by.as_ref().is_some_and(|by| by.len() > 200) {
        return Err(ApiError::Validation(
            "by must be at most 200 characters".into(),
        ));
    }
    let (id, control) = control_of(state, &id)?;
    // Only the one form an approval id has; anything else was never issued.
    let approval_id = ApprovalId::parse(&approval_id)
        .map_err(|_| ApiError::Refused(ControlRefusal::NoSuchApproval))?;
    let decision = match request.decision {
        ApprovalDecision::Approve => codex_sdk::Decision::Approve,
        ApprovalDecision::ApproveForSession => codex_sdk::Decision::ApproveForSession,
        ApprovalDecision::Deny => codex_sdk::Decision::Deny,
    };
    control
        .approve(&approval_id, decision, request.by)
        .await
        .map_err(|e| control_error(id, e))?;
    tracing::info!(run_id = %id, %approval_id, decision = decision.as_str(), "approval resolved");
    Ok(accepted(id))
}

/// Sends a prompt into the run's turn.
#[handler]
async fn steer_run(
    Data(state): Data<&AppState>,
    Path(id): Path<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let request: SteerRun = read_json(state, headers, body).await?;
    let prompt = checked_prompt(state, &request.prompt)?;
    let (id, control) = control_of(state, &id)?;
    control
        .steer(prompt)
        .await
        .map_err(|e| control_error(id, e))?;
    tracing::info!(run_id = %id, "steered");
    Ok(accepted(id))
}

/// Asks the CLI to stop the run's turn; the run ends `run.cancelled`.
#[handler]
async fn interrupt_run(Data(state): Data<&AppState>, Path(id): Path<String>) -> Result<Response> {
    let (id, control) = control_of(state, &id)?;
    control
        .interrupt()
        .await
        .map_err(|e| control_error(id, e))?;
    tracing::info!(run_id = %id, "interrupt requested");
    Ok(accepted(id))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<String>,
}

/// Server-Sent Events of a run: every event after `Last-Event-ID` (or
/// `?after=`), then the live tail, then the close.
#[handler]
fn run_events(
    Data(state): Data<&AppState>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: &HeaderMap,
) -> Result<Response> {
    let id = parse_id(&id, "run")?;
    let run = state.registry.run(id)?;
    // A header that is not text is no number either.
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("invalid"));
    let after = Cursor::parse(header, query.after.as_deref())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let shutdown = state.shutdown.clone();
    let frames = async_stream::stream! {
        let mut after = after;
        loop {
            let next = tokio::select! {
                next = run.log.frames_after(after, service_kit::sse::CHUNK_BYTES) => next,
                _ = shutdown.cancelled() => Next::Closed,
            };
            // The runner's log starts at 1 and releases nothing, so no
            // reader is ever behind it.
            let Next::Events(frames) = next else { break };
            after = frames.last_seq;
            yield frames.bytes;
        }
    };
    Ok(service_kit::sse::response(
        frames,
        state.config.limits.keep_alive,
    ))
}

/// A run's (or a steer's) prompt, trimmed: not empty, and within
/// `RUNNER_MAX_PROMPT_BYTES`.
fn checked_prompt<'a>(state: &AppState, raw: &'a str) -> Result<&'a str> {
    let prompt = raw.trim();
    if prompt.is_empty() {
        return Err(ApiError::Validation("prompt must not be empty".into()));
    }
    let limit = state.config.limits.max_prompt_bytes;
    if prompt.len() > limit {
        return Err(ApiError::Validation(format!(
            "prompt is {} bytes; the limit is {limit} (RUNNER_MAX_PROMPT_BYTES)",
            prompt.len()
        )));
    }
    Ok(prompt)
}

fn parse_id(raw: &str, what: &str) -> Result<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(format!("{what} {raw} does not exist")))
}
