//! What a browser's `EventSource` needs from a run's stream: a 204 when
//! nothing is left, so it stops reconnecting, and no event named `error`,
//! which is EventSource's own name for a dropped connection.

use test_support::assert_numbered_from_one;

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
