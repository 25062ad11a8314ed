//! The runner: keeps Codex threads bound to workspace directories, runs one
//! prompt at a time per thread through the Codex CLI, and serves each run's
//! events as Server-Sent Events to any number of subscribers.

pub mod api;
pub mod config;
pub mod error;
mod event_size;
pub mod execution;
pub mod models;
pub mod registry;
pub mod startup;
pub mod workspace;
