//! The load client: starts runs through the runner's API or the backend's
//! public API, and holds SSE subscribers that parse every event, check its
//! number for gaps and duplicates and record each agent message's latency
//! (the time it was read minus the time the fake CLI printed it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sse_stream::SseStream;

use crate::fake::{now_ns, parse_message_text};

/// Which API a run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The runner's own API (`POST /runs`, `GET /runs/{id}/events`).
    Runner,
    /// The backend's public API (`POST /api/sessions/{id}/prompt`,
    /// `GET /api/runs/{id}/events`), with the runner behind it.
    Backend,
}

impl Api {
    pub fn label(self) -> &'static str {
        match self {
            Api::Runner => "runner alone",
            Api::Backend => "whole stack",
        }
    }
}

/// Where runs are started: a runner thread, or a backend session.
#[derive(Debug, Clone)]
pub struct Target {
    pub api: Api,
    base: String,
    /// The runner's thread id or the backend's session id.
    owner: String,
    http: reqwest::Client,
}

impl Target {
    /// A runner thread whose working directory is `dir` (under the
    /// runner's `WORKSPACES_ROOT`).
    pub async fn runner_thread(
        http: &reqwest::Client,
        base: &str,
        dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let created: Value = expect_json(
            http.post(format!("{base}/threads"))
                .json(&json!({"workingDirectory": dir, "skipGitRepoCheck": true}))
                .send()
                .await?,
            201,
        )
        .await?;
        Ok(Self {
            api: Api::Runner,
            base: base.to_owned(),
            owner: string_field(&created, "threadId")?,
            http: http.clone(),
        })
    }

    /// A backend session cloned from `repo`, once it is `ready`.
    pub async fn backend_session(
        http: &reqwest::Client,
        base: &str,
        repo: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let request = json!({"repo_url": format!("file://{}", repo.display())});
        let ready = create_session(http, base, &request).await?;
        Ok(Self {
            api: Api::Backend,
            base: base.to_owned(),
            owner: ready.id,
            http: http.clone(),
        })
    }

    /// Starts a run with `prompt`; returns its id.
    pub async fn start_run(&self, prompt: &str) -> anyhow::Result<String> {
        match self.api {
            Api::Runner => {
                let body: Value = expect_json(
                    self.http
                        .post(format!("{}/runs", self.base))
                        .json(&json!({"threadId": self.owner, "prompt": prompt}))
                        .send()
                        .await?,
                    202,
                )
                .await?;
                string_field(&body, "runId")
            }
            Api::Backend => {
                let body: Value = expect_json(
                    self.http
                        .post(format!("{}/api/sessions/{}/prompt", self.base, self.owner))
                        .json(&json!({"prompt": prompt}))
                        .send()
                        .await?,
                    202,
                )
                .await?;
                string_field(&body, "run_id")
            }
        }
    }

