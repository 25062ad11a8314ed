//! A run through `codex exec --experimental-json` ([`Driver::Exec`](crate::Driver)):
//! one CLI process per run, the prompt written to its stdin, each line it
//! prints one event, its exit status checked at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::error::{Error, Result};
use crate::events::EventLine;
use crate::process::{
    markers, run_token, truncate, Containment, ProcessGroup, StderrTail, MAX_LINE_BYTES,
};

/// What an exec run needs to start.
pub(crate) struct ExecRun {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) input: String,
    pub(crate) containment: Arc<Containment>,
    pub(crate) exposed: Vec<PathBuf>,
}

/// Spawns the CLI on the first poll and streams its events; the last item
/// is an `Err` for a failed exit, a malformed line or a cancellation.
pub(crate) fn run(
    spawn: ExecRun,
    mut cancel: watch::Receiver<bool>,
) -> impl Stream<Item = Result<EventLine>> + Send {
    async_stream::stream! {
        // Marked only for an owner that asked for it: the CLI's command
        // line is otherwise exactly the TypeScript SDK's.
        let token = spawn.containment.owner.as_ref().map(|_| run_token());
        let markers = markers(&spawn.containment, token.as_deref());
        let mut command = match &spawn.containment.pid_namespace {
            Some(tools) => {
                let mut command = Command::new(&tools.setpriv);
                command.args(tools.launcher_args(
                    &spawn.program,
                    &spawn.containment.hidden,
                    &spawn.exposed,
                ));
                command
            }
            None => Command::new(&spawn.program),
        };
        command
            .args(with_markers(&spawn.args, &markers))
            .env_clear()
            .envs(&spawn.env)
            .envs(markers.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(source) => {
                yield Err(Error::Spawn { path: spawn.program.display().to_string(), source });
                return;
            }
        };
        let mut group = ProcessGroup::new(
            &child,
            token.filter(|_| spawn.containment.pid_namespace.is_none()),
        );
        tracing::debug!(pid = child.id(), "codex started");

        // The prompt goes in on its own task so that a large prompt cannot
        // dead-lock against a CLI that is already writing to stdout.
        if let Some(mut stdin) = child.stdin.take() {
            let input = spawn.input;
            tokio::spawn(async move {
                // A CLI that ends before it read the whole prompt closes
                // its stdin: the write fails, and the run's end (the exit
                // status and stderr) says why; this says it was early.
                let written = match stdin.write_all(input.as_bytes()).await {
                    Ok(()) => stdin.shutdown().await,
                    Err(error) => Err(error),
                };
                if let Err(error) = written {
                    tracing::debug!(%error, "the CLI did not take the whole prompt");
                }
            });
        }
        let stderr = child.stderr.take().map(StderrTail::follow);
        let Some(stdout) = child.stdout.take() else {
            group.terminate(&mut child).await;
            yield Err(Error::Io(std::io::Error::other("the CLI has no stdout")));
            return;
        };
        let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE_BYTES));

        loop {
            let line = tokio::select! {
                biased;
                _ = cancelled(&mut cancel) => {
                    group.terminate(&mut child).await;
                    yield Err(Error::Cancelled);
                    return;
                }
                line = lines.next() => line,
            };
            match line {
                None => break,
                Some(Ok(line)) => {
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    match EventLine::parse(line) {
                        Some(event) => yield Ok(event),
                        None => {
                            group.terminate(&mut child).await;
                            yield Err(Error::MalformedLine { line: truncate(line, 512) });
                            return;
                        }
                    }
                }
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    group.terminate(&mut child).await;
                    yield Err(Error::LineTooLong { limit: MAX_LINE_BYTES });
                    return;
                }
                Some(Err(LinesCodecError::Io(error))) => {
                    group.terminate(&mut child).await;
                    yield Err(Error::Io(error));
                    return;
                }
            }
        }

        let status = tokio::select! {
            biased;
            _ = cancelled(&mut cancel) => {
                group.terminate(&mut child).await;
                yield Err(Error::Cancelled);
                return;
            }
            status = child.wait() => status,
        };
        group.reap_leftovers();
        let tail = match stderr {
            Some(stderr) => stderr.finish().await,
            None => String::new(),
        };
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => yield Err(Error::exited(status, tail)),
            Err(error) => yield Err(Error::Io(error)),
        }
    }
}

/// The CLI's arguments with the markers also set in its agent's commands
/// (`shell_environment_policy.set`; `AGENT_ENV` lets them through).
/// They go right after the subcommand (`exec`), before any positional
/// argument.
fn with_markers(args: &[String], markers: &[(String, String)]) -> Vec<String> {
    if markers.is_empty() {
        return args.to_vec();
    }
    let mut out = Vec::with_capacity(args.len() + 2 * markers.len());
    let mut rest = args.iter();
    out.extend(rest.next().cloned());
    for (name, value) in markers {
        // A JSON string is a valid TOML basic string.
        let value = serde_json::Value::String(value.clone());
        out.push("--config".into());
        out.push(format!("shell_environment_policy.set.{name}={value}"));
    }
    out.extend(rest.cloned());
    out
}

/// Resolves once a cancel is requested (or every canceller is gone). The
/// watch guard is dropped inside so the stream stays `Send`.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    // `Err` is every canceller gone, which is a cancel too.
    cancel.wait_for(|cancelled| *cancelled).await.ok();
}
