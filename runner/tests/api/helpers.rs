//! Test harness: a scripted model, a workspaces root with a real git
//! repository, and the real runner application on a free port, driving the
//! real Codex CLI installed by `npm ci` at the repository root.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use runner::config::{Config, Limits, SandboxLimits};
use runner::startup::Application;
use runner_protocol::{CreateRun, RunCreated, RunStatus, ThreadView};
use scripted_model::{Script, ScriptedModel};
use serde_json::{json, Value};
use test_support::HANG_GUARD;
pub use test_support::{codex_bin, init_repo, unique_marker, SseEvent, Subscription};
use tokio::io::{AsyncBufReadExt, BufReader};

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
    /// The runner's own process, when it runs as its binary
    /// ([`TestRunner::start_unprivileged`]); `None` in this process.
    pub process: Option<RunnerProcess>,
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
            process: None,
        };
        runner.boot().await;
        runner
    }

    /// The runner as the runner image starts it: its real binary, as a user
    /// that is not root ([`RUNNER_UID`]) and holds no capability, with no
    /// way to gain one (`no-new-privileges`), with the image's sandbox
    /// and containment; `configure` gets the test's folder and may add to
    /// the runner's environment. The test's folder (workspaces,
    /// homes, the runner's `HOME`) is that user's, as the image's volumes
    /// are: call [`TestRunner::give_files_to_the_runner`] after planting
    /// more. The script is made as by [`TestRunner::start_with`].
    ///
    /// Needs root, to start the runner as another user (CI runs as root).
    pub async fn start_unprivileged(
        script: impl FnOnce(&Path) -> Script,
        configure: impl FnOnce(&Path, &mut tokio::process::Command),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("workspaces");
        let repo = root.join("session-1/repo");
        init_repo(&repo);
        let model = ScriptedModel::start(script(dir.path()), "127.0.0.1:0")
            .await
            .unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let codex_config = dir.path().join("codex.toml");
        std::fs::write(&codex_config, model.codex_config()).unwrap();
        let homes = root.with_file_name("codex-homes");
        std::fs::create_dir_all(&homes).unwrap();
        let mut command = unprivileged(Path::new(env!("CARGO_BIN_EXE_runner")));
        command
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", &home)
            .env("RUNNER_ADDR", "127.0.0.1:0")
            .env("WORKSPACES_ROOT", &root)
            .env("RUNNER_CODEX_HOMES", &homes)
            .env("CODEX_BIN", codex_bin())
            .env("RUNNER_CODEX_CONFIG", &codex_config)
            .env("RUST_LOG", "info");
        // The image's own settings (runner/Dockerfile).
        command
            .env("RUNNER_DEFAULT_SANDBOX", "workspace-write")
            .env("RUNNER_DEFAULT_APPROVAL", "never")
            .env("RUNNER_PROCESS_CONTAINMENT", "pid-namespace");
        configure(dir.path(), &mut command);
        give_to_runner_uid(dir.path());
        let process = RunnerProcess::start(command).await;
        Self {
            base: process.base.clone(),
            homes,
            client: reqwest::Client::new(),
            model,
            root,
            repo,
            _dir: dir,
            shutdown: None,
            server: None,
            configure: |_| {},
            process: Some(process),
        }
    }

    /// Makes every file of the test's folder the runner's user's again
    /// (see [`TestRunner::start_unprivileged`]). In the image every
    /// session's files belong to that one user, so what keeps an agent out
    /// of another session must be its isolation, never file permissions; a
    /// file the test planted as root would be refused for the wrong reason.
    pub fn give_files_to_the_runner(&self) {
        give_to_runner_uid(self.root.parent().unwrap());
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

/// The user [`TestRunner::start_unprivileged`] runs the runner as: not
/// root, and with no entry in `/etc/passwd`, like a container's arbitrary
/// user (the image's is `node`, 1000).
pub const RUNNER_UID: u32 = 10_000;

/// `program` launched as [`RUNNER_UID`] (user and group) with no
/// capability, none to gain, and an empty environment.
pub fn unprivileged(program: &Path) -> tokio::process::Command {
    assert!(
        nix::unistd::geteuid().is_root(),
        "starting the runner as another user needs root (CI runs as root)"
    );
    let setpriv = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|dir| dir.join("setpriv"))
        .find(|path| path.is_file())
        .expect("setpriv (util-linux) is not on PATH");
    let mut command = tokio::process::Command::new(setpriv);
    command
        .arg(format!("--reuid={RUNNER_UID}"))
        .arg(format!("--regid={RUNNER_UID}"))
        .args([
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ])
        .arg(program)
        .env_clear();
    command
}

/// `dir` and everything in it given to [`RUNNER_UID`] (symlinks themselves,
/// never their targets). Its parents must let that user through, as `/tmp`
/// does.
fn give_to_runner_uid(dir: &Path) {
    std::os::unix::fs::lchown(dir, Some(RUNNER_UID), Some(RUNNER_UID)).unwrap();
    if !std::fs::symlink_metadata(dir).unwrap().is_dir() {
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        give_to_runner_uid(&entry.unwrap().path());
    }
}

/// The runner as its real binary, so that a test can `SIGKILL` it or start
/// it as another user. Killed when dropped.
pub struct RunnerProcess {
    pub child: tokio::process::Child,
    pub base: String,
    /// Every line of its log so far (also copied to the test's stderr).
    log: Arc<Mutex<Vec<String>>>,
}

impl RunnerProcess {
    /// Spawns `command` (the runner's binary, maybe behind a launcher) and
    /// waits until it listens.
    pub async fn start(mut command: tokio::process::Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = tokio::time::timeout(HANG_GUARD, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                eprintln!("runner| {line}");
                log.lock().unwrap().push(line.clone());
                if line.contains("runner listening") {
                    let addr = line.split("addr=").nth(1).unwrap();
                    return addr.split_whitespace().next().unwrap().to_owned();
                }
            }
            panic!("the runner exited before listening");
        })
        .await
        .expect("the runner did not start");
        let rest = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("runner| {line}");
                rest.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    /// Runs `command`, which must stop before it listens, and returns its
    /// log.
    pub async fn refused(mut command: tokio::process::Command) -> String {
        let output = tokio::time::timeout(
            HANG_GUARD,
            command.stdin(Stdio::null()).kill_on_drop(true).output(),
        )
        .await
        .expect("the runner neither started nor stopped")
        .unwrap();
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "the runner ran: {log}");
        assert!(!log.contains("runner listening"), "{log}");
        log
    }

    /// The lines of its log so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TestRunner {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
