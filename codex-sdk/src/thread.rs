//! `Codex` and `Thread`: the SDK's thread model. A thread is a conversation
//! with the agent; each `run` sends one prompt to `codex exec` (resuming the
//! thread's Codex session after the first) and streams its events.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStderr, Command};
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::app_server::AppServerOptions;
use crate::app_server_run::{self, RunControl};
use crate::error::{Error, Result};
use crate::events::{EventLine, ItemDetails, ThreadEvent, ThreadItem, Usage};
use crate::options::{
    app_server_config, app_server_thread_params, command_args, CodexOptions, Driver, ThreadOptions,
};
use crate::process::{run_token, Containment, ProcessGroup, OWNER_MARKER, RUN_MARKER};

/// The longest JSONL line accepted from the CLI (a command's whole output can
/// be in one line).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// How much of the CLI's stderr is kept for the error of a failed exit.
pub const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// Variables passed on to the CLI when `CodexOptions::env` is unset.
const INHERITED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
    "TERM",
];

/// Identifies this SDK to the CLI, as the TypeScript SDK does with its own.
const ORIGINATOR: &str = "codex_sdk_rs";

/// The entry point: holds how to reach the CLI.
#[derive(Debug, Clone)]
pub struct Codex {
    options: Arc<CodexOptions>,
    containment: Arc<Containment>,
}

impl Codex {
    pub fn new(options: CodexOptions) -> Self {
        Self {
            options: Arc::new(options),
            containment: Arc::new(Containment::default()),
        }
    }

    /// Holds every run's processes as `containment` says.
    pub fn with_containment(mut self, containment: Containment) -> Self {
        self.containment = Arc::new(containment);
        self
    }

    /// A new thread; its id is known once its first run reports `thread.started`.
    pub fn start_thread(&self, options: ThreadOptions) -> Thread {
        Thread {
            codex: self.options.clone(),
            containment: self.containment.clone(),
            options,
            id: Arc::new(Mutex::new(None)),
        }
    }

    /// A thread bound to an existing Codex session, by its id.
    pub fn resume_thread(&self, id: impl Into<String>, options: ThreadOptions) -> Thread {
        Thread {
            codex: self.options.clone(),
            containment: self.containment.clone(),
            options,
            id: Arc::new(Mutex::new(Some(id.into()))),
        }
    }
}

/// A conversation with the agent. Runs of one thread must not overlap.
#[derive(Debug, Clone)]
pub struct Thread {
    codex: Arc<CodexOptions>,
    containment: Arc<Containment>,
    options: ThreadOptions,
    id: Arc<Mutex<Option<String>>>,
}

/// The result of a completed turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Every item that completed during the turn, in order.
    pub items: Vec<ThreadItem>,
    /// The text of the last agent message, or empty.
    pub final_response: String,
    pub usage: Option<Usage>,
}

impl Thread {
    /// The Codex thread id, once the CLI has reported it.
    pub fn id(&self) -> Option<String> {
        self.id.lock().ok().and_then(|id| id.clone())
    }

    pub fn options(&self) -> &ThreadOptions {
        &self.options
    }

    /// Starts a run and streams its events. The CLI is spawned on the first
    /// poll. Dropping the stream ends the CLI and its process group.
    pub fn run_streamed(&self, input: impl Into<String>) -> RunStream {
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let program = self
            .codex
            .codex_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("codex"));
        let (events, control): (Pin<Box<dyn Stream<Item = Result<EventLine>> + Send>>, _) =
            match self.codex.driver {
                Driver::Exec => {
                    let spawn = Spawn {
                        program,
                        args: command_args(&self.codex, &self.options, self.id().as_deref()),
                        env: child_env(&self.codex, &self.options),
                        input: input.into(),
                        containment: self.containment.clone(),
                        exposed: self.options.exposed.clone(),
                    };
                    (
                        Box::pin(run_process(spawn, cancel_rx)),
                        RunControl::unsupported(),
                    )
                }
                Driver::AppServer => {
                    let (control, commands) = app_server_run::control_channel();
                    let token = self.containment.owner.as_ref().map(|_| run_token());
                    let mut env = child_env(&self.codex, &self.options);
                    let mut config = app_server_config(&self.codex, &self.options);
                    let markers: Vec<(String, String)> = match (&self.containment.owner, &token) {
                        (Some(owner), Some(token)) => vec![
                            (OWNER_MARKER.to_owned(), owner.clone()),
                            (RUN_MARKER.to_owned(), token.clone()),
                        ],
                        _ => Vec::new(),
                    };
                    for (name, value) in markers {
                        // A JSON string is a valid TOML basic string.
                        config.push((
                            format!("shell_environment_policy.set.{name}"),
                            serde_json::Value::String(value.clone()).to_string(),
                        ));
                        env.insert(name, value);
                    }
                    let run = app_server_run::AppServerRun {
                        options: AppServerOptions {
                            codex_path: program,
                            env,
                            config_overrides: config,
                            client_name: ORIGINATOR.into(),
                            client_version: env!("CARGO_PKG_VERSION").into(),
                            containment: self.containment.clone(),
                            exposed: self.options.exposed.clone(),
                            run_token: token.filter(|_| self.containment.pid_namespace.is_none()),
                        },
                        thread_params: app_server_thread_params(&self.options),
                        resume: self.id(),
                        input: input.into(),
                        refuse_approvals: (!self.options.approvals_run_unsandboxed
                            && self.options.sandbox_mode
                                != Some(crate::SandboxMode::DangerFullAccess))
                        .then_some(app_server_run::APPROVALS_REFUSED),
                    };
                    (
                        Box::pin(app_server_run::run(run, cancel_rx, commands)),
                        control,
                    )
                }
            };
        let id_slot = self.id.clone();
        let events = events.map(move |event| {
            if let Ok(ThreadEvent::ThreadStarted { thread_id }) =
                event.as_ref().map(EventLine::event)
            {
                if let Ok(mut slot) = id_slot.lock() {
                    *slot = Some(thread_id.clone());
                }
            }
            event
        });
        RunStream {
            events: Box::pin(events),
            cancel: Canceller(Arc::new(cancel_tx)),
            control,
        }
    }

    /// Runs a prompt to the end and returns the completed turn.
    pub async fn run(&self, input: impl Into<String>) -> Result<Turn> {
        let mut stream = self.run_streamed(input);
        let mut turn = Turn {
            items: Vec::new(),
            final_response: String::new(),
            usage: None,
        };
        while let Some(event) = stream.next().await {
            match event?.into_parts().0 {
                ThreadEvent::ItemCompleted { item } => {
                    if let ItemDetails::AgentMessage { text } = &item.details {
                        turn.final_response = text.clone();
                    }
                    turn.items.push(item);
                }
                ThreadEvent::TurnCompleted { usage } => turn.usage = Some(usage),
                ThreadEvent::TurnFailed { error } => {
                    return Err(Error::TurnFailed {
                        message: error.message,
                    })
                }
                _ => {}
            }
        }
        Ok(turn)
    }
}

