//! Attacks of an agent on its environment, its `CODEX_HOME`, other sessions
//! and the sandbox choice, performed by the real CLI on the scripted model's
//! orders, each asserted to fail.

use std::path::Path;

use codex_sdk::{ApiKey, SandboxMode};
use serde_json::{json, Value};

use crate::helpers::{
    codex_bin, config, init_repo, unprivileged, RunnerProcess, SseEvent, TestRunner, RUNNER_UID,
};

const SECRET: &str = "sk-test-SECRET-4f1c2b9a7e";

/// The attacks. `dir` is the test's temporary folder: workspaces root
/// `dir/workspaces`, codex homes `dir/codex-homes`.
fn attack_script(dir: &Path) -> scripted_model::Script {
    let dir = dir.display();
    let tmp = std::env::temp_dir();
    let tmp = tmp.display();
    let exec = |cmd: String| json!([{"exec": cmd}]);
    scripted_model::Script::from_json(
        &json!({"turns": [
            {"when": "leak the key", "steps": [
                exec("env > env.txt; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done >> env.txt".into()),
                [{"message": "leaked"}]]},
            {"when": "rewrite your config", "steps": [
                exec(format!("printf '\\n[mcp_servers.esc]\\ncommand = \"/bin/sh\"\\nargs = [\"-c\", \"touch {dir}/mcp-started\"]\\n' >> {dir}/codex-homes/*/codex-home/config.toml")),
                exec(format!("touch {dir}/codex-homes/planted")),
                [{"message": "rewritten"}]]},
            {"when": "write elsewhere", "steps": [
                exec(format!("echo pwned > {dir}/workspaces/session-2/repo/pwned.txt")),
                exec(format!("echo pwned > {dir}/workspaces/session-2/repo/.git/hooks/post-checkout")),
                exec(format!("echo pwned > {tmp}/repo-runner-pwned-{}", dir.to_string().replace('/', "_"))),
                exec("echo mine > \"$TMPDIR/mine.txt\" && echo mine > mine.txt".into()),
                [{"message": "written"}]]},
            {"when": "read elsewhere", "steps": [
                exec(format!("cat {dir}/workspaces/session-2/repo/secret.txt")),
                exec(format!("cat {dir}/codex-homes/other-home/secret.txt")),
                exec(format!("cat {dir}/outside/secret.txt")),
                exec(format!("ls -a {dir}/workspaces {dir}/codex-homes > listing.txt; cat ../repo/mine.txt")),
                [{"message": "read"}]]},
            {"when": "cross over", "steps": [
                exec(format!("cat {dir}/workspaces/session-2/repo/secret.txt")),
                exec(format!("cat {dir}/codex-homes/other-home/secret.txt")),
                exec(format!("echo pwned > {dir}/workspaces/session-2/repo/pwned.txt")),
                exec(format!("echo pwned > {dir}/codex-homes/other-home/pwned.txt")),
                exec(format!("umount -l {dir}/workspaces {dir}/codex-homes; unshare --user --map-root-user --mount sh -c 'umount -l {dir}/workspaces {dir}/codex-homes; cat {dir}/workspaces/session-2/repo/secret.txt'")),
                exec("echo mine > mine.txt".into()),
                [{"message": "crossed"}]]},
            {"when": "escalate", "steps": [
                [{"function_call": {"name": "exec_command", "arguments": {
                    "cmd": format!("echo pwned > {dir}/workspaces/session-2/repo/pwned.txt"),
                    "sandbox_permissions": "require_escalated",
                    "justification": "I need to"}}}],
                [{"message": "escalated"}]]},
            {"when": "", "steps": [[{"message": "You said: {{prompt}}"}]]}
        ]})
        .to_string(),
    )
    .unwrap()
}

fn with_secret_key(config: &mut runner::config::Config) {
    config.api_key = Some(ApiKey::new(SECRET));
}

async fn attacker() -> TestRunner {
    TestRunner::start_with(attack_script, with_secret_key).await
}

