//! The whole stack for a test: a fresh Postgres database, the scripted
//! model, the runner (in-process, with the real Codex CLI) and the backend
//! as its real binary, so a test can kill it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runner::config::{Config as RunnerConfig, Limits, SandboxLimits};
use runner::startup::Application as Runner;
use scripted_model::{Script, ScriptedModel};
use serde_json::{json, Value};
use test_support::{codex_bin, git, init_repo, Subscription, HANG_GUARD};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A database of its own, dropped with the value.
pub struct TestDb {
    admin_url: String,
    name: String,
    pub url: String,
    cluster: Option<Cluster>,
}

/// A private PostgreSQL cluster, which a test may stop and start again.
struct Cluster {
    /// `None` while stopped.
    server: Option<local_postgres::LocalPostgres>,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pg");
        let server = {
            let data = data.clone();
            tokio::task::spawn_blocking(move || local_postgres::LocalPostgres::start(&data, None))
                .await
                .unwrap()
                .unwrap()
        };
        Self {
            port: server.port(),
            server: Some(server),
            data,
            _dir: dir,
        }
    }
}

impl TestDb {
    /// Uses the server of `DATABASE_URL` when given, else starts a private
    /// cluster the way the one-command run does.
    pub async fn create() -> Self {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => Self::create_on(url, None).await,
            _ => Self::create_on_own_cluster().await,
        }
    }

    /// A database on a cluster of its own, which the test may stop
    /// (`stop_server`): the shared server of `DATABASE_URL` must not be.
    pub async fn create_on_own_cluster() -> Self {
        let cluster = Cluster::start().await;
        let admin_url = cluster.server.as_ref().unwrap().url("postgres");
        Self::create_on(admin_url, Some(cluster)).await
    }

    /// Stops this database's own cluster (`pg_ctl stop -m fast`): every
    /// connection is closed, new ones are refused.
    pub async fn stop_server(&mut self) {
        let cluster = self
            .cluster
            .as_mut()
            .expect("the database has no cluster of its own");
        let server = cluster.server.take().expect("the cluster is running");
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .unwrap()
            .unwrap();
    }

    /// Starts the stopped cluster again, on the same port and data.
    pub async fn start_server(&mut self) {
        let cluster = self
            .cluster
            .as_mut()
            .expect("the database has no cluster of its own");
        assert!(cluster.server.is_none(), "the cluster is running");
        let (data, port) = (cluster.data.clone(), cluster.port);
        let server = tokio::task::spawn_blocking(move || {
            local_postgres::LocalPostgres::start(&data, Some(port))
        })
        .await
        .unwrap()
        .unwrap();
        cluster.server = Some(server);
    }

    async fn create_on(admin_url: String, cluster: Option<Cluster>) -> Self {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .execute(&format!("CREATE DATABASE {name}"), &[])
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Self {
            admin_url,
            name,
            url: url.to_string(),
            cluster,
        }
    }

    /// Runs statements on the test database (e.g. to plant a fault).
    pub async fn execute(&self, sql: &str) {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    }

    /// A query on the test database, for assertions on what is stored.
    pub async fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.query(sql, &[]).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Drop cannot await; a thread with its own runtime can.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[])
                        .await;
                }
            });
        })
        .join();
    }
}

