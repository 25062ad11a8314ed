//! The backend's client of the runner's HTTP API. The bodies it sends and
//! reads are `runner_protocol`'s, the types the runner itself uses.
//!
//! Every URL is built by `url`'s path-segment encoder from typed ids, never
//! by formatting: an id is one segment, whatever it holds (`/`, `%2F`,
//! `..`), so no id can reach another route of the runner. What the runner
//! says in its errors (its own run ids, server paths) stays in the log:
//! an error's `Display` is for users and carries none of it.

use std::path::Path;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use runner_protocol::{CreateRun, CreateThread, Event, RunCreated, ThreadView};
use serde::Deserialize;
use sse_stream::SseStream;

use crate::domain::{RunnerRunId, RunnerThreadId, SessionSettings};

/// A call to the runner that failed. Each variant keeps what the runner
/// said for the log ([`RunnerError::detail`]); its `Display`, for users,
/// does not.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the runner is unreachable")]
    Unreachable(String),
    #[error("the runner does not know the {what}")]
    NotFound { what: &'static str, detail: String },
    #[error("the runner refused the request")]
    Conflict(String),
    /// A control (approval, steer, interrupt) the run did not take, in the
    /// protocol's words.
    #[error("{0}")]
    Refused(runner_protocol::ControlRefusal),
    #[error("the runner answered {status}")]
    Failed { status: u16, detail: String },
    /// An id no runner issues (empty, `.` or `..`): `url` drops such a
    /// segment rather than encode it, so it is refused before any request.
    #[error("the runner does not know the {0}")]
    BadId(&'static str),
}

impl RunnerError {
    /// What the runner (or the connection) said: for the log only.
    pub(crate) fn detail(&self) -> String {
        match self {
            RunnerError::Unreachable(detail)
            | RunnerError::NotFound { detail, .. }
            | RunnerError::Conflict(detail)
            | RunnerError::Failed { detail, .. } => detail.clone(),
            RunnerError::Refused(reason) => reason.to_string(),
            RunnerError::BadId(what) => format!("an id of a {what} no runner issues"),
        }
    }
}

pub type Result<T> = std::result::Result<T, RunnerError>;

/// Why no client of the runner could be made (at start).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("RUNNER_TOKEN cannot be sent as an HTTP header (it holds a control character)")]
    Token,
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
}

#[derive(Clone)]
pub struct RunnerClient {
    base: url::Url,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct RunnerErrorBody {
    message: String,
    #[serde(default)]
    reason: Option<runner_protocol::ControlRefusal>,
}

/// One model of the runner's `GET /models`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerModel {
    pub id: String,
    #[serde(default)]
    pub supported_reasoning_efforts: Vec<String>,
}

#[derive(Deserialize)]
struct RunnerModels {
    models: Vec<RunnerModel>,
}

