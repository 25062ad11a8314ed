//! The CLI's events leave the runner as the CLI printed them: a field the
//! SDK does not model reaches a subscriber unchanged.
//!
//! The real CLI (0.169) prints no field the SDK does not model for anything
//! the scripted model can make it do, so a fake CLI stands in here.

use std::path::Path;

use serde_json::json;
use test_support::{assert_numbered_from_one, fake_codex, labels};

use crate::helpers::{script, TestRunner};

/// Known event and item types, each with fields a newer CLI might add, keys
/// in an order serde would not write them and a number it would rewrite.
const LINES: [&str; 4] = [
    r#"{"type":"thread.started","thread_id":"fake-thread","zz_added":{"b":[1,2],"a":null}}"#,
    r#"{"type":"turn.started","model":"gpt-next"}"#,
    r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"hi","annotations":[{"kind":"cite"}]},"extra":1.50}"#,
    r#"{"type":"turn.completed","usage":{"input_tokens":3,"cached_input_tokens":0,"output_tokens":1,"new_tokens":7}}"#,
];

fn fake_path(root: &Path) -> std::path::PathBuf {
    root.with_file_name("fake-codex")
}

#[tokio::test]
async fn a_field_the_sdk_does_not_model_reaches_the_subscriber_unchanged() {
    let runner = TestRunner::start_with(
        |dir| {
            fake_codex(&fake_path(&dir.join("workspaces")), &LINES);
            script()
        },
        |config| config.codex_bin = Some(fake_path(&config.workspaces_root)),
    )
    .await;
    let thread = runner.repo_thread().await;

    let run = runner.start_run(&thread, "hello").await;
    let events = runner.events(&run).await;

    assert_eq!(
        labels(&events),
        [
            "thread.started",
            "turn.started",
            "item.completed:agent_message",
            "turn.completed",
            "run.completed"
        ]
    );
    assert_numbered_from_one(&events);
    let texts: Vec<&str> = events[..4].iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, LINES);
    // What the runner reads from the events is still read.
    assert_eq!(
        events[4].data,
        json!({"type": "run.completed", "runId": run, "finalResponse": "hi",
               "usage": {"input_tokens": 3, "cached_input_tokens": 0, "output_tokens": 1}})
    );
    let state = runner.get_json(&format!("/runs/{run}")).await;
    assert_eq!(state["codexThreadId"], "fake-thread");
}
