//! The frontend proxy: serves the dashboard (files embedded in the binary)
//! and reverse-proxies `/api`, `/docs` and `/health` to the backend.

pub mod config;
pub mod proxy;
pub mod startup;
