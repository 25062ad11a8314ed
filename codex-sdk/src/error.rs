//! Errors of a run.

/// Everything that can end a run other than a completed turn.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to start the codex CLI at {path}")]
    Spawn {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to talk to the codex CLI")]
    Io(#[from] std::io::Error),
    #[error("the codex CLI printed a line that is not a JSON object: {line}")]
    MalformedLine { line: String },
    #[error("the codex CLI printed a line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("codex exited with {status}: {stderr_tail}")]
    Exited {
        /// The exit code; `None` when a signal ended the CLI.
        code: Option<i32>,
        /// How it ended, in words (`exit status: 3`, `signal: 9 (SIGKILL)`).
        status: String,
        stderr_tail: String,
    },
    #[error("the turn failed: {message}")]
    TurnFailed { message: String },
    #[error("the run was cancelled")]
    Cancelled,
    #[error(transparent)]
    AppServer(#[from] crate::app_server::AppServerError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The CLI exited with `status` (not a success), having written
    /// `stderr_tail` last.
    pub(crate) fn exited(status: std::process::ExitStatus, stderr_tail: String) -> Self {
        Error::Exited {
            code: status.code(),
            status: status.to_string(),
            stderr_tail,
        }
    }
}
