//! Test harness: a scripted model, a workspaces root with a real git
//! repository, and the real runner application on a free port, driving the
//! real Codex CLI installed by `npm ci` at the repository root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use runner::config::{Config, Limits};
use runner::startup::Application;
use scripted_model::{Script, ScriptedModel};
use serde_json::{json, Value};

/// A hang guard only: no assertion depends on it.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

pub fn codex_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("CODEX_BIN") {
        return PathBuf::from(bin);
    }
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node_modules/.bin/codex");
    assert!(
        bin.exists(),
        "the Codex CLI is not installed: run `npm ci` at the repository root (or set CODEX_BIN)"
    );
    bin
}

/// The standard script of these tests.
pub fn script() -> Script {
    Script::from_json(
        &json!({"turns": [
            {"when": "create a file", "steps": [
                [{"reasoning": "I will write hello.txt"}, {"exec": "echo hello > hello.txt"}],
                [{"message": "Created hello.txt"}]]},
            {"when": "sleep", "steps": [
                [{"exec": "bash -c 'sleep 30; true' SLEEP_MARKER"}],
                [{"message": "slept"}]]},
            {"when": "slowly", "steps": [
                [{"reasoning": "one"}, {"wait_ms": 300}, {"exec": "echo one"}],
                [{"reasoning": "two"}, {"wait_ms": 300}, {"exec": "echo two"}],
                [{"message": "done slowly"}]]},
            {"when": "", "steps": [[{"message": "You said: {{prompt}}"}]]}
        ]})
        .to_string(),
    )
    .unwrap()
}

pub struct TestRunner {
    pub base: String,
    pub client: reqwest::Client,
    pub model: ScriptedModel,
    pub root: PathBuf,
    pub repo: PathBuf,
    _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

pub fn config(root: &Path, model: &ScriptedModel) -> Config {
    Config {
        addr: "127.0.0.1:0".into(),
        workspaces_root: root.to_path_buf(),
        codex_bin: Some(codex_bin()),
        codex_config: Some(model.codex_config()),
        api_key: None,
        default_sandbox: codex_sdk::SandboxMode::WorkspaceWrite,
        default_approval: codex_sdk::ApprovalMode::Never,
        limits: Limits::default(),
    }
}

impl TestRunner {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("workspaces");
        let repo = root.join("session-1/repo");
        init_repo(&repo);
        let model = ScriptedModel::start(script(), "127.0.0.1:0").await.unwrap();
        let mut runner = Self {
            base: String::new(),
            client: reqwest::Client::new(),
            root,
            repo,
            _dir: dir,
            shutdown: None,
            server: None,
            model,
        };
        runner.boot().await;
        runner
    }

    /// Starts (or restarts) the runner application on a fresh port.
    pub async fn boot(&mut self) {
        let app = Application::build(config(&self.root, &self.model))
            .await
            .unwrap();
        self.base = format!("http://{}", app.addr());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shutdown = Some(tx);
        self.server = Some(tokio::spawn(async move {
            app.run_until_stopped(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        }));
    }

    /// Stops the runner, as a restart would; its memory is gone.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn create_thread(&self, body: Value) -> String {
        let response = self.post("/threads", body).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["threadId"].as_str().unwrap().to_owned()
    }

    pub async fn repo_thread(&self) -> String {
        self.create_thread(json!({"workingDirectory": self.repo}))
            .await
    }

    pub async fn start_run(&self, thread: &str, prompt: &str) -> String {
        let response = self
            .post("/runs", json!({"threadId": thread, "prompt": prompt}))
            .await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        body["runId"].as_str().unwrap().to_owned()
    }

    /// Opens the run's event stream, after `last_event_id` when given.
    pub async fn subscribe(&self, run: &str, last_event_id: Option<u64>) -> Subscription {
        let mut request = self.client.get(self.url(&format!("/runs/{run}/events")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Subscription {
            inner: Box::pin(response.bytes_stream().eventsource()),
        }
    }

    /// Every event of the run, read to the end of its stream.
    pub async fn events(&self, run: &str) -> Vec<SseEvent> {
        self.subscribe(run, None).await.rest().await
    }
}

impl Drop for TestRunner {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: u64,
    pub event: String,
    pub data: Value,
}

impl SseEvent {
    /// `item.completed:agent_message` for item events, else the event name.
    pub fn label(&self) -> String {
        match self.data["item"]["type"].as_str() {
            Some(item) => format!("{}:{item}", self.event),
            None => self.event.clone(),
        }
    }
}

type EventStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

pub struct Subscription {
    inner: EventStream,
}

impl Subscription {
    /// The next event, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        let event = tokio::time::timeout(HANG_GUARD, self.inner.next())
            .await
            .expect("the event stream hung")?
            .unwrap();
        Some(SseEvent {
            id: event.id.parse().unwrap(),
            event: event.event,
            data: serde_json::from_str(&event.data).unwrap(),
        })
    }

    /// Reads until the stream closes.
    pub async fn rest(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }

    /// Reads until an event matches, returning everything read.
    pub async fn until(&mut self, mut done: impl FnMut(&SseEvent) -> bool) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            let stop = done(&event);
            events.push(event);
            if stop {
                return events;
            }
        }
        panic!("the stream ended before the awaited event; got {events:?}");
    }
}

pub fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?} failed");
}

/// A git repository with one commit.
pub fn init_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README.md"), "# test repo\n").unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "initial"]);
}
