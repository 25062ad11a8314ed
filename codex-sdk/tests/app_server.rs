//! The app-server client against the real Codex CLI (the pinned
//! `@openai/codex`), driven offline by the scripted model; and the methods
//! the client relies on, checked against the protocol the same CLI writes
//! out with `codex app-server generate-json-schema`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use codex_sdk::app_server::{AppServer, AppServerOptions, Incoming, Incomings};
use scripted_model::{Script, ScriptedModel};
use serde_json::{json, Value};
use test_support::{codex_bin, init_repo, HANG_GUARD};

fn script() -> Script {
    Script::from_json(
        &json!({"turns": [
            {"when": "count", "steps": [
                [{"exec": "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done"}],
                [{"message": "counted to five"}]]},
            {"when": "", "steps": [[{"message": "You said: {{prompt}}"}]]}
        ]})
        .to_string(),
    )
    .unwrap()
}

fn options(home: &Path) -> AppServerOptions {
    let mut env = BTreeMap::new();
    env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
    env.insert("HOME".into(), home.display().to_string());
    env.insert("CODEX_HOME".into(), home.display().to_string());
    env.insert("CODEX_API_KEY".into(), "sk-test-app-server".into());
    AppServerOptions {
        codex_path: codex_bin(),
        env,
        config_overrides: vec![("features.shell_snapshot".into(), "false".into())],
        client_name: "repo-runner-tests".into(),
        client_version: "0.1.0".into(),
        ..Default::default()
    }
}

/// Notifications until `turn/completed`, in order.
async fn until_turn_completed(incoming: &mut Incomings) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    tokio::time::timeout(HANG_GUARD, async {
        while let Some(message) = incoming.recv().await {
            match message.expect("the session goes on") {
                Incoming::Notification { method, params } => {
                    let done = method == "turn/completed";
                    seen.push((method, params));
                    if done {
                        return;
                    }
                }
                Incoming::Request { method, .. } => panic!("an unexpected request {method}"),
            }
        }
        panic!("the server ended before the turn did");
    })
    .await
    .expect("the turn completes");
    seen
}

#[tokio::test]
async fn a_turn_streams_command_output_while_the_command_runs() {
    let model = ScriptedModel::start(script(), "127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.toml"), model.codex_config()).unwrap();
    let repo = dir.path().join("repo");
    init_repo(&repo);

    let (server, mut incoming) = AppServer::spawn(options(&home)).await.unwrap();
    assert!(server.initialize_response()["userAgent"]
        .as_str()
        .unwrap()
        .starts_with("repo-runner-tests/"));
    let started: Value = server
        .request(
            "thread/start",
            json!({"cwd": repo, "sandbox": "workspace-write", "approvalPolicy": "never"}),
        )
        .await
        .unwrap();
    let thread = started["thread"]["id"].as_str().unwrap().to_owned();
    let turn: Value = server
        .request(
            "turn/start",
            json!({"threadId": thread, "input": [{"type": "text", "text": "count please"}]}),
        )
        .await
        .unwrap();
    assert_eq!(turn["turn"]["status"], "inProgress");

    let seen = until_turn_completed(&mut incoming).await;
    let command_id = seen
        .iter()
        .find(|(m, p)| m == "item/started" && p["item"]["type"] == "commandExecution")
        .map(|(_, p)| p["item"]["id"].as_str().unwrap().to_owned())
        .expect("the command started");
    let position = |wanted: &dyn Fn(&(String, Value)) -> bool| seen.iter().position(wanted);
    let completed =
        position(&|(m, p)| m == "item/completed" && p["item"]["id"] == command_id.as_str())
            .expect("the command completed");
    let deltas: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, (m, p))| {
            m == "item/commandExecution/outputDelta" && p["itemId"] == command_id.as_str()
        })
        .map(|(i, _)| i)
        .collect();
    // Several pieces, each before the command's end: the output arrived
    // while the command ran.
    assert!(deltas.len() >= 3, "{seen:?}");
    assert!(deltas.iter().all(|&i| i < completed));
    let streamed: String = deltas
        .iter()
        .map(|&i| seen[i].1["delta"].as_str().unwrap())
        .collect();
    // The completed item has the whole output. The pinned CLI does not
    // send a delta for output printed before it announced the command
    // (here, at times, the first line), so the deltas are its end: a
    // consumer shows them live and takes `aggregatedOutput` as the truth.
    let whole = seen[completed].1["item"]["aggregatedOutput"]
        .as_str()
        .unwrap();
    assert!(whole.ends_with(&streamed), "{whole:?} vs {streamed:?}");
    assert!(streamed.ends_with("line 4\nline 5\n"), "{streamed}");
    let message = seen
        .iter()
        .find(|(m, p)| m == "item/completed" && p["item"]["type"] == "agentMessage")
        .expect("the answer");
    assert_eq!(message.1["item"]["text"], "counted to five");
    assert_eq!(seen.last().unwrap().1["turn"]["status"], "completed");
}

