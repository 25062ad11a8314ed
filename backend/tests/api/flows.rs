//! The main flows: session → prompt → events → files → diff; the queue;
//! cancellation; subscribers.

use serde_json::{json, Value};
use test_support::{assert_numbered_from_one, labels, process_with_marker_exists};

use crate::helpers::TestStack;

#[tokio::test]
async fn a_prompt_runs_streams_and_changes_the_workspace() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let state = stack.get_json(&format!("/api/sessions/{session}")).await;
    assert!(
        state["thread_id"].is_string(),
        "a ready session has a runner thread"
    );
    assert_eq!(
        state["repo_path"],
        stack.workspace(&session).display().to_string()
    );

    let run = stack.prompt(&session, "  Please create a file \n").await;
    let events = stack.events(&run).await;

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
    let last = &events[7].data;
    assert_eq!(last["runId"], run.as_str());
    assert_eq!(
        last["files"],
        json!({"created": ["hello.txt"], "modified": [], "deleted": ["README.md"]})
    );

    let state = stack.get_json(&format!("/api/runs/{run}")).await;
    assert_eq!(state["status"], "completed");
    assert_eq!(state["prompt"], "Please create a file");
    assert_eq!(state["final_response"], "Created hello.txt");
    assert_eq!(state["position"], 1);
    assert!(state["usage"]["input_tokens"].as_i64().unwrap() > 0);
    assert_eq!(
        state["files"],
        json!({"created": ["hello.txt"], "modified": [], "deleted": ["README.md"]})
    );
    assert!(state["started_at"].is_string() && state["finished_at"].is_string());
    let session_state = stack.get_json(&format!("/api/sessions/{session}")).await;
    assert_eq!(
        session_state["codex_thread_id"], events[0].data["thread_id"],
        "the session records its Codex thread"
    );

    let tree = stack
        .get_json(&format!("/api/sessions/{session}/files"))
        .await;
    let paths: Vec<&str> = tree["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["hello.txt", "main.txt"]);
    assert_eq!(tree["truncated"], false);
    let file = stack
        .get_json(&format!("/api/sessions/{session}/files/hello.txt"))
        .await;
    assert_eq!(file["content"], "hello\n");
    assert_eq!(file["binary"], false);
    assert_eq!(file["encoding"], "utf-8");

    let diff = stack
        .get_json(&format!("/api/sessions/{session}/diff"))
        .await;
    let patch = diff["patch"].as_str().unwrap();
    assert!(
        patch.contains("diff --git a/hello.txt b/hello.txt"),
        "{patch}"
    );
    assert!(patch.contains("+hello"), "{patch}");
    assert!(patch.contains("-# test repo"), "{patch}");
    assert_eq!(diff["files_changed"], 2);
    assert_eq!(diff["base_commit"], session_state["base_commit"]);

    let runs = stack
        .get_json(&format!("/api/sessions/{session}/runs"))
        .await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
    let listed = stack.get_json("/api/sessions").await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["sessions"][0]["session_id"], session.as_str());
}

#[tokio::test]
async fn prompts_queue_while_cloning_and_run_in_order() {
    let stack = TestStack::start().await;
    let repo = stack.make_repo("queued");
    let response = stack
        .post(
            "/api/sessions",
            json!({"repo_url": format!("file://{}", repo.display())}),
        )
        .await;
    let session: Value = response.json().await.unwrap();
    let session = session["session_id"].as_str().unwrap().to_owned();

    let runs = [
        stack.prompt(&session, "first prompt").await,
        stack.prompt(&session, "second prompt").await,
        stack.prompt(&session, "third prompt").await,
    ];
    let mut finals = Vec::new();
    for run in &runs {
        let events = stack.events(run).await;
        assert_eq!(events.last().unwrap().event, "run.completed");
        let state = stack.get_json(&format!("/api/runs/{run}")).await;
        finals.push((
            state["position"].as_i64().unwrap(),
            state["final_response"].as_str().unwrap().to_owned(),
            state["started_at"].as_str().unwrap().to_owned(),
            state["finished_at"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        finals
            .iter()
            .map(|f| (f.0, f.1.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, "You said: first prompt"),
            (2, "You said: second prompt"),
            (3, "You said: third prompt")
        ]
    );
    for pair in finals.windows(2) {
        assert!(
            pair[0].3 <= pair[1].2,
            "a run starts only after the previous one finished"
        );
    }
    let prompts: Vec<String> = stack
        .model
        .requests()
        .iter()
        .map(|r| r["input"].to_string())
        .collect();
    let order: Vec<usize> = ["first prompt", "second prompt", "third prompt"]
        .iter()
        .map(|p| prompts.iter().position(|r| r.contains(p)).unwrap())
        .collect();
    assert!(
        order[0] < order[1] && order[1] < order[2],
        "the model saw the prompts in order"
    );
}

#[tokio::test]
async fn cancelling_a_running_run_stops_it_and_the_next_one_runs() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let sleeping = stack.prompt(&session, "please sleep").await;
    let next = stack.prompt(&session, "and then say hello").await;
    let mut stream = stack.subscribe(&sleeping, None).await;
    stream
        .until(|e| e.label() == "item.started:command_execution")
        .await;

    let response = stack
        .post(&format!("/api/runs/{sleeping}/cancel"), json!({}))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "cancelling");
    let rest = stream.rest().await;

    assert_eq!(labels(&rest), ["run.cancelled"]);
    let state = stack.get_json(&format!("/api/runs/{sleeping}")).await;
    assert_eq!(state["status"], "cancelled");
    assert!(!process_with_marker_exists(&stack.marker));
    assert_eq!(
        stack.events(&next).await.last().unwrap().event,
        "run.completed"
    );
    let again = stack
        .post(&format!("/api/runs/{sleeping}/cancel"), json!({}))
        .await;
    crate::helpers::assert_error(again, 409, "conflict").await;
}

/// Many cancels of one queued run at once: one ends it, and every other
/// answer says what is true — `cancelled` (202) or already finished (409),
/// never `cancelling` for a run that will never run.
#[tokio::test]
async fn concurrent_cancels_of_a_queued_run_all_say_cancelled() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let busy = stack.prompt(&session, "please doze").await;
    let queued = stack.prompt(&session, "QUEUED_MARKER_c4e1").await;
    let url = format!("/api/runs/{queued}/cancel");
    let answers =
        futures_util::future::join_all((0..16).map(|_| stack.post(&url, json!({})))).await;
    let mut cancelled = 0;
    for answer in answers {
        match answer.status().as_u16() {
            202 => {
                let body: Value = answer.json().await.unwrap();
                assert_eq!(body["status"], "cancelled", "{body}");
                cancelled += 1;
            }
            409 => {}
            other => panic!("a cancel answered {other}"),
        }
    }
    assert!(cancelled >= 1);
    assert_eq!(labels(&stack.events(&queued).await), ["run.cancelled"]);
    stack
        .post(&format!("/api/runs/{busy}/cancel"), json!({}))
        .await;
    assert_eq!(
        stack.events(&busy).await.last().unwrap().event,
        "run.cancelled"
    );
}