/// The script of these tests. Its sleeping commands (`sleep`, `nap`, `doze`)
/// carry `marker`, which no other test uses, so a test can look for their
/// processes without seeing another test's.
pub fn script(marker: &str) -> Script {
    Script::from_json(
        &json!({"turns": [
            {"when": "create a file", "steps": [
                [{"reasoning": "I will write hello.txt"}, {"exec": "echo hello > hello.txt && rm README.md"}],
                [{"message": "Created hello.txt"}]]},
            {"when": "sleep", "steps": [
                [{"exec": format!("bash -c 'sleep 30; true' {marker}")}],
                [{"message": "slept"}]]},
            {"when": "nap", "steps": [
                [{"exec": format!("bash -c 'sleep 30; true' {marker}")}],
                [{"message": "napped"}]]},
            {"when": "doze", "steps": [
                [{"exec": format!("bash -c 'sleep 30; true' {marker}")}],
                [{"message": "dozed"}]]},
            {"when": "linger", "steps": [
                [{"exec": format!("bash -c 'sleep 30; true' {marker}_LINGER")}],
                [{"message": "lingered"}]]},
            {"when": "tarry", "steps": [
                [{"exec": format!("bash -c 'sleep 30; true' {marker}_TARRY")}],
                [{"message": "tarried"}]]},
            {"when": "through an outage", "steps": [
                [{"reasoning": "before"}, {"exec": "cat first-gate"}],
                [{"reasoning": "between"}, {"exec": "cat second-gate"}],
                [{"reasoning": "after"}, {"exec": "echo after > after.txt"}],
                [{"message": "went through"}]]},
            {"when": "slowly", "steps": [
                [{"reasoning": "one"}, {"wait_ms": 400}, {"exec": "echo one"}],
                [{"reasoning": "two"}, {"wait_ms": 400}, {"exec": "echo two"}],
                [{"reasoning": "three"}, {"wait_ms": 400}, {"exec": "echo three > three.txt"}],
                [{"message": "done slowly"}]]},
            {"when": "make a fifo", "steps": [
                [{"exec": "mkfifo pipe && ln -s pipe pipe-link"}],
                [{"message": "made a fifo"}]]},
            {"when": "redirect the worktree", "steps": [
                [{"exec": "git config core.worktree \"$(cd ../../.. && pwd)/outside\""}],
                [{"message": "redirected"}]]},
            {"when": "chatter", "steps": (0..20)
                .map(|_| json!([{"exec": "seq 1 40000"}]))
                .chain([json!([{"message": "chattered"}])])
                .collect::<Vec<_>>()},
            {"when": "count out loud", "steps": [
                [{"exec": "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.2; done"}],
                [{"message": "counted"}]]},
            {"when": "change every kind of file", "steps": [
                [{"exec": "mv main.txt moved.txt && rm gone.txt && chmod +x tool.sh && printf '\\000\\001\\002\\377\\000' > image.bin && mkdir -p 'a dir' && printf 'caf\\303\\251\\n' > 'a dir/ünï café.txt' && : > empty && printf '\\000new\\377' > new.bin"}],
                [{"message": "Changed every kind of file"}]]},
            {"when": "touch a file", "steps": [
                [{"exec": "touch approved.txt"}],
                [{"message": "touched"}]]},
            {"when": "fill the disk", "steps": [
                [{"exec": "head -c 64M /dev/zero > big.bin"}],
                [{"message": "the disk is full"}]]},
            {"when": "break the model", "steps": [[{"fail": "the model broke"}]]},
            {"when": "print hostile bytes", "steps": [
                [{"exec": "printf 'a\\0b\\n'; find . -name README.md -print0; printf '\\377\\376 not utf-8 \\355\\240\\200\\n'; head -c 300000 /dev/zero | tr '\\0' x; echo"}],
                [{"message": "printed a\u{0}b and \u{fffd}"}]]},
            {"when": "", "steps": [[{"message": "You said: {{prompt}}"}]]}
        ]})
        .to_string(),
    )
    .unwrap()
}

struct RunnerHandle {
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

pub struct Backend {
    child: tokio::process::Child,
}

/// A user made with `backend admin`, and a client that sends their token.
#[derive(Clone)]
pub struct TestUser {
    pub id: String,
    pub token: String,
    pub client: reqwest::Client,
}

/// What `backend admin …` did.
pub struct AdminOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A client that sends `Authorization: Bearer <token>` on every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    client_with_header(reqwest::header::AUTHORIZATION, &format!("Bearer {token}"))
}

