//! A client of `codex app-server`: JSON-RPC 2.0 over the CLI's stdio, one
//! JSON object per line (the CLI leaves out the `"jsonrpc"` member), as
//! `codex app-server generate-json-schema` writes the protocol out.
//!
//! [`AppServer::spawn`] starts the server and does the handshake
//! (`initialize`, then the `initialized` notification). After that the
//! client sends requests ([`AppServer::request`], each answer matched to
//! its request by id), notifications ([`AppServer::notify`]) and answers to
//! the server's own requests ([`AppServer::respond`]); what the server sends
//! on its own (notifications such as `item/agentMessage/delta`, requests
//! such as `item/commandExecution/requestApproval`) arrives, in order, on
//! the [`Incoming`] receiver `spawn` returns.
//!
//! A server that exits, prints a line that is not a JSON-RPC message, or a
//! line longer than [`MAX_LINE_BYTES`](crate::MAX_LINE_BYTES) ends the
//! session: every waiting request and the incoming stream get the same
//! [`AppServerError`], with the tail of the server's stderr. The server is
//! killed when the [`AppServer`] is dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::process::{truncate, Containment, ProcessGroup, StderrTail, MAX_LINE_BYTES};

/// Messages from the server not yet taken by the caller. When the caller
/// falls this far behind, the client stops reading the server's stdout,
/// and the server waits.
pub const INCOMING_CAPACITY: usize = 1024;

/// How to start the server.
#[derive(Debug, Clone, Default)]
pub struct AppServerOptions {
    /// The `codex` executable.
    pub codex_path: PathBuf,
    /// The server's whole environment (nothing else of the caller's is
    /// passed), `CODEX_HOME` and the API key included.
    pub env: BTreeMap<String, String>,
    /// `--config key=value` pairs, each value TOML.
    pub config_overrides: Vec<(String, String)>,
    /// The client's name and version, sent with `initialize`.
    pub client_name: String,
    pub client_version: String,
    /// How the server's processes are held: with a PID namespace, the
    /// server is its first process, and `exposed` are the folders it sees
    /// of [`Containment::hidden`].
    pub containment: Arc<Containment>,
    pub exposed: Vec<PathBuf>,
    /// Without a PID namespace: the run's marker, which the server's
    /// processes carry; whatever still carries it is killed at the end.
    pub run_token: Option<String>,
}

/// The id of a JSON-RPC request: the client's are numbers; the server's
/// may be either.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Number(i64),
    String(String),
}

/// What the server sends on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Notification {
        method: String,
        params: Value,
    },
    /// A request the caller must answer with [`AppServer::respond`] (an
    /// approval, say); the server waits for it.
    Request {
        id: RequestId,
        method: String,
        params: Value,
    },
}

/// Why a request failed or the session ended.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppServerError {
    #[error("failed to start codex app-server at {path}: {message}")]
    Spawn { path: String, message: String },
    #[error("codex app-server exited ({status}): {stderr_tail}")]
    Exited {
        /// The exit code; `None` when a signal ended the server or its
        /// status could not be read.
        code: Option<i32>,
        /// How it ended, in words (`exit status: 3`, `signal: 9 (SIGKILL)`).
        status: String,
        stderr_tail: String,
    },
    #[error("codex app-server printed a line that is not a JSON-RPC message: {line} (stderr: {stderr_tail})")]
    Malformed { line: String, stderr_tail: String },
    #[error("codex app-server printed a line longer than {limit} bytes (stderr: {stderr_tail})")]
    LineTooLong { limit: usize, stderr_tail: String },
    #[error("cannot talk to codex app-server: {message}")]
    Io { message: String },
    /// The server answered the request with an error.
    #[error("{method} failed ({code}): {message}")]
    Rpc {
        method: String,
        code: i64,
        message: String,
        data: Option<Value>,
    },
    /// The server's answer is not what the caller expected.
    #[error("the answer to {method} is not of the expected shape: {message}")]
    Decode { method: String, message: String },
}

