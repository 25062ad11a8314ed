//! The backend's client of the runner's HTTP API. The bodies it sends and
//! reads are `runner_protocol`'s, the types the runner itself uses.

use std::path::Path;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use runner_protocol::{CreateRun, CreateThread, Event, RunCreated, ThreadView};
use serde::Deserialize;
use sse_stream::SseStream;

use crate::domain::SessionSettings;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the runner is unreachable: {0}")]
    Unreachable(String),
    #[error("the runner does not know {0}")]
    NotFound(String),
    #[error("the runner refused: {0}")]
    Conflict(String),
    #[error("the runner answered {status}: {message}")]
    Failed { status: u16, message: String },
}

pub type Result<T> = std::result::Result<T, RunnerError>;

#[derive(Clone)]
pub struct RunnerClient {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct RunnerErrorBody {
    message: String,
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
    /// `RUNNER_TOKEN`) with every request when given.
    pub fn new(base: &str, token: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        // The configuration allows only visible ASCII, which is always a
        // valid header value.
        if let Some(Ok(mut value)) =
            token.map(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")))
        {
            // Kept out of reqwest's debug output.
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .default_headers(headers)
            .build()
            .unwrap_or_default();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub async fn health(&self) -> Result<()> {
        let response = self
            .http
            .get(format!("{}/health", self.base))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(unreachable)?;
        check(response, "health").await.map(|_| ())
    }

    /// A runner thread bound to `dir`, resuming `codex_thread_id` if given,
    /// running with the session's `settings`.
    pub async fn create_thread(
        &self,
        dir: &Path,
        codex_thread_id: Option<&str>,
        settings: &SessionSettings,
    ) -> Result<String> {
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
            .post(format!("{}/threads", self.base))
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
        Ok(created.thread_id.to_string())
    }

    /// The models the runner's CLI offers (`GET /models`).
    pub async fn models(&self) -> Result<Vec<RunnerModel>> {
        let response = self
            .http
            .get(format!("{}/models", self.base))
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
    pub async fn resolve_approval(
        &self,
        run_id: &str,
        approval_id: &str,
        decision: runner_protocol::ApprovalDecision,
        by: Option<String>,
    ) -> Result<()> {
        let response = self
            .http
            .post(format!(
                "{}/runs/{run_id}/approvals/{approval_id}",
                self.base
            ))
            .json(&runner_protocol::ResolveApproval { decision, by })
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        check(response, "approval").await.map(|_| ())
    }

    /// Sends a prompt into a running run's turn.
    pub async fn steer_run(&self, run_id: &str, prompt: &str) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/runs/{run_id}/steer", self.base))
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
    pub async fn interrupt_run(&self, run_id: &str) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/runs/{run_id}/interrupt", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        check(response, "run").await.map(|_| ())
    }

    pub async fn delete_thread(&self, thread_id: &str) -> Result<()> {
        let response = self
            .http
            .delete(format!("{}/threads/{thread_id}", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        check(response, "thread").await.map(|_| ())
    }

    pub async fn start_run(&self, thread_id: &str, prompt: &str) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/runs", self.base))
            .json(&CreateRun {
                thread_id: thread_id.to_owned(),
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
        Ok(created.run_id.to_string())
    }

    pub async fn cancel_run(&self, run_id: &str) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/runs/{run_id}/cancel", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(unreachable)?;
        check(response, "run").await.map(|_| ())
    }

    /// The run's events after `after`, as they come. The stream ends when
    /// the runner closes it (after the terminal event) or the connection
    /// drops; an `Err` item means the connection broke.
    pub async fn events(
        &self,
        run_id: &str,
        after: u64,
    ) -> Result<impl Stream<Item = Result<Event>> + Send + Unpin + use<>> {
        let mut request = self.http.get(format!("{}/runs/{run_id}/events", self.base));
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

async fn check(response: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let message = response
        .json::<RunnerErrorBody>()
        .await
        .map(|b| b.message)
        .unwrap_or_else(|_| status.to_string());
    Err(match status.as_u16() {
        404 => RunnerError::NotFound(format!("the {what}: {message}")),
        409 => RunnerError::Conflict(message),
        code => RunnerError::Failed {
            status: code,
            message,
        },
    })
}
