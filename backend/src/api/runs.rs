//! Runs: list, read, cancel, and the event stream.

use std::sync::Arc;

use futures_util::StreamExt;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use runner_protocol::Cursor;

use super::models::{
    AgentModel, ApprovalRequest, CancelAccepted, ControlAccepted, ModelList, Run, RunList,
    SteerRequest,
};
use super::sessions::SessionsApi;
use super::stream_event::EventFrames;
use super::{parse_id, ApiTags};
use crate::auth::{Caller, Principal};
use crate::engine::Engine;
use crate::http_error::{ApiError, ApiResult};
use crate::hub::subscribe;

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

impl RunsApi {
    /// The run, if it exists and the caller may see its session.
    async fn find(&self, raw: &str, caller: &Principal) -> ApiResult<crate::store::RunRow> {
        let id = parse_id(raw, "run")?;
        self.check_owner(id, caller).await?;
        self.engine
            .store()
            .run(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("run {id} does not exist")))
    }

    /// The runner's id of a running run the caller may see; 409 for one
    /// that is queued or has ended.
    async fn running(&self, raw: &str, caller: &Principal) -> ApiResult<(uuid::Uuid, String)> {
        let run = self.find(raw, caller).await?;
        match (&run.status, run.runner_run_id) {
            (crate::domain::RunStatus::Running, Some(runner_run)) => Ok((run.id, runner_run)),
            (status, _) => Err(ApiError::conflict(format!(
                "run {} is {status}: only a running run takes approvals, steering and interrupts",
                run.id
            ))),
        }
    }

    /// A 404 unless the caller may see run `id`'s session; free for those
    /// who see everything.
    async fn check_owner(&self, id: uuid::Uuid, caller: &Principal) -> ApiResult<()> {
        if caller.only_owner().is_none() {
            return Ok(());
        }
        match self.engine.store().run_owner(id).await? {
            Some(owner) if caller.sees(owner) => Ok(()),
            _ => Err(ApiError::not_found(format!("run {id} does not exist"))),
        }
    }
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
        let sessions = SessionsApi {
            engine: self.engine.clone(),
        };
        let session = sessions.find(&session_id, &caller).await?;
        let runs = self.engine.store().runs_of_session(session.id).await?;
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
        Ok(Json(self.find(&run_id, &caller).await?.into()))
    }

    /// Cancel a run
    #[oai(
        path = "/api/runs/:run_id/cancel",
        method = "post",
        operation_id = "cancel_run"
    )]
    async fn cancel(&self, Caller(caller): Caller, run_id: Path<String>) -> ApiResult<Cancelled> {
        let run = self.find(&run_id, &caller).await?;
        let queued = run.status == crate::domain::RunStatus::Queued;
        if !self.engine.cancel(&run).await? {
            return Err(ApiError::conflict(format!(
                "run {} already finished ({})",
                run.id, run.status
            )));
        }
        Ok(Cancelled::Accepted(Json(CancelAccepted {
            run_id: run.id,
            status: if queued { "cancelled" } else { "cancelling" }.into(),
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
        let models = self.engine.runner().models().await.map_err(|error| {
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
        use runner_protocol::ApprovalDecision;
        let decision = match &*body.decision {
            "approve" => ApprovalDecision::Approve,
            "approve_for_session" => ApprovalDecision::ApproveForSession,
            "deny" => ApprovalDecision::Deny,
            other => {
                return Err(ApiError::invalid(format!(
                    "decision must be one of approve, approve_for_session, deny; got {other:?}"
                )))
            }
        };
        // Parsed before it goes anywhere: it becomes a path segment of the
        // runner's URL.
        let approval_id = runner_protocol::ApprovalId::parse(&approval_id).map_err(|_| {
            ApiError::bad_request(
                "approval_id must be the id of an approval.requested event (approval-<number>)",
            )
        })?;
        let (id, runner_run) = self.running(&run_id, &caller).await?;
        let by = caller.user.as_ref().map(|u| u.name.clone());
        self.engine
            .runner()
            .resolve_approval(&runner_run, &approval_id, decision, by)
            .await
            .map_err(|e| control_error(id, e))?;
        Ok(Controlled::Accepted(Json(ControlAccepted { run_id: id })))
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
        let (id, runner_run) = self.running(&run_id, &caller).await?;
        self.engine
            .runner()
            .steer_run(&runner_run, prompt.as_str())
            .await
            .map_err(|e| control_error(id, e))?;
        Ok(Controlled::Accepted(Json(ControlAccepted { run_id: id })))
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
        let (id, runner_run) = self.running(&run_id, &caller).await?;
        self.engine
            .runner()
            .interrupt_run(&runner_run)
            .await
            .map_err(|e| control_error(id, e))?;
        Ok(Controlled::Accepted(Json(ControlAccepted { run_id: id })))
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
        if self.engine.hubs().get(id).is_some() {
            self.check_owner(id, &caller).await?;
        } else {
            let run = self.find(&run_id, &caller).await?;
            if run.status.has_ended()
                && self.engine.store().last_seq(run.id).await? <= seq_of(after)
            {
                return Ok(Events::NothingLeft);
            }
        }
        let frames = subscribe(
            self.engine.store().clone(),
            self.engine.hubs().clone(),
            id,
            after,
        );
        // A retry hint first: the client leaves CONNECTING at once and
        // reconnects quickly if the connection drops.
        let frames = futures_util::stream::once(async { service_kit::sse::retry_frame(RETRY_MS) })
            .chain(frames);
        let frames = crate::auth::until_revoked(
            frames,
            &caller,
            self.engine.changes(),
            self.engine.store().clone(),
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

/// A runner's refusal of a control, as the API says it: in the protocol's
/// words, never the runner's own (they name its ids).
fn control_error(run: uuid::Uuid, error: crate::runner_client::RunnerError) -> ApiError {
    use crate::runner_client::RunnerError;
    use runner_protocol::ControlRefusal;
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
