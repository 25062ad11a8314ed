//! What a browser's `EventSource` needs from a run's stream: a 204 when
//! nothing is left, so it stops reconnecting, and no event named `error`,
//! which is EventSource's own name for a dropped connection.

use test_support::{assert_numbered_from_one, labels};

use crate::helpers::TestStack;

#[tokio::test]
async fn a_finished_run_with_nothing_left_answers_204() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "hello").await;
    let events = stack.events(&run).await;
    assert_eq!(events.last().unwrap().event, "run.completed");
    let last = events.last().unwrap().id;
    let url = stack.url(&format!("/api/runs/{run}/events"));

    let past_the_end = stack
        .client
        .get(&url)
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    let by_query = stack
        .client
        .get(format!("{url}?after={last}"))
        .send()
        .await
        .unwrap();
    let one_left = stack
        .client
        .get(&url)
        .header("Last-Event-ID", (last - 1).to_string())
        .send()
        .await
        .unwrap();

    assert_eq!(past_the_end.status(), 204);
    assert_eq!(past_the_end.text().await.unwrap(), "");
    assert_eq!(by_query.status(), 204);
    assert_eq!(one_left.status(), 200);
    let text = one_left.text().await.unwrap();
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, vec![last.to_string()]);
}

#[tokio::test]
async fn codex_errors_are_named_codex_error_on_the_stream() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "break the model").await;

    let events = stack.events(&run).await;

    assert_numbered_from_one(&events);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert!(!names.contains(&"error"), "{names:?}");
    let errors: Vec<_> = events.iter().filter(|e| e.event == "codex.error").collect();
    assert!(!errors.is_empty(), "{names:?}");
    for error in errors {
        // The JSON keeps the CLI's own `type`.
        assert_eq!(error.data["type"], "error", "{}", error.data);
    }
}

#[tokio::test]
async fn the_session_stream_follows_a_session_from_cloning_to_deleted() {
    let stack = TestStack::start().await;
    let mut changes =
        test_support::Subscription::open(&stack.client, &stack.url("/api/sessions/events"), None)
            .await;
    let snapshot = changes.next().await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data["sessions"], serde_json::json!([]));
    assert_eq!(snapshot.data["total"], 0);
    let repo = stack.make_repo("project");

    let created = stack
        .post(
            "/api/sessions",
            serde_json::json!({"repo_url": format!("file://{}", repo.display())}),
        )
        .await;
    assert_eq!(created.status(), 202);
    let id = created.json::<serde_json::Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let updates = changes
        .until(|e| e.data["session"]["status"] == "ready")
        .await;

    assert!(updates.iter().all(|e| e.event == "updated"), "{updates:?}");
    assert!(updates
        .iter()
        .all(|e| e.data["session"]["session_id"] == id.as_str()));
    assert_eq!(updates[0].data["session"]["status"], "cloning");
    let last = &updates.last().unwrap().data["session"];
    // What the stream says last is what the API says now.
    let read = stack.get_json(&format!("/api/sessions/{id}")).await;
    assert_eq!(last["status"], read["status"]);
    assert_eq!(last["base_commit"], read["base_commit"]);

    let deleted = stack.delete_session(&id).await;
    assert_eq!(deleted.status(), 204);
    let gone = changes.until(|e| e.event == "deleted").await;
    assert_eq!(gone.last().unwrap().data["session_id"], id.as_str());
}

/// The second attack run's finding: a NUL byte in a command's output made
/// a finished run unreadable (the replay cast stored text to jsonb, which
/// refuses `\u0000`, and the stream ended silently). Every byte the real
/// CLI relays (NUL, `-print0`, invalid UTF-8, an encoded surrogate, a long
/// line, a NUL in the model's answer) is stored and replayed as it was
/// relayed live.
#[tokio::test]
async fn hostile_bytes_are_replayed_as_they_were_relayed_live() {
    let stack = TestStack::start_configured(true, &[("RUNNER_DRIVER", "app-server")]).await;
    let (session, _) = stack.ready_session().await;

    let run = stack.prompt(&session, "print hostile bytes").await;
    let live = stack.subscribe(&run, None).await.rest().await;
    let replayed = stack.events(&run).await;

    assert_eq!(
        live.last().unwrap().event,
        "run.completed",
        "{:?}",
        labels(&live)
    );
    let command = live
        .iter()
        .find(|e| e.label() == "item.completed:command_execution")
        .unwrap();
    assert!(
        command.text.contains("a\\u0000b"),
        "stored as JSON's escape"
    );
    let output = command.data["item"]["aggregated_output"].as_str().unwrap();
    assert!(output.contains("a\u{0}b\n./README.md\u{0}"), "{output:?}");
    assert!(output.contains("\u{fffd}\u{fffd} not utf-8 "), "{output:?}");
    assert!(output.contains(&"x".repeat(1000)));
    // A replay leaves out the deltas of completed items, and nothing else:
    // the same events, byte for byte.
    let kept: Vec<_> = live.iter().filter(|e| e.event != "item.delta").collect();
    assert_eq!(replayed.iter().collect::<Vec<_>>(), kept);
    // From any point.
    for after in [1, live.len() as u64 / 2, live.len() as u64 - 1] {
        let resumed = stack.subscribe(&run, Some(after)).await.rest().await;
        let expected: Vec<_> = kept.iter().filter(|e| e.id > after).cloned().collect();
        assert_eq!(
            resumed.iter().collect::<Vec<_>>(),
            expected,
            "after {after}"
        );
    }
    let row = stack.get_json(&format!("/api/runs/{run}")).await;
    assert_eq!(row["status"], "completed");
    assert_eq!(row["final_response"], "printed a\u{0}b and \u{fffd}");
}

/// A replay that Postgres fails ends with a `stream.error` event the
/// client sees (without an id, so it resumes where it was), never with a
/// stream that just stops.
#[tokio::test]
async fn a_replay_that_fails_says_so_on_the_stream() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "hello").await;
    let all = stack.events(&run).await;
    assert_eq!(all.last().unwrap().event, "run.completed");

    stack
        .db
        .execute("ALTER TABLE run_events RENAME COLUMN data TO data_gone")
        .await;
    let broken = stack.subscribe(&run, Some(1)).await.rest().await;

    assert_eq!(labels(&broken), ["stream.error"]);
    assert_eq!(broken[0].id, 0, "no id: the client resumes where it was");
    assert_eq!(broken[0].data["type"], "stream.error");
    assert!(broken[0].data["message"]
        .as_str()
        .unwrap()
        .contains("reconnect"));
}
