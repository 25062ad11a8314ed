//! Restarts: the backend killed mid-run, the runner restarted between runs
//! and during one.

use serde_json::json;
use test_support::{assert_numbered_from_one, labels};

use crate::helpers::TestStack;

#[tokio::test]
async fn a_backend_killed_mid_run_picks_the_run_up_again() {
    let mut stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "work slowly").await;
    let mut stream = stack.subscribe(&run, None).await;
    let mut seen = stream
        .until(|e| e.label() == "item.completed:command_execution")
        .await;

    stack.kill_backend().await;
    drop(stream);
    stack.start_backend().await;
    let last = seen.last().unwrap().id;
    seen.extend(stack.subscribe(&run, Some(last)).await.rest().await);
    let replay = stack.events(&run).await;

    assert_eq!(seen.last().unwrap().event, "run.completed");
    assert_numbered_from_one(&seen);
    assert_eq!(seen, replay, "every event exactly once, in order");
    let state = stack.get_json(&format!("/api/runs/{run}")).await;
    assert_eq!(state["status"], "completed");
    assert_eq!(state["final_response"], "done slowly");
    assert_eq!(state["files"]["created"], json!(["three.txt"]));
    let sessions = stack.get_json("/api/sessions").await;
    assert_eq!(sessions["total"], 1, "sessions survive the restart");
}

#[tokio::test]
async fn a_backend_stopped_with_sigterm_mid_run_stops_cleanly_and_resumes_it() {
    let mut stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "work slowly").await;
    let mut stream = stack.subscribe(&run, None).await;
    let seen = stream
        .until(|e| e.label() == "item.completed:command_execution")
        .await;
    drop(stream);

    // The server stops, then the engine: its relay stops reading with what
    // it read stored, and the run stays running on the runner.
    let status = stack.stop_backend().await;
    let stored = stack
        .db
        .query(&format!("SELECT status FROM runs WHERE id = '{run}'"))
        .await;
    stack.start_backend().await;
    let replay = stack.events(&run).await;

    assert!(status.success(), "{status}");
    assert_eq!(stored[0].get::<_, String>(0), "running");
    assert_eq!(replay.last().unwrap().event, "run.completed");
    assert_numbered_from_one(&replay);
    assert_eq!(
        replay[..seen.len()],
        seen[..],
        "what was seen before the stop"
    );
    let state = stack.get_json(&format!("/api/runs/{run}")).await;
    assert_eq!(state["final_response"], "done slowly");
}

#[tokio::test]
async fn a_restarted_runner_resumes_the_sessions_codex_thread() {
    let mut stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let first = stack.prompt(&session, "remember the word quince").await;
    let first_events = stack.events(&first).await;

    stack.stop_runner().await;
    stack.start_runner().await;
    let second = stack.prompt(&session, "what was the word?").await;
    let second_events = stack.events(&second).await;

    assert_eq!(second_events.last().unwrap().event, "run.completed");
    assert_eq!(first_events[0].event, "thread.started");
    assert_eq!(
        second_events[0].data["thread_id"], first_events[0].data["thread_id"],
        "the same Codex thread goes on"
    );
    let last_request = stack.model.requests().pop().unwrap()["input"].to_string();
    assert!(last_request.contains("remember the word quince"));
    assert!(last_request.contains("what was the word?"));
}

#[tokio::test]
async fn a_run_the_runner_forgot_fails_with_a_reason() {
    let mut stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "work slowly").await;
    let mut stream = stack.subscribe(&run, None).await;
    stream.until(|e| e.event == "turn.started").await;

    stack.stop_runner().await;
    stack.start_runner().await;
    let rest = stream.rest().await;

    assert_eq!(labels(&rest).last().unwrap(), "run.failed");
    let error = rest.last().unwrap().data["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("the runner no longer knows this run"),
        "{error}"
    );
    let state = stack.get_json(&format!("/api/runs/{run}")).await;
    assert_eq!(state["status"], "failed");
    assert_eq!(state["error"], error.as_str());
    // Nobody saw it end: it ended, as far as anyone knows, at its last
    // event, not when the backend noticed the loss (a dashboard's timer
    // would count the downtime).
    let ended_at_last_event = stack
        .db
        .query(&format!(
            "SELECT finished_at = (SELECT max(created_at) FROM run_events
                                   WHERE run_id = '{run}' AND event_type <> 'run.failed')
             FROM runs WHERE id = '{run}'"
        ))
        .await;
    assert!(ended_at_last_event[0].get::<_, bool>(0));
    let next = stack.prompt(&session, "hello again").await;
    assert_eq!(
        stack.events(&next).await.last().unwrap().event,
        "run.completed"
    );
}

#[tokio::test]
async fn sessions_taking_turns_on_a_one_thread_runner_resume_their_conversations() {
    let mut stack = TestStack::start().await;
    stack.stop_runner().await;
    stack.runner_limits.max_threads = 1;
    stack.start_runner().await;
    let (first, _) = stack.ready_session().await;
    let other_repo = stack.make_repo("other");
    let second = stack
        .session(json!({"repo_url": format!("file://{}", other_repo.display())}))
        .await;
    let second = second["session_id"].as_str().unwrap().to_owned();

    let remember = stack.prompt(&first, "remember the word avocado").await;
    let remember_events = stack.events(&remember).await;
    // The runner's only thread goes to the second session, then back.
    let other = stack.prompt(&second, "hello from the other session").await;
    let other_events = stack.events(&other).await;
    let recall = stack.prompt(&first, "what was the word?").await;
    let recall_events = stack.events(&recall).await;

    for events in [&remember_events, &other_events, &recall_events] {
        assert_eq!(events.last().unwrap().event, "run.completed");
    }
    assert_eq!(
        recall_events[0].data["thread_id"], remember_events[0].data["thread_id"],
        "the first session's Codex thread goes on"
    );
    assert_ne!(
        other_events[0].data["thread_id"],
        remember_events[0].data["thread_id"]
    );
    let last_request = stack.model.requests().pop().unwrap()["input"].to_string();
    assert!(last_request.contains("remember the word avocado"));
    assert!(last_request.contains("what was the word?"));
    assert!(!last_request.contains("hello from the other session"));
}
