//! The backend: the public API of repo-runner. Sessions are git clones
//! bound to a runner thread; prompts become runs executed one at a time per
//! session; every run event is persisted in Postgres and streamed live to
//! any number of subscribers, who can resume from any event.

pub mod admin;
mod api;
mod auth;
pub mod config;
mod domain;
mod engine;
mod forge;
mod git;
mod http_error;
mod metrics;
mod open_streams;
mod rate_limit;
mod session_changes;
pub mod startup;
mod store;
