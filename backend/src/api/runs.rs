//! Runs: list, read, cancel, and the event stream.

use std::sync::Arc;

use futures_util::StreamExt;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use runner_protocol::Cursor;

use super::models::{
    AgentModel, ApprovalRequest, CancelAccepted, CancelState, ControlAccepted, ModelList, Run,
    RunList, SteerRequest,
};
use super::stream_event::EventFrames;
use super::{access, parse_id, ApiTags};
use crate::auth::Caller;
use crate::engine::{Cancel, ControlError, Engine};
use crate::http_error::{ApiError, ApiResult};

pub struct RunsApi {
    pub engine: Arc<Engine>,
}

#[derive(ApiResponse)]
enum Events {
    /// Server-Sent Events: the persisted events after `Last-Event-ID` (or
    /// `after`), then the live tail; the stream closes after the terminal
    /// event (`run.completed`, `run.failed` or `run.cancelled`).
    #[oai(status = 200)]
    Ok(
        EventFrames,
        /// Tells reverse proxies not to buffer the stream.
        #[oai(header = "X-Accel-Buffering")]
        String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// The run has ended and nothing is left after `Last-Event-ID`: a
    /// browser's `EventSource` stops reconnecting (WHATWG HTML, 9.2).
    #[oai(status = 204)]
    NothingLeft,
}

#[derive(ApiResponse)]
enum Controlled {
    /// The runner took it: its effect shows on the run's event stream.
    #[oai(status = 202)]
    Accepted(Json<ControlAccepted>),
}

#[derive(ApiResponse)]
enum Cancelled {
    /// The run was cancelled (queued) or is being cancelled (running).
    #[oai(status = 202)]
    Accepted(Json<CancelAccepted>),
}

#[OpenApi(tag = "ApiTags::Runs")]
impl RunsApi {
    /// List a session's runs, in order
    #[oai(
        path = "/api/sessions/:session_id/runs",
        method = "get",
        operation_id = "list_runs"
    )]
    async fn list(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
    ) -> ApiResult<Json<RunList>> {
        let reads = self.engine.reads();
        let session = access::session(reads, &session_id, &caller).await?;
        let runs = reads.runs_of_session(session.id).await?;
        Ok(Json(RunList {
            runs: runs.into_iter().map(Run::from).collect(),
        }))
    }

    /// Get a run
    ///
    /// Its status, prompt, final response, token usage, error, timestamps,
    /// and the files it created, modified and deleted.
    #[oai(path = "/api/runs/:run_id", method = "get", operation_id = "get_run")]
    async fn get(&self, Caller(caller): Caller, run_id: Path<String>) -> ApiResult<Json<Run>> {
        Ok(Json(
            access::run(self.engine.reads(), &run_id, &caller)
                .await?
                .into(),
        ))
    }

    /// Cancel a run
    #[oai(
        path = "/api/runs/:run_id/cancel",
        method = "post",
        operation_id = "cancel_run"
    )]
    async fn cancel(&self, Caller(caller): Caller, run_id: Path<String>) -> ApiResult<Cancelled> {
        let run = access::run(self.engine.reads(), &run_id, &caller).await?;
        let status = match self.engine.cancel(&run).await? {
            Cancel::Cancelled => CancelState::Cancelled,
            Cancel::Cancelling => CancelState::Cancelling,
            Cancel::AlreadyEnded => {
                return Err(ApiError::conflict(format!(
                    "run {} already finished ({})",
                    run.id, run.status
                )))
            }
        };
        Ok(Cancelled::Accepted(Json(CancelAccepted {
            run_id: run.id,
            status,
        })))
    }

    /// List the models a session may choose
    ///
    /// The runner's CLI's models, with the reasoning efforts each supports
    /// (`model` and `reasoning_effort` of `POST /api/sessions`).
    #[oai(
        path = "/api/models",
        method = "get",
        operation_id = "list_models",
        tag = "ApiTags::Sessions"
    )]
    async fn models(&self, Caller(_caller): Caller) -> ApiResult<Json<ModelList>> {
        let models = self.engine.models().await.map_err(|error| {
            tracing::warn!(%error, "cannot list the runner's models");
            ApiError::unavailable("the runner cannot list its models now; try again shortly")
        })?;
        Ok(Json(ModelList {
            models: models
                .into_iter()
                .map(|m| AgentModel {
                    id: m.id,
                    supported_reasoning_efforts: m.supported_reasoning_efforts,
                })
                .collect(),
        }))
    }

    /// Answer an approval the agent asked for
    ///
    /// `approval.requested` events name the approval; `approval.resolved`
    /// follows on the stream. The run waits for an answer (or a cancel);
    /// an answer given once is final (a second one is a 404). Needs the
    /// runner's app-server driver.
    #[oai(
        path = "/api/runs/:run_id/approvals/:approval_id",
        method = "post",
        operation_id = "resolve_approval"
    )]
    async fn approve(
        &self,
        Caller(caller): Caller,
        run_id: Path<String>,
        approval_id: Path<String>,
        body: Json<ApprovalRequest>,
    ) -> ApiResult<Controlled> {
        let decision = body.decision.get("decision")?;
        // Parsed before it goes anywhere: it becomes a path segment of the
        // runner's URL.
        let approval_id = runner_protocol::ApprovalId::parse(&approval_id).map_err(|_| {
            ApiError::bad_request(
                "approval_id must be the id of an approval.requested event (approval-<number>)",
            )
        })?;
        let run = access::run(self.engine.reads(), &run_id, &caller).await?;
        let by = caller.user.as_ref().map(|u| u.name.clone());
        self.engine
            .approve(&run, &approval_id, decision.into(), by)
            .await
            .map_err(|e| control_error(run.id, e))?;
        Ok(Controlled::Accepted(Json(ControlAccepted {
            run_id: run.id,
        })))
    }

    /// Send a prompt into a running turn
    ///
    /// The model reads it at its next request, without waiting for the
    /// turn to end (a prompt sent to the session instead is queued). Needs
    /// the runner's app-server driver.
    #[oai(
        path = "/api/runs/:run_id/steer",
        method = "post",
        operation_id = "steer_run"
    )]
    async fn steer(
        &self,
        Caller(caller): Caller,
        run_id: Path<String>,
        body: Json<SteerRequest>,
    ) -> ApiResult<Controlled> {
        let prompt = crate::domain::Prompt::parse(
            &body.prompt,
            self.engine.config().limits.max_prompt_chars,
        )
        .map_err(|e| ApiError::invalid(e.to_string()))?;
        let run = access::run(self.engine.reads(), &run_id, &caller).await?;
        self.engine
            .steer(&run, &prompt)
            .await
            .map_err(|e| control_error(run.id, e))?;
        Ok(Controlled::Accepted(Json(ControlAccepted {
            run_id: run.id,
        })))
    }

    /// Stop a running turn
    ///
    /// The CLI stops the turn where it is and the run ends `cancelled`; the
    /// session's conversation goes on at the next prompt. Needs the
    /// runner's app-server driver.
    #[oai(
        path = "/api/runs/:run_id/interrupt",
        method = "post",
        operation_id = "interrupt_run"
    )]
    async fn interrupt(
        &self,
        Caller(caller): Caller,
        run_id: Path<String>,
    ) -> ApiResult<Controlled> {
        let run = access::run(self.engine.reads(), &run_id, &caller).await?;
        self.engine
            .interrupt(&run)
            .await
            .map_err(|e| control_error(run.id, e))?;
        Ok(Controlled::Accepted(Json(ControlAccepted {
            run_id: run.id,
        })))
    }

    /// Stream a run's events
    ///
    /// For `EventSource`: each event has `id:` (its sequence number),
    /// `event:` (its type) and `data:` (its JSON). Reconnecting with
    /// `Last-Event-ID` (or `?after=N`) resumes after that event with no
    /// duplicates and no gaps. Keep-alive comments are sent while idle.
    #[oai(
        path = "/api/runs/:run_id/events",
        method = "get",
        operation_id = "stream_run_events"
    )]
    async fn events(
        &self,
        Caller(caller): Caller,
        run_id: Path<String>,
        /// The last event the client has; set by `EventSource` on reconnect.
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
        /// Same as `Last-Event-ID`, for clients that cannot set headers.
        after: Query<Option<String>>,
    ) -> ApiResult<Events> {
        let id = parse_id(&run_id, "run")?;
        let after = Cursor::parse(last_event_id.0.as_deref(), after.0.as_deref())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        // Before any query: a user at the limit costs nothing more.
        let slot = super::sessions::stream_slot(&self.engine, &caller)?;
        // A run with a live tail here exists and has not ended: attaching
        // to it needs no query (thousands of browsers may attach at once)
        // but the owner's, for a caller who does not see everything.
        let reads = self.engine.reads();
        if reads.is_live(id) {
            access::check_run_owner(reads, id, &caller).await?;
        } else {
            let run = access::run_by_id(reads, id, &caller).await?;
            if run.status.has_ended() && reads.last_seq(run.id).await? <= seq_of(after) {
                return Ok(Events::NothingLeft);
            }
        }
        let frames = self.engine.subscribe(id, after);
        // A retry hint first: the client leaves CONNECTING at once and
        // reconnects quickly if the connection drops.
        let frames = futures_util::stream::once(async { service_kit::sse::retry_frame(RETRY_MS) })
            .chain(frames);
        let frames = crate::auth::until_revoked(
            frames,
            &caller,
            self.engine.changes(),
            self.engine.accounts().clone(),
        );
        let frames = self
            .engine
            .metrics()
            .counted(crate::metrics::StreamKind::Run, frames);
        let body = EventFrames::new(slot.hold(frames), self.engine.config().limits.keep_alive);
        Ok(Events::Ok(body, "no".into(), "no-cache".into()))
    }
}