/// A client that sends the header `name: value` (a secret: kept out of
/// debug output) on every request.
pub fn client_with_header(name: reqwest::header::HeaderName, value: &str) -> reqwest::Client {
    let mut value = reqwest::header::HeaderValue::from_str(value).unwrap();
    value.set_sensitive(true);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(name, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Every line the backend processes of a stack logged, in order.
#[derive(Default)]
pub struct BackendLog {
    lines: Mutex<Vec<String>>,
    added: tokio::sync::Notify,
}

impl BackendLog {
    fn add(&self, line: String) {
        eprintln!("backend| {line}");
        self.lines.lock().unwrap().push(line);
        self.added.notify_waiters();
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line that `matches` was logged.
    pub async fn wait_for(&self, matches: impl Fn(&str) -> bool) {
        tokio::time::timeout(HANG_GUARD, async {
            loop {
                // Armed before looking, so a line added in between wakes us.
                let added = self.added.notified();
                tokio::pin!(added);
                added.as_mut().enable();
                if self.lines.lock().unwrap().iter().any(|l| matches(l)) {
                    return;
                }
                added.await;
            }
        })
        .await
        .expect("the backend never logged the awaited line");
    }
}

pub struct TestStack {
    pub db: TestDb,
    pub model: ScriptedModel,
    /// In the command line of the script's sleeping commands; this stack's
    /// own.
    pub marker: String,
    /// Sends the token of `user`, the stack's first user (not an admin).
    pub client: reqwest::Client,
    /// The stack's first user, made with `backend admin` once the backend
    /// first starts; `None` with `AUTH_MODE=none`.
    pub user: Option<TestUser>,
    /// `WORKSPACES_ROOT`
    pub root: PathBuf,
    /// Where tests make the repositories they clone.
    pub repos: PathBuf,
    pub base: String,
    pub allow_local: bool,
    /// The in-process runner's limits, applied at its next start.
    pub runner_limits: Limits,
    /// The Codex CLI of the in-process runner, applied at its next start.
    pub runner_codex_bin: PathBuf,
    /// The runner's default sandbox (`start_custom` may change it).
    pub sandbox: codex_sdk::SandboxMode,
    runner_addr: String,
    runner: Option<RunnerHandle>,
    backend: Option<Backend>,
    /// More environment for the backend, e.g. a small limit.
    pub backend_env: Vec<(String, String)>,
    /// The runner's `RUNNER_TOKEN`, when the backend's environment sets one.
    runner_token: Option<String>,
    /// What the backend logged (every process of it, in order).
    pub log: Arc<BackendLog>,
    /// Unmounted before `_dir` goes.
    _small_disk: Option<Tmpfs>,
    _dir: tempfile::TempDir,
}

/// A tmpfs mounted on a folder, unmounted (lazily: a process may still
/// hold it) on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Self {
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0755"),
                "repo-runner-test",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Nothing to do with a failure in a drop but say it.
        if let Err(error) = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status()
        {
            eprintln!("cannot unmount {}: {error}", self.0.display());
        }
    }
}

impl TestStack {
    pub async fn start() -> Self {
        Self::start_with(true).await
    }

    pub async fn start_with(allow_local: bool) -> Self {
        Self::start_custom(allow_local, codex_sdk::SandboxMode::WorkspaceWrite, &[]).await
    }

    /// A stack whose backend also gets `env`.
    pub async fn start_configured(allow_local: bool, env: &[(&str, &str)]) -> Self {
        Self::start_custom(allow_local, codex_sdk::SandboxMode::WorkspaceWrite, env).await
    }

    /// A stack whose database is on a cluster of its own, which the test
    /// may stop and start (`stack.db.stop_server()`).
    /// The backend gets `env`.
    pub async fn start_on_own_cluster(env: &[(&str, &str)]) -> Self {
        Self::start_on(
            TestDb::create_on_own_cluster().await,
            true,
            codex_sdk::SandboxMode::WorkspaceWrite,
            env,
            None,
        )
        .await
    }

    /// A stack whose runner uses `sandbox` and whose backend gets `env`.
    pub async fn start_custom(
        allow_local: bool,
        sandbox: codex_sdk::SandboxMode,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_on(TestDb::create().await, allow_local, sandbox, env, None).await
    }

    /// A stack whose `WORKSPACES_ROOT` is a tmpfs of `bytes` (a disk that
    /// fills up); the backend gets `env`. Needs root, as CI has.
    pub async fn start_on_small_disk(bytes: u64, env: &[(&str, &str)]) -> Self {
        Self::start_on(
            TestDb::create().await,
            true,
            codex_sdk::SandboxMode::WorkspaceWrite,
            env,
            Some(bytes),
        )
        .await
    }

    async fn start_on(
        db: TestDb,
        allow_local: bool,
        sandbox: codex_sdk::SandboxMode,
        env: &[(&str, &str)],
        small_disk: Option<u64>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("workspaces");
        let repos = dir.path().join("repos");
        std::fs::create_dir_all(&root).unwrap();
        let small_disk = small_disk.map(|bytes| Tmpfs::mount(&root, bytes));
        std::fs::create_dir_all(&repos).unwrap();
        let marker = test_support::unique_marker("BACKEND_SLEEP");
        let model = ScriptedModel::start(script(&marker), "127.0.0.1:0")
            .await
            .unwrap();
        let mut stack = Self {
            db,
            model,
            marker,
            client: reqwest::Client::new(),
            user: None,
            root,
            repos,
            base: String::new(),
            allow_local,
            runner_limits: Limits::default(),
            runner_codex_bin: codex_bin(),
            sandbox,
            backend_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            runner_token: env
                .iter()
                .find(|(k, _)| *k == "RUNNER_TOKEN")
                .map(|(_, v)| (*v).to_owned()),
            runner_addr: "127.0.0.1:0".to_owned(),
            runner: None,
            backend: None,
            log: Arc::default(),
            _small_disk: small_disk,
            _dir: dir,
        };
        stack.start_runner().await;
        stack.start_backend().await;
        let no_auth = stack
            .backend_env
            .iter()
            .any(|(k, v)| k == "AUTH_MODE" && v == "none");
        if !no_auth {
            let alice = stack.add_user("alice", false).await;
            stack.client = alice.client.clone();
            stack.user = Some(alice);
        }
        stack
    }

    /// `backend admin ARGS` against this stack's database.
    pub async fn admin(&self, args: &[&str]) -> AdminOutput {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_backend"))
            .arg("admin")
            .args(args)
            .env("DATABASE_URL", &self.db.url)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        AdminOutput {
            success: output.status.success(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// A new user with a token, made as an operator does.
    pub async fn add_user(&self, name: &str, admin: bool) -> TestUser {
        let mut args = vec!["user", "add", name];
        if admin {
            args.push("--admin");
        }
        let added = self.admin(&args).await;
        assert!(added.success, "user add: {}", added.stderr);
        let id = added.stdout.trim().to_owned();
        let created = self.admin(&["token", "create", name]).await;
        assert!(created.success, "token create: {}", created.stderr);
        let token = created.stdout.trim().to_owned();
        TestUser {
            id,
            client: client_with_token(&token),
            token,
        }
    }

    pub async fn start_runner(&mut self) {
        let config = RunnerConfig {
            addr: self.runner_addr.clone(),
            token: service_kit::RequiredToken::new(self.runner_token.as_deref()),
            workspaces_root: self.root.clone(),
            codex_bin: Some(self.runner_codex_bin.clone()),
            codex_config: Some(self.model.codex_config()),
            api_key: None,
            default_sandbox: self.sandbox,
            default_approval: codex_sdk::ApprovalMode::Never,
            process_containment: runner::config::ContainmentMode::Auto,
            // As `RUNNER_TOKEN`, the stack's environment names the runner's
            // driver too (the backend ignores it).
            driver: if self
                .backend_env
                .iter()
                .any(|(k, v)| k == "RUNNER_DRIVER" && v == "app-server")
            {
                runner::config::DriverMode::AppServer
            } else {
                runner::config::DriverMode::Exec
            },
            limits: self.runner_limits.clone(),
            sandbox: SandboxLimits {
                codex_homes: self.root.with_file_name("codex-homes"),
                max_sandbox: self.sandbox.max(codex_sdk::SandboxMode::WorkspaceWrite),
                allow_unsandboxed_approvals: self
                    .backend_env
                    .iter()
                    .any(|(k, v)| k == "RUNNER_ALLOW_UNSANDBOXED_APPROVALS" && v == "true"),
                ..SandboxLimits::default()
            },
        };
        let app = Runner::build(config).await.unwrap();
        // The first start binds port 0 and the runner keeps the port the
        // kernel gave it; a restart binds that same port again, so the
        // backend's RUNNER_URL stays right. No port is picked and released
        // for another process to bind.
        self.runner_addr = app.addr().to_string();
        let (shutdown, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            app.run_until_stopped(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        self.runner = Some(RunnerHandle { shutdown, task });
    }

    /// Stops the runner; it forgets every thread and run.
    pub async fn stop_runner(&mut self) {
        if let Some(runner) = self.runner.take() {
            let _ = runner.shutdown.send(());
            runner.task.await.unwrap();
        }
    }

    /// Starts the backend binary and waits for its "listening" log line.
    pub async fn start_backend(&mut self) {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_backend"))
            .env("BACKEND_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", &self.db.url)
            .env("RUNNER_URL", format!("http://{}", self.runner_addr))
            .env("WORKSPACES_ROOT", &self.root)
            .env("ALLOW_LOCAL_REPOS", self.allow_local.to_string())
            .env("BACKEND_MAX_BODY_BYTES", "65536")
            // Tests poll and loop from one address faster than any person;
            // `tenants::rate_limits_*` sets small limits to test them.
            .env("BACKEND_IP_RATE_PER_SEC", "0")
            .env("BACKEND_USER_RATE_PER_SEC", "0")
            // The tests' git servers listen on loopback; `clone_attacks`
            // turns this off to attack the policy.
            .env("ALLOW_PRIVATE_CLONE_HOSTS", "true")
            // `TEST_BACKEND_LOG=debug` shows more when a test is studied.
            .env(
                "RUST_LOG",
                // Requests are logged at DEBUG; some tests wait on them.
                std::env::var("TEST_BACKEND_LOG")
                    .unwrap_or_else(|_| "info,service_kit=debug".into()),
            )
            .envs(self.backend_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = self.log.clone();
        let addr = tokio::time::timeout(HANG_GUARD, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.add(line.clone());
                if line.contains("backend listening") {
                    let addr = line
                        .split("addr=")
                        .nth(1)
                        .unwrap()
                        .split_whitespace()
                        .next()
                        .unwrap();
                    return addr.to_owned();
                }
            }
            panic!("the backend exited before listening");
        })
        .await
        .expect("the backend did not start");
        // Keep echoing its log so a failing test shows it.
        let log = self.log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log.add(line);
            }
        });
        self.base = format!("http://{addr}");
        self.backend = Some(Backend { child });
    }

    /// SIGKILL: no graceful anything.
    /// Stops the backend as an operator or a container engine does
    /// (SIGTERM) and returns its exit status.
    pub async fn stop_backend(&mut self) -> std::process::ExitStatus {
        let mut backend = self.backend.take().expect("the backend is running");
        let pid = backend.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(test_support::HANG_GUARD, backend.child.wait())
            .await
            .expect("the backend did not stop on SIGTERM")
            .unwrap()
    }

    pub async fn kill_backend(&mut self) {
        if let Some(mut backend) = self.backend.take() {
            backend.child.start_kill().unwrap();
            backend.child.wait().await.unwrap();
        }
    }

    /// The in-process runner's API, for assertions on what it holds.
    /// The backend process's pid.
    pub fn backend_pid(&self) -> u32 {
        self.backend
            .as_ref()
            .and_then(|backend| backend.child.id())
            .expect("the backend runs")
    }

    pub fn runner_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.runner_addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// `DELETE /api/sessions/{session}`.
    pub async fn delete_session(&self, session: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/api/sessions/{session}")))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A repository under `repos/<name>` with a `feature` branch and a `v1`
    /// tag; returns its path.
    pub fn make_repo(&self, name: &str) -> PathBuf {
        let dir = self.repos.join(name);
        init_repo(&dir);
        git(&dir, &["tag", "v1"]);
        git(&dir, &["checkout", "-q", "-b", "feature"]);
        std::fs::write(dir.join("feature.txt"), "feature\n").unwrap();
        git(&dir, &["add", "."]);
        git(&dir, &["commit", "-q", "-m", "feature work"]);
        git(&dir, &["checkout", "-q", "main"]);
        std::fs::write(dir.join("main.txt"), "second commit on main\n").unwrap();
        git(&dir, &["add", "."]);
        git(&dir, &["commit", "-q", "-m", "second"]);
        dir
    }

    /// Creates a session (asserting 202 `cloning`) and waits for its clone.
    pub async fn session(&self, body: Value) -> Value {
        let response = self.post("/api/sessions", body).await;
        assert_eq!(response.status(), 202);
        let created: Value = response.json().await.unwrap();
        assert_eq!(created["status"], "cloning");
        assert_eq!(created["thread_id"], Value::Null);
        self.wait_cloned(created["session_id"].as_str().unwrap())
            .await
    }

    pub async fn ready_session(&self) -> (String, PathBuf) {
        let repo = self.make_repo("project");
        let session = self
            .session(json!({"repo_url": format!("file://{}", repo.display())}))
            .await;
        assert_eq!(session["status"], "ready", "{session}");
        (session["session_id"].as_str().unwrap().to_owned(), repo)
    }

    /// Polls until the session leaves `cloning`: the API offers no event
    /// for it, so this is a bounded poll.
    pub async fn wait_cloned(&self, id: &str) -> Value {
        self.wait_cloned_as(&self.client, id).await
    }

    /// [`TestStack::wait_cloned`] as the user of `client`.
    pub async fn wait_cloned_as(&self, client: &reqwest::Client, id: &str) -> Value {
        for _ in 0..1200 {
            let session = self
                .json_as(
                    client,
                    reqwest::Method::GET,
                    &format!("/api/sessions/{id}"),
                    None,
                )
                .await;
            if session["status"] != "cloning" {
                return session;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("session {id} is still cloning");
    }

    /// The JSON body of `method path` (with `body`) as the user of
    /// `client`, whatever its status.
    pub async fn json_as(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    pub async fn prompt(&self, session: &str, prompt: &str) -> String {
        let response = self
            .post(
                &format!("/api/sessions/{session}/prompt"),
                json!({"prompt": prompt}),
            )
            .await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "queued");
        body["run_id"].as_str().unwrap().to_owned()
    }

    pub async fn subscribe(&self, run: &str, last_event_id: Option<u64>) -> Subscription {
        Subscription::open(
            &self.client,
            &self.url(&format!("/api/runs/{run}/events")),
            last_event_id,
        )
        .await
    }

    /// Every event of the run, read to the end.
    pub async fn events(&self, run: &str) -> Vec<test_support::SseEvent> {
        self.subscribe(run, None).await.rest().await
    }

    pub fn workspace(&self, session: &str) -> PathBuf {
        self.root.join(session).join("repo")
    }
}

/// The runner's run id the backend recorded for `run`, if any.
pub async fn runner_run_id(db: &TestDb, run: &str) -> Option<String> {
    let rows = db
        .query(&format!(
            "SELECT runner_run_id FROM runs WHERE id = '{run}'"
        ))
        .await;
    rows[0].get(0)
}

/// Asserts the JSON error schema and returns the body.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"].as_str().is_some(), "{body}");
    body
}

pub fn bare_clone(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    git(
        src.parent().unwrap(),
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            dest.to_str().unwrap(),
        ],
    );
}
