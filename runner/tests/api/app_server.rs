//! `RUNNER_DRIVER=app-server`: the real CLI's `codex app-server`, driven
//! by the scripted model. The exec driver's events keep their shapes, and
//! deltas, approvals, steering and interrupts come on top.

use serde_json::{json, Value};
use test_support::{labels, unique_marker};

use crate::helpers::{SseEvent, TestRunner};

const ANSWER: &str = "I counted to five, one line at a time, as you asked.";
const THOUGHT: &str = "Counting slowly so that the output streams line by line.";

fn script(marker: &str) -> scripted_model::Script {
    scripted_model::Script::from_json(
        &json!({
            "stream_ms": 5,
            "turns": [
                {"when": "count", "steps": [
                    [{"reasoning": THOUGHT}, {"exec": "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done"}],
                    [{"message": ANSWER}]]},
                {"when": "patch", "steps": [
                    [{"apply_patch": "*** Begin Patch\n*** Add File: patched.txt\n+patched\n*** End Patch\n"}],
                    [{"message": "patched"}]]},
                {"when": "touch", "steps": [
                    [{"exec": "touch approved.txt"}],
                    [{"message": "touched"}]]},
                {"when": "sleep", "steps": [
                    [{"exec": format!("bash -c 'sleep 30; true' {marker}")}],
                    [{"message": "slept"}]]},
                {"when": "linger", "steps": [
                    [{"exec": "sleep 1"}],
                    [{"exec": "echo second"}],
                    [{"message": "lingered"}]]},
                {"when": "", "steps": [[{"message": "You said: {{prompt}}"}]]}
            ]
        })
        .to_string(),
    )
    .unwrap()
}

async fn app_server_runner(marker: &str) -> TestRunner {
    let marker = marker.to_owned();
    // `start_with` takes a plain function for the configuration.
    TestRunner::start_with(
        move |_| script(&marker),
        |config| {
            config.driver = runner::config::DriverMode::AppServer;
            // Approvals reach the test, which answers them.
            config.sandbox.allow_unsandboxed_approvals = true;
        },
    )
    .await
}

fn position(events: &[SseEvent], wanted: impl Fn(&SseEvent) -> bool) -> usize {
    events
        .iter()
        .position(wanted)
        .unwrap_or_else(|| panic!("not in {:?}", labels(events)))
}

fn deltas<'a>(events: &'a [SseEvent], kind: &str, item: &str) -> Vec<(usize, &'a str)> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.event == "item.delta" && e.data["kind"] == kind && e.data["itemId"] == item
        })
        .map(|(i, e)| (i, e.data["delta"].as_str().unwrap()))
        .collect()
}

