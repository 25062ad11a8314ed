//! End-to-end tests of the runner with the real Codex CLI and the scripted
//! model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app_server;
mod approvals;
mod containment;
mod errors;
mod helpers;
mod passthrough;
mod processes;
mod repo_config;
mod sizes;
mod threads;
mod token;
mod wire;

use helpers::{script_with_marker, unique_marker, SseEvent, TestRunner};
use serde_json::{json, Value};
use test_support::{assert_numbered_from_one, labels, process_with_marker_exists};

fn thread_started_id(events: &[SseEvent]) -> String {
    events
        .iter()
        .find(|e| e.event == "thread.started")
        .map(|e| e.data["thread_id"].as_str().unwrap().to_owned())
        .expect("no thread.started event")
}

#[tokio::test]
async fn a_run_creates_a_file_and_streams_its_events_in_order() {
    let runner = TestRunner::start().await;
    let thread = runner.repo_thread().await;

    let run = runner.start_run(&thread, "Please create a file").await;
    let events = runner.events(&run).await;

    assert_eq!(
        labels(&events),
        [
            "thread.started",
            "turn.started",
            "item.completed:reasoning",
            "item.started:command_execution",
            "item.completed:command_execution",
            "item.completed:agent_message",
            "turn.completed",
            "run.completed",
        ]
    );
    assert_numbered_from_one(&events);
    assert_eq!(events[4].data["item"]["exit_code"], 0);
    assert_eq!(events[5].data["item"]["text"], "Created hello.txt");
    assert_eq!(
        std::fs::read_to_string(runner.repo.join("hello.txt")).unwrap(),
        "hello\n"
    );
    let state = runner.get_json(&format!("/runs/{run}")).await;
    assert_eq!(state["status"], "completed");
    assert_eq!(state["finalResponse"], "Created hello.txt");
    assert_eq!(state["codexThreadId"], thread_started_id(&events).as_str());
    assert!(state["usage"]["input_tokens"].as_i64().unwrap() > 0);
    assert_eq!(events[7].data["finalResponse"], "Created hello.txt");
}

/// The input texts of every request the model received.
fn request_texts(runner: &TestRunner) -> Vec<String> {
    runner
        .model
        .requests()
        .iter()
        .map(|request| request["input"].to_string())
        .collect()
}

#[tokio::test]
async fn a_second_run_resumes_the_same_codex_thread() {
    let runner = TestRunner::start().await;
    let thread = runner.repo_thread().await;

    let first = runner.start_run(&thread, "remember the word avocado").await;
    let first_events = runner.events(&first).await;
    let second = runner.start_run(&thread, "what did I say?").await;
    let second_events = runner.events(&second).await;

    assert_eq!(
        thread_started_id(&first_events),
        thread_started_id(&second_events)
    );
    assert_eq!(second_events.last().unwrap().event, "run.completed");
    let last_request = request_texts(&runner).pop().unwrap();
    assert!(last_request.contains("remember the word avocado"));
    assert!(last_request.contains("You said: remember the word avocado"));
    assert!(last_request.contains("what did I say?"));
}

