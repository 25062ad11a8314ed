//! Fault tests of the run lifecycle against the real processes: Postgres
//! stopped mid-run, a store that fails right after a clone, cancels racing
//! the start of a run, and a session deleted while its run ends.

use std::time::Duration;

use serde_json::{json, Value};
use test_support::{assert_numbered_from_one, labels, process_with_marker_exists, Subscription};

use crate::helpers::{TestDb, TestStack};

/// The runner's run id the backend recorded for `run`, if any.
async fn runner_run_id(db: &TestDb, run: &str) -> Option<String> {
    let rows = db
        .query(&format!(
            "SELECT runner_run_id FROM runs WHERE id = '{run}'"
        ))
        .await;
    rows[0].get(0)
}

/// Makes every UPDATE that would turn a session `ready` fail, the first
/// `times` times, inside the test's database.
async fn refuse_ready(db: &TestDb, times: u32) {
    // A sequence, because it counts across the failed statements' rollbacks.
    db.execute(&format!(
        "CREATE SEQUENCE ready_faults;
         CREATE FUNCTION refuse_ready() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('ready_faults') <= {times} THEN
                 RAISE EXCEPTION 'injected fault: the session cannot become ready';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_ready BEFORE UPDATE ON sessions FOR EACH ROW
             WHEN (NEW.status = 'ready') EXECUTE FUNCTION refuse_ready();"
    ))
    .await;
}

#[tokio::test]
async fn events_emitted_while_postgres_is_down_are_stored_without_gaps_or_duplicates() {
    let mut stack = TestStack::start_on_own_cluster().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "work slowly").await;
    let mut live = stack.subscribe(&run, None).await;
    let mut seen = live.until(|e| e.event == "turn.started").await;
    let runner_run = runner_run_id(&stack.db, &run).await.unwrap();

    stack.db.stop_server().await;
    // The rest of the run happens on the runner while Postgres is down.
    let upstream = Subscription::open(
        &stack.client,
        &stack.runner_url(&format!("/runs/{runner_run}/events")),
        None,
    )
    .await
    .rest()
    .await;
    assert_eq!(upstream.last().unwrap().event, "run.completed");
    stack.db.start_server().await;
    seen.extend(live.rest().await);
    let replay = stack.events(&run).await;

    assert_eq!(
        labels(&seen),
        [
            "thread.started",
            "turn.started",
            "item.completed:reasoning",
            "item.started:command_execution",
            "item.completed:command_execution",
            "item.completed:reasoning",
            "item.started:command_execution",
            "item.completed:command_execution",
            "item.completed:reasoning",
            "item.started:command_execution",
            "item.completed:command_execution",
            "item.completed:agent_message",
            "turn.completed",
            "run.completed",
        ]
    );
    assert_numbered_from_one(&seen);
    assert_eq!(seen, replay, "the replay is what the live subscriber saw");
    let state = stack.get_json(&format!("/api/runs/{run}")).await;
    assert_eq!(state["status"], "completed");
    assert_eq!(state["final_response"], "done slowly");
    assert_eq!(state["files"]["created"], json!(["three.txt"]));
}

#[tokio::test]
async fn a_ready_update_that_fails_once_still_makes_the_session_ready() {
    let stack = TestStack::start().await;
    refuse_ready(&stack.db, 1).await;
    let repo = stack.make_repo("project");

    let session = stack
        .session(json!({"repo_url": format!("file://{}", repo.display())}))
        .await;

    assert_eq!(session["status"], "ready", "{session}");
    let id = session["session_id"].as_str().unwrap();
    assert!(stack.workspace(id).join("main.txt").is_file());
    let run = stack.prompt(id, "hello").await;
    assert_eq!(
        stack.events(&run).await.last().unwrap().event,
        "run.completed"
    );
}

#[tokio::test]
async fn a_clone_that_cannot_be_marked_ready_fails_the_session_and_leaves_no_folder() {
    let stack = TestStack::start().await;
    refuse_ready(&stack.db, 1_000).await;
    let repo = stack.make_repo("project");

    let session = stack
        .session(json!({"repo_url": format!("file://{}", repo.display())}))
        .await;

    assert_eq!(session["status"], "failed", "{session}");
    assert_eq!(
        session["error"],
        "the clone finished but the backend could not record it in its database; delete this session and create it again"
    );
    let id = session["session_id"].as_str().unwrap();
    assert!(!stack.root.join(id).exists(), "no folder is left behind");
    assert_eq!(session["thread_id"], Value::Null);
    let deleted = stack
        .client
        .delete(stack.url(&format!("/api/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
}

#[tokio::test]
async fn cancels_racing_the_start_of_a_run_always_end_it_cancelled() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;

    for i in 0..30u64 {
        let run = stack.prompt(&session, "please linger").await;
        // The gap is what this test varies (0 to 58 ms), so that the cancel
        // lands before, while and after the worker starts the run on the
        // runner and records its id; it waits for nothing.
        tokio::time::sleep(Duration::from_millis(2 * i)).await;
        let response = stack
            .post(&format!("/api/runs/{run}/cancel"), json!({}))
            .await;
        assert_eq!(response.status(), 202, "run {i}");
        let events = stack.events(&run).await;

        assert_eq!(
            events.last().unwrap().event,
            "run.cancelled",
            "run {i}: {events:?}"
        );
        assert_numbered_from_one(&events);
        let state = stack.get_json(&format!("/api/runs/{run}")).await;
        assert_eq!(state["status"], "cancelled", "run {i}");
        if let Some(runner_run) = runner_run_id(&stack.db, &run).await {
            let upstream: Value = stack
                .client
                .get(stack.runner_url(&format!("/runs/{runner_run}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(upstream["status"], "cancelled", "run {i}: {upstream}");
        }
    }
    assert!(!process_with_marker_exists("BACKEND_LINGER_MARKER"));
}

#[tokio::test]
async fn deleting_a_session_while_its_run_ends_is_quiet() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "please tarry").await;
    let mut live = stack.subscribe(&run, None).await;
    live.until(|e| e.label() == "item.started:command_execution")
        .await;

    // The delete cancels the run, so the run ends while its session goes.
    let deleted = stack
        .client
        .delete(stack.url(&format!("/api/sessions/{session}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let rest = live.rest().await;
    stack
        .log
        .wait_for(|line| {
            line.contains("run finished") || line.contains("run ended after it was deleted")
        })
        .await;

    assert_eq!(labels(&rest).last().unwrap(), "run.cancelled");
    let errors: Vec<String> = stack
        .log
        .lines()
        .into_iter()
        .filter(|line| line.contains(" ERROR "))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(stack.get(&format!("/api/runs/{run}")).await.status(), 404);
    assert!(!stack.root.join(&session).exists());
    assert!(!process_with_marker_exists("BACKEND_TARRY_MARKER"));
}