impl RunnerClient {
    /// A client of the runner at `base`, sending `token` (the runner's
    /// `RUNNER_TOKEN`) with every request when given. A token that cannot
    /// be a header value, or a TLS backend that cannot start, is an error:
    /// a client without its token or its timeouts would fail every call
    /// later, far from the cause.
    pub(crate) fn new(
        base: &url::Url,
        token: Option<&str>,
    ) -> std::result::Result<Self, ClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::Token)?;
            // Kept out of reqwest's debug output.
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .default_headers(headers)
            .build()
            .map_err(ClientError::Build)?;
        Ok(Self {
            base: base.clone(),
            http,
        })
    }

    /// The runner's URL of `segments`, each one path segment,
    /// percent-encoded (`/` and `%` included). A segment that `url` would
    /// drop (empty, `.`, `..`) is refused instead.
    fn url(&self, segments: &[&str]) -> Result<url::Url> {
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            tracing::warn!(segment = bad, "refused a runner URL segment");
            return Err(RunnerError::BadId("request"));
        }
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        Ok(url)
    }

    pub(crate) async fn health(&self) -> Result<()> {
        let response = self
            .http
            .get(self.url(&["health"])?)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(unreachable)?;
        check(response, "health").await.map(|_| ())
    }

    /// A runner thread bound to `dir`, resuming `codex_thread_id` if given,
    /// running with the session's `settings`.
    pub(crate) async fn create_thread(
        &self,
        dir: &Path,
        codex_thread_id: Option<&str>,
        settings: &SessionSettings,
    ) -> Result<RunnerThreadId> {
        let body = CreateThread {
            working_directory: dir.to_string_lossy().into_owned(),
            skip_git_repo_check: true,
            resume_thread_id: codex_thread_id.map(str::to_owned),
            model: settings.model.clone(),
            sandbox_mode: settings.sandbox,
            approval_policy: settings.approval_policy,
            model_reasoning_effort: settings.reasoning_effort,
            ..CreateThread::default()
        };
        let response = self
            .http
            .post(self.url(&["threads"])?)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        let created: ThreadView = check(response, "thread")
            .await?
            .json()
            .await
            .map_err(unreachable)?;
        Ok(RunnerThreadId::from(created.thread_id.to_string()))
    }

    /// The models the runner's CLI offers (`GET /models`).
    pub(crate) async fn models(&self) -> Result<Vec<RunnerModel>> {
        let response = self
            .http
            .get(self.url(&["models"])?)
            .timeout(Duration::from_secs(40))
            .send()
            .await
            .map_err(unreachable)?;
        let list: RunnerModels = check(response, "models")
            .await?
            .json()
            .await
            .map_err(unreachable)?;
        Ok(list.models)
    }

    /// Answers an approval of a running run.
    pub(crate) async fn resolve_approval(
        &self,
        run_id: &RunnerRunId,
        approval_id: &runner_protocol::ApprovalId,
        decision: runner_protocol::ApprovalDecision,
        by: Option<String>,
    ) -> Result<()> {
        let response = self
            .http
            .post(self.url(&[
                "runs",
                run_id.as_str(),
                "approvals",
                &approval_id.to_string(),
            ])?)
            .json(&runner_protocol::ResolveApproval { decision, by })
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        check(response, "approval").await.map(|_| ())
    }

    /// Sends a prompt into a running run's turn.
    pub(crate) async fn steer_run(&self, run_id: &RunnerRunId, prompt: &str) -> Result<()> {
        let response = self
            .http
            .post(self.url(&["runs", run_id.as_str(), "steer"])?)
            .json(&runner_protocol::SteerRun {
                prompt: prompt.to_owned(),
            })
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        check(response, "run").await.map(|_| ())
    }

    /// Asks the CLI to stop a running run's turn.
    pub(crate) async fn interrupt_run(&self, run_id: &RunnerRunId) -> Result<()> {
        let response = self
            .http
            .post(self.url(&["runs", run_id.as_str(), "interrupt"])?)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        check(response, "run").await.map(|_| ())
    }

    pub(crate) async fn delete_thread(&self, thread_id: &RunnerThreadId) -> Result<()> {
        let response = self
            .http
            .delete(self.url(&["threads", thread_id.as_str()])?)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        check(response, "thread").await.map(|_| ())
    }

    pub(crate) async fn start_run(
        &self,
        thread_id: &RunnerThreadId,
        prompt: &str,
    ) -> Result<RunnerRunId> {
        let response = self
            .http
            .post(self.url(&["runs"])?)
            .json(&CreateRun {
                thread_id: thread_id.as_str().to_owned(),
                prompt: prompt.to_owned(),
            })
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        let created: RunCreated = check(response, "thread")
            .await?
            .json()
            .await
            .map_err(unreachable)?;
        Ok(RunnerRunId::from(created.run_id.to_string()))
    }

    pub(crate) async fn cancel_run(&self, run_id: &RunnerRunId) -> Result<()> {
        let response = self
            .http
            .post(self.url(&["runs", run_id.as_str(), "cancel"])?)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        check(response, "run").await.map(|_| ())
    }

    /// The run's events after `after`, as they come. The stream ends when
    /// the runner closes it (after the terminal event) or the connection
    /// drops; an `Err` item means the connection broke.
    pub(crate) async fn events(
        &self,
        run_id: &RunnerRunId,
        after: u64,
    ) -> Result<impl Stream<Item = Result<Event>> + Send + Unpin + use<>> {
        let mut request = self
            .http
            .get(self.url(&["runs", run_id.as_str(), "events"])?);
        if after > 0 {
            request = request.header("Last-Event-ID", after.to_string());
        }
        let response = request.send().await.map_err(unreachable)?;
        let response = check(response, "run").await?;
        Ok(SseStream::from_bytes_stream(response.bytes_stream())
            .filter_map(|item| async move {
                match item {
                    // The event's text becomes its shared payload as it is;
                    // what has no number (the `retry:` hint) is no event.
                    Ok(sse) => {
                        let seq = sse.id?.parse::<u64>().ok()?;
                        let kind = sse.event.as_deref().unwrap_or("message");
                        Some(Ok(Event::new(seq, kind, sse.data.unwrap_or_default())))
                    }
                    Err(error) => Some(Err(RunnerError::Unreachable(error.to_string()))),
                }
            })
            .boxed())
    }
}

