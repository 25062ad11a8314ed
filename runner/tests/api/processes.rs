//! Containment of a run's processes: what an agent starts, detached with
//! `setsid` or not, dies with its run and with the runner, and a new runner
//! kills what a dead one left.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use codex_sdk::SandboxMode;
use runner::config::ContainmentMode;
use scripted_model::{Script, ScriptedModel};
use serde_json::{json, Value};
use test_support::{codex_bin, init_repo, process_with_marker_exists, HANG_GUARD};

use crate::helpers::{RunnerProcess, Subscription, TestRunner};

fn unique_marker() -> String {
    format!("CONTAIN_{}", uuid::Uuid::new_v4().simple())
}

/// Polls `condition` until it holds; panics past the hang guard.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The attack: detach a long sleeper (its command line carries `marker`)
/// into a session of its own, check from inside the run that it is alive,
/// end the turn.
fn detach_script(marker: &str) -> Script {
    Script::from_json(
        &json!({"turns": [{"when": "detach", "steps": [
            [{"exec": format!("setsid sh -c 'sleep 300; true' {marker} >/dev/null 2>&1 </dev/null &")}],
            [{"exec": format!("pgrep -f {marker}")}],
            [{"message": "detached"}]]}]})
        .to_string(),
    )
    .unwrap()
}

/// Runs [`detach_script`]'s attack; then the sleeper must be gone.
async fn assert_a_setsid_sleeper_dies_with_its_run(runner: TestRunner, marker: &str) {
    let thread = runner
        .create_thread(
            json!({"workingDirectory": runner.repo, "sandboxMode": "danger-full-access"}),
        )
        .await;

    let run = runner.start_run(&thread, "detach a sleeper").await;
    let events = runner.events(&run).await;

    assert_eq!(events.last().unwrap().event, "run.completed");
    let checks: Vec<&Value> = events
        .iter()
        .filter(|e| e.label() == "item.completed:command_execution")
        .map(|e| &e.data["item"])
        .collect();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[1]["exit_code"], 0, "the sleeper ran: {}", checks[1]);
    eventually("the detached sleeper is gone after its run", || {
        !process_with_marker_exists(marker)
    })
    .await;
}

#[tokio::test]
async fn a_setsid_background_process_dies_with_its_completed_run() {
    let marker = unique_marker();
    let runner = TestRunner::start_with(
        |_| detach_script(&marker),
        |config| {
            config.process_containment = ContainmentMode::PidNamespace;
            config.sandbox.max_sandbox = SandboxMode::DangerFullAccess;
        },
    )
    .await;
    assert_a_setsid_sleeper_dies_with_its_run(runner, &marker).await;
}

#[tokio::test]
async fn an_unprivileged_runners_setsid_background_process_dies_with_its_completed_run() {
    let marker = unique_marker();
    let runner = TestRunner::start_unprivileged(
        |_| detach_script(&marker),
        |_, command| {
            command.env("RUNNER_MAX_SANDBOX", "danger-full-access");
        },
    )
    .await;
    assert_a_setsid_sleeper_dies_with_its_run(runner, &marker).await;
}

#[tokio::test]
async fn without_a_namespace_a_setsid_process_that_keeps_its_environment_dies_with_its_run() {
    let marker = unique_marker();
    let runner = TestRunner::start_with(
        |_| detach_script(&marker),
        |config| {
            config.process_containment = ContainmentMode::Off;
            config.sandbox.max_sandbox = SandboxMode::DangerFullAccess;
        },
    )
    .await;
    assert_a_setsid_sleeper_dies_with_its_run(runner, &marker).await;
}

/// The runner as its real binary, contained in PID namespaces.
async fn start_runner(root: &Path, model: &ScriptedModel, config_file: &Path) -> RunnerProcess {
    std::fs::write(config_file, model.codex_config()).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runner"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", std::env::var("HOME").unwrap())
        .env("RUNNER_ADDR", "127.0.0.1:0")
        .env("WORKSPACES_ROOT", root)
        .env("CODEX_BIN", codex_bin())
        .env("RUNNER_CODEX_CONFIG", config_file)
        .env("RUNNER_PROCESS_CONTAINMENT", "pid-namespace")
        // These tests find the CLI by its `--cd <repo>` argument, which
        // only `codex exec`'s command line carries; the namespace and
        // the launcher that hold it are the app-server's too.
        .env("RUNNER_DRIVER", "exec")
        .env("RUNNER_MAX_SANDBOX", "danger-full-access")
        .env("RUNNER_CODEX_HOMES", root.with_file_name("codex-homes"))
        .env("RUST_LOG", "info");
    RunnerProcess::start(command).await
}

#[tokio::test]
async fn a_runner_killed_mid_run_takes_the_cli_and_its_children_with_it() {
    let marker = unique_marker();
    let script = Script::from_json(
        &json!({"turns": [{"when": "hold", "steps": [
            [{"exec": format!("setsid sh -c 'sleep 300; true' {marker} >/dev/null 2>&1 </dev/null & sh -c 'sleep 300; true' {marker}")}],
            [{"message": "held"}]]}]})
        .to_string(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("workspaces");
    let repo = root.join("session-1/repo");
    init_repo(&repo);
    let model = ScriptedModel::start(script, "127.0.0.1:0").await.unwrap();
    let mut runner = start_runner(&root, &model, &dir.path().join("codex.toml")).await;
    let client = reqwest::Client::new();
    let thread: Value = client
        .post(format!("{}/threads", runner.base))
        .json(&json!({"workingDirectory": repo, "sandboxMode": "danger-full-access"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run: Value = client
        .post(format!("{}/runs", runner.base))
        .json(&json!({"threadId": thread["threadId"], "prompt": "hold on"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events_url = format!(
        "{}/runs/{}/events",
        runner.base,
        run["runId"].as_str().unwrap()
    );
    let mut stream = Subscription::open(&client, &events_url, None).await;
    stream
        .until(|e| e.label() == "item.started:command_execution")
        .await;
    let cli = repo.display().to_string();
    eventually("the agent's sleepers run", || {
        process_with_marker_exists(&marker)
    })
    .await;
    assert!(process_with_marker_exists(&cli), "the CLI runs");

    runner.child.start_kill().unwrap();
    runner.child.wait().await.unwrap();

    eventually("the CLI is gone with the runner", || {
        !process_with_marker_exists(&cli)
    })
    .await;
    eventually("the agent's sleepers are gone with the runner", || {
        !process_with_marker_exists(&marker)
    })
    .await;
}

#[tokio::test]
async fn a_new_runner_kills_what_a_dead_one_left_on_its_root_only() {
    let mut runner = TestRunner::start().await;
    let root = runner.root.canonicalize().unwrap();
    let plant = |root: &Path, marker: &str| {
        std::process::Command::new("sh")
            .args(["-c", "sleep 300; true", marker])
            .env(codex_sdk::OWNER_MARKER, root)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let left = unique_marker();
    let mut leftover = plant(&root, &left);
    let other_root = tempfile::tempdir().unwrap();
    let mut bystander = plant(other_root.path(), &unique_marker());
    runner.stop().await;

    runner.boot().await;

    let status = tokio::time::timeout(HANG_GUARD, async {
        loop {
            if let Some(status) = leftover.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the leftover was never killed");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(!process_with_marker_exists(&left));
    assert_eq!(
        bystander.try_wait().unwrap(),
        None,
        "a process marked with another root is not touched"
    );
    // The group, so that its sleep goes too.
    let group = nix::unistd::Pid::from_raw(i32::try_from(bystander.id()).unwrap());
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    bystander.wait().unwrap();
}
