//! Test harness: a scripted model, a workspaces root with a real git
//! repository, and the real runner application on a free port, driving the
//! real Codex CLI installed by `npm ci` at the repository root.

use std::path::{Path, PathBuf};

use runner::config::{Config, Limits, SandboxLimits};
use runner::startup::Application;
use runner_protocol::{CreateRun, RunCreated, RunStatus, ThreadView};
use scripted_model::{Script, ScriptedModel};
use serde_json::{json, Value};
pub use test_support::{codex_bin, init_repo, unique_marker, SseEvent, Subscription};

/// The standard script of these tests; its sleeping command carries a
/// marker of its own.
pub fn script() -> Script {
    script_with_marker(&unique_marker("SLEEP"))
}

/// The standard script, its sleeping command carrying `marker` (a test that
/// looks for that command's processes needs a marker no other test uses).
pub fn script_with_marker(marker: &str) -> Script {
    Script::from_json(
        &json!({"turns": [
            {"when": "create a file", "steps": [
                [{"reasoning": "I will write hello.txt"}, {"exec": "echo hello > hello.txt"}],
                [{"message": "Created hello.txt"}]]},
            {"when": "sleep", "steps": [
                [{"exec": format!("bash -c 'sleep 30; true' {marker}")}],
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
    /// `RUNNER_CODEX_HOMES`, a sibling of the workspaces root.
    pub homes: PathBuf,
    pub client: reqwest::Client,
    pub model: ScriptedModel,
    pub root: PathBuf,
    pub repo: PathBuf,
    _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    configure: fn(&mut Config),
}

pub fn config(root: &Path, model: &ScriptedModel) -> Config {
    Config {
        addr: "127.0.0.1:0".into(),
        token: service_kit::RequiredToken::default(),
        workspaces_root: root.to_path_buf(),
        codex_bin: Some(codex_bin()),
        codex_config: Some(model.codex_config()),
        api_key: None,
        default_sandbox: codex_sdk::SandboxMode::WorkspaceWrite,
        default_approval: codex_sdk::ApprovalMode::Never,
        process_containment: runner::config::ContainmentMode::Auto,
        driver: runner::config::DriverMode::Exec,
        limits: Limits::default(),
        sandbox: SandboxLimits {
            codex_homes: root.with_file_name("codex-homes"),
            ..SandboxLimits::default()
        },
    }
}

impl TestRunner {
    pub async fn start() -> Self {
        Self::start_with(|_| script(), |_| {}).await
    }

    /// Like [`TestRunner::start`], with the script made by `script` from the
    /// test's temporary folder (the workspaces root is its `workspaces`, the
    /// codex homes its `codex-homes`) and a configuration changed by
    /// `configure` (at every boot).
    pub async fn start_with(
        script: impl FnOnce(&Path) -> Script,
        configure: fn(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("workspaces");
        let repo = root.join("session-1/repo");
        init_repo(&repo);
        let script = script(dir.path());
        let model = ScriptedModel::start(script, "127.0.0.1:0").await.unwrap();
        let mut runner = Self {
            base: String::new(),
            homes: root.with_file_name("codex-homes"),
            client: reqwest::Client::new(),
            root,
            repo,
            _dir: dir,
            shutdown: None,
            server: None,
            model,
            configure,
        };
        runner.boot().await;
        runner
    }

    /// Starts (or restarts) the runner application on a fresh port.
    pub async fn boot(&mut self) {
        let mut config = config(&self.root, &self.model);
        (self.configure)(&mut config);
        let app = Application::build(config).await.unwrap();
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
        let view: ThreadView = response.json().await.unwrap();
        view.thread_id.to_string()
    }

    pub async fn repo_thread(&self) -> String {
        self.create_thread(json!({"workingDirectory": self.repo}))
            .await
    }

    pub async fn start_run(&self, thread: &str, prompt: &str) -> String {
        let request = CreateRun {
            thread_id: thread.to_owned(),
            prompt: prompt.to_owned(),
        };
        let response = self
            .client
            .post(self.url("/runs"))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let created: RunCreated = response.json().await.unwrap();
        assert_eq!(created.thread_id.to_string(), thread);
        assert_eq!(created.status, RunStatus::Running);
        created.run_id.to_string()
    }

    /// Opens the run's event stream, after `last_event_id` when given.
    pub async fn subscribe(&self, run: &str, last_event_id: Option<u64>) -> Subscription {
        Subscription::open(
            &self.client,
            &self.url(&format!("/runs/{run}/events")),
            last_event_id,
        )
        .await
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
