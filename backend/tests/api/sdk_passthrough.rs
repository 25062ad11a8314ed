//! The CLI's events reach the backend's subscribers as the CLI printed them,
//! whether read as the run goes or replayed from Postgres: a field the SDK
//! does not model passes the SDK, the runner and the backend unchanged.
//!
//! The real CLI (0.169) prints no field the SDK does not model for anything
//! the scripted model can make it do, so a fake CLI stands in here.

use test_support::{assert_numbered_from_one, fake_codex, labels};

use crate::helpers::TestStack;

/// Known event and item types, each with fields a newer CLI might add, keys
/// in an order serde would not write them and a number it would rewrite.
const LINES: [&str; 4] = [
    r#"{"type":"thread.started","thread_id":"fake-thread","zz_added":{"b":[1,2],"a":null}}"#,
    r#"{"type":"turn.started","model":"gpt-next"}"#,
    r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"hi","annotations":[{"kind":"cite"}]},"extra":1.50}"#,
    r#"{"type":"turn.completed","usage":{"input_tokens":3,"cached_input_tokens":0,"output_tokens":1,"new_tokens":7}}"#,
];

#[tokio::test]
async fn a_field_the_sdk_does_not_model_reaches_the_backends_subscribers_unchanged() {
    let mut stack = TestStack::start().await;
    let fake = stack.repos.with_file_name("fake-codex");
    fake_codex(&fake, &LINES);
    stack.stop_runner().await;
    stack.runner_codex_bin = fake;
    stack.start_runner().await;
    let (session, _) = stack.ready_session().await;

    let run = stack.prompt(&session, "hello").await;
    let live = stack.subscribe(&run, None).await.rest().await;
    let replayed = stack.events(&run).await;

    assert_eq!(
        labels(&live),
        [
            "thread.started",
            "turn.started",
            "item.completed:agent_message",
            "turn.completed",
            "run.completed"
        ]
    );
    assert_numbered_from_one(&live);
    let texts: Vec<&str> = live[..4].iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, LINES);
    assert_eq!(replayed, live);
    let state = stack.get_json(&format!("/api/runs/{run}")).await;
    assert_eq!(state["status"], "completed");
    assert_eq!(state["final_response"], "hi");
}