impl AppServerError {
    /// The server's stderr tail, for the errors that end the session.
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            Self::Exited { stderr_tail, .. }
            | Self::Malformed { stderr_tail, .. }
            | Self::LineTooLong { stderr_tail, .. } => Some(stderr_tail),
            _ => None,
        }
    }
}

type Answer = Result<Value, AppServerError>;

/// Requests waiting for their answer, and why the session ended once it has.
#[derive(Default)]
struct Pending {
    waiting: HashMap<i64, (String, oneshot::Sender<Answer>)>,
    ended: Option<AppServerError>,
}

impl Pending {
    fn end(&mut self, error: &AppServerError) {
        self.ended.get_or_insert_with(|| error.clone());
        for (_, (_, answer)) in self.waiting.drain() {
            // A caller that stopped waiting needs no answer.
            let _gone = answer.send(Err(error.clone()));
        }
    }
}

/// A running `codex app-server`.
pub struct AppServer {
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicI64,
    /// Sent (or dropped with the client): the reader then ends the server.
    kill: Option<oneshot::Sender<()>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    initialize: Value,
    pid: Option<u32>,
}

impl std::fmt::Debug for AppServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppServer").finish_non_exhaustive()
    }
}

/// The receiver of what the server sends on its own; its last item is the
/// error that ended the session.
pub type Incomings = mpsc::Receiver<Result<Incoming, AppServerError>>;

impl AppServer {
    /// Starts the server and does the `initialize` handshake.
    pub async fn spawn(options: AppServerOptions) -> Result<(Self, Incomings), AppServerError> {
        let mut command = match &options.containment.pid_namespace {
            Some(tools) => {
                let mut command = Command::new(&tools.setpriv);
                command.args(tools.launcher_args(
                    &options.codex_path,
                    &options.containment.hidden,
                    &options.exposed,
                ));
                command
            }
            None => Command::new(&options.codex_path),
        };
        command.arg("app-server");
        for (key, value) in &options.config_overrides {
            command.arg("--config").arg(format!("{key}={value}"));
        }
        let mut child = command
            .env_clear()
            .envs(&options.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AppServerError::Spawn {
                path: options.codex_path.display().to_string(),
                message: e.to_string(),
            })?;
        let io_missing = || AppServerError::Io {
            message: "the server's stdio is not piped".into(),
        };
        let stdin = child.stdin.take().ok_or_else(io_missing)?;
        let stdout = child.stdout.take().ok_or_else(io_missing)?;
        let stderr = StderrTail::follow(child.stderr.take().ok_or_else(io_missing)?);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_CAPACITY);
        let (kill, killed) = oneshot::channel();
        let pid = child.id();
        let group = ProcessGroup::new(&child, options.run_token.clone());
        let reader = tokio::spawn(read(
            child,
            group,
            stdout,
            stderr,
            pending.clone(),
            incoming_tx,
            killed,
        ));
        let mut server = Self {
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            next_id: AtomicI64::new(1),
            kill: Some(kill),
            reader: Some(reader),
            initialize: Value::Null,
            pid,
        };
        server.initialize = server
            .request(
                "initialize",
                json!({"clientInfo": {"name": options.client_name, "version": options.client_version}}),
            )
            .await?;
        server.notify("initialized", Value::Null).await?;
        Ok((server, incoming))
    }

    /// Ends the server and everything it started (`SIGTERM`, a grace,
    /// `SIGKILL` to its group and descendants), and returns once it is
    /// gone. Dropping the client does the same without waiting.
    pub async fn shutdown(mut self) {
        if let Some(kill) = self.kill.take() {
            // A reader that already ended has nothing left to stop.
            let _ended = kill.send(());
        }
        if let Some(reader) = self.reader.take() {
            if let Err(error) = reader.await {
                tracing::warn!(%error, "the app-server reader failed");
            }
        }
    }

    /// The process the client started (the server, or the launcher of its
    /// PID namespace).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The server's answer to `initialize` (`userAgent`, `codexHome`...).
    pub fn initialize_response(&self) -> &Value {
        &self.initialize
    }

    /// Sends a request and waits for its answer.
    pub async fn request<R: DeserializeOwned>(
        &self,
        method: &str,
        params: impl Serialize,
    ) -> Result<R, AppServerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(ended) = &pending.ended {
                return Err(ended.clone());
            }
            pending.waiting.insert(id, (method.to_owned(), answer));
        }
        let sent = self
            .write(&json!({"id": id, "method": method, "params": params}))
            .await;
        if let Err(error) = sent {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .waiting
                .remove(&id);
            return Err(error);
        }
        let value = answered.await.map_err(|_| AppServerError::Io {
            message: "the server's reader stopped".into(),
        })??;
        serde_json::from_value(value).map_err(|e| AppServerError::Decode {
            method: method.to_owned(),
            message: e.to_string(),
        })
    }

    /// Sends a notification (no answer).
    pub async fn notify(&self, method: &str, params: Value) -> Result<(), AppServerError> {
        let message = if params.is_null() {
            json!({"method": method})
        } else {
            json!({"method": method, "params": params})
        };
        self.write(&message).await
    }

    /// Answers a request of the server.
    pub async fn respond(
        &self,
        id: &RequestId,
        result: impl Serialize,
    ) -> Result<(), AppServerError> {
        self.write(&json!({"id": id, "result": result})).await
    }

    /// Answers a request of the server with an error.
    pub async fn respond_error(
        &self,
        id: &RequestId,
        code: i64,
        message: &str,
    ) -> Result<(), AppServerError> {
        self.write(&json!({"id": id, "error": {"code": code, "message": message}}))
            .await
    }

    async fn write(&self, message: &Value) -> Result<(), AppServerError> {
        let mut line = message.to_string();
        line.push('\n');
        let mut stdin = self.stdin.lock().await;
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        }
        .await;
        written.map_err(|e| {
            let ended = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ended
                .clone();
            ended.unwrap_or(AppServerError::Io {
                message: e.to_string(),
            })
        })
    }
}

