//! Runs: list, read, cancel, and the event stream.

use std::sync::Arc;

use futures_util::StreamExt;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use runner_protocol::Cursor;

use super::error::{ApiError, ApiResult};
use super::models::{CancelAccepted, Run, RunList};
use super::sessions::SessionsApi;
use super::stream_event::EventFrames;
use super::{parse_id, ApiTags};
use crate::auth::{Caller, Principal};
use crate::engine::Engine;
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
        let body = EventFrames::new(frames, self.engine.config().limits.keep_alive);
        Ok(Events::Ok(body, "no".into(), "no-cache".into()))
    }
}

/// How long a browser waits before reconnecting a dropped stream.
const RETRY_MS: u64 = 1500;

fn seq_of(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}
