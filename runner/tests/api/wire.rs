//! The runner's answers read as `runner-protocol`'s types, the ones the
//! backend's client reads them with: the contract is one set of types, and
//! the real runner keeps to it.

use runner_protocol::{RunSnapshot, RunStatus, Terminal, ThreadView};

use crate::helpers::TestRunner;

#[tokio::test]
async fn a_threads_run_reads_back_as_the_protocols_types() {
    let runner = TestRunner::start().await;
    let thread = runner.repo_thread().await;
    let run = runner.start_run(&thread, "Please create a file").await;

    let events = runner.events(&run).await;
    let view: ThreadView =
        serde_json::from_value(runner.get_json(&format!("/threads/{thread}")).await).unwrap();
    let snapshot: RunSnapshot =
        serde_json::from_value(runner.get_json(&format!("/runs/{run}")).await).unwrap();

    let last = events.last().unwrap();
    let terminal: Terminal = serde_json::from_str(&last.text).unwrap();
    assert_eq!(last.event, terminal.kind().as_str());
    assert_eq!(
        terminal,
        Terminal::Completed {
            run_id: snapshot.run_id,
            final_response: Some("Created hello.txt".into()),
            usage: snapshot.usage.clone(),
            files: None,
        }
    );
    assert_eq!(snapshot.run_id.to_string(), run);
    assert_eq!(snapshot.thread_id, view.thread_id);
    assert_eq!(snapshot.status, RunStatus::Completed);
    assert_eq!(
        snapshot.final_response.as_deref(),
        Some("Created hello.txt")
    );
    assert_eq!(snapshot.event_count, events.len());
    assert!(snapshot.usage.is_some());
    assert_eq!(view.thread_id.to_string(), thread);
    assert_eq!(view.active_run_id, None);
    assert_eq!(view.codex_thread_id, snapshot.codex_thread_id);
    assert!(view.codex_thread_id.is_some());
    assert_eq!(
        view.working_directory.as_deref(),
        Some(runner.repo.as_path())
    );
}