#[tokio::test]
async fn messages_and_command_output_stream_before_their_items_complete() {
    let runner = app_server_runner(&unique_marker("AS_COUNT")).await;
    let thread = runner.repo_thread().await;

    let run = runner.start_run(&thread, "count to five").await;
    let events = runner.events(&run).await;

    // The exec driver's events, in their shapes.
    let seen = labels(&events);
    for label in [
        "thread.started",
        "turn.started",
        "item.started:command_execution",
        "item.completed:command_execution",
        "item.completed:agent_message",
        "turn.completed",
        "run.completed",
    ] {
        assert!(seen.iter().any(|l| l == label), "{label} not in {seen:?}");
    }
    test_support::assert_numbered_from_one(&events);
    let command = position(&events, |e| e.label() == "item.completed:command_execution");
    let item = &events[command].data["item"];
    assert_eq!(item["exit_code"], 0);
    assert_eq!(item["status"], "completed");
    // Command output: pieces before the command's end, the end of its output.
    let id = item["id"].as_str().unwrap();
    let output = deltas(&events, "command_output", id);
    assert!(output.len() >= 3, "{seen:?}");
    assert!(output.iter().all(|(i, _)| *i < command));
    let streamed: String = output.iter().map(|(_, d)| *d).collect();
    assert!(item["aggregated_output"]
        .as_str()
        .unwrap()
        .ends_with(&streamed));
    // The answer grows word by word, then completes with the same text.
    let message = position(&events, |e| e.label() == "item.completed:agent_message");
    let id = events[message].data["item"]["id"].as_str().unwrap();
    let words = deltas(&events, "agent_message", id);
    assert!(words.len() > 5, "{seen:?}");
    assert!(words.iter().all(|(i, _)| *i < message));
    assert_eq!(words.iter().map(|(_, d)| *d).collect::<String>(), ANSWER);
    assert_eq!(events[message].data["item"]["text"], ANSWER);
    // The reasoning summary grows the same way.
    let reasoning = position(&events, |e| e.label() == "item.completed:reasoning");
    let id = events[reasoning].data["item"]["id"].as_str().unwrap();
    let thought = deltas(&events, "reasoning", id);
    assert!(thought.len() > 3, "{seen:?}");
    assert!(thought.iter().all(|(i, _)| *i < reasoning));
    assert_eq!(thought.iter().map(|(_, d)| *d).collect::<String>(), THOUGHT);
    assert_eq!(events[reasoning].data["item"]["text"], THOUGHT);
    // Usage as it grows, and the turn's total at its end.
    let usage = position(&events, |e| e.event == "usage.updated");
    assert!(usage < events.len() - 1);
    let turn = &events[position(&events, |e| e.event == "turn.completed")];
    assert!(turn.data["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let state = runner.get_json(&format!("/runs/{run}")).await;
    assert_eq!(state["status"], "completed");
    assert_eq!(state["finalResponse"], ANSWER);
}

async fn approval_thread(runner: &TestRunner) -> String {
    runner
        .create_thread(json!({"workingDirectory": runner.repo, "approvalPolicy": "untrusted"}))
        .await
}

#[tokio::test]
async fn an_approved_command_runs_and_the_approval_is_in_the_stream() {
    let runner = app_server_runner(&unique_marker("AS_OK")).await;
    let thread = approval_thread(&runner).await;
    let run = runner.start_run(&thread, "touch a file").await;
    let mut stream = runner.subscribe(&run, None).await;
    let before = stream.until(|e| e.event == "approval.requested").await;
    let request = before.last().unwrap().data.clone();
    assert_eq!(request["kind"], "command");
    assert!(
        request["command"]
            .as_str()
            .unwrap()
            .contains("touch approved.txt"),
        "{request}"
    );
    assert_eq!(
        request["cwd"].as_str().unwrap(),
        runner.repo.display().to_string()
    );
    assert!(
        !runner.repo.join("approved.txt").exists(),
        "nothing runs before the answer"
    );

    let approval = request["approvalId"].as_str().unwrap();
    let answer = runner
        .post(
            &format!("/runs/{run}/approvals/{approval}"),
            json!({"decision": "approve", "by": "alice"}),
        )
        .await;
    assert_eq!(answer.status(), 202);
    let rest = stream.rest().await;

    let resolved = rest
        .iter()
        .find(|e| e.event == "approval.resolved")
        .unwrap();
    assert_eq!(
        resolved.data,
        json!({"type": "approval.resolved", "approvalId": approval, "decision": "approve", "by": "alice"})
    );
    assert_eq!(rest.last().unwrap().event, "run.completed");
    assert!(runner.repo.join("approved.txt").exists());
    // Answered once: a second answer finds nothing waiting.
    let again = runner
        .post(
            &format!("/runs/{run}/approvals/{approval}"),
            json!({"decision": "deny"}),
        )
        .await;
    assert_eq!(again.status(), 409, "the run has ended");
}

#[tokio::test]
async fn a_denied_command_does_not_run_and_the_model_is_told() {
    let runner = app_server_runner(&unique_marker("AS_DENY")).await;
    let thread = approval_thread(&runner).await;
    let run = runner.start_run(&thread, "touch a file").await;
    let mut stream = runner.subscribe(&run, None).await;
    let request = stream.until(|e| e.event == "approval.requested").await;
    let approval = request.last().unwrap().data["approvalId"]
        .as_str()
        .unwrap()
        .to_owned();

    let unknown = runner
        .post(
            &format!("/runs/{run}/approvals/approval-99"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(unknown.status(), 404);
    let bad = runner
        .post(
            &format!("/runs/{run}/approvals/{approval}"),
            json!({"decision": "maybe"}),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let answer = runner
        .post(
            &format!("/runs/{run}/approvals/{approval}"),
            json!({"decision": "deny"}),
        )
        .await;
    assert_eq!(answer.status(), 202);
    let rest = stream.rest().await;

    assert_eq!(rest.last().unwrap().event, "run.completed");
    assert!(!runner.repo.join("approved.txt").exists());
    let told = runner.model.requests().last().unwrap()["input"].to_string();
    assert!(
        told.contains("rejected") || told.contains("declined") || told.contains("denied"),
        "the model was not told: {told}"
    );
}

#[tokio::test]
async fn an_unanswered_approval_waits_and_cancel_still_ends_the_run() {
    let runner = app_server_runner(&unique_marker("AS_WAIT")).await;
    let thread = approval_thread(&runner).await;
    let run = runner.start_run(&thread, "touch a file").await;
    let mut stream = runner.subscribe(&run, None).await;
    stream.until(|e| e.event == "approval.requested").await;
    let state = runner.get_json(&format!("/runs/{run}")).await;
    assert_eq!(state["status"], "running", "it waits for an answer");

    assert_eq!(
        runner
            .post(&format!("/runs/{run}/cancel"), json!({}))
            .await
            .status(),
        202
    );
    let rest = stream.rest().await;

    assert_eq!(labels(&rest), ["run.cancelled"]);
    assert!(!runner.repo.join("approved.txt").exists());
}

#[tokio::test]
async fn a_steer_reaches_the_models_next_request() {
    let runner = app_server_runner(&unique_marker("AS_STEER")).await;
    let thread = runner.repo_thread().await;
    let run = runner.start_run(&thread, "linger a while").await;
    let mut stream = runner.subscribe(&run, None).await;
    stream
        .until(|e| e.label() == "item.started:command_execution")
        .await;

    let steered = runner
        .post(
            &format!("/runs/{run}/steer"),
            json!({"prompt": "also mention pineapples"}),
        )
        .await;
    assert_eq!(steered.status(), 202);
    let rest = stream.rest().await;

    assert_eq!(rest.last().unwrap().event, "run.completed");
    let requests = runner.model.requests();
    let first = requests
        .iter()
        .position(|r| r["input"].to_string().contains("also mention pineapples"));
    assert!(
        first.is_some_and(|i| i >= 1),
        "the steer reached a later request of the turn"
    );
}

#[tokio::test]
async fn an_interrupt_ends_the_run_cancelled_and_the_thread_goes_on() {
    let marker = unique_marker("AS_INT");
    let runner = app_server_runner(&marker).await;
    let thread = runner.repo_thread().await;
    let run = runner.start_run(&thread, "please sleep").await;
    let mut stream = runner.subscribe(&run, None).await;
    stream
        .until(|e| e.label() == "item.started:command_execution")
        .await;

    let interrupted = runner
        .post(&format!("/runs/{run}/interrupt"), json!({}))
        .await;
    assert_eq!(interrupted.status(), 202);
    let rest = stream.rest().await;

    assert_eq!(rest.last().unwrap().event, "run.cancelled");
    assert!(!test_support::process_with_marker_exists(&marker));
    let next = runner.start_run(&thread, "what now?").await;
    let events = runner.events(&next).await;
    assert_eq!(events.last().unwrap().event, "run.completed");
    let last: Value = runner.model.requests().last().unwrap().clone();
    assert!(
        last["input"].to_string().contains("please sleep"),
        "the same thread"
    );
}

#[tokio::test]
async fn the_exec_driver_says_it_cannot_steer_or_approve() {
    let runner = TestRunner::start().await;
    let thread = runner.repo_thread().await;
    let run = runner.start_run(&thread, "work slowly").await;

    let steer = runner
        .post(&format!("/runs/{run}/steer"), json!({"prompt": "x"}))
        .await;
    assert_eq!(steer.status(), 409);
    let body: Value = steer.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("RUNNER_DRIVER=app-server"),
        "{body}"
    );
    let approve = runner
        .post(
            &format!("/runs/{run}/approvals/approval-1"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(approve.status(), 409);
    assert_eq!(
        runner.events(&run).await.last().unwrap().event,
        "run.completed"
    );
}

#[tokio::test]
async fn the_models_the_cli_offers_are_listed() {
    let runner = TestRunner::start().await;

    let list = runner.get_json("/models").await;

    let models = list["models"].as_array().unwrap();
    assert!(!models.is_empty(), "{list}");
    assert!(models.iter().any(|m| m["id"] == "gpt-5.5"), "{list}");
    assert_eq!(
        models.iter().filter(|m| m["isDefault"] == true).count(),
        1,
        "{list}"
    );
    assert!(models.iter().all(|m| m["supportedReasoningEfforts"]
        .as_array()
        .is_some_and(|e| !e.is_empty())));
    // Asked once, kept: the same list again.
    assert_eq!(runner.get_json("/models").await, list);
}

#[tokio::test]
async fn a_restarted_runner_resumes_the_thread_through_the_app_server() {
    let mut runner = app_server_runner(&unique_marker("AS_RESUME")).await;
    let thread = runner.repo_thread().await;
    let first = runner.start_run(&thread, "remember the word kumquat").await;
    let events = runner.events(&first).await;
    let codex_thread = events
        .iter()
        .find(|e| e.event == "thread.started")
        .map(|e| e.data["thread_id"].as_str().unwrap().to_owned())
        .unwrap();

    runner.stop().await;
    runner.boot().await;
    let resumed = runner
        .create_thread(json!({"workingDirectory": runner.repo, "resumeThreadId": codex_thread}))
        .await;
    let second = runner.start_run(&resumed, "and now?").await;
    let events = runner.events(&second).await;

    assert_eq!(events.last().unwrap().event, "run.completed");
    let started = events.iter().find(|e| e.event == "thread.started").unwrap();
    assert_eq!(started.data["thread_id"], codex_thread.as_str());
    let last = runner.model.requests().last().unwrap()["input"].to_string();
    assert!(
        last.contains("remember the word kumquat"),
        "the conversation went on"
    );
}

#[tokio::test]
async fn a_file_change_asks_with_its_files_and_a_denial_keeps_them_out() {
    let runner = app_server_runner(&unique_marker("AS_PATCH")).await;
    let thread = approval_thread(&runner).await;
    let run = runner.start_run(&thread, "patch a file").await;
    let mut stream = runner.subscribe(&run, None).await;
    let before = stream.until(|e| e.event == "approval.requested").await;
    let request = before.last().unwrap().data.clone();
    assert_eq!(request["kind"], "file_change", "{request}");
    let changes = request["changes"].to_string();
    assert!(
        changes.contains("patched.txt") && changes.contains("add"),
        "{request}"
    );

    let approval = request["approvalId"].as_str().unwrap();
    let answer = runner
        .post(
            &format!("/runs/{run}/approvals/{approval}"),
            json!({"decision": "deny"}),
        )
        .await;
    assert_eq!(answer.status(), 202);
    let rest = stream.rest().await;

    assert_eq!(rest.last().unwrap().event, "run.completed");
    assert!(!runner.repo.join("patched.txt").exists());
}
