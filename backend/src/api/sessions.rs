//! Sessions: create (clone in the background), list, read, delete; and the
//! prompt route of the seed design.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::stream::BoxStream;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, OpenApi};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::models::{
    CreateSession, PromptAccepted, PromptRequest, RunStatus, Session, SessionChange,
    SessionChangeType, SessionPage,
};
use super::{access, ApiTags};
use crate::auth::{Caller, Principal};
use crate::domain::{Depth, GitRef, Prompt, RepoUrl, SessionSettings};
use crate::engine::{CreateRefused, Engine, NewSessionRequest, PromptRefused};
use crate::git::{CloneRequest, Credentials, LocalSourceError};
use crate::http_error::{ApiError, ApiResult};
use crate::metrics::Rejection;
use crate::open_streams::{StreamSlot, TooManyStreams};
use crate::session_changes::Change;
use crate::store::SessionRow;

pub struct SessionsApi {
    pub engine: Arc<Engine>,
}

#[derive(ApiResponse)]
enum Created {
    /// The session exists and is cloning in the background.
    #[oai(status = 202)]
    Accepted(Json<Session>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// The session, its runs and its workspace are gone.
    #[oai(status = 204)]
    NoContent,
}

#[derive(ApiResponse)]
enum Changes {
    /// Server-Sent Events of `SessionChange`: a `snapshot` first, then
    /// `updated` and `deleted` as sessions change, and a `snapshot` again
    /// whenever changes may have been missed. Keep-alive comments while idle.
    #[oai(status = 200)]
    Ok(
        EventStream<BoxStream<'static, SessionChange>>,
        /// Tells reverse proxies not to buffer the stream.
        #[oai(header = "X-Accel-Buffering")]
        String,
        #[oai(header = "Cache-Control")] String,
    ),
}

/// Sessions in a `snapshot` of the change stream.
const SNAPSHOT_SIZE: i64 = 200;

#[derive(ApiResponse)]
enum Queued {
    /// The prompt is queued; it runs after the session's earlier runs.
    #[oai(status = 202)]
    Accepted(Json<PromptAccepted>),
}

impl SessionsApi {
    fn view(&self, row: SessionRow) -> Session {
        view(&self.engine, row)
    }

    /// The agent's settings of a creation request: the sandbox, effort and
    /// policy by name; the model (and the effort for it) against the
    /// runner's list. Each refusal is a 422 that lists the allowed values.
    async fn settings(&self, body: &CreateSession) -> ApiResult<SessionSettings> {
        let settings = SessionSettings::parse(
            body.model.as_deref(),
            body.reasoning_effort.as_deref(),
            body.sandbox.as_deref(),
            body.approval_policy.as_deref(),
        )
        .map_err(|e| ApiError::invalid(e.to_string()))?;
        let Some(model) = &settings.model else {
            return Ok(settings);
        };
        let models = self.engine.models().await.map_err(|error| {
            tracing::warn!(%error, "cannot list the runner's models");
            ApiError::unavailable("the runner cannot list its models now; try again shortly")
        })?;
        let Some(known) = models.iter().find(|m| &m.id == model) else {
            let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
            return Err(ApiError::invalid(format!(
                "model must be one of {}; got {model:?}",
                ids.join(", ")
            )));
        };
        if let Some(effort) = settings.reasoning_effort {
            if !known
                .supported_reasoning_efforts
                .iter()
                .any(|e| e == effort.as_str())
            {
                return Err(ApiError::invalid(format!(
                    "reasoning_effort for {model} must be one of {}; got {:?}",
                    known.supported_reasoning_efforts.join(", "),
                    effort.as_str()
                )));
            }
        }
        Ok(settings)
    }
}

#[OpenApi(prefix_path = "/api/sessions", tag = "ApiTags::Sessions")]
impl SessionsApi {
    /// Create a session from a git repository
    ///
    /// Answers at once with the session in `cloning` state; the clone runs
    /// in the background and the session becomes `ready` (with a runner
    /// thread) or `failed` (with a message).
    #[oai(path = "/", method = "post", operation_id = "create_session")]
    async fn create(
        &self,
        Caller(caller): Caller,
        body: Json<CreateSession>,
    ) -> ApiResult<Created> {
        let config = &self.engine.config();
        let url = RepoUrl::parse(
            &body.repo_url,
            config.allow_local_repos,
            &config.clone_policy,
        )
        .map_err(|e| ApiError::invalid(e.to_string()))?;
        let local = self.engine.local_source(&url).await.map_err(|e| match e {
            LocalSourceError::Forbidden => ApiError::invalid(e.to_string()),
            LocalSourceError::Unchecked(_) => ApiError::internal(&e),
        })?;
        let git_ref = body
            .git_ref
            .as_deref()
            .filter(|r| !r.trim().is_empty())
            .map(GitRef::parse)
            .transpose()
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let depth = body
            .depth
            .map(Depth::parse)
            .transpose()
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let (user, embedded_token) = url.embedded_credentials();
        let token = body
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .or(embedded_token)
            .map(|token| Credentials {
                username: user.map(str::to_owned),
                token: token.to_owned(),
            });
        if token.is_some() && !url.is_http() {
            return Err(ApiError::invalid(
                "a token can only be used with an https or http repo_url",
            ));
        }
        let settings = self.settings(&body).await?;
        let id = Uuid::new_v4();
        let sealed_token = match (body.keep_token.unwrap_or(false), &token) {
            (false, _) => None,
            (true, None) => {
                return Err(ApiError::invalid(
                    "keep_token needs a token to keep (token, or one in repo_url)",
                ))
            }
            (true, Some(credentials)) => {
                let sealer = config.sealer.as_ref().ok_or_else(|| {
                    ApiError::invalid(
                        "keep_token is off on this server: its operator has not set BACKEND_SECRET_KEY",
                    )
                })?;
                let kept = crate::git::KeptToken::from(credentials)
                    .to_bytes()
                    .map_err(|e| ApiError::internal(&e))?;
                Some(sealer.seal(id, &kept).map_err(|e| ApiError::internal(&e))?)
            }
        };
        let request = NewSessionRequest {
            id,
            clone: CloneRequest {
                url,
                git_ref,
                depth,
                credentials: token,
                local,
                max_bytes: config.limits.max_clone_bytes,
                policy: config.clone_policy.clone(),
                connect_timeout: config.limits.clone_connect_timeout,
                io_timeout: config.limits.clone_io_timeout,
            },
            settings,
            sealed_token,
        };
        let row = self
            .engine
            .create_session(request, caller.user_id())
            .await
            .map_err(|refused| match refused {
                CreateRefused::Store(error) => ApiError::from(error),
                quota => ApiError::too_many(quota.to_string()),
            })?;
        Ok(Created::Accepted(Json(self.view(row))))
    }