#[tokio::test]
async fn a_restarted_runner_resumes_a_thread_by_its_codex_id() {
    let mut runner = TestRunner::start().await;
    let thread = runner.repo_thread().await;
    let first = runner.start_run(&thread, "remember the word quince").await;
    let codex_thread = thread_started_id(&runner.events(&first).await);

    runner.stop().await;
    runner.boot().await;
    let unknown = runner
        .client
        .get(runner.url(&format!("/threads/{thread}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unknown.status(),
        404,
        "a restarted runner has forgotten its threads"
    );
    let resumed = runner
        .create_thread(json!({"workingDirectory": runner.repo, "resumeThreadId": codex_thread}))
        .await;
    let second = runner.start_run(&resumed, "and now?").await;
    let events = runner.events(&second).await;

    assert_eq!(thread_started_id(&events), codex_thread);
    let last_request = request_texts(&runner).pop().unwrap();
    assert!(last_request.contains("remember the word quince"));
}

#[tokio::test]
async fn cancelling_a_sleeping_run_ends_it_with_run_cancelled() {
    let marker = unique_marker("SLEEP");
    let runner = TestRunner::start_with(|_| script_with_marker(&marker), |_| {}).await;
    let thread = runner.repo_thread().await;
    let run = runner.start_run(&thread, "please sleep").await;
    let mut stream = runner.subscribe(&run, None).await;
    stream
        .until(|e| e.label() == "item.started:command_execution")
        .await;

    let response = runner.post(&format!("/runs/{run}/cancel"), json!({})).await;
    assert_eq!(response.status(), 202);
    let rest = stream.rest().await;

    assert_eq!(labels(&rest), ["run.cancelled"]);
    let state = runner.get_json(&format!("/runs/{run}")).await;
    assert_eq!(state["status"], "cancelled");
    assert!(
        !process_with_marker_exists(&marker),
        "the agent's command must not outlive the cancelled run"
    );
    let again = runner.post(&format!("/runs/{run}/cancel"), json!({})).await;
    assert_eq!(again.status(), 409);
    let next = runner.start_run(&thread, "create a file").await;
    assert_eq!(
        runner.events(&next).await.last().unwrap().event,
        "run.completed"
    );
}

#[tokio::test]
async fn every_subscriber_gets_every_event_once_in_order() {
    let runner = TestRunner::start().await;
    let thread = runner.repo_thread().await;
    let run = runner.start_run(&thread, "work slowly").await;

    let first = runner.subscribe(&run, None).await;
    let second = runner.subscribe(&run, None).await;
    let (first, second) = tokio::join!(first.rest(), second.rest());
    let late = runner.events(&run).await;

    assert_eq!(late.last().unwrap().event, "run.completed");
    assert_numbered_from_one(&late);
    assert_eq!(first, late);
    assert_eq!(second, late);
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_exactly_the_missing_events() {
    let runner = TestRunner::start().await;
    let thread = runner.repo_thread().await;
    let run = runner.start_run(&thread, "work slowly").await;

    let mut stream = runner.subscribe(&run, None).await;
    let mut seen = vec![stream.next().await.unwrap(), stream.next().await.unwrap()];
    drop(stream);
    let last = seen.last().unwrap().id;
    seen.extend(runner.subscribe(&run, Some(last)).await.rest().await);
    let all = runner.events(&run).await;

    assert_eq!(seen, all);
    let by_query = runner
        .client
        .get(runner.url(&format!("/runs/{run}/events?after=3")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(by_query.starts_with("id: 4\n") || by_query.contains("\nid: 4\n"));
    assert!(!by_query.contains("id: 3\n"));
}

#[tokio::test]
async fn a_second_run_on_a_busy_thread_is_a_conflict() {
    let runner = TestRunner::start().await;
    let thread = runner.repo_thread().await;
    let run = runner.start_run(&thread, "please sleep").await;

    let response = runner
        .post("/runs", json!({"threadId": thread, "prompt": "more"}))
        .await;

    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "conflict");
    runner.post(&format!("/runs/{run}/cancel"), json!({})).await;
    assert_eq!(
        runner.events(&run).await.last().unwrap().event,
        "run.cancelled"
    );
}

async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json; charset=utf-8"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["error"].as_str().is_some());
    body
}

#[tokio::test]
async fn a_working_directory_outside_the_root_is_refused() {
    let runner = TestRunner::start().await;
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), runner.root.join("session-1/escape")).unwrap();

    for dir in [
        outside.path().display().to_string(),
        format!("{}/../..", runner.repo.display()),
        runner.root.join("session-1/escape").display().to_string(),
        runner.root.display().to_string(),
        "/nonexistent".to_owned(),
    ] {
        let response = runner
            .post("/threads", json!({"workingDirectory": dir}))
            .await;
        let body = assert_error(response, 422, "validation_error").await;
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("workingDirectory"));
    }
}

#[tokio::test]
async fn bad_input_gets_a_json_error() {
    let runner = TestRunner::start().await;
    let thread = runner.repo_thread().await;
    let client = &runner.client;

    let not_json = client
        .post(runner.url("/threads"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(not_json, 400, "bad_request").await;
    let unknown_field = runner
        .post(
            "/threads",
            json!({"workingDirectory": runner.repo, "sandbox": "x"}),
        )
        .await;
    assert_error(unknown_field, 400, "bad_request").await;
    let missing_field = runner.post("/threads", json!({"dir": runner.repo})).await;
    assert_error(missing_field, 400, "bad_request").await;
    let wrong_type = runner
        .post("/threads", json!({"workingDirectory": [runner.repo]}))
        .await;
    assert_error(wrong_type, 400, "bad_request").await;
    let bad_sandbox = runner
        .post(
            "/threads",
            json!({"workingDirectory": runner.repo, "sandboxMode": "yolo"}),
        )
        .await;
    assert_error(bad_sandbox, 400, "bad_request").await;
    let flag_as_resume = runner
        .post(
            "/threads",
            json!({"workingDirectory": runner.repo, "resumeThreadId": "--help"}),
        )
        .await;
    assert_error(flag_as_resume, 422, "validation_error").await;
    let empty_prompt = runner
        .post("/runs", json!({"threadId": thread, "prompt": "  \n "}))
        .await;
    assert_error(empty_prompt, 422, "validation_error").await;
    let unknown_thread = runner
        .post(
            "/runs",
            json!({"threadId": uuid::Uuid::new_v4(), "prompt": "hi"}),
        )
        .await;
    assert_error(unknown_thread, 404, "not_found").await;
    let too_large = runner
        .post(
            "/runs",
            json!({"threadId": thread, "prompt": "x".repeat(2 * 1024 * 1024)}),
        )
        .await;
    assert_error(too_large, 413, "payload_too_large").await;
    let not_an_id = client.get(runner.url("/runs/42")).send().await.unwrap();
    assert_error(not_an_id, 404, "not_found").await;
    let unknown_run = client
        .get(runner.url(&format!("/runs/{}/events", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_error(unknown_run, 404, "not_found").await;
    let unknown_route = client.get(runner.url("/nope")).send().await.unwrap();
    assert_error(unknown_route, 404, "not_found").await;

    let run = runner.start_run(&thread, "hello").await;
    let bad_resume = client
        .get(runner.url(&format!("/runs/{run}/events")))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_error(bad_resume, 400, "bad_request").await;
    assert_eq!(
        runner.events(&run).await.last().unwrap().event,
        "run.completed"
    );
}

#[tokio::test]
async fn health_answers() {
    let runner = TestRunner::start().await;
    assert_eq!(runner.get_json("/health").await, json!({"status": "ok"}));
}