/// The events of one run, each with the CLI's line verbatim. Ends after the
/// CLI exits; a failed exit, a malformed line or a cancellation is its last
/// item, as an `Err`.
pub struct RunStream {
    events: Pin<Box<dyn Stream<Item = Result<EventLine>> + Send>>,
    cancel: Canceller,
    control: RunControl,
}

impl RunStream {
    /// A handle that approves, steers and interrupts this run (app-server
    /// driver; with exec each says [`ControlError::Unsupported`](crate::ControlError)).
    pub fn control(&self) -> RunControl {
        self.control.clone()
    }

    /// A handle that cancels this run from elsewhere.
    pub fn canceller(&self) -> Canceller {
        self.cancel.clone()
    }

    /// Asks the run to stop. The stream then ends with `Err(Cancelled)` once
    /// the CLI and its process group are gone.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl Stream for RunStream {
    type Item = Result<EventLine>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.as_mut().poll_next(cx)
    }
}

/// Cancels a run; cheap to clone, harmless after the run ended.
#[derive(Debug, Clone)]
pub struct Canceller(Arc<watch::Sender<bool>>);

impl Canceller {
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

struct Spawn {
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    input: String,
    containment: Arc<Containment>,
    exposed: Vec<PathBuf>,
}

fn child_env(codex: &CodexOptions, thread: &ThreadOptions) -> BTreeMap<String, String> {
    let mut env = match &codex.env {
        Some(env) => env.clone(),
        None => INHERITED_ENV
            .iter()
            .filter_map(|key| std::env::var(key).ok().map(|v| ((*key).to_owned(), v)))
            .collect(),
    };
    env.entry("CODEX_INTERNAL_ORIGINATOR_OVERRIDE".into())
        .or_insert_with(|| ORIGINATOR.into());
    if let Some(key) = &codex.api_key {
        env.insert("CODEX_API_KEY".into(), key.expose().to_owned());
    }
    if let Some(home) = &thread.codex_home {
        env.insert("CODEX_HOME".into(), home.display().to_string());
    }
    // The CLI runs git in the workspace itself, outside its sandbox (its
    // status and diffs): no global or system git configuration reaches
    // those calls, so nothing written into the runner user's `~/.gitconfig`
    // (a filter, `core.fsmonitor`, an `includeIf`) runs in another
    // session's workspace. Agents' commands do not inherit these.
    env.insert("GIT_CONFIG_GLOBAL".into(), "/dev/null".into());
    env.insert("GIT_CONFIG_NOSYSTEM".into(), "1".into());
    env
}

fn run_process(
    spawn: Spawn,
    mut cancel: watch::Receiver<bool>,
) -> impl Stream<Item = Result<EventLine>> + Send {
    async_stream::stream! {
        // Marked only for an owner that asked for it: the CLI's command
        // line is otherwise exactly the TypeScript SDK's.
        let token = spawn.containment.owner.as_ref().map(|_| run_token());
        let markers: Vec<(String, String)> = match (&spawn.containment.owner, &token) {
            (Some(owner), Some(token)) => vec![
                (OWNER_MARKER.to_owned(), owner.clone()),
                (RUN_MARKER.to_owned(), token.clone()),
            ],
            _ => Vec::new(),
        };
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
                let _ = stdin.write_all(input.as_bytes()).await;
                let _ = stdin.shutdown().await;
            });
        }
        let stderr = child.stderr.take().map(|err| tokio::spawn(stderr_tail(err)));
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
            Some(task) => task.await.unwrap_or_default(),
            None => String::new(),
        };
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => yield Err(Error::Exited { status: status.to_string(), stderr_tail: tail }),
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
    let _ = cancel.wait_for(|cancelled| *cancelled).await;
}

/// Reads stderr to the end, keeping its last [`STDERR_TAIL_BYTES`].
async fn stderr_tail(mut stderr: ChildStderr) -> String {
    let mut tail: VecDeque<u8> = VecDeque::with_capacity(STDERR_TAIL_BYTES);
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend(&buf[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                tail.drain(..excess);
            }
        }
    }
    String::from_utf8_lossy(tail.make_contiguous())
        .trim()
        .to_owned()
}

/// `text` cut to at most `max` bytes (on a character boundary), with `…`.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
