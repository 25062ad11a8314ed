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