    /// The URL of a run's event stream.
    pub fn events_url(&self, run: &str) -> String {
        match self.api {
            Api::Runner => format!("{}/runs/{run}/events", self.base),
            Api::Backend => format!("{}/api/runs/{run}/events", self.base),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// A backend session that has become `ready`.
#[derive(Debug, Clone)]
pub struct ReadySession {
    pub id: String,
    /// The session as the sessions' feed showed it when it became `ready`.
    pub session: Value,
    /// From just before `POST /api/sessions` was sent to the `ready` event.
    pub elapsed: Duration,
}

/// Creates a session (`request` is the body of `POST /api/sessions`) and
/// awaits its `ready` on the sessions' feed, `GET /api/sessions/events`,
/// which is subscribed before the session exists, so that its `ready`
/// cannot be missed.
pub async fn create_session(
    http: &reqwest::Client,
    base: &str,
    request: &Value,
) -> anyhow::Result<ReadySession> {
    let feed = http
        .get(format!("{base}/api/sessions/events"))
        .send()
        .await?;
    if feed.status() != 200 {
        bail!("GET /api/sessions/events answered {}", feed.status());
    }
    let mut feed = SseStream::from_bytes_stream(feed.bytes_stream());
    let posted = Instant::now();
    let created: Value = expect_json(
        http.post(format!("{base}/api/sessions"))
            .json(request)
            .send()
            .await?,
        202,
    )
    .await?;
    let id = string_field(&created, "session_id")?;
    let this = |value: &Value| -> Option<Value> {
        let sessions = value["sessions"].as_array().into_iter().flatten();
        sessions
            .chain(std::iter::once(&value["session"]))
            .find(|s| s["session_id"] == id.as_str())
            .cloned()
    };
    loop {
        let event = feed
            .next()
            .await
            .context("the sessions feed ended before the clone did")??;
        let Ok(value) = serde_json::from_str::<Value>(event.data.as_deref().unwrap_or_default())
        else {
            continue;
        };
        let Some(session) = this(&value) else {
            continue;
        };
        match session["status"].as_str() {
            Some("ready") => {
                return Ok(ReadySession {
                    id,
                    session,
                    elapsed: posted.elapsed(),
                })
            }
            Some("failed") => bail!("the session's clone failed: {session}"),
            _ => {}
        }
    }
}

/// `DELETE /api/sessions/{id}`: the session, its runs and its workspace.
pub async fn delete_session(http: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<()> {
    let response = http
        .delete(format!("{base}/api/sessions/{id}"))
        .send()
        .await?;
    if response.status() != 204 {
        bail!(
            "DELETE /api/sessions/{id} answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

async fn expect_json(response: reqwest::Response, status: u16) -> anyhow::Result<Value> {
    let got = response.status();
    let url = response.url().clone();
    let body = response.text().await?;
    if got.as_u16() != status {
        bail!("{url} answered {got}, expected {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

fn string_field(value: &Value, name: &str) -> anyhow::Result<String> {
    value[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {name} in {value}"))
}

/// The parts of an event the client reads.
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow, rename = "type")]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    item: Option<WireItem<'a>>,
}

#[derive(Deserialize)]
struct WireItem<'a> {
    #[serde(borrow, rename = "type")]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
}

/// The events that end a run's stream.
pub const TERMINAL: [&str; 3] = ["run.completed", "run.failed", "run.cancelled"];

/// What one subscriber saw.
#[derive(Debug, Clone, Default)]
pub struct Subscribed {
    /// Events read (with an id).
    pub events: u64,
    /// Agent messages of the fake read.
    pub messages: u64,
    /// Times an id was more than one past the previous.
    pub gaps: u64,
    /// Times an id was not past the previous.
    pub duplicates: u64,
    /// The terminal event, when one came.
    pub terminal: Option<String>,
    /// Whether the stream ended after the terminal event, as it should.
    pub closed_after_terminal: bool,
    /// Latency of each agent message, microseconds.
    pub latencies_us: Vec<u64>,
    /// When the first agent message was read.
    pub first_message: Option<Instant>,
    /// When the last event was read.
    pub last_event: Option<Instant>,
    /// An error that ended the stream early.
    pub error: Option<String>,
}

impl Subscribed {
    /// Read the whole run without a gap, duplicate, or error.
    pub fn complete(&self, expected_messages: u64) -> bool {
        self.gaps == 0
            && self.duplicates == 0
            && self.error.is_none()
            && self.terminal.as_deref() == Some("run.completed")
            && self.closed_after_terminal
            && self.messages == expected_messages
    }
}

/// Opens a subscription; `attached` is sent when its first event arrives,
/// and `progress` (when given) always holds the number of events read.
pub async fn subscribe(
    http: reqwest::Client,
    url: String,
    attached: Option<tokio::sync::oneshot::Sender<Instant>>,
    progress: Option<Arc<AtomicU64>>,
) -> Subscribed {
    let mut seen = Subscribed::default();
    if let Err(e) = read_stream(&http, &url, attached, progress, &mut seen).await {
        seen.error = Some(format!("{e:#}"));
    }
    seen
}

async fn read_stream(
    http: &reqwest::Client,
    url: &str,
    mut attached: Option<tokio::sync::oneshot::Sender<Instant>>,
    progress: Option<Arc<AtomicU64>>,
    seen: &mut Subscribed,
) -> anyhow::Result<()> {
    let response = http.get(url).send().await?;
    if response.status() != 200 {
        bail!(
            "GET {url} answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let mut stream = SseStream::from_bytes_stream(response.bytes_stream());
    let mut last_id = 0u64;
    while let Some(event) = stream.next().await {
        let event = event?;
        let (Some(id), Some(data)) = (event.id, event.data) else {
            // The `retry:` hint.
            continue;
        };
        let received_ns = now_ns();
        let now = Instant::now();
        let id: u64 = id.parse().context("an event id is not a number")?;
        if id <= last_id {
            seen.duplicates += 1;
        } else {
            if id != last_id + 1 {
                seen.gaps += 1;
            }
            last_id = id;
        }
        seen.events += 1;
        seen.last_event = Some(now);
        if let Some(progress) = &progress {
            progress.store(seen.events, Ordering::Relaxed);
        }
        if seen.terminal.is_some() {
            // Nothing may follow the terminal event.
            seen.closed_after_terminal = false;
        }
        let wire: WireEvent = serde_json::from_str(&data)
            .with_context(|| format!("event {id} is not a JSON event: {data}"))?;
        if let Some(tx) = attached.take() {
            // The scenario may have stopped waiting; nothing to tell then.
            let _ = tx.send(now);
        }
        if let Some(item) = &wire.item {
            if wire.kind == "item.completed" && item.kind == "agent_message" {
                if let Some((_, emitted_ns)) = item.text.as_deref().and_then(parse_message_text) {
                    seen.messages += 1;
                    seen.first_message.get_or_insert(now);
                    seen.latencies_us
                        .push(received_ns.saturating_sub(emitted_ns) / 1000);
                }
            }
        }
        if TERMINAL.contains(&wire.kind.as_ref()) {
            seen.terminal = Some(wire.kind.into_owned());
            seen.closed_after_terminal = true;
        }
    }
    Ok(())
}

/// A FIFO the fake CLI waits on, and its opening.
pub struct Gate {
    path: std::path::PathBuf,
}

impl Gate {
    pub fn new(path: std::path::PathBuf) -> anyhow::Result<Self> {
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .with_context(|| format!("cannot make the FIFO {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Opens the FIFO for writing (which waits for the fake to open it for
    /// reading) and closes it: the fake reads its end and goes on.
    pub async fn open(self) -> anyhow::Result<Instant> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::OpenOptions::new().write(true).open(&path)?;
            std::io::Write::write_all(&mut file, b"go\n")?;
            anyhow::Ok(())
        })
        .await??;
        let opened = Instant::now();
        std::fs::remove_file(&self.path)?;
        Ok(opened)
    }
}

impl Gate {
    /// Opens the FIFO for reading without waiting, so that an [`Gate::open`]
    /// that waits for a reader that will never come returns.
    pub fn release(path: &std::path::Path) {
        use std::os::unix::fs::OpenOptionsExt;
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path);
        if let Err(e) = reader {
            tracing::warn!(error = %e, path = %path.display(), "cannot release a gate");
        }
    }
}

/// Percentile `p` (0..=100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A guard against a hang; no figure depends on it.
pub const HANG_GUARD: Duration = Duration::from_secs(600);