/// Reads the server's stdout until it ends, fails, or the client is
/// dropped; then ends the session with the reason.
async fn read(
    mut child: Child,
    mut group: ProcessGroup,
    stdout: tokio::process::ChildStdout,
    stderr: StderrTail,
    pending: Arc<Mutex<Pending>>,
    incoming: mpsc::Sender<Result<Incoming, AppServerError>>,
    mut killed: oneshot::Receiver<()>,
) {
    let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    let failure = loop {
        let line = tokio::select! {
            // The client is gone: nothing reads the answers any more.
            _ = &mut killed => {
                group.terminate(&mut child).await;
                return;
            }
            line = lines.next() => line,
        };
        let line = match line {
            None => break None,
            Some(Ok(line)) => line,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                break Some(AppServerError::LineTooLong {
                    limit: MAX_LINE_BYTES,
                    stderr_tail: String::new(),
                })
            }
            Some(Err(LinesCodecError::Io(e))) => {
                break Some(AppServerError::Io {
                    message: e.to_string(),
                })
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match Message::parse(&line) {
            Some(Message::Answer { id, answer }) => {
                let waiting = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .waiting
                    .remove(&id);
                match waiting {
                    Some((method, tx)) => {
                        let answer = answer.map_err(|error| match error {
                            AppServerError::Rpc {
                                code,
                                message,
                                data,
                                ..
                            } => AppServerError::Rpc {
                                method,
                                code,
                                message,
                                data,
                            },
                            other => other,
                        });
                        // A caller that stopped waiting needs no answer.
                        let _gone = tx.send(answer);
                    }
                    None => tracing::debug!(id, "an answer to no request"),
                }
            }
            Some(Message::Incoming(message)) => {
                // A caller that dropped the receiver takes no more; the
                // answers to its requests still come.
                let _gone = incoming.send(Ok(message)).await;
            }
            None => {
                break Some(AppServerError::Malformed {
                    line: truncate(&line, 512),
                    stderr_tail: String::new(),
                })
            }
        }
    };
    // Whatever ended the reading, the server goes, and the error says how
    // it ended, with what it last wrote to stderr.
    if failure.is_some() {
        group.terminate(&mut child).await;
    }
    let (code, status) = match child.wait().await {
        Ok(status) => (status.code(), status.to_string()),
        Err(e) => (None, format!("unknown status: {e}")),
    };
    group.reap_leftovers();
    let stderr_tail = stderr.finish().await;
    let error = match failure {
        None => AppServerError::Exited {
            code,
            status,
            stderr_tail,
        },
        Some(AppServerError::Malformed { line, .. }) => {
            AppServerError::Malformed { line, stderr_tail }
        }
        Some(AppServerError::LineTooLong { limit, .. }) => {
            AppServerError::LineTooLong { limit, stderr_tail }
        }
        Some(other) => other,
    };
    tracing::debug!(%error, "codex app-server session ended");
    pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .end(&error);
    // The caller may have dropped the receiver: it needs no reason then.
    let _gone = incoming.send(Err(error)).await;
}

/// One line of the server's, classified.
enum Message {
    Answer { id: i64, answer: Answer },
    Incoming(Incoming),
}

impl Message {
    fn parse(line: &str) -> Option<Self> {
        let Value::Object(mut object) = serde_json::from_str::<Value>(line).ok()? else {
            return None;
        };
        let method = object.remove("method");
        let id = object.remove("id");
        match (method, id) {
            (Some(Value::String(method)), None) => Some(Self::Incoming(Incoming::Notification {
                method,
                params: object.remove("params").unwrap_or(Value::Null),
            })),
            (Some(Value::String(method)), Some(id)) => Some(Self::Incoming(Incoming::Request {
                id: serde_json::from_value(id).ok()?,
                method,
                params: object.remove("params").unwrap_or(Value::Null),
            })),
            (None, Some(id)) => {
                let id = id.as_i64()?;
                let answer = if let Some(error) = object.remove("error") {
                    Err(AppServerError::Rpc {
                        method: String::new(),
                        code: error
                            .get("code")
                            .and_then(Value::as_i64)
                            .unwrap_or_default(),
                        message: error
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        data: error.get("data").cloned(),
                    })
                } else {
                    Ok(object.remove("result")?)
                };
                Some(Self::Answer { id, answer })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_answers_notifications_or_requests() {
        let Some(Message::Answer {
            id: 3,
            answer: Ok(result),
        }) = Message::parse(r#"{"id":3,"result":{"ok":true}}"#)
        else {
            panic!("an answer");
        };
        assert_eq!(result, json!({"ok": true}));
        let Some(Message::Answer {
            id: 4,
            answer: Err(AppServerError::Rpc { code, message, .. }),
        }) = Message::parse(r#"{"id":4,"error":{"code":-32600,"message":"bad"}}"#)
        else {
            panic!("an error answer");
        };
        assert_eq!((code, message.as_str()), (-32600, "bad"));
        let Some(Message::Incoming(Incoming::Notification { method, params })) =
            Message::parse(r#"{"method":"item/agentMessage/delta","params":{"delta":"Hi"}}"#)
        else {
            panic!("a notification");
        };
        assert_eq!(
            (method.as_str(), params["delta"].as_str()),
            ("item/agentMessage/delta", Some("Hi"))
        );
        let Some(Message::Incoming(Incoming::Request { id, method, .. })) = Message::parse(
            r#"{"id":"a1","method":"item/commandExecution/requestApproval","params":{}}"#,
        ) else {
            panic!("a request");
        };
        assert_eq!(id, RequestId::String("a1".into()));
        assert_eq!(method, "item/commandExecution/requestApproval");
        for bad in [
            "[1]",
            "not json",
            r#"{"id":1}"#,
            r#"{"params":{}}"#,
            r#"{"method":5}"#,
        ] {
            assert!(Message::parse(bad).is_none(), "{bad}");
        }
    }
}
