//! Helpers shared by the integration tests of the runner and the backend.
//! Test code: a failed helper panics with a message, like an assertion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod forge;
pub mod git_http;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use sse_stream::SseStream;

/// A hang guard only: no assertion depends on it.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// The Codex CLI installed by `npm ci` at the repository root, or `CODEX_BIN`.
pub fn codex_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("CODEX_BIN") {
        return PathBuf::from(bin);
    }
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node_modules/.bin/codex");
    assert!(
        bin.exists(),
        "the Codex CLI is not installed: run `npm ci` at the repository root (or set CODEX_BIN)"
    );
    bin
}

/// Writes at `path` a stand-in for the Codex CLI that reads its prompt and
/// prints `lines`, one per line, as they are. For what the real CLI cannot be
/// made to print: a field a newer Codex adds to a known event type.
pub fn fake_codex(path: &Path, lines: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    let mut script = String::from("#!/bin/sh\ncat > /dev/null\n");
    for line in lines {
        assert!(!line.contains('\''), "a fake's line is quoted with '");
        script.push_str(&format!("printf '%s\\n' '{line}'\n"));
    }
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// 0 when the event has none.
    pub id: u64,
    pub event: String,
    pub data: Value,
    /// `data` as the server wrote it, byte for byte.
    pub text: String,
}

impl SseEvent {
    /// `item.completed:agent_message` for item events, else the event name.
    pub fn label(&self) -> String {
        match self.data["item"]["type"].as_str() {
            Some(item) => format!("{}:{item}", self.event),
            None => self.event.clone(),
        }
    }
}

pub fn labels(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(SseEvent::label).collect()
}

pub fn assert_numbered_from_one(events: &[SseEvent]) {
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(ids, expected, "ids must be 1..n without gaps");
}

type EventStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<sse_stream::Sse, sse_stream::Error>> + Send>,
>;

/// An open event stream.
pub struct Subscription {
    inner: EventStream,
}

impl Subscription {
    /// Opens `url`, with `Last-Event-ID` when given; asserts an SSE answer.
    pub async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<u64>) -> Self {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {url}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream"),
            "GET {url} is not an event stream"
        );
        Self {
            inner: Box::pin(SseStream::from_bytes_stream(response.bytes_stream())),
        }
    }

    /// The next event, or `None` when the server closed the stream.
    /// Fields without an id (the `retry:` hint) are skipped.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            let event = tokio::time::timeout(HANG_GUARD, self.inner.next())
                .await
                .expect("the event stream hung")?
                .unwrap();
            let Some(text) = event.data else {
                // The `retry:` hint.
                continue;
            };
            return Some(SseEvent {
                // 0 for an event without an id (a stream of states).
                id: event.id.map_or(0, |id| id.parse().unwrap()),
                event: event.event.unwrap_or_else(|| "message".to_owned()),
                data: serde_json::from_str(&text).unwrap(),
                text,
            });
        }
    }

    /// Reads until the stream closes.
    pub async fn rest(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }

    /// Reads until an event matches, returning everything read.
    pub async fn until(&mut self, mut done: impl FnMut(&SseEvent) -> bool) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            let stop = done(&event);
            events.push(event);
            if stop {
                return events;
            }
        }
        panic!("the stream ended before the awaited event; got {events:?}");
    }
}

/// Runs git in `dir` with a fixed identity.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A git repository on `main` with one commit (a README).
pub fn init_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README.md"), "# test repo\n").unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "initial"]);
}

/// A string no other test (of this run or of another run on the machine)
/// uses: put it in a command's line to find that command's processes.
pub fn unique_marker(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Whether any process on the machine has `marker` in its command line.
pub fn process_with_marker_exists(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .map(|cmd| String::from_utf8_lossy(&cmd).contains(marker))
            .unwrap_or(false)
    })
}
