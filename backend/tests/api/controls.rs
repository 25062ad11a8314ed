//! A session's agent settings, and the controls of a running run through
//! the backend (approvals, steering, interrupts), with the runner on its
//! app-server driver and the real CLI.

use serde_json::{json, Value};
use test_support::{assert_numbered_from_one, labels};

use crate::helpers::{assert_error, TestStack};

async fn app_server_stack() -> TestStack {
    TestStack::start_configured(true, &[("RUNNER_DRIVER", "app-server")]).await
}

async fn session_with(stack: &TestStack, settings: Value) -> String {
    let repo = stack.make_repo(&format!("repo-{}", uuid::Uuid::new_v4()));
    let mut body = json!({"repo_url": format!("file://{}", repo.display())});
    body.as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    let session = stack.session(body).await;
    assert_eq!(session["status"], "ready", "{session}");
    session["session_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn settings_are_checked_against_the_known_values_and_the_runners_models() {
    let stack = TestStack::start().await;
    let repo = stack.make_repo("settings");
    let url = format!("file://{}", repo.display());
    let create = |extra: Value| {
        let mut body = json!({"repo_url": url});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        stack.post("/api/sessions", body)
    };

    let body = assert_error(
        create(json!({"sandbox": "yolo"})).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(
        body["message"],
        "sandbox must be one of read-only, workspace-write, danger-full-access; got \"yolo\""
    );
    let body = assert_error(
        create(json!({"approval_policy": "maybe"})).await,
        422,
        "validation_error",
    )
    .await;
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("untrusted, on-failure, on-request, never"));
    let body = assert_error(
        create(json!({"model": "gpt-0"})).await,
        422,
        "validation_error",
    )
    .await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("model must be one of ") && message.contains("gpt-5.5"),
        "{message}"
    );
    let body = assert_error(
        create(json!({"model": "gpt-5.5", "reasoning_effort": "minimal"})).await,
        422,
        "validation_error",
    )
    .await;
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("reasoning_effort for gpt-5.5 must be one of"));
    let listed = stack.get_json("/api/sessions").await;
    assert_eq!(listed["total"], 0, "nothing was created by a refusal");

    let session = session_with(
        &stack,
        json!({"model": "gpt-5.5", "reasoning_effort": "low", "sandbox": "read-only",
               "approval_policy": "never"}),
    )
    .await;
    let row = stack.get_json(&format!("/api/sessions/{session}")).await;
    assert_eq!(
        (
            &row["model"],
            &row["reasoning_effort"],
            &row["sandbox"],
            &row["approval_policy"]
        ),
        (
            &json!("gpt-5.5"),
            &json!("low"),
            &json!("read-only"),
            &json!("never")
        )
    );
    // The read-only sandbox reaches the agent: its write fails.
    let run = stack.prompt(&session, "create a file").await;
    let events = stack.events(&run).await;
    assert_eq!(events.last().unwrap().event, "run.completed");
    assert!(!stack.workspace(&session).join("hello.txt").exists());
    let sent = stack.model.requests().last().unwrap().clone();
    assert_eq!(sent["model"], "gpt-5.5");
    assert_eq!(sent["reasoning"]["effort"], "low", "{}", sent["reasoning"]);
}

#[tokio::test]
async fn an_approval_waits_for_its_answer_through_a_backend_restart() {
    let mut stack = app_server_stack().await;
    let session = session_with(&stack, json!({"approval_policy": "untrusted"})).await;
    let run = stack.prompt(&session, "touch a file").await;
    let mut stream = stack.subscribe(&run, None).await;
    let before = stream.until(|e| e.event == "approval.requested").await;
    let requested = before.last().unwrap().data.clone();
    assert_eq!(requested["kind"], "command");
    assert!(requested["command"]
        .as_str()
        .unwrap()
        .contains("touch approved.txt"));
    drop(stream);

    // The page closes and the backend restarts: the approval still waits.
    stack.stop_backend().await;
    stack.start_backend().await;
    let approval = requested["approvalId"].as_str().unwrap();
    let other = stack.add_user("mallory", false).await;
    let probe = other
        .client
        .post(stack.url(&format!("/api/runs/{run}/approvals/{approval}")))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_error(probe, 404, "not_found").await;
    let bad = stack
        .post(
            &format!("/api/runs/{run}/approvals/{approval}"),
            json!({"decision": "sure"}),
        )
        .await;
    assert_error(bad, 422, "validation_error").await;
    let answer = stack
        .post(
            &format!("/api/runs/{run}/approvals/{approval}"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(answer.status(), 202);

    let events = stack.events(&run).await;
    assert_numbered_from_one(&events);
    assert_eq!(
        events.last().unwrap().event,
        "run.completed",
        "{:?}",
        labels(&events)
    );
    let resolved = events
        .iter()
        .find(|e| e.event == "approval.resolved")
        .unwrap();
    assert_eq!(resolved.data["decision"], "approve");
    assert_eq!(resolved.data["by"], "alice");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event == "approval.requested")
            .count(),
        1
    );
    assert!(stack.workspace(&session).join("approved.txt").exists());
    // Ended: nothing more to approve.
    let late = stack
        .post(
            &format!("/api/runs/{run}/approvals/{approval}"),
            json!({"decision": "deny"}),
        )
        .await;
    assert_error(late, 409, "conflict").await;
}