#[tokio::test]
async fn cancelling_a_queued_run_ends_it_before_it_starts() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let busy = stack.prompt(&session, "please doze").await;
    // A marker no system prompt contains (Codex's own says "time never runs out").
    let queued = stack.prompt(&session, "QUEUED_MARKER_7f3a").await;

    let response = stack
        .post(&format!("/api/runs/{queued}/cancel"), json!({}))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");

    let events = stack.events(&queued).await;
    assert_eq!(labels(&events), ["run.cancelled"]);
    assert_eq!(events[0].id, 1);
    let state = stack.get_json(&format!("/api/runs/{queued}")).await;
    assert_eq!(state["status"], "cancelled");
    assert_eq!(state["started_at"], Value::Null);
    stack
        .post(&format!("/api/runs/{busy}/cancel"), json!({}))
        .await;
    assert_eq!(
        stack.events(&busy).await.last().unwrap().event,
        "run.cancelled"
    );
    let requests = stack.model.requests();
    let leaked: Vec<_> = requests
        .iter()
        .filter(|r| r["input"].to_string().contains("QUEUED_MARKER_7f3a"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

#[tokio::test]
async fn late_and_reconnecting_subscribers_see_every_event_once_in_order() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "work slowly").await;

    let early = stack.subscribe(&run, None).await;
    let mut dropping = stack.subscribe(&run, None).await;
    let mut seen = vec![
        dropping.next().await.unwrap(),
        dropping.next().await.unwrap(),
    ];
    drop(dropping);
    let resumed = stack.subscribe(&run, Some(seen.last().unwrap().id)).await;
    let (early, resumed) = tokio::join!(early.rest(), resumed.rest());
    seen.extend(resumed);
    let late = stack.events(&run).await;

    assert_eq!(late.last().unwrap().event, "run.completed");
    assert_numbered_from_one(&late);
    assert_eq!(early, late);
    assert_eq!(seen, late);
    let after_three = stack
        .client
        .get(stack.url(&format!("/api/runs/{run}/events?after=3")))
        .send()
        .await
        .unwrap();
    let text = after_three.text().await.unwrap();
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    let expected: Vec<String> = (4..=late.len()).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn deleting_a_session_cancels_its_run_and_removes_its_workspace() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "take a nap").await;
    let mut stream = stack.subscribe(&run, None).await;
    stream
        .until(|e| e.label() == "item.started:command_execution")
        .await;
    assert!(stack.workspace(&session).exists());

    let response = stack.delete_session(&session).await;

    assert_eq!(response.status(), 204);
    assert!(
        !stack.root.join(&session).exists(),
        "the workspace is removed"
    );
    let gone = stack.get(&format!("/api/sessions/{session}")).await;
    crate::helpers::assert_error(gone, 404, "not_found").await;
    let _ = stream.rest().await;
    assert!(!process_with_marker_exists(&stack.marker));
}

/// With `RUNNER_TOKEN` on both, the runner answers only the backend, and the
/// whole flow works; the token appears in no response or log line.
#[tokio::test]
async fn with_a_runner_token_the_backend_authenticates_to_the_runner() {
    const TOKEN: &str = "runner-token-flows-0123456789abcdef";
    let stack = TestStack::start_configured(true, &[("RUNNER_TOKEN", TOKEN)]).await;
    let unauthenticated = stack
        .client
        .get(stack.runner_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let ready = stack.get("/ready").await;
    assert_eq!(ready.status(), 200, "the backend reaches the runner");

    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "create a file").await;
    let events = stack.events(&run).await;

    assert_eq!(labels(&events).last().unwrap(), "run.completed");
    assert_numbered_from_one(&events);
    let everything = stack.log.lines().join("\n");
    assert!(!everything.contains(TOKEN), "the token is logged");
}
