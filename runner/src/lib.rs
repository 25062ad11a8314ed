//! The runner: keeps Codex threads bound to workspace directories, runs one
//! prompt at a time per thread through the Codex CLI, and serves each run's
//! events as Server-Sent Events to any number of subscribers.

mod api;
pub mod config;
mod error;
mod event_size;
mod execution;
mod models;
mod registry;
pub mod startup;
mod workspace;
