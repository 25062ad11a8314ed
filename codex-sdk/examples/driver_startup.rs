//! What a run pays for each driver before its model is asked anything, and
//! what an idle app-server holds: the figures behind "one app-server process
//! per run" (`docs/BENCHMARKS.md`, "Drivers").
//!
//! `cargo run --release -p codex-sdk --example driver_startup [RUNS]`
//!
//! Runs the pinned CLI (`node_modules/.bin/codex`, or `CODEX_BIN`) against
//! the scripted model on loopback, `RUNS` times (default 10) each:
//! - exec: from spawn to the run's end, for a prompt the model answers at
//!   once with one message;
//! - app-server: from spawn to `initialize` answered, to `thread/start`
//!   answered, and to the end of the same one-message turn; and the
//!   resident memory of the server (with its Node launcher) once idle.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The table on stdout is what the example is for.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use codex_sdk::app_server::{AppServer, AppServerOptions, Incoming};
use codex_sdk::{Codex, CodexOptions, Driver, ThreadOptions};
use futures_util::StreamExt;
use serde_json::{json, Value};

fn codex_bin() -> PathBuf {
    std::env::var_os("CODEX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../node_modules/.bin/codex"))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Resident memory of `pid` and every descendant, in MiB.
fn tree_rss_mib(pid: u32) -> f64 {
    let mut total = 0u64;
    let mut stack = vec![pid];
    while let Some(pid) = stack.pop() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let script = scripted_model::Script::from_json(
        &json!({"turns": [{"when": "", "steps": [[{"message": "hello"}]]}]}).to_string(),
    )
    .unwrap();
    let model = scripted_model::ScriptedModel::start(script, "127.0.0.1:0")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(home.join("config.toml"), model.codex_config()).unwrap();
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), std::env::var("PATH").unwrap_or_default());
    env.insert("HOME".to_owned(), home.display().to_string());
    env.insert("CODEX_HOME".to_owned(), home.display().to_string());
    let thread_options = ThreadOptions {
        working_directory: Some(work.clone()),
        skip_git_repo_check: true,
        codex_home: Some(home.clone()),
        ..Default::default()
    };

    let mut exec = Vec::new();
    let mut app_run = Vec::new();
    for (driver, out) in [(Driver::Exec, &mut exec), (Driver::AppServer, &mut app_run)] {
        let codex = Codex::new(CodexOptions {
            codex_path: Some(codex_bin()),
            env: Some(env.clone()),
            driver,
            ..Default::default()
        });
        for _ in 0..runs {
            let started = Instant::now();
            let mut events = codex
                .start_thread(thread_options.clone())
                .run_streamed("hi");
            while let Some(event) = events.next().await {
                event.expect("the run completes");
            }
            out.push(started.elapsed());
        }
    }

    let mut initialize = Vec::new();
    let mut thread_start = Vec::new();
    let mut idle_rss = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let (server, mut incoming) = AppServer::spawn(AppServerOptions {
            codex_path: codex_bin(),
            env: env.clone(),
            client_name: "driver_startup".into(),
            client_version: "0".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        initialize.push(started.elapsed());
        let _: Value = server
            .request("thread/start", json!({"cwd": work}))
            .await
            .unwrap();
        thread_start.push(started.elapsed());
        // Idle: whatever it sends on its own has been sent.
        while let Ok(Some(Ok(Incoming::Notification { .. }))) =
            tokio::time::timeout(Duration::from_millis(300), incoming.recv()).await
        {}
        idle_rss.push(tree_rss_mib(server.pid().unwrap()));
        server.shutdown().await;
    }
    idle_rss.sort_by(f64::total_cmp);

    println!("| driver, step | median of {runs} |");
    println!("|---|---|");
    println!(
        "| exec: spawn to the end of a one-message run | {:.0} ms |",
        median(exec).as_secs_f64() * 1e3
    );
    println!(
        "| app-server: spawn to the end of the same run | {:.0} ms |",
        median(app_run).as_secs_f64() * 1e3
    );
    println!(
        "| app-server: spawn to `initialize` answered | {:.0} ms |",
        median(initialize).as_secs_f64() * 1e3
    );
    println!(
        "| app-server: spawn to `thread/start` answered | {:.0} ms |",
        median(thread_start).as_secs_f64() * 1e3
    );
    println!(
        "| app-server: resident memory once idle (with its launcher) | {:.0} MiB |",
        idle_rss[idle_rss.len() / 2]
    );
}
