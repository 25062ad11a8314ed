//! The app-server client against a fake `codex` (a shell script) that
//! misbehaves as the real one might: it exits mid-session, prints a line
//! that is not JSON-RPC, or answers with an error. Each becomes a typed
//! error, with what the server last wrote to stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use codex_sdk::app_server::{AppServer, AppServerError, AppServerOptions, Incoming};
use serde_json::{json, Value};

/// A fake server: answers `initialize`, reads `initialized`, then runs
/// `then` (the next request's line is in `$line` once read).
fn fake(dir: &std::path::Path, then: &str) -> AppServerOptions {
    let path = dir.join("codex");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             read line\n\
             echo '{{\"id\":1,\"result\":{{\"userAgent\":\"fake/1\"}}}}'\n\
             read line\n\
             {then}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut env = BTreeMap::new();
    env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
    AppServerOptions {
        codex_path: path,
        env,
        config_overrides: Vec::new(),
        client_name: "tests".into(),
        client_version: "0".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_server_that_exits_fails_waiting_requests_with_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut incoming) = AppServer::spawn(fake(
        dir.path(),
        "read line; echo 'panicked at the thing' >&2; exit 3",
    ))
    .await
    .unwrap();
    assert_eq!(server.initialize_response()["userAgent"], "fake/1");

    let error = server
        .request::<Value>("thread/start", json!({}))
        .await
        .unwrap_err();

    let AppServerError::Exited {
        code: Some(3),
        status,
        stderr_tail,
    } = &error
    else {
        panic!("expected an exit with code 3, got {error:?}");
    };
    assert_eq!(status, "exit status: 3");
    assert_eq!(stderr_tail, "panicked at the thing");
    assert_eq!(incoming.recv().await.unwrap().unwrap_err(), error);
    assert!(incoming.recv().await.is_none());
    // Later requests fail at once with the same reason.
    let again = server.request::<Value>("model/list", json!({})).await;
    assert_eq!(again.unwrap_err(), error);
}

#[tokio::test]
async fn a_line_that_is_not_json_rpc_ends_the_session_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut incoming) = AppServer::spawn(fake(
        dir.path(),
        "echo '{\"method\":\"turn/started\",\"params\":{}}'; echo 'warming up' >&2; \
         echo 'this is not json'; sleep 30",
    ))
    .await
    .unwrap();

    let first = incoming.recv().await.unwrap().unwrap();
    assert_eq!(
        first,
        Incoming::Notification {
            method: "turn/started".into(),
            params: json!({})
        }
    );
    let error = incoming.recv().await.unwrap().unwrap_err();
    let AppServerError::Malformed { line, stderr_tail } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(line, "this is not json");
    assert_eq!(stderr_tail, "warming up");
    assert_eq!(error.stderr_tail(), Some("warming up"));
    // The server was killed: no request waits for ever.
    let refused = server.request::<Value>("model/list", json!({})).await;
    assert_eq!(refused.unwrap_err(), error);
}

#[tokio::test]
async fn an_error_answer_names_its_method_and_server_requests_can_be_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut incoming) = AppServer::spawn(fake(
        dir.path(),
        "read line; echo '{\"id\":2,\"error\":{\"code\":-32602,\"message\":\"no such thread\"}}'; \
         echo '{\"id\":\"s1\",\"method\":\"item/commandExecution/requestApproval\",\"params\":{\"command\":\"touch x\"}}'; \
         read answer; echo \"$answer\" >&2; exit 0",
    ))
    .await
    .unwrap();

    let error = server
        .request::<Value>("turn/start", json!({"threadId": "t"}))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        AppServerError::Rpc {
            method: "turn/start".into(),
            code: -32602,
            message: "no such thread".into(),
            data: None
        }
    );
    let Incoming::Request { id, method, params } = incoming.recv().await.unwrap().unwrap() else {
        panic!("a server request");
    };
    assert_eq!(method, "item/commandExecution/requestApproval");
    assert_eq!(params["command"], "touch x");
    server
        .respond(&id, json!({"decision": "accept"}))
        .await
        .unwrap();
    // The fake echoes the answer to stderr and exits: the answer it read
    // is in the reason the session ended.
    let ended = incoming.recv().await.unwrap().unwrap_err();
    let answer: Value = serde_json::from_str(ended.stderr_tail().unwrap()).unwrap();
    assert_eq!(
        answer,
        json!({"id": "s1", "result": {"decision": "accept"}})
    );
}
