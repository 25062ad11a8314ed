//! Events bounded in bytes: a command that prints megabytes makes an event
//! of at most `RUNNER_MAX_EVENT_BYTES`, still valid and of the same shape,
//! and a run whose events pass `RUNNER_MAX_RUN_BYTES` fails.

use scripted_model::Script;
use serde_json::json;
use test_support::SseEvent;

use crate::helpers::TestRunner;

const LOUD: &str = "head -c 3000000 /dev/zero | tr '\\0' a";

fn loud_script(commands: usize) -> Script {
    let mut steps: Vec<serde_json::Value> =
        (0..commands).map(|_| json!([{"exec": LOUD}])).collect();
    steps.push(json!([{"message": "shouted"}]));
    Script::from_json(&json!({"turns": [{"when": "shout", "steps": steps}]}).to_string()).unwrap()
}

fn data_bytes(event: &SseEvent) -> usize {
    event.data.to_string().len()
}

#[tokio::test]
async fn a_command_printing_megabytes_makes_an_event_cut_to_the_limit() {
    let runner = TestRunner::start_with(
        |_| loud_script(1),
        |config| config.limits.max_event_bytes = 16 * 1024,
    )
    .await;
    let thread = runner.repo_thread().await;

    let run = runner.start_run(&thread, "shout").await;
    let events = runner.events(&run).await;

    assert_eq!(events.last().unwrap().event, "run.completed");
    let command = events
        .iter()
        .find(|e| e.label() == "item.completed:command_execution")
        .unwrap();
    assert!(data_bytes(command) <= 16 * 1024, "{}", data_bytes(command));
    let item = &command.data["item"];
    assert_eq!(item["exit_code"], 0);
    assert_eq!(item["status"], "completed");
    let output = item["aggregated_output"].as_str().unwrap();
    assert!(
        output.contains(&"a".repeat(1000)),
        "{}",
        &output[..200.min(output.len())]
    );
    assert!(
        output.ends_with("bytes cut: RUNNER_MAX_EVENT_BYTES]"),
        "{}",
        &output[output.len().saturating_sub(80)..]
    );
    assert!(events.iter().all(|e| data_bytes(e) <= 16 * 1024));
}

#[tokio::test]
async fn a_run_whose_events_pass_the_byte_limit_fails() {
    const RUN_LIMIT: usize = 100 * 1024;
    let runner = TestRunner::start_with(
        |_| loud_script(10),
        |config| {
            config.limits.max_event_bytes = 32 * 1024;
            config.limits.max_run_bytes = RUN_LIMIT;
        },
    )
    .await;
    let thread = runner.repo_thread().await;

    let run = runner.start_run(&thread, "shout").await;
    let events = runner.events(&run).await;

    let (terminal, rest) = events.split_last().unwrap();
    assert_eq!(terminal.event, "run.failed");
    let error = terminal.data["error"].as_str().unwrap();
    assert!(error.contains("RUNNER_MAX_RUN_BYTES"), "{error}");
    let total: usize = rest.iter().map(data_bytes).sum();
    assert!(total <= RUN_LIMIT, "{total}");
    let commands = rest
        .iter()
        .filter(|e| e.label() == "item.completed:command_execution")
        .count();
    assert!((1..10).contains(&commands), "{commands}");
    let state = runner.get_json(&format!("/runs/{run}")).await;
    assert_eq!(state["status"], "failed");
    assert_eq!(state["error"], error);
    let next = runner.start_run(&thread, "hello").await;
    assert_eq!(
        runner.events(&next).await.last().unwrap().event,
        "run.completed"
    );
}
