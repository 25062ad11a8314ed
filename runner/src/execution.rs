//! Drives one run: spawns the CLI through the SDK, records what its events
//! say (Codex thread id, final response, usage, errors) and appends every
//! event to the run's log, then ends the log with the runner's own terminal
//! event: `run.completed`, `run.failed` or `run.cancelled`.
//!
//! Each event goes into the log as the CLI printed it, fields the SDK does not
//! model included; only one larger than `RUNNER_MAX_EVENT_BYTES` is
//! re-serialised, cut down (see `event_size`). A run that goes past
//! `RUNNER_MAX_EVENTS_PER_RUN` events or `RUNNER_MAX_RUN_BYTES` bytes is
//! cancelled and fails, saying which.

use std::sync::Arc;

use codex_sdk::{Codex, Error as SdkError, ItemDetails, ThreadEvent};
use futures_util::StreamExt;
use runner_protocol::Terminal;
use tracing::Instrument;

use crate::event_size;
use crate::registry::{Registry, Run, RunStatus, ThreadRecord};
use event_log::PushError;

/// Starts the run on its own task and returns at once.
pub(crate) fn spawn_run(
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
    run.attach_control(events.control());
    let limits = registry.limits().clone();
    let mut overflow: Option<String> = None;
    let mut outcome: Option<SdkError> = None;

    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let (event, line) = event.into_parts();
                record(&run, &event, &thread.options, limits.max_event_bytes);
                let data = event_size::fit_line(line, limits.max_event_bytes);
                let reason = match run.log.push(event.event_type(), data) {
                    Err(PushError::Full) => format!(
                        "the run emitted more than {} events (RUNNER_MAX_EVENTS_PER_RUN)",
                        run.log.len()
                    ),
                    Err(PushError::TooManyBytes) => format!(
                        "the run's events took more than {} bytes (RUNNER_MAX_RUN_BYTES)",
                        limits.max_run_bytes
                    ),
                    _ => continue,
                };
                if overflow.is_none() {
                    tracing::warn!(%reason, "run stopped at its limit");
                    overflow = Some(reason);
                    events.cancel();
                }
            }
            Err(error) => outcome = Some(error),
        }
    }

    let status = match outcome {
        Some(SdkError::Cancelled) if overflow.is_some() => {
            if let Some(reason) = overflow {
                run.set_error(reason);
            }
            RunStatus::Failed
        }
        Some(SdkError::Cancelled) => RunStatus::Cancelled,
        Some(error) => {
            run.set_error(event_size::clip(
                without_server_paths(&error_chain(&error), &thread.options),
                limits.max_event_bytes / 2,
            ));
            RunStatus::Failed
        }
        None if run.error().is_some() => RunStatus::Failed,
        None => RunStatus::Completed,
    };
    let codex_thread_id = sdk_thread.id();
    registry.end_run(&run, codex_thread_id);
    run.finish(status);
    let snapshot = run.snapshot();
    let terminal = match status {
        RunStatus::Completed => Terminal::Completed {
            run_id: run.id,
            final_response: snapshot.final_response,
            usage: snapshot.usage,
            files: None,
        },
        RunStatus::Cancelled => Terminal::Cancelled {
            run_id: run.id,
            files: None,
        },
        // `status` is an end here; `Running` cannot occur.
        RunStatus::Failed | RunStatus::Running => Terminal::Failed {
            run_id: run.id,
            error: snapshot.error,
            files: None,
        },
    };
    if let Err(error) = run.log.close_with(terminal.kind(), terminal.payload()) {
        // Only this task closes the log, once; a refusal would be a bug,
        // and the run's state above already says how it ended.
        tracing::error!(?error, "the run's log refused its terminal event");
    }
    tracing::info!(?status, events = run.log.len(), "run finished");
}

/// Takes what the runner reports about a run out of its events. The texts
/// go into the terminal event, so each keeps within half an event.
fn record(
    run: &Run,
    event: &ThreadEvent,
    options: &codex_sdk::ThreadOptions,
    max_event_bytes: usize,
) {
    let clip = |text: &String| event_size::clip(text.clone(), max_event_bytes / 2);
    let error = |text: &String| clip(&without_server_paths(text, options));
    match event {
        ThreadEvent::ThreadStarted { thread_id } => run.set_codex_thread_id(thread_id.clone()),
        ThreadEvent::ItemCompleted { item } => {
            if let ItemDetails::AgentMessage { text } = &item.details {
                run.set_final_response(clip(text));
            }
        }
        ThreadEvent::TurnCompleted { usage } => run.set_usage(usage.clone()),
        ThreadEvent::TurnFailed { error: failed } => run.set_error(error(&failed.message)),
        ThreadEvent::Error { message } => run.set_error(error(message)),
        _ => {}
    }
}

/// `text` (the CLI's failure and its stderr tail, which users read in
/// `run.failed`) with the server's folders of this thread named by their
/// role instead: the workspace, its `CODEX_HOME`, its temp folder, and the
/// roots they live under. An agent's own output keeps its paths; the
/// runner's words about a run do not show where the server keeps things.
fn without_server_paths(text: &str, options: &codex_sdk::ThreadOptions) -> String {
    let mut named: Vec<(String, &str)> = Vec::new();
    let mut name = |path: Option<&std::path::Path>, label: &'static str| {
        if let Some(path) = path.map(|p| p.display().to_string()) {
            if path.len() > 1 {
                named.push((path, label));
            }
        }
    };
    name(options.working_directory.as_deref(), "<workspace>");
    name(options.codex_home.as_deref(), "<codex home>");
    name(options.private_tmp.as_deref(), "<tmp>");
    for folder in &options.exposed {
        name(Some(folder), "<session folder>");
        name(folder.parent(), "<server folder>");
    }
    // The longest first, so that a folder inside another keeps its own name.
    named.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    named.iter().fold(text.to_owned(), |text, (path, label)| {
        text.replace(path.as_str(), label)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_servers_folders_by_their_role() {
        let options = codex_sdk::ThreadOptions {
            working_directory: Some("/srv/ws/s1/repo".into()),
            codex_home: Some("/srv/homes/k1/codex-home".into()),
            private_tmp: Some("/srv/homes/k1/tmp".into()),
            exposed: vec!["/srv/ws/s1".into(), "/srv/homes/k1".into()],
            ..Default::default()
        };
        let said = "codex exited: cannot write /srv/homes/k1/codex-home/x (codex_home: \
            /srv/homes/k1/codex-home); cwd /srv/ws/s1/repo/src, tmp /srv/homes/k1/tmp, \
            other /srv/ws/s2/repo, homes /srv/homes/k2";

        assert_eq!(
            without_server_paths(said, &options),
            "codex exited: cannot write <codex home>/x (codex_home: <codex home>); \
             cwd <workspace>/src, tmp <tmp>, other <server folder>/s2/repo, \
             homes <server folder>/k2"
        );
    }
}
