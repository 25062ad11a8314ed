//! End-to-end tests of the backend: real Postgres, the real runner and Codex
//! CLI with the scripted model, git repositories made by the tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod clone_attacks;
mod clone_lifecycle;
mod controls;
mod cors;
mod faults;
mod files_attacks;
mod flows;
mod helpers;
mod hosts;
mod inputs;
mod logs;
mod previews;
mod restarts;
mod sdk_passthrough;
mod shipping;
mod sources;
mod spec;
mod streams;
mod tenants;
