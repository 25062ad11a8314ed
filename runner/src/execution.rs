//! Drives one run: spawns the CLI through the SDK, records what its events
//! say (Codex thread id, final response, usage, errors) and appends every
//! event to the run's log, then ends the log with the runner's own terminal
//! event: `run.completed`, `run.failed` or `run.cancelled`.

use std::sync::Arc;

use codex_sdk::{Codex, Error as SdkError, ItemDetails, ThreadEvent};
use futures_util::StreamExt;
use serde_json::json;
use tracing::Instrument;

use crate::registry::{Registry, Run, RunStatus, ThreadRecord};
use event_log::PushError;

/// Starts the run on its own task and returns at once.
pub fn spawn_run(
    codex: Codex,
    registry: Arc<Registry>,
    run: Arc<Run>,
    thread: ThreadRecord,
    prompt: String,
) {
    let span = tracing::info_span!(parent: None, "run", run_id = %run.id, thread_id = %thread.id);
    tokio::spawn(drive(codex, registry, run, thread, prompt).instrument(span));
}

async fn drive(
    codex: Codex,
    registry: Arc<Registry>,
    run: Arc<Run>,
    thread: ThreadRecord,
    prompt: String,
) {
    let sdk_thread = match &thread.codex_thread_id {
        Some(id) => codex.resume_thread(id.clone(), thread.options.clone()),
        None => codex.start_thread(thread.options.clone()),
    };
    tracing::info!(resume = thread.codex_thread_id.is_some(), "run started");
    let mut events = sdk_thread.run_streamed(prompt);
    run.attach_canceller(events.canceller());
    let mut overflowed = false;
    let mut outcome: Option<SdkError> = None;

    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                record(&run, &event);
                let data = event.to_value().to_string();
                if let Err(PushError::Full) = run.log.push(event.event_type(), data) {
                    overflowed = true;
                    events.cancel();
                }
            }
            Err(error) => outcome = Some(error),
        }
    }

    let status = match outcome {
        Some(SdkError::Cancelled) if overflowed => {
            run.set_error(format!(
                "the run emitted more than {} events (RUNNER_MAX_EVENTS_PER_RUN)",
                run.log.len()
            ));
            RunStatus::Failed
        }
        Some(SdkError::Cancelled) => RunStatus::Cancelled,
        Some(error) => {
            run.set_error(error_chain(&error));
            RunStatus::Failed
        }
        None if run.error().is_some() => RunStatus::Failed,
        None => RunStatus::Completed,
    };
    let codex_thread_id = sdk_thread.id();
    registry.end_run(&run, codex_thread_id);
    run.finish(status);
    let snapshot = run.snapshot();
    let (kind, data) = match status {
        RunStatus::Completed => (
            "run.completed",
            json!({"type": "run.completed", "runId": run.id,
                   "finalResponse": snapshot.final_response, "usage": snapshot.usage}),
        ),
        RunStatus::Cancelled => (
            "run.cancelled",
            json!({"type": "run.cancelled", "runId": run.id}),
        ),
        _ => (
            "run.failed",
            json!({"type": "run.failed", "runId": run.id, "error": snapshot.error}),
        ),
    };
    let _ = run.log.close_with(kind, data.to_string());
    tracing::info!(?status, events = run.log.len(), "run finished");
}

/// Takes what the runner reports about a run out of its events.
fn record(run: &Run, event: &ThreadEvent) {
    match event {
        ThreadEvent::ThreadStarted { thread_id } => run.set_codex_thread_id(thread_id.clone()),
        ThreadEvent::ItemCompleted { item } => {
            if let ItemDetails::AgentMessage { text } = &item.details {
                run.set_final_response(text.clone());
            }
        }
        ThreadEvent::TurnCompleted { usage } => run.set_usage(usage.clone()),
        ThreadEvent::TurnFailed { error } => run.set_error(error.message.clone()),
        ThreadEvent::Error { message } => run.set_error(message.clone()),
        _ => {}
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