/// How long a browser waits before reconnecting a dropped stream.
const RETRY_MS: u64 = 1500;

fn seq_of(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

/// A control the run did not take, as the API says it: in the protocol's
/// words, never the runner's own (they name its ids).
fn control_error(run: uuid::Uuid, error: ControlError) -> ApiError {
    use crate::engine::RunnerError;
    use runner_protocol::ControlRefusal;
    let error = match error {
        refused @ ControlError::NotRunning { .. } => {
            return ApiError::conflict(refused.to_string())
        }
        ControlError::Runner(error) => error,
    };
    match error {
        RunnerError::Refused(reason @ ControlRefusal::NoSuchApproval) => {
            ApiError::not_found(reason.to_string())
        }
        RunnerError::Refused(reason) => ApiError::conflict(reason.to_string()),
        RunnerError::NotFound { detail, .. } => {
            tracing::info!(%run, %detail, "the runner does not know the run");
            ApiError::conflict("the run is not running")
        }
        RunnerError::BadId(_) => ApiError::conflict("the run is not running"),
        RunnerError::Unreachable(detail) => {
            tracing::warn!(%run, %detail, "the runner did not take a control");
            ApiError::unavailable("the runner is unreachable; try again shortly")
        }
        error @ (RunnerError::Conflict(_) | RunnerError::Failed { .. }) => {
            tracing::warn!(%run, %error, detail = %error.detail(), "the runner refused a control");
            ApiError::conflict(format!("{error}"))
        }
    }
}