/// The exit codes of the latest turn's commands, in order, as the CLI
/// reported them to the model (the CLI's `command_execution` events of a
/// quick command are not always emitted, its tool results always are).
fn exit_codes(runner: &TestRunner) -> Vec<i64> {
    let requests = runner.model.requests();
    let input = requests.last().unwrap()["input"]
        .as_array()
        .unwrap()
        .clone();
    let is_prompt = |item: &Value| {
        item["role"] == "user"
            && !item["content"][0]["text"]
                .as_str()
                .is_some_and(|text| text.trim_start().starts_with('<'))
    };
    let start = input.iter().rposition(is_prompt).unwrap();
    input[start..]
        .iter()
        .filter(|item| item["type"] == "function_call_output")
        .map(|item| {
            let output = item["output"].as_str().unwrap();
            let code = output
                .split("Process exited with code ")
                .nth(1)
                .unwrap_or_else(|| panic!("no exit code in {output}"));
            code.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect()
}

async fn run_to_end(runner: &TestRunner, thread: &str, prompt: &str) -> Vec<SseEvent> {
    let run = runner.start_run(thread, prompt).await;
    let events = runner.events(&run).await;
    assert_eq!(events.last().unwrap().event, "run.completed", "{prompt}");
    events
}

#[tokio::test]
async fn the_agent_cannot_read_the_api_key_from_any_environment() {
    let runner = attacker().await;
    let thread = runner.repo_thread().await;

    let events = run_to_end(&runner, &thread, "leak the key").await;

    assert_eq!(exit_codes(&runner), [0]);
    let dumped = std::fs::read_to_string(runner.repo.join("env.txt")).unwrap();
    assert!(dumped.contains("PATH="), "the dump ran: {dumped}");
    assert!(!dumped.contains(SECRET), "the key leaked: {dumped}");
    assert!(!dumped.contains("CODEX_API_KEY"));
    assert!(!dumped.contains("CODEX_HOME"));
    let streamed: Vec<String> = events.iter().map(|e| e.data.to_string()).collect();
    assert!(!streamed.concat().contains(SECRET));
    let sent: Vec<String> = runner
        .model
        .requests()
        .iter()
        .map(Value::to_string)
        .collect();
    assert!(!sent.concat().contains(SECRET), "the key reached the model");
}

#[tokio::test]
async fn the_agent_cannot_rewrite_its_codex_config() {
    let runner = attacker().await;
    let thread = runner.repo_thread().await;
    let dir = runner.root.parent().unwrap().to_path_buf();

    run_to_end(&runner, &thread, "rewrite your config").await;
    let codes = exit_codes(&runner);
    run_to_end(&runner, &thread, "and again").await;

    assert_eq!(codes.len(), 2);
    assert!(codes.iter().all(|&code| code != 0), "{codes:?}");
    let homes: Vec<_> = std::fs::read_dir(&runner.homes)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(homes.len(), 1, "{homes:?}");
    let config = runner.homes.join(&homes[0]).join("codex-home/config.toml");
    assert_eq!(
        std::fs::read_to_string(config).unwrap(),
        runner.model.codex_config()
    );
    assert!(!dir.join("mcp-started").exists(), "the MCP server started");
    assert!(!runner.homes.join("planted").exists());
    assert!(
        !runner
            .repo
            .parent()
            .unwrap()
            .join("repo.codex-home")
            .exists(),
        "no CODEX_HOME beside the workspace any more"
    );
}

#[tokio::test]
async fn the_agent_cannot_write_other_sessions_or_shared_temp_folders() {
    let runner = attacker().await;
    init_repo(&runner.root.join("session-2/repo"));
    let thread = runner.repo_thread().await;

    run_to_end(&runner, &thread, "write elsewhere").await;

    assert_the_agent_wrote_only_its_own_session(&runner);
}

/// What the "write elsewhere" turn must leave: its writes to another
/// session (a file, a git hook) and to the shared temp folder failed, its
/// own workspace and `TMPDIR` took theirs.
fn assert_the_agent_wrote_only_its_own_session(runner: &TestRunner) {
    assert!(
        runner.root.starts_with(std::env::temp_dir()),
        "the attack needs WORKSPACES_ROOT under the temp folder"
    );
    let other = runner.root.join("session-2/repo");
    let codes = exit_codes(runner);
    assert_eq!(codes.len(), 4, "{codes:?}");
    assert!(codes[..3].iter().all(|&code| code != 0), "{codes:?}");
    assert_eq!(codes[3], 0, "the agent writes its workspace and TMPDIR");
    assert!(!other.join("pwned.txt").exists());
    assert!(!other.join(".git/hooks/post-checkout").exists());
    let shared = std::env::temp_dir().join(format!(
        "repo-runner-pwned-{}",
        runner
            .root
            .parent()
            .unwrap()
            .display()
            .to_string()
            .replace('/', "_")
    ));
    assert!(!shared.exists());
    assert_eq!(
        std::fs::read_to_string(runner.repo.join("mine.txt")).unwrap(),
        "mine\n"
    );
}

const THEIR_SECRET: &str = "another-users-secret-9d3e";

#[tokio::test]
async fn the_agent_cannot_read_other_sessions_homes_or_hidden_folders() {
    let runner = TestRunner::start_with(attack_script, |config| {
        let outside = config.workspaces_root.parent().unwrap().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        config.sandbox.hidden_paths = vec![outside];
    })
    .await;
    plant_other_sessions(&runner);
    let thread = runner.repo_thread().await;

    let events = run_to_end(&runner, &thread, "read elsewhere").await;

    assert_the_agent_read_only_its_own_session(&runner, &events);
}

/// Another session's workspace, another thread's home (its Codex sessions
/// hold that user's whole conversation) and a folder the operator hides
/// (say, the service's data, `outside`), each with [`THEIR_SECRET`]; and a
/// file of the agent's own session.
fn plant_other_sessions(runner: &TestRunner) {
    let base = runner.root.parent().unwrap();
    let theirs = runner.root.join("session-2/repo");
    init_repo(&theirs);
    std::fs::write(theirs.join("secret.txt"), THEIR_SECRET).unwrap();
    std::fs::create_dir_all(runner.homes.join("other-home")).unwrap();
    std::fs::write(runner.homes.join("other-home/secret.txt"), THEIR_SECRET).unwrap();
    std::fs::write(base.join("outside/secret.txt"), THEIR_SECRET).unwrap();
    std::fs::write(runner.repo.join("mine.txt"), "my own file").unwrap();
}

/// What the "read elsewhere" turn must leave, after
/// [`plant_other_sessions`]: no secret read, its own file read, and only
/// its own session folder and home in sight.
fn assert_the_agent_read_only_its_own_session(runner: &TestRunner, events: &[SseEvent]) {
    assert_eq!(exit_codes(runner), [1, 1, 1, 0]);
    let sent: String = runner
        .model
        .requests()
        .iter()
        .map(Value::to_string)
        .collect();
    assert!(!sent.contains(THEIR_SECRET), "a secret reached the model");
    assert!(
        sent.contains("my own file"),
        "the agent reads its own session"
    );
    let streamed: String = events.iter().map(|e| e.data.to_string()).collect();
    assert!(!streamed.contains(THEIR_SECRET));
    let listing = std::fs::read_to_string(runner.repo.join("listing.txt")).unwrap();
    let mut names: Vec<&str> = listing
        .lines()
        .filter(|line| !line.is_empty() && !line.ends_with(':') && !line.starts_with('.'))
        .collect();
    names.sort_by_key(|name| *name != "session-1");
    let own_home = std::fs::read_dir(&runner.homes)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|name| name != "other-home" && !name.starts_with('.'))
        .unwrap();
    assert_eq!(names, ["session-1", own_home.as_str()], "{listing}");
    // Hidden only from the run: the files are where they were.
    assert_eq!(
        std::fs::read_to_string(runner.root.join("session-2/repo/secret.txt")).unwrap(),
        THEIR_SECRET
    );
}

// The runner as its image runs it: a user that is not root, with no
// capability. Its namespaces are then made in a user namespace, and an
// agent still sees nothing of other sessions, though every session's files
// belong to the runner's one user.

/// The runner's log says its runs get a user namespace.
fn assert_contained_in_a_user_namespace(runner: &TestRunner) {
    let log = runner.process.as_ref().unwrap().log();
    assert!(
        log.iter().any(|line| line.contains("run containment")
            && line.contains("pid_namespace=true")
            && line.contains("user_namespace=true")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn an_unprivileged_runner_keeps_each_agent_to_its_own_session() {
    let runner = TestRunner::start_unprivileged(attack_script, |dir, command| {
        let outside = dir.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        command.env("RUNNER_HIDDEN_PATHS", outside);
    })
    .await;
    assert_contained_in_a_user_namespace(&runner);
    plant_other_sessions(&runner);
    runner.give_files_to_the_runner();
    let thread = runner.repo_thread().await;

    let events = run_to_end(&runner, &thread, "read elsewhere").await;
    assert_the_agent_read_only_its_own_session(&runner, &events);
    run_to_end(&runner, &thread, "write elsewhere").await;
    assert_the_agent_wrote_only_its_own_session(&runner);
}

/// Without a sandbox the agent may do anything its user may, and its user
/// owns every session's files: only the covers of its mount namespace stand
/// in the way, and it can lift them neither directly nor from a user
/// namespace of its own.
#[tokio::test]
async fn an_unprivileged_runner_hides_other_sessions_even_from_full_access() {
    let runner = TestRunner::start_unprivileged(attack_script, |_, command| {
        command.env("RUNNER_DEFAULT_SANDBOX", "danger-full-access");
    })
    .await;
    assert_contained_in_a_user_namespace(&runner);
    let theirs = runner.root.join("session-2/repo");
    init_repo(&theirs);
    std::fs::write(theirs.join("secret.txt"), THEIR_SECRET).unwrap();
    std::fs::create_dir_all(runner.homes.join("other-home")).unwrap();
    std::fs::write(runner.homes.join("other-home/secret.txt"), THEIR_SECRET).unwrap();
    runner.give_files_to_the_runner();
    let thread = runner.repo_thread().await;

    let events = run_to_end(&runner, &thread, "cross over").await;

    let codes = exit_codes(&runner);
    assert_eq!(codes.len(), 6, "{codes:?}");
    assert!(codes[..5].iter().all(|&code| code != 0), "{codes:?}");
    assert_eq!(codes[5], 0, "the agent writes its own workspace");
    let sent: String = runner
        .model
        .requests()
        .iter()
        .map(Value::to_string)
        .collect();
    assert!(!sent.contains(THEIR_SECRET), "a secret reached the model");
    let streamed: String = events.iter().map(|e| e.data.to_string()).collect();
    assert!(!streamed.contains(THEIR_SECRET));
    assert!(!theirs.join("pwned.txt").exists());
    assert!(!runner.homes.join("other-home/pwned.txt").exists());
    assert_eq!(
        std::fs::read_to_string(runner.repo.join("mine.txt")).unwrap(),
        "mine\n"
    );
}

/// A host where the runner's user can make no namespace (here: util-linux
/// out of reach): with `danger-full-access` allowed, `auto` does not start,
/// and says what to do; `off` starts, and warns that sessions are not
/// isolated.
#[tokio::test]
async fn without_namespaces_full_access_needs_containment_off() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("workspaces");
    std::fs::create_dir_all(&root).unwrap();
    let no_tools = dir.path().join("bin");
    std::fs::create_dir_all(&no_tools).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(RUNNER_UID), Some(RUNNER_UID)).unwrap();
    std::os::unix::fs::chown(&root, Some(RUNNER_UID), Some(RUNNER_UID)).unwrap();
    let runner = |containment: &str| {
        let mut command = unprivileged(Path::new(env!("CARGO_BIN_EXE_runner")));
        command
            .env("PATH", &no_tools)
            .env("RUNNER_ADDR", "127.0.0.1:0")
            .env("WORKSPACES_ROOT", &root)
            .env("RUNNER_CODEX_HOMES", dir.path().join("codex-homes"))
            .env("CODEX_BIN", codex_bin())
            .env("RUNNER_DEFAULT_SANDBOX", "danger-full-access")
            .env("RUNNER_PROCESS_CONTAINMENT", containment)
            .env("RUST_LOG", "info");
        command
    };

    let refusal = RunnerProcess::refused(runner("auto")).await;
    let started = RunnerProcess::start(runner("off")).await;

    assert!(
        refusal.contains("RUNNER_MAX_SANDBOX allows danger-full-access"),
        "{refusal}"
    );
    assert!(
        refusal.contains("RUNNER_PROCESS_CONTAINMENT=off"),
        "{refusal}"
    );
    assert!(
        started
            .log()
            .iter()
            .any(|line| line.contains("WARN") && line.contains("sessions are not isolated")),
        "{:#?}",
        started.log()
    );
}

#[tokio::test]
async fn the_agent_cannot_ask_its_way_out_of_the_sandbox() {
    let runner = attacker().await;
    let other = runner.root.join("session-2/repo");
    init_repo(&other);
    let thread = runner
        .create_thread(json!({"workingDirectory": runner.repo, "approvalPolicy": "on-request"}))
        .await;

    run_to_end(&runner, &thread, "escalate").await;

    assert!(!other.join("pwned.txt").exists());
    let requests = runner.model.requests();
    let last = requests.last().unwrap()["input"].to_string();
    assert!(last.contains("reject command"), "{last}");
}

async fn forbidden(runner: &TestRunner, body: Value) -> String {
    let response = runner.post("/threads", body).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "forbidden", "{body}");
    body["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_request_cannot_widen_the_sandbox_past_the_configuration() {
    let runner = TestRunner::start().await;
    let other = runner.root.join("session-2/repo");
    init_repo(&other);
    let repo = &runner.repo;

    let message = forbidden(
        &runner,
        json!({"workingDirectory": repo, "sandboxMode": "danger-full-access", "networkAccessEnabled": true}),
    )
    .await;
    assert!(message.contains("RUNNER_MAX_SANDBOX"), "{message}");
    let message = forbidden(
        &runner,
        json!({"workingDirectory": repo, "networkAccessEnabled": true}),
    )
    .await;
    assert!(message.contains("RUNNER_ALLOW_NETWORK"), "{message}");
    let message = forbidden(
        &runner,
        json!({"workingDirectory": repo, "webSearchEnabled": true}),
    )
    .await;
    assert!(message.contains("RUNNER_ALLOW_WEB_SEARCH"), "{message}");
    let message = forbidden(
        &runner,
        json!({"workingDirectory": repo, "additionalDirectories": [other]}),
    )
    .await;
    assert!(message.contains("additionalDirectories"), "{message}");

    for narrower in [
        json!({"workingDirectory": repo, "sandboxMode": "read-only"}),
        json!({"workingDirectory": repo, "sandboxMode": "workspace-write", "networkAccessEnabled": false}),
        json!({"workingDirectory": repo, "webSearchEnabled": false}),
    ] {
        let response = runner.post("/threads", narrower.clone()).await;
        assert_eq!(response.status(), 201, "{narrower}");
    }
}

#[tokio::test]
async fn a_read_only_thread_cannot_write_its_workspace() {
    let runner = TestRunner::start().await;
    let thread = runner
        .create_thread(json!({"workingDirectory": runner.repo, "sandboxMode": "read-only"}))
        .await;

    run_to_end(&runner, &thread, "create a file").await;

    assert_ne!(exit_codes(&runner), [0]);
    assert!(!runner.repo.join("hello.txt").exists());
}

#[tokio::test]
async fn an_operator_may_allow_a_wider_sandbox() {
    let runner = TestRunner::start_with(
        |_| crate::helpers::script(),
        |config| {
            config.sandbox.max_sandbox = SandboxMode::DangerFullAccess;
            config.sandbox.allow_network = true;
        },
    )
    .await;

    let response = runner
        .post(
            "/threads",
            json!({"workingDirectory": runner.repo, "sandboxMode": "danger-full-access", "networkAccessEnabled": true}),
        )
        .await;

    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn the_runner_refuses_codex_homes_that_overlap_the_workspaces() {
    let dir = tempfile::tempdir().unwrap();
    let model = scripted_model::ScriptedModel::start(crate::helpers::script(), "127.0.0.1:0")
        .await
        .unwrap();
    let root = dir.path().join("workspaces");
    for homes in [root.join("homes"), dir.path().to_path_buf(), root.clone()] {
        let mut config = config(&root, &model);
        config.sandbox.codex_homes = homes.clone();

        let error = match runner::startup::Application::build(config).await {
            Ok(_) => panic!("homes {} accepted", homes.display()),
            Err(error) => format!("{error:#}"),
        };

        assert!(error.contains("overlap"), "{error}");
    }
}

#[tokio::test]
async fn homes_of_removed_workspaces_are_swept_at_start() {
    let mut runner = TestRunner::start().await;
    let gone = runner.root.join("session-2/repo");
    init_repo(&gone);
    let kept = runner.repo_thread().await;
    run_to_end(&runner, &kept, "hello").await;
    runner
        .create_thread(json!({"workingDirectory": gone}))
        .await;
    assert_eq!(std::fs::read_dir(&runner.homes).unwrap().count(), 2);

    std::fs::remove_dir_all(runner.root.join("session-2")).unwrap();
    runner.stop().await;
    runner.boot().await;

    let left: Vec<_> = std::fs::read_dir(&runner.homes)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left.len(), 1);
    // The home left is session-1's: its marker names that workspace, by
    // its absolute path.
    assert_eq!(
        std::path::PathBuf::from(std::fs::read_to_string(left[0].join("workspace")).unwrap()),
        runner.root.canonicalize().unwrap().join("session-1/repo")
    );
}