fn unreachable(error: reqwest::Error) -> RunnerError {
    RunnerError::Unreachable(error.without_url().to_string())
}

async fn check(response: reqwest::Response, what: &'static str) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let (detail, reason) = match response.json::<RunnerErrorBody>().await {
        Ok(body) => (body.message, body.reason),
        Err(_) => (status.to_string(), None),
    };
    Err(match (status.as_u16(), reason) {
        (404 | 409, Some(reason)) => RunnerError::Refused(reason),
        (404, None) => RunnerError::NotFound { what, detail },
        (409, None) => RunnerError::Conflict(detail),
        (code, _) => RunnerError::Failed {
            status: code,
            detail,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_cannot_be_a_header_is_an_error_not_a_client_without_it() {
        let base = url::Url::parse("http://127.0.0.1:9102").unwrap();
        for bad in ["line\nbreak", "nul\0", "del\u{7f}"] {
            assert!(
                matches!(RunnerClient::new(&base, Some(bad)), Err(ClientError::Token)),
                "{bad:?}"
            );
        }
        assert!(RunnerClient::new(&base, Some("a-good-token")).is_ok());
        assert!(RunnerClient::new(&base, None).is_ok());
    }

    #[test]
    fn every_id_is_one_encoded_segment_of_the_runners_url() {
        let base = url::Url::parse("http://127.0.0.1:9102").unwrap();
        let client = RunnerClient::new(&base, None).unwrap();
        let url = |segments: &[&str]| client.url(segments).unwrap().to_string();

        assert_eq!(
            url(&["runs", "r1", "cancel"]),
            "http://127.0.0.1:9102/runs/r1/cancel"
        );
        assert_eq!(
            url(&["runs", "../../x/approvals/approval-1", "steer"]),
            "http://127.0.0.1:9102/runs/..%2F..%2Fx%2Fapprovals%2Fapproval-1/steer"
        );
        assert_eq!(
            url(&["runs", "a%2Fb?c#d", "events"]),
            "http://127.0.0.1:9102/runs/a%252Fb%3Fc%23d/events"
        );
        // A segment that would vanish or climb is refused.
        for bad in ["", ".", ".."] {
            assert!(matches!(
                client.url(&["runs", bad, "cancel"]),
                Err(RunnerError::BadId(_))
            ));
        }
        let prefixed = url::Url::parse("http://runner:9102/base/").unwrap();
        assert_eq!(
            RunnerClient::new(&prefixed, None)
                .unwrap()
                .url(&["health"])
                .unwrap()
                .as_str(),
            "http://runner:9102/base/health"
        );
    }
}
