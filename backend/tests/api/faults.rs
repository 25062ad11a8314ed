//! Fault tests of the run lifecycle against the real processes: Postgres
//! stopped mid-run, a store that fails right after a clone, cancels racing
//! the start of a run, and a session deleted while its run ends.

use std::time::Duration;

use serde_json::{json, Value};
use test_support::{assert_numbered_from_one, labels, process_with_marker_exists, Subscription};

use crate::helpers::{runner_run_id, TestDb, TestStack};

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

/// A named pipe in the session's workspace: a scripted `cat <name>` blocks
/// on it until the test opens it (`open_gate`), so a run waits for the test
/// with no clock involved.
fn make_gate(stack: &TestStack, session: &str, name: &str) -> std::path::PathBuf {
    let path = stack.workspace(session).join(name);
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// Lets the command reading `gate` go on (blocks until it reads).
async fn open_gate(gate: std::path::PathBuf) {
    tokio::task::spawn_blocking(move || std::fs::write(gate, "open\n"))
        .await
        .unwrap()
        .unwrap();
}

fn is_command(event: &test_support::SseEvent, phase: &str, command: &str) -> bool {
    event.label() == format!("{phase}:command_execution")
        && event.data["item"]["command"]
            .as_str()
            .is_some_and(|c| c.contains(command))
}

/// The events of the "through an outage" script, in order.
const THROUGH_AN_OUTAGE: [&str; 14] = [
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
];

#[tokio::test]
async fn events_emitted_while_postgres_is_down_are_stored_without_gaps_or_duplicates() {
    through_an_outage(&[]).await;
}

/// With a live tail of three events, the backend stops reading the run
/// while Postgres is away (the tail fills with events it cannot store), and
/// reads on once it is back.
#[tokio::test]
async fn a_small_live_tail_waits_out_an_outage_without_losing_events() {
    through_an_outage(&[("BACKEND_MAX_EVENTS_PER_RUN", "3")]).await;
}

/// A subscriber that comes when the live tail has long dropped the run's
/// first events (stored, so they make room) reads them from Postgres and the
/// rest live, each once.
#[tokio::test]
async fn a_late_subscriber_reads_what_the_live_tail_dropped_from_postgres() {
    let stack = TestStack::start_configured(true, &[("BACKEND_MAX_EVENTS_PER_RUN", "3")]).await;
    let (session, _) = stack.ready_session().await;
    let first_gate = make_gate(&stack, &session, "first-gate");
    let second_gate = make_gate(&stack, &session, "second-gate");
    let run = stack.prompt(&session, "go through an outage").await;
    let mut early = stack.subscribe(&run, None).await;
    let mut seen_early = early
        .until(|e| is_command(e, "item.started", "cat first-gate"))
        .await;
    open_gate(first_gate).await;
    seen_early.extend(
        early
            .until(|e| is_command(e, "item.started", "cat second-gate"))
            .await,
    );
    // Eight events so far: the first five are stored and gone from the
    // tail (it made room for the newer ones).
    let stored = stack
        .db
        .query(&format!(
            "SELECT count(*) FROM run_events WHERE run_id = '{run}'"
        ))
        .await;
    assert!(
        stored[0].get::<_, i64>(0) >= 5,
        "stored before they were dropped"
    );

    let mut late = stack.subscribe(&run, None).await;
    let mut seen_late = late
        .until(|e| is_command(e, "item.started", "cat second-gate"))
        .await;
    let mut resumed = stack.subscribe(&run, Some(2)).await;
    let mut seen_resumed = resumed
        .until(|e| is_command(e, "item.started", "cat second-gate"))
        .await;
    open_gate(second_gate).await;
    seen_early.extend(early.rest().await);
    seen_late.extend(late.rest().await);
    seen_resumed.extend(resumed.rest().await);

    assert_eq!(labels(&seen_late), THROUGH_AN_OUTAGE);
    assert_numbered_from_one(&seen_late);
    assert_eq!(seen_early, seen_late);
    assert_eq!(seen_resumed[..], seen_late[2..]);
    assert_eq!(
        seen_late,
        stack.events(&run).await,
        "the replay is the same"
    );
}

async fn through_an_outage(env: &[(&str, &str)]) {
    let mut stack = TestStack::start_on_own_cluster(env).await;
    let (session, _) = stack.ready_session().await;
    let first_gate = make_gate(&stack, &session, "first-gate");
    let second_gate = make_gate(&stack, &session, "second-gate");
    let run = stack.prompt(&session, "go through an outage").await;
    let mut live = stack.subscribe(&run, None).await;
    let mut seen = live
        .until(|e| is_command(e, "item.started", "cat first-gate"))
        .await;
    let runner_run = runner_run_id(&stack.db, &run).await.unwrap();
    let mut upstream = Subscription::open(
        &stack.client,
        &stack.runner_url(&format!("/runs/{runner_run}/events")),
        None,
    )
    .await;

    // Events are emitted while Postgres is down: the first command ends,
    // the second starts and waits at its gate.
    stack.db.stop_server().await;
    open_gate(first_gate).await;
    upstream
        .until(|e| is_command(e, "item.started", "cat second-gate"))
        .await;
    // Postgres is back before the run ends, so the outcome is written
    // normally: nothing but the relay's own writes can bring those events
    // back.
    stack.db.start_server().await;
    open_gate(second_gate).await;
    seen.extend(live.rest().await);
    let replay = stack.events(&run).await;

    assert_eq!(labels(&seen), THROUGH_AN_OUTAGE);
    assert_numbered_from_one(&seen);
    assert_eq!(seen, replay, "the replay is what the live subscriber saw");
    let state = stack.get_json(&format!("/api/runs/{run}")).await;
    assert_eq!(state["status"], "completed");
    assert_eq!(state["final_response"], "went through");
    assert_eq!(state["files"]["created"], json!(["after.txt"]));
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
    let deleted = stack.delete_session(id).await;
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
    assert!(!process_with_marker_exists(&format!(
        "{}_LINGER",
        stack.marker
    )));
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
    let deleted = stack.delete_session(&session).await;
    assert_eq!(deleted.status(), 204);
    let rest = live.rest().await;
    // The run's end was logged before its stream ended; once a request made
    // after that is in the log, so is everything the run logged.
    let gone = stack.get(&format!("/api/runs/{run}")).await;
    assert_eq!(gone.status(), 404);
    // The request's span ends right after the path: `.../{run}}`.
    let request = format!("path=/api/runs/{run}}}");
    stack
        .log
        .wait_for(|line| line.contains(&request) && line.contains("status=404"))
        .await;

    assert_eq!(labels(&rest).last().unwrap(), "run.cancelled");
    let errors: Vec<String> = stack
        .log
        .lines()
        .into_iter()
        .filter(|line| line.contains(" ERROR "))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(!stack.root.join(&session).exists());
    // The run's end was published after its last write: no event written
    // around the delete outlives its run.
    let orphans = stack
        .db
        .query(&format!(
            "SELECT count(*) FROM run_events WHERE run_id = '{run}'"
        ))
        .await;
    assert_eq!(orphans[0].get::<_, i64>(0), 0, "events outlived their run");
    assert!(!process_with_marker_exists(&format!(
        "{}_TARRY",
        stack.marker
    )));
}
