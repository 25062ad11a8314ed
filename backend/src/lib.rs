//! The backend: the public API of repo-runner. Sessions are git clones
//! bound to a runner thread; prompts become runs executed one at a time per
//! session; every run event is persisted in Postgres and streamed live to
//! any number of subscribers, who can resume from any event.

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod domain;
pub mod engine;
pub mod forge;
pub mod git;
pub mod http_error;
pub mod metrics;
pub mod open_streams;
pub mod rate_limit;
pub mod session_changes;
pub mod startup;
pub mod store;
