//! The runner's contract, defined once and shared by the runner (which
//! serves it), the backend's runner client (which calls it) and the tests.
//!
//! - `threads` and `runs`: the JSON bodies of the runner's routes.
//! - `event`: the one event type that travels the whole pipeline, from the
//!   runner's log through its SSE, the backend's relay, live tail and
//!   Postgres, to the backend's SSE. Its payload is the JSON line as shared
//!   bytes, serialised once: cloning an event never copies or re-serialises
//!   it.
//! - `event_name`: every event name the product makes or reads, with its
//!   wire spelling, defined once.
//! - `terminal`: the runner's last event of a run (`run.completed`,
//!   `run.failed`, `run.cancelled`), typed.
//! - `approval_id`: the one form of an approval's id, which travels into
//!   the runner's URLs.
//! - `cursor`: where a stream resumes, from `Last-Event-ID` or `?after=`.
//!
//! Serialisation of these types is the wire format; the crate knows nothing
//! of HTTP servers or async runtimes.

mod approval_id;
mod cursor;
mod event;
mod event_name;
mod runs;
mod terminal;
mod threads;

pub use approval_id::{ApprovalId, ApprovalIdError};
pub use cursor::{Cursor, CursorError};
pub use event::{Event, EventKind, Payload};
pub use event_name::EventName;
pub use runs::{
    ApprovalDecision, CancelAccepted, CancelStatus, ControlAccepted, ControlRefusal, CreateRun,
    Health, ResolveApproval, RunCreated, RunSnapshot, RunStatus, SteerRun, Usage,
};
pub use terminal::{Changes, Terminal};
pub use threads::{ApprovalMode, CreateThread, ReasoningEffort, SandboxMode, ThreadView};