#[tokio::test]
async fn a_bad_request_is_an_rpc_error_and_the_session_goes_on() {
    let model = ScriptedModel::start(script(), "127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), model.codex_config()).unwrap();
    let (server, _incoming) = AppServer::spawn(options(dir.path())).await.unwrap();

    let error = server
        .request::<Value>(
            "turn/start",
            json!({"threadId": "no-such-thread", "input": []}),
        )
        .await
        .unwrap_err();
    let codex_sdk::AppServerError::Rpc { method, code, .. } = &error else {
        panic!("an RPC error, not {error:?}");
    };
    assert_eq!(method, "turn/start");
    assert!(*code < 0, "{error}");
    let models: Value = server.request("model/list", json!({})).await.unwrap();
    assert!(models["data"].is_array(), "{models}");
}

/// The protocol as the pinned CLI writes it out, in a temporary folder.
fn cli_schema() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(codex_bin())
        .args(["app-server", "generate-json-schema", "--out"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// Every method the runner's driver uses, in the pinned CLI's own schema.
#[test]
fn the_methods_the_client_uses_are_in_the_clis_schema() {
    let dir = cli_schema();
    let methods = |file: &str| -> Vec<String> {
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(file)).unwrap()).unwrap();
        schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| {
                v["properties"]["method"]["enum"][0]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    };
    let requests = methods("ClientRequest.json");
    for method in [
        "initialize",
        "thread/start",
        "thread/resume",
        "turn/start",
        "turn/steer",
        "turn/interrupt",
        "model/list",
    ] {
        assert!(
            requests.iter().any(|m| m == method),
            "{method} not in {requests:?}"
        );
    }
    assert!(methods("ClientNotification.json")
        .iter()
        .any(|m| m == "initialized"));
    let notifications = methods("ServerNotification.json");
    for method in [
        "thread/started",
        "turn/started",
        "turn/completed",
        "item/started",
        "item/completed",
        "item/agentMessage/delta",
        "item/reasoning/summaryTextDelta",
        "item/commandExecution/outputDelta",
        "item/fileChange/outputDelta",
        "turn/plan/updated",
        "turn/diff/updated",
        "thread/tokenUsage/updated",
        "serverRequest/resolved",
        "error",
    ] {
        assert!(
            notifications.iter().any(|m| m == method),
            "{method} not in {notifications:?}"
        );
    }
    let server_requests = methods("ServerRequest.json");
    for method in [
        "item/commandExecution/requestApproval",
        "item/fileChange/requestApproval",
    ] {
        assert!(server_requests.iter().any(|m| m == method), "{method}");
    }
}

/// Every field the app-server driver reads (`app_server_run.rs`), in the
/// pinned CLI's schema of the message it reads it from: a CLI that renamed
/// one fails here, not in a user's run.
#[test]
fn the_fields_the_driver_reads_are_in_the_clis_schema() {
    let dir = cli_schema();
    let read = |file: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(file)).unwrap()).unwrap()
    };
    let notifications = read("ServerNotification.json");
    let requests = read("ServerRequest.json");
    let fields = |schema: &Value, definition: &str| -> Vec<String> {
        schema["definitions"][definition]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no {definition} in the schema"))
            .keys()
            .cloned()
            .collect()
    };
    let expect = |schema: &Value, definition: &str, wanted: &[&str]| {
        let have = fields(schema, definition);
        for field in wanted {
            assert!(
                have.iter().any(|f| f == field),
                "{definition}.{field} not in {have:?}"
            );
        }
    };
    for delta in [
        "AgentMessageDeltaNotification",
        "CommandExecutionOutputDeltaNotification",
        "ReasoningSummaryTextDeltaNotification",
        "FileChangeOutputDeltaNotification",
    ] {
        expect(&notifications, delta, &["itemId", "delta"]);
    }
    expect(&notifications, "ItemStartedNotification", &["item"]);
    expect(&notifications, "ItemCompletedNotification", &["item"]);
    expect(&notifications, "TurnCompletedNotification", &["turn"]);
    expect(&notifications, "Turn", &["id", "status", "error"]);
    expect(&notifications, "TurnError", &["message"]);
    expect(
        &notifications,
        "TurnPlanUpdatedNotification",
        &["explanation", "plan"],
    );
    expect(&notifications, "TurnPlanStep", &["step", "status"]);
    expect(&notifications, "TurnDiffUpdatedNotification", &["diff"]);
    expect(
        &notifications,
        "ThreadTokenUsageUpdatedNotification",
        &["tokenUsage"],
    );
    expect(&notifications, "ThreadTokenUsage", &["last"]);
    expect(
        &notifications,
        "TokenUsageBreakdown",
        &[
            "inputTokens",
            "cachedInputTokens",
            "outputTokens",
            "reasoningOutputTokens",
        ],
    );
    expect(&notifications, "ErrorNotification", &["error", "willRetry"]);
    expect(&notifications, "FileUpdateChange", &["path", "kind"]);
    // The items, by type, with the fields the exec shapes take.
    let items = notifications["definitions"]["ThreadItem"]["oneOf"]
        .as_array()
        .unwrap();
    let item = |kind: &str| -> Vec<String> {
        items
            .iter()
            .find(|v| v["properties"]["type"]["enum"][0] == kind)
            .unwrap_or_else(|| panic!("no {kind} item"))["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    for (kind, wanted) in [
        ("agentMessage", &["id", "text"][..]),
        ("reasoning", &["id", "summary", "content"][..]),
        (
            "commandExecution",
            &[
                "id",
                "command",
                "aggregatedOutput",
                "exitCode",
                "status",
                "cwd",
            ][..],
        ),
        ("fileChange", &["id", "changes", "status"][..]),
        (
            "mcpToolCall",
            &[
                "id",
                "server",
                "tool",
                "arguments",
                "result",
                "error",
                "status",
            ][..],
        ),
        ("webSearch", &["id", "query"][..]),
    ] {
        let have = item(kind);
        for field in wanted {
            assert!(
                have.iter().any(|f| f == field),
                "{kind}.{field} not in {have:?}"
            );
        }
    }
    expect(
        &requests,
        "CommandExecutionRequestApprovalParams",
        &["itemId", "command", "cwd", "reason"],
    );
    expect(
        &requests,
        "FileChangeRequestApprovalParams",
        &["itemId", "reason"],
    );
}