#[tokio::test]
async fn a_run_can_be_steered_and_interrupted_through_the_backend() {
    let stack = app_server_stack().await;
    let session = session_with(&stack, json!({})).await;
    let run = stack.prompt(&session, "slowly").await;
    let mut stream = stack.subscribe(&run, None).await;
    stream.until(|e| e.event == "item.started").await;

    let steered = stack
        .post(
            &format!("/api/runs/{run}/steer"),
            json!({"prompt": "and mention mangoes"}),
        )
        .await;
    assert_eq!(steered.status(), 202);
    let interrupted = stack
        .post(&format!("/api/runs/{run}/interrupt"), json!({}))
        .await;
    assert_eq!(interrupted.status(), 202);
    let rest = stream.rest().await;

    assert_eq!(rest.last().unwrap().event, "run.cancelled");
    let row = stack.get_json(&format!("/api/runs/{run}")).await;
    assert_eq!(row["status"], "cancelled");
    let next = stack.prompt(&session, "what now?").await;
    assert_eq!(
        stack.events(&next).await.last().unwrap().event,
        "run.completed"
    );
}

#[tokio::test]
async fn controls_of_a_run_that_is_not_running_or_on_exec_are_conflicts() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "slowly").await;
    let mut stream = stack.subscribe(&run, None).await;
    stream.until(|e| e.event == "item.started").await;

    let steer = stack
        .post(&format!("/api/runs/{run}/steer"), json!({"prompt": "x"}))
        .await;
    let body = assert_error(steer, 409, "conflict").await;
    assert!(
        body["message"].as_str().unwrap().contains("app-server"),
        "{body}"
    );
    stream.rest().await;
    let ended = stack
        .post(&format!("/api/runs/{run}/interrupt"), json!({}))
        .await;
    assert_error(ended, 409, "conflict").await;
    let unknown = stack
        .post(
            &format!("/api/runs/{}/interrupt", uuid::Uuid::new_v4()),
            json!({}),
        )
        .await;
    assert_error(unknown, 404, "not_found").await;
}

#[tokio::test]
async fn a_replay_leaves_out_the_deltas_of_completed_items_and_keeps_the_rest() {
    let stack = app_server_stack().await;
    let session = session_with(&stack, json!({})).await;
    let run = stack.prompt(&session, "count out loud").await;

    // Live: every delta, as it came.
    let live = stack.subscribe(&run, None).await.rest().await;
    assert_numbered_from_one(&live);
    let deltas = live.iter().filter(|e| e.event == "item.delta").count();
    assert!(deltas >= 3, "{:?}", labels(&live));

    // A page loaded after the end: the same events but those deltas, whose
    // item completed with the whole output; ids still rise, once each.
    let replay = stack.events(&run).await;
    assert!(
        replay.iter().all(|e| e.event != "item.delta"),
        "{:?}",
        labels(&replay)
    );
    let kept: Vec<_> = live.iter().filter(|e| e.event != "item.delta").collect();
    assert_eq!(replay.iter().collect::<Vec<_>>(), kept);
    assert!(replay.windows(2).all(|w| w[0].id < w[1].id));
    // Resuming mid-run from an id works the same way.
    let middle = live[live.len() / 2].id;
    let resumed = stack.subscribe(&run, Some(middle)).await.rest().await;
    let expected: Vec<_> = kept.iter().filter(|e| e.id > middle).cloned().collect();
    assert_eq!(resumed.iter().collect::<Vec<_>>(), expected);
}
