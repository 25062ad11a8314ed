//! `Codex` and `Thread`: the SDK's thread model. A thread is a conversation
//! with the agent; each `run` sends one prompt to the CLI (resuming the
//! thread's Codex session after the first) and streams its events, through
//! the driver the client chose: `exec_run` or `app_server_run`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use crate::app_server::AppServerOptions;
use crate::app_server_run::{self, RunControl};
use crate::error::{Error, Result};
use crate::events::{EventLine, ItemDetails, ThreadEvent, ThreadItem, Usage};
use crate::exec_run::{self, ExecRun};
use crate::options::{
    app_server_config, app_server_thread_params, command_args, CodexOptions, Driver, SandboxMode,
    ThreadOptions,
};
use crate::process::{markers, run_token, Containment};

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
                    let spawn = ExecRun {
                        program,
                        args: command_args(&self.codex, &self.options, self.id().as_deref()),
                        env: child_env(&self.codex, &self.options),
                        input: input.into(),
                        containment: self.containment.clone(),
                        exposed: self.options.exposed.clone(),
                    };
                    (
                        Box::pin(exec_run::run(spawn, cancel_rx)),
                        RunControl::unsupported(),
                    )
                }
                Driver::AppServer => {
                    let (control, commands) = app_server_run::control_channel();
                    let token = self.containment.owner.as_ref().map(|_| run_token());
                    let mut env = child_env(&self.codex, &self.options);
                    let mut config = app_server_config(&self.codex, &self.options);
                    for (name, value) in markers(&self.containment, token.as_deref()) {
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
                            && self.options.sandbox_mode != Some(SandboxMode::DangerFullAccess))
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
