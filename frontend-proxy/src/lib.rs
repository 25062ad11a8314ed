//! The frontend proxy: serves the dashboard (files embedded in the binary)
//! and reverse-proxies `/api`, `/docs` and `/health` to the backend; on a
//! second listener, serves sessions' workspaces as previews.

pub mod config;
pub mod headers;
pub mod preview;
pub mod proxy;
pub mod startup;
