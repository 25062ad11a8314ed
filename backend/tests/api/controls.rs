//! A session's agent settings, and the controls of a running run through
//! the backend (approvals, steering, interrupts), with the runner on its
//! app-server driver and the real CLI.

use serde_json::{json, Value};
use test_support::{assert_numbered_from_one, labels};

use crate::helpers::{assert_error, runner_run_id, TestStack};

/// A stack on the app-server driver whose runner lets approvals reach a
/// person (the approved action then runs outside the sandbox).
async fn app_server_stack() -> TestStack {
    TestStack::start_configured(
        true,
        &[
            ("RUNNER_DRIVER", "app-server"),
            ("RUNNER_ALLOW_UNSANDBOXED_APPROVALS", "true"),
        ],
    )
    .await
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

/// A session of `user`'s waiting on an approval: the session, its run and
/// the approval's id.
async fn waiting_approval(stack: &TestStack, client: &reqwest::Client) -> (String, String, String) {
    let repo = stack.make_repo(&format!("repo-{}", uuid::Uuid::new_v4()));
    let body = json!({"repo_url": format!("file://{}", repo.display()),
                      "approval_policy": "untrusted"});
    let created = stack
        .json_as(client, reqwest::Method::POST, "/api/sessions", Some(body))
        .await;
    // A prompt waits for the clone.
    let session = created["session_id"].as_str().unwrap().to_owned();
    let prompt = json!({"prompt": "touch a file"});
    let path = format!("/api/sessions/{session}/prompt");
    let queued = stack
        .json_as(client, reqwest::Method::POST, &path, Some(prompt))
        .await;
    let run = queued["run_id"].as_str().unwrap().to_owned();
    let mut stream = test_support::Subscription::open(
        client,
        &stack.url(&format!("/api/runs/{run}/events")),
        None,
    )
    .await;
    let before = stream.until(|e| e.event == "approval.requested").await;
    let approval = before.last().unwrap().data["approvalId"]
        .as_str()
        .unwrap()
        .to_owned();
    (session, run, approval)
}

/// The second attack run's finding: an approval id with `%2F` walked to
/// other routes of the runner, with the backend's runner token, so a user
/// could approve, cancel or interrupt another user's run.
#[tokio::test]
async fn an_approval_id_cannot_walk_to_other_runner_routes() {
    let stack = app_server_stack().await;
    let mallory = stack.add_user("mallory", false).await;
    let (alice_session, alice_run, alice_approval) = waiting_approval(&stack, &stack.client).await;
    let (_, own_run, own_approval) = waiting_approval(&stack, &mallory.client).await;
    let alice_runner_run = runner_run_id(&stack.db, &alice_run).await.unwrap();
    let own_runner_run = runner_run_id(&stack.db, &own_run).await.unwrap();

    let walks = [
        format!("..%2F..%2F{alice_runner_run}%2Fapprovals%2F{alice_approval}"),
        format!("..%2F..%2F{alice_runner_run}%2Fcancel"),
        format!("..%2F..%2F{alice_runner_run}%2Finterrupt"),
        "..%2Finterrupt".to_owned(),
        "..%2Fcancel".to_owned(),
        format!("{own_approval}%2F..%2F..%2Finterrupt"),
        format!("{own_approval}%3F"),
        format!("{own_approval}%23x"),
    ];
    let mut messages = Vec::new();
    for walk in &walks {
        let response = mallory
            .client
            .post(stack.url(&format!("/api/runs/{own_run}/approvals/{walk}")))
            .json(&json!({"decision": "approve"}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert!(matches!(status, 400 | 404), "{walk}: {status} {body}");
        messages.push(body["message"].as_str().unwrap_or_default().to_owned());
    }
    // A well-formed id the runner never issued for this run is refused by
    // the runner itself.
    let unissued = mallory
        .client
        .post(stack.url(&format!("/api/runs/{own_run}/approvals/approval-77")))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(unissued, 404, "not_found").await;
    messages.push(body["message"].as_str().unwrap().to_owned());

    // Nothing happened to either run: both still wait, their approvals
    // unanswered; alice's answer still works.
    for (client, run) in [(&stack.client, &alice_run), (&mallory.client, &own_run)] {
        let path = format!("/api/runs/{run}");
        let row = stack
            .json_as(client, reqwest::Method::GET, &path, None)
            .await;
        assert_eq!(row["status"], "running", "{row}");
    }
    assert!(!stack
        .workspace(&alice_session)
        .join("approved.txt")
        .exists());
    let answer = stack
        .post(
            &format!("/api/runs/{alice_run}/approvals/{alice_approval}"),
            json!({"decision": "deny"}),
        )
        .await;
    assert_eq!(answer.status(), 202);
    let events = stack.events(&alice_run).await;
    let resolved: Vec<_> = events
        .iter()
        .filter(|e| e.event == "approval.resolved")
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].data["by"], "alice");
    // No message told the attacker a runner id or a server path.
    for message in &messages {
        for secret in [&alice_runner_run, &own_runner_run] {
            assert!(!message.contains(secret.as_str()), "{message}");
        }
        assert!(
            !message.contains(&stack.root.display().to_string()),
            "{message}"
        );
    }
}

/// What the runner says when it refuses or fails (its run ids, the
/// server's paths) stays in the log: users read the backend's words, and
/// the CLI's failure with the server's folders named by their role.
#[tokio::test]
async fn a_run_that_fails_on_the_runner_names_no_server_path() {
    let mut stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let first = stack.prompt(&session, "hello").await;
    stack.events(&first).await;
    // The CLI fails in a working directory that is gone.
    std::fs::remove_dir_all(stack.workspace(&session)).unwrap();
    let failed_by_cli = stack.prompt(&session, "hello again").await;
    stack.events(&failed_by_cli).await;
    // A restarted runner has forgotten the thread, and refuses a new one
    // in that directory.
    stack.stop_runner().await;
    stack.start_runner().await;
    let refused = stack.prompt(&session, "and again").await;
    stack.events(&refused).await;

    let root = stack.root.display().to_string();
    let homes = stack
        .root
        .with_file_name("codex-homes")
        .display()
        .to_string();
    for run in [&failed_by_cli, &refused] {
        let row = stack.get_json(&format!("/api/runs/{run}")).await;
        assert_eq!(row["status"], "failed", "{row}");
        let events = stack.events(run).await;
        let said = format!("{row}{events:?}");
        assert!(!said.contains(&root) && !said.contains(&homes), "{said}");
        assert!(!said.contains("workingDirectory"), "{said}");
    }
    let row = stack.get_json(&format!("/api/runs/{refused}")).await;
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .starts_with("the run could not start"),
        "{row}"
    );
}