    /// List sessions, newest first
    #[oai(path = "/", method = "get", operation_id = "list_sessions")]
    async fn list(
        &self,
        Caller(caller): Caller,
        /// At most this many (1 to 200, default 50).
        limit: Query<Option<i64>>,
        /// Skip this many.
        offset: Query<Option<i64>>,
    ) -> ApiResult<Json<SessionPage>> {
        let limit = limit.0.unwrap_or(50);
        let offset = offset.0.unwrap_or(0);
        if !(1..=200).contains(&limit) || offset < 0 {
            return Err(ApiError::bad_request(
                "limit must be between 1 and 200 and offset must not be negative",
            ));
        }
        let (rows, total) = self
            .engine
            .reads()
            .sessions(limit, offset, caller.only_owner())
            .await?;
        Ok(Json(SessionPage {
            sessions: rows.into_iter().map(|r| self.view(r)).collect(),
            total,
            limit,
            offset,
        }))
    }

    /// Follow every session's state
    ///
    /// For `EventSource`: one source of truth for a list of sessions and
    /// their headers, instead of polling. The stream has no ids: it carries
    /// states, not a log, and a reconnect starts with a new `snapshot`.
    #[oai(
        path = "/events",
        method = "get",
        operation_id = "stream_session_changes"
    )]
    async fn changes(&self, Caller(caller): Caller) -> ApiResult<Changes> {
        let slot = stream_slot(&self.engine, &caller)?;
        // Subscribed before the first snapshot is read: a change made in
        // between comes after it, never before.
        let mut changes = self.engine.changes().subscribe();
        let engine = self.engine.clone();
        let owner = caller.only_owner();
        let visible = caller.clone();
        let stream = async_stream::stream! {
            let view = |row| view(&engine, row);
            let mut stale = true;
            // The sessions this caller was shown, with the version shown:
            // only their deletions are told, so nobody learns of another
            // user's session ids, and a state older than the one shown
            // (a change the snapshot already had) is not told again.
            let mut shown: HashMap<Uuid, i64> = HashMap::new();
            loop {
                if stale {
                    // A database that is away leaves the list stale until
                    // the next change or resync tries again.
                    let read = engine.reads().sessions(SNAPSHOT_SIZE, 0, owner).await;
                    if let Err(error) = &read {
                        tracing::warn!(error.cause_chain = ?error, "cannot read the sessions for a snapshot; next change or resync tries again");
                    }
                    if let Ok((rows, total)) = read {
                        stale = false;
                        shown = rows.iter().map(|r| (r.id, r.version)).collect();
                        yield SessionChange {
                            kind: SessionChangeType::Snapshot,
                            sessions: Some(rows.into_iter().map(view).collect()),
                            total: Some(total),
                            session: None,
                            session_id: None,
                        };
                    }
                }
                // Each change comes with its session as the feed read it,
                // once for every stream: deciding costs no query.
                match changes.recv().await {
                    Ok(Change::Session(row)) if !stale => {
                        let newer = shown.get(&row.id).is_none_or(|seen| *seen < row.version);
                        if visible.sees(row.owner_id) && newer {
                            shown.insert(row.id, row.version);
                            yield SessionChange {
                                kind: SessionChangeType::Updated,
                                sessions: None,
                                total: None,
                                session: Some(view(SessionRow::clone(&row))),
                                session_id: None,
                            }
                        }
                    }
                    Ok(Change::Deleted { id, owner }) if !stale => {
                        if visible.sees(owner) && shown.remove(&id).is_some() {
                            yield SessionChange {
                                kind: SessionChangeType::Deleted,
                                sessions: None,
                                total: None,
                                session: None,
                                session_id: Some(id),
                            }
                        }
                    }
                    Ok(Change::Revoked(_)) => {}
                    Ok(_) | Err(RecvError::Lagged(_)) => stale = true,
                    Err(RecvError::Closed) => break,
                }
            }
        };
        let stream = crate::auth::until_revoked(
            stream,
            &caller,
            self.engine.changes(),
            self.engine.accounts().clone(),
        );
        let stream = self
            .engine
            .metrics()
            .counted(crate::metrics::StreamKind::Sessions, stream);
        let stream = EventStream::new(slot.hold(stream))
            .keep_alive(self.engine.config().limits.keep_alive)
            .to_event(|change: SessionChange| {
                let data = change.to_json().map(|v| v.to_string()).unwrap_or_default();
                poem::web::sse::Event::message(data).event_type(change.kind.as_str())
            });
        Ok(Changes::Ok(stream, "no".into(), "no-cache".into()))
    }

    /// Get a session
    #[oai(path = "/:session_id", method = "get", operation_id = "get_session")]
    async fn get(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
    ) -> ApiResult<Json<Session>> {
        let row = access::session(self.engine.reads(), &session_id, &caller).await?;
        Ok(Json(self.view(row)))
    }

    /// Delete a session
    ///
    /// Cancels its active run and its queued runs, stops a clone in
    /// progress, and removes the workspace.
    #[oai(
        path = "/:session_id",
        method = "delete",
        operation_id = "delete_session"
    )]
    async fn delete(&self, Caller(caller): Caller, session_id: Path<String>) -> ApiResult<Deleted> {
        let row = access::session(self.engine.reads(), &session_id, &caller).await?;
        self.engine.delete_session(&row).await?;
        Ok(Deleted::NoContent)
    }

    /// Send a prompt to the session's agent
    ///
    /// The prompt becomes a run. Runs of a session execute one at a time, in
    /// order: a prompt sent while the session is cloning or busy is queued.
    #[oai(
        path = "/:session_id/prompt",
        method = "post",
        operation_id = "send_prompt"
    )]
    async fn prompt(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
        body: Json<PromptRequest>,
    ) -> ApiResult<Queued> {
        let session = access::session(self.engine.reads(), &session_id, &caller).await?;
        let prompt = Prompt::parse(&body.prompt, self.engine.config().limits.max_prompt_chars)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let run = self
            .engine
            .enqueue_prompt(&session, caller.user_id(), &prompt)
            .await
            .map_err(|refused| match refused {
                PromptRefused::Store(error) => ApiError::from(error),
                PromptRefused::SessionGone(_) => ApiError::not_found(refused.to_string()),
                PromptRefused::TooManyRuns { .. } => ApiError::too_many(refused.to_string()),
                PromptRefused::CloneFailed { .. }
                | PromptRefused::Expired(_)
                | PromptRefused::QueueFull { .. } => ApiError::conflict(refused.to_string()),
            })?;
        Ok(Queued::Accepted(Json(PromptAccepted {
            run_id: run.run_id,
            session_id: session.id,
            status: RunStatus::Queued,
            position: run.position,
        })))
    }
}

/// A slot for one more event stream of `caller`, taken before the stream
/// does anything; or the 429 that says they hold as many as they may.
pub(super) fn stream_slot(engine: &Engine, caller: &Principal) -> ApiResult<StreamSlot> {
    engine
        .open_streams()
        .take(caller.user_id())
        .map_err(|TooManyStreams { max }| {
            engine.metrics().rejected(Rejection::Quota);
            tracing::info!(user_id = ?caller.user_id(), max, "open-stream limit of a user");
            ApiError::too_many(match caller.user_id() {
                Some(_) => format!(
                    "you have {max} event streams open, the most one user may have \
                     (BACKEND_USER_MAX_STREAMS); close one first"
                ),
                None => format!(
                    "{max} event streams are open, the most the server takes without \
                     authentication (BACKEND_USER_MAX_STREAMS); close one first"
                ),
            })
        })
}

/// The API's view of a session row.
fn view(engine: &Engine, row: SessionRow) -> Session {
    let path = engine.reads().workspace(row.id).display().to_string();
    Session::from_row(row, path)
}
