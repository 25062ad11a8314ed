//! The runner's ids of its threads and runs. They are the runner's words,
//! opaque to the backend: kept apart from the backend's own (UUID) ids by
//! type, so one can never be sent where the other belongs. They travel into
//! the runner's URLs only through `RunnerClient`'s segment encoder.

use std::fmt;

macro_rules! runner_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub(crate) fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

runner_id!(
    /// A thread on the runner: a session's conversation while the runner
    /// knows it (a restarted runner forgets it; the Codex thread remains).
    RunnerThreadId
);
runner_id!(
    /// A run on the runner: what its event stream and controls are named by.
    RunnerRunId
);
