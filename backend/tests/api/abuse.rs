//! Greedy clients and a full disk, against the real backend binary: request
//! rate limits, `/metrics`, the per-user workspace quota, the per-user limit
//! of open event streams and what a session change costs however many
//! streams follow it, and the sweeper that expires idle sessions and keeps
//! the workspaces under a total quota.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use test_support::{SseEvent, Subscription};

use crate::helpers::{assert_error, client_with_token, TestStack};

/// Sends `count` requests with `send` and returns their statuses, and the
/// `Retry-After` and body of the first 429.
async fn statuses<F, Fut>(count: usize, send: F) -> (Vec<u16>, Option<(String, Value)>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..count {
        let response = send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS && refusal.is_none() {
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            refusal = Some((retry_after, response.json().await.unwrap()));
        }
    }
    (statuses, refusal)
}

#[tokio::test]
async fn an_address_over_its_rate_gets_429_with_retry_after_even_without_a_token() {
    let stack = TestStack::start_configured(
        true,
        &[
            ("BACKEND_IP_RATE_PER_SEC", "1"),
            ("BACKEND_IP_RATE_BURST", "3"),
        ],
    )
    .await;
    let list = || stack.client.get(stack.url("/api/sessions")).send();
    let (seen, refusal) = statuses(10, list).await;
    // The burst passes; at one request a second, ten quick ones cannot.
    assert_eq!(seen[..3], [200, 200, 200], "{seen:?}");
    assert!(seen.contains(&429), "{seen:?}");
    let (retry_after, body) = refusal.unwrap();
    assert!(retry_after.parse::<u64>().unwrap() >= 1, "{retry_after}");
    assert_eq!(body["code"], "too_many_requests");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("BACKEND_IP_RATE_PER_SEC"),
        "{body}"
    );
    // Guessing tokens counts too: the limit comes before authentication.
    let guess = client_with_token("rr_guess")
        .get(stack.url("/api/sessions"))
        .send()
        .await
        .unwrap();
    assert_error(guess, 429, "too_many_requests").await;
    // A client behind the proxy (loopback is trusted to say who) has a
    // bucket of its own; one that names itself directly does not.
    let proxied = stack
        .client
        .get(stack.url("/api/sessions"))
        .header("x-forwarded-for", "192.0.2.10")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200);
}

#[tokio::test]
async fn an_untrusted_peer_cannot_pick_its_address_with_x_forwarded_for() {
    let stack = TestStack::start_configured(
        true,
        &[
            ("BACKEND_IP_RATE_PER_SEC", "1"),
            ("BACKEND_IP_RATE_BURST", "2"),
            ("BACKEND_TRUSTED_PROXIES", ""),
        ],
    )
    .await;
    let counter = std::sync::atomic::AtomicU32::new(0);
    let (seen, _) = statuses(8, || {
        // A new made-up address each time: ignored.
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        stack
            .client
            .get(stack.url("/api/sessions"))
            .header("x-forwarded-for", format!("192.0.2.{n}"))
            .send()
    })
    .await;
    assert!(seen.contains(&429), "{seen:?}");
}

#[tokio::test]
async fn a_user_over_their_rate_gets_429_and_other_users_do_not() {
    let stack = TestStack::start_configured(
        true,
        &[
            ("BACKEND_USER_RATE_PER_SEC", "1"),
            ("BACKEND_USER_RATE_BURST", "2"),
        ],
    )
    .await;
    let (seen, refusal) = statuses(8, || stack.client.get(stack.url("/api/sessions")).send()).await;
    assert_eq!(seen[..2], [200, 200], "{seen:?}");
    assert!(seen.contains(&429), "{seen:?}");
    let (retry_after, body) = refusal.unwrap();
    assert!(retry_after.parse::<u64>().unwrap() >= 1);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("BACKEND_USER_RATE_PER_SEC"),
        "{body}"
    );
    let bob = stack.add_user("bob", false).await;
    let bobs = bob
        .client
        .get(stack.url("/api/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(bobs.status(), 200);
}

const METRICS_TOKEN: &str = "metrics-token-of-the-tests-0123456789";

/// One parsed sample: metric name, sorted labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// `/metrics`, parsed by a Prometheus text parser.
async fn scrape(stack: &TestStack) -> Vec<Sample> {
    let response = client_with_token(METRICS_TOKEN)
        .get(stack.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the text format parses");
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                // Histograms are checked through their `_count`.
                _ => return None,
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            Some((s.metric, labels, value))
        })
        .collect()
}

fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {samples:?}"))
}

#[tokio::test]
async fn metrics_need_their_own_token_and_parse_as_prometheus_text() {
    let stack =
        TestStack::start_configured(true, &[("BACKEND_METRICS_TOKEN", METRICS_TOKEN)]).await;
    // Neither no token nor a user's token reads the figures of every tenant.
    let anonymous = reqwest::Client::new()
        .get(stack.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_error(anonymous, 401, "unauthorized").await;
    let users = stack.get("/metrics").await;
    assert_error(users, 401, "unauthorized").await;

    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "create a file").await;
    let events = stack.events(&run).await;
    assert_eq!(events.last().unwrap().event, "run.completed");
    let oversized = stack
        .client
        .post(stack.url("/api/sessions"))
        .header("content-type", "application/json")
        .body(vec![b' '; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413);
    let sessions = stack.get_json(&format!("/api/sessions/{session}")).await;
    // The run's end measures the workspace; the session says so.
    assert!(
        sessions["workspace_bytes"].as_i64().unwrap() > 0,
        "{sessions}"
    );

    let samples = scrape(&stack).await;
    let events_persisted = sample(&samples, "repo_runner_events_persisted_total", &[]);
    assert!(
        events_persisted >= events.len() as f64,
        "{events_persisted}"
    );
    for (name, labels, value) in [
        (
            "repo_runner_runs_finished_total",
            vec![("status", "completed")],
            1.0,
        ),
        ("repo_runner_runs_active", vec![("status", "queued")], 0.0),
        ("repo_runner_runs_active", vec![("status", "running")], 0.0),
        ("repo_runner_clones_total", vec![("outcome", "ready")], 1.0),
        ("repo_runner_run_duration_seconds_count", vec![], 1.0),
        ("repo_runner_clone_duration_seconds_count", vec![], 1.0),
        ("repo_runner_sse_subscribers", vec![("stream", "run")], 0.0),
        (
            "repo_runner_rejected_requests_total",
            vec![("reason", "unauthorized")],
            2.0,
        ),
        (
            "repo_runner_rejected_requests_total",
            vec![("reason", "body_too_large")],
            1.0,
        ),
    ] {
        assert_eq!(sample(&samples, name, &labels), value, "{name}{labels:?}");
    }
    assert!(sample(&samples, "repo_runner_relay_lag_seconds_count", &[]) >= 1.0);
    assert!(sample(&samples, "repo_runner_tokens_total", &[("kind", "input")]) > 0.0);

    // An open stream is a subscriber while it is open.
    let watching = stack.prompt(&session, "sleep").await;
    let mut subscription = stack.subscribe(&watching, None).await;
    subscription.until(|e| e.event == "item.started").await;
    let samples = scrape(&stack).await;
    assert_eq!(
        sample(
            &samples,
            "repo_runner_sse_subscribers",
            &[("stream", "run")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            "repo_runner_runs_active",
            &[("status", "running")]
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_are_off_without_their_token() {
    let stack = TestStack::start().await;
    let response = reqwest::Client::new()
        .get(stack.url("/metrics"))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 404, "not_found").await;
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("BACKEND_METRICS_TOKEN"));
}

#[tokio::test]
async fn a_user_whose_workspaces_hold_their_quota_cannot_create_another_session() {
    let stack =
        TestStack::start_configured(true, &[("BACKEND_USER_MAX_WORKSPACE_BYTES", "1")]).await;
    let (session, repo) = stack.ready_session().await;
    let held = stack.get_json(&format!("/api/sessions/{session}")).await["workspace_bytes"]
        .as_i64()
        .unwrap();
    assert!(held > 1, "{held}");
    let refused = stack
        .post(
            "/api/sessions",
            json!({"repo_url": format!("file://{}", repo.display())}),
        )
        .await;
    let body = assert_error(refused, 429, "too_many_requests").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("BACKEND_USER_MAX_WORKSPACE_BYTES"),
        "{body}"
    );
    // Deleting a session gives its bytes back.
    assert_eq!(stack.delete_session(&session).await.status(), 204);
    let again = stack
        .post(
            "/api/sessions",
            json!({"repo_url": format!("file://{}", repo.display())}),
        )
        .await;
    assert_eq!(again.status(), 202);
}

/// `count` ready sessions, clones of one repository.
async fn ready_sessions(stack: &TestStack, count: usize) -> Vec<String> {
    let repo = stack.make_repo("shared");
    let mut ids = Vec::new();
    for _ in 0..count {
        let session = stack
            .session(json!({"repo_url": format!("file://{}", repo.display())}))
            .await;
        assert_eq!(session["status"], "ready", "{session}");
        ids.push(session["session_id"].as_str().unwrap().to_owned());
    }
    ids
}

/// The home the runner made for `session`'s workspace, found by the file
/// in it that names the workspace.
fn codex_home_of(stack: &TestStack, session: &str) -> Option<PathBuf> {
    let homes = stack.root.with_file_name("codex-homes");
    let wanted = format!("{session}/repo");
    std::fs::read_dir(homes).ok()?.find_map(|entry| {
        let path = entry.ok()?.path();
        // The marker names the workspace by its absolute path.
        let named = std::fs::read_to_string(path.join("workspace")).ok()?;
        Path::new(&named).ends_with(&wanted).then_some(path)
    })
}

/// Waits, by polling the session (the API has no event for expiry but the
/// session feed, which the dashboard uses), until it is `expired`.
async fn wait_expired(stack: &TestStack, session: &str) -> Value {
    for _ in 0..1200 {
        let row = stack.get_json(&format!("/api/sessions/{session}")).await;
        if row["status"] == "expired" {
            return row;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("session {session} did not expire");
}

/// Files outside `WORKSPACES_ROOT` that planted symlinks point at.
struct Outside {
    _dir: tempfile::TempDir,
    file: PathBuf,
    folder: PathBuf,
}

impl Outside {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("precious.txt");
        std::fs::write(&file, "keep me").unwrap();
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("inner.txt"), "keep me too").unwrap();
        Self {
            _dir: dir,
            file,
            folder,
        }
    }

    /// Symlinks to both, in `dir`.
    fn plant(&self, dir: &Path) {
        std::os::unix::fs::symlink(&self.file, dir.join("link-to-file")).unwrap();
        std::os::unix::fs::symlink(&self.folder, dir.join("link-to-folder")).unwrap();
    }

    fn untouched(&self) {
        assert_eq!(std::fs::read_to_string(&self.file).unwrap(), "keep me");
        assert_eq!(
            std::fs::read_to_string(self.folder.join("inner.txt")).unwrap(),
            "keep me too"
        );
    }
}

#[tokio::test]
async fn an_idle_session_expires_its_workspace_goes_and_nothing_outside_the_root_is_touched() {
    let stack = TestStack::start_configured(
        true,
        &[
            ("BACKEND_SESSION_IDLE_TTL_HOURS", "1"),
            ("BACKEND_SWEEP_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let [idle, busy, swapped]: [String; 3] = ready_sessions(&stack, 3).await.try_into().unwrap();
    let run = stack.prompt(&idle, "create a file").await;
    assert_eq!(
        stack.events(&run).await.last().unwrap().event,
        "run.completed"
    );
    let home = codex_home_of(&stack, &idle).expect("the runner made a home for the thread");
    let outside = Outside::new();
    outside.plant(&stack.workspace(&idle));
    outside.plant(&stack.root.join(&idle));
    // Another session's folder itself swapped for a link to a folder
    // outside: the link goes, not what it points at.
    let swapped_dir = stack.root.join(&swapped);
    std::fs::rename(&swapped_dir, stack.root.join("moved-away")).unwrap();
    std::os::unix::fs::symlink(&outside.folder, &swapped_dir).unwrap();

    for session in [&idle, &swapped] {
        stack
            .db
            .execute(&format!(
                "UPDATE sessions SET last_active_at = now() - interval '2 hours' WHERE id = '{session}'"
            ))
            .await;
    }
    let expired = wait_expired(&stack, &idle).await;
    wait_expired(&stack, &swapped).await;

    assert_eq!(expired["workspace_bytes"], 0);
    assert!(expired["expired_at"].is_string(), "{expired}");
    assert!(!stack.root.join(&idle).exists());
    assert!(std::fs::symlink_metadata(&swapped_dir).is_err());
    assert!(!home.exists(), "the thread's CODEX_HOME stays");
    outside.untouched();
    // The session that was active stays.
    let kept = stack.get_json(&format!("/api/sessions/{busy}")).await;
    assert_eq!(kept["status"], "ready");
    assert!(stack.workspace(&busy).exists());
    // Its runs and events stay readable; its files and prompts are gone.
    assert_eq!(stack.get(&format!("/api/runs/{run}")).await.status(), 200);
    assert_eq!(
        stack.events(&run).await.last().unwrap().event,
        "run.completed"
    );
    let prompt = stack
        .post(
            &format!("/api/sessions/{idle}/prompt"),
            json!({"prompt": "hi"}),
        )
        .await;
    let body = assert_error(prompt, 409, "conflict").await;
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let files = stack.get(&format!("/api/sessions/{idle}/files")).await;
    assert_error(files, 409, "conflict").await;
    // And it can still be deleted.
    assert_eq!(stack.delete_session(&idle).await.status(), 204);
}

#[tokio::test]
async fn past_the_total_quota_the_longest_idle_sessions_expire_first() {
    let mut stack = TestStack::start().await;
    let [oldest, middle, newest]: [String; 3] = ready_sessions(&stack, 3).await.try_into().unwrap();
    let bytes = |v: Value| v["workspace_bytes"].as_i64().unwrap();
    let each = bytes(stack.get_json(&format!("/api/sessions/{newest}")).await);
    let ages = [(&oldest, 3), (&middle, 2), (&newest, 1)];
    for (session, hours) in ages {
        stack
            .db
            .execute(&format!(
                "UPDATE sessions SET last_active_at = now() - interval '{hours} hours' \
                 WHERE id = '{session}'"
            ))
            .await;
    }
    // Room for two of the three.
    stack.stop_backend().await;
    let quota = (each * 2 + each / 2).to_string();
    stack
        .backend_env
        .push(("BACKEND_WORKSPACES_MAX_BYTES".into(), quota));
    stack
        .backend_env
        .push(("BACKEND_SWEEP_INTERVAL_SECS".into(), "1".into()));
    stack
        .backend_env
        .push(("BACKEND_USER_MAX_ACTIVE_RUNS".into(), "1".into()));
    stack.start_backend().await;

    wait_expired(&stack, &oldest).await;
    // At the run limit, a prompt to the expired session still says why it
    // can never run (409), not to wait for a run to end (429).
    stack.prompt(&middle, "sleep").await;
    let refused = stack
        .post(
            &format!("/api/sessions/{oldest}/prompt"),
            json!({"prompt": "hello"}),
        )
        .await;
    let body = assert_error(refused, 409, "conflict").await;
    assert!(
        body["message"].as_str().unwrap().contains("has expired"),
        "{body}"
    );
    for kept in [&middle, &newest] {
        let row = stack.get_json(&format!("/api/sessions/{kept}")).await;
        assert_eq!(row["status"], "ready", "{row}");
        assert_eq!(bytes(row), each);
    }
}

#[tokio::test]
async fn a_prompt_racing_the_sweeper_either_runs_or_is_refused_never_lost() {
    let stack = TestStack::start_configured(
        true,
        &[
            ("BACKEND_SESSION_IDLE_TTL_HOURS", "1"),
            ("BACKEND_SWEEP_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let (mut ran, mut refused) = (0, 0);
    for session in ready_sessions(&stack, 12).await {
        stack
            .db
            .execute(&format!(
                "UPDATE sessions SET last_active_at = now() - interval '2 hours' WHERE id = '{session}'"
            ))
            .await;
        // Whenever the sweeper looks, before or after this prompt.
        let prompt = stack
            .post(
                &format!("/api/sessions/{session}/prompt"),
                json!({"prompt": "create a file"}),
            )
            .await;
        match prompt.status().as_u16() {
            202 => {
                let run: Value = prompt.json().await.unwrap();
                let events = stack.events(run["run_id"].as_str().unwrap()).await;
                assert_eq!(events.last().unwrap().event, "run.completed");
                ran += 1;
            }
            409 => {
                wait_expired(&stack, &session).await;
                refused += 1;
            }
            other => panic!("prompt answered {other}"),
        }
        // The session that ran is active again: not expired under it.
        let row = stack.get_json(&format!("/api/sessions/{session}")).await;
        if row["status"] == "ready" {
            assert!(stack.workspace(&session).join(".git").exists());
        }
    }
    assert_eq!(ran + refused, 12);
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// Waits until `/metrics` counts `wanted` subscribers of run streams.
async fn until_run_subscribers(stack: &TestStack, wanted: usize) {
    let count =
        |samples: &[Sample]| sample(samples, "repo_runner_sse_subscribers", &[("stream", "run")]);
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while count(&scrape(stack).await) != wanted as f64 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never {wanted} run subscribers"));
}

/// What one connection that stops reading may hold in the backend: hyper's
/// write buffer (about 400 KiB, plus the chunk that passed it) and the
/// subscriber's page of a replay (`hub::REPLAY_BYTES`). Never the run.
const PER_STALLED_CONNECTION: u64 = 1536 * 1024;
const NEVER_READING: usize = 30;

/// A subscriber that stops reading holds what its socket and a connection's
/// write buffer hold, never the run: the stream is pulled, and one that
/// falls behind reads from Postgres when its turn comes. Thirty of them on
/// a run of megabytes leave the backend's memory within thirty such
/// buffers of where one reading subscriber left it, and the write timeout
/// (`HTTP_IDLE_TIMEOUT_SECS`) drops them.
#[tokio::test]
async fn subscribers_that_never_read_a_chatty_run_hold_a_bounded_buffer_then_are_dropped() {
    let stack = TestStack::start_configured(
        true,
        &[
            ("BACKEND_METRICS_TOKEN", METRICS_TOKEN),
            ("HTTP_IDLE_TIMEOUT_SECS", "3"),
            ("BACKEND_KEEP_ALIVE_SECS", "1"),
        ],
    )
    .await;
    let token = stack.user.as_ref().unwrap().token.clone();
    let (session, _) = stack.ready_session().await;
    let addr: std::net::SocketAddr = stack.base.trim_start_matches("http://").parse().unwrap();

    // A first chatty run, read to its end: the backend's pools, caches and
    // allocator reach their working size.
    let warm_up = stack.prompt(&session, "chatter").await;
    let events = stack.events(&warm_up).await;
    assert_eq!(events.last().unwrap().event, "run.completed");
    let run_bytes: u64 = events.iter().map(|e| e.data.to_string().len() as u64).sum();
    // Replayed from Postgres in pages bounded by bytes (one event of
    // 256 KiB each here): the same events, in the same order.
    let replayed = stack.events(&warm_up).await;
    let ids = |events: &[test_support::SseEvent]| {
        events
            .iter()
            .map(|e| (e.id, e.text.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&replayed), ids(&events));
    assert!(
        run_bytes > 3 * PER_STALLED_CONNECTION,
        "the run ({run_bytes} bytes) is too small for the check to mean anything"
    );
    let before = rss(stack.backend_pid());

    let run = stack.prompt(&session, "chatter").await;
    let mut never_reading = Vec::new();
    for _ in 0..NEVER_READING {
        // A small receive window, so that the kernel does not take the run
        // off the backend's hands at once.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let request = format!(
            "GET /api/runs/{run}/events HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        never_reading.push(stream);
    }
    until_run_subscribers(&stack, NEVER_READING).await;

    let events = stack.events(&run).await;
    assert_eq!(events.last().unwrap().event, "run.completed");
    let after = rss(stack.backend_pid());
    let grown = after.saturating_sub(before);
    eprintln!("run {run_bytes} B; backend RSS {before} → {after} (+{grown})");
    let bound = NEVER_READING as u64 * PER_STALLED_CONNECTION;
    assert!(
        grown < bound,
        "the backend grew by {grown} bytes with {NEVER_READING} subscribers that never read \
         a run of {run_bytes} bytes; one copy of the run each would be {}",
        NEVER_READING as u64 * run_bytes
    );
    // Their writes make no progress: the write timeout ends them, while
    // the sockets are still open on this side.
    until_run_subscribers(&stack, 0).await;
    for mut socket in never_reading {
        // What the kernel had taken before the cut, then the end (or a
        // reset: either way the stream stops short of its last event).
        let mut received = Vec::new();
        let ended = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut received).await;
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 200"), "{ended:?}");
        assert!(
            !text.contains("event: run.completed"),
            "a stalled stream was cut, not sent whole ({} bytes)",
            received.len()
        );
    }
}

/// The workspaces' disk fills up during a run: the agent's command fails
/// with the kernel's message, the run ends, the session's size is known, a
/// new clone is refused with a reason, the service answers throughout, and
/// deleting the session that filled it makes room again.
#[tokio::test]
async fn a_full_disk_fails_one_sessions_command_not_the_service() {
    const DISK: u64 = 8 * 1024 * 1024;
    let stack = TestStack::start_on_small_disk(
        DISK,
        &[("BACKEND_MIN_FREE_DISK_BYTES", &(1024 * 1024).to_string())],
    )
    .await;
    let clone = |name: &str| {
        let repo = stack.make_repo(name);
        json!({"repo_url": format!("file://{}", repo.display())})
    };
    let filler = stack.session(clone("filler")).await;
    let filler = filler["session_id"].as_str().unwrap().to_owned();
    let other = stack.session(clone("other")).await;
    let other = other["session_id"].as_str().unwrap().to_owned();

    // The size is measured after the run's end is published: awaited on
    // the session-change stream.
    let mut changes =
        Subscription::open(&stack.client, &stack.url("/api/sessions/events"), None).await;
    let run = stack.prompt(&filler, "fill the disk").await;
    let events = stack.events(&run).await;

    assert_eq!(events.last().unwrap().event, "run.completed");
    let command = events
        .iter()
        .find(|e| e.event == "item.completed" && e.data["item"]["type"] == "command_execution")
        .expect("the command's item");
    assert_eq!(command.data["item"]["exit_code"], 1, "{}", command.data);
    assert!(
        command.data["item"]["aggregated_output"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{}",
        command.data
    );
    // Measured after the run: most of the disk, in that session.
    let measured = |e: &SseEvent| {
        e.event == "updated"
            && e.data["session"]["session_id"] == filler.as_str()
            && e.data["session"]["workspace_bytes"]
                .as_u64()
                .is_some_and(|bytes| bytes > DISK / 2)
    };
    changes.until(measured).await;
    drop(changes);
    let row = stack.get_json(&format!("/api/sessions/{filler}")).await;
    assert!(row["workspace_bytes"].as_u64().unwrap() > DISK / 2, "{row}");

    // The service answers; the other session reads its files.
    assert_eq!(stack.get("/ready").await.status(), 200);
    let files = stack.get(&format!("/api/sessions/{other}/files")).await;
    assert_eq!(files.status(), 200);
    // A new clone fails with its reason, and the session says so.
    let refused = stack.session(clone("third")).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("not enough free disk space for the workspace"),
        "{refused}"
    );

    // Deleting the session that filled the disk gives the room back.
    assert_eq!(stack.delete_session(&filler).await.status(), 204);
    let again = stack.session(clone("fourth")).await;
    assert_eq!(again["status"], "ready", "{again}");
    let run = stack.prompt(&other, "create a file").await;
    assert_eq!(
        stack.events(&run).await.last().unwrap().event,
        "run.completed"
    );
    assert!(stack.workspace(&other).join("hello.txt").is_file());
}

/// Asserts the 429 of the open-stream limit, and returns its message.
async fn assert_too_many_streams(response: reqwest::Response) -> String {
    let body = assert_error(response, 429, "too_many_requests").await;
    let message = body["message"].as_str().unwrap().to_owned();
    assert!(message.contains("BACKEND_USER_MAX_STREAMS"), "{message}");
    message
}

#[tokio::test]
async fn a_user_past_the_most_streams_gets_429_and_a_closed_stream_frees_its_slot() {
    let stack = TestStack::start_configured(
        true,
        &[
            ("BACKEND_USER_MAX_STREAMS", "3"),
            // The server learns that a client went away when a write to it
            // fails (hyper does not notice the close of an idle stream's
            // connection): its keep-alive comment, every second here.
            ("BACKEND_KEEP_ALIVE_SECS", "1"),
            // The line that says a stream's slot is free again.
            (
                "RUST_LOG",
                "info,service_kit=debug,backend::open_streams=debug",
            ),
        ],
    )
    .await;
    let alice = stack.user.clone().unwrap();
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "sleep").await;
    let changes = stack.url("/api/sessions/events");
    let run_events = stack.url(&format!("/api/runs/{run}/events"));
    // Session streams and run streams count together.
    let first = Subscription::open(&stack.client, &changes, None).await;
    let _second = Subscription::open(&stack.client, &changes, None).await;
    let _third = Subscription::open(&stack.client, &run_events, None).await;

    for url in [&changes, &run_events] {
        let refused = stack.client.get(url).send().await.unwrap();
        let message = assert_too_many_streams(refused).await;
        assert!(
            message.starts_with("you have 3 event streams open"),
            "{message}"
        );
    }
    // Another user has a count of their own.
    let bob = stack.add_user("bob", false).await;
    let _bobs = Subscription::open(&bob.client, &changes, None).await;
    // A client that goes away frees its slot.
    let ended = |line: &str| line.contains("an event stream ended") && line.contains(&alice.id);
    assert!(!stack.log.lines().iter().any(|l| ended(l)));
    drop(first);
    stack.log.wait_for(ended).await;
    let _again = Subscription::open(&stack.client, &changes, None).await;
    let refused = stack.client.get(&changes).send().await.unwrap();
    assert_too_many_streams(refused).await;

    stack
        .post(&format!("/api/runs/{run}/cancel"), json!({}))
        .await;
}

#[tokio::test]
async fn without_authentication_every_caller_counts_in_one_bucket_of_streams() {
    let stack = TestStack::start_configured(
        true,
        &[("AUTH_MODE", "none"), ("BACKEND_USER_MAX_STREAMS", "2")],
    )
    .await;
    let changes = stack.url("/api/sessions/events");
    let _one = Subscription::open(&reqwest::Client::new(), &changes, None).await;
    let _another = Subscription::open(&reqwest::Client::new(), &changes, None).await;
    let refused = reqwest::Client::new().get(&changes).send().await.unwrap();
    let message = assert_too_many_streams(refused).await;
    assert!(message.contains("without authentication"), "{message}");
}

/// The next event of `stream`, in a time no per-stream query could beat
/// while the backend's pool is busy.
async fn next_change(stream: &mut Subscription) -> SseEvent {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("no change came: does each stream query for it?")
        .expect("the stream ended")
}

/// Reads `stream` until `session` says `error` is `marker`, asserting that
/// everything before is an update of `session` too.
async fn until_marked(stream: &mut Subscription, session: &str, marker: &str) {
    loop {
        let change = next_change(stream).await;
        assert_eq!(change.event, "updated", "{}", change.text);
        assert_eq!(
            change.data["session"]["session_id"], session,
            "{}",
            change.text
        );
        if change.data["session"]["error"] == marker {
            return;
        }
    }
}

/// Reads `stream` until `session` is deleted; everything before is about
/// `session` too.
async fn until_deleted(stream: &mut Subscription, session: &str) {
    loop {
        let change = next_change(stream).await;
        if change.event == "deleted" {
            assert_eq!(change.data["session_id"], session, "{}", change.text);
            return;
        }
        assert_eq!(
            change.data["session"]["session_id"], session,
            "{}",
            change.text
        );
    }
}

/// The first audit's finding 7: each session change cost a query per open
/// change stream. Now the backend reads a changed session once, on a
/// connection outside its pool, and each stream keeps it or not by its
/// owner in memory: with every pooled connection waiting on a lock, six
/// streams still receive every change (a stream that queried could not),
/// and a user's changes, deletion included, never reach another user's
/// stream; an admin's stream sees them all.
#[tokio::test]
async fn session_changes_reach_every_stream_that_may_see_them_without_a_query_each() {
    let stack = TestStack::start_configured(true, &[("DATABASE_POOL_SIZE", "2")]).await;
    let bob = stack.add_user("bob", false).await;
    let root = stack.add_user("root", true).await;
    let changes = stack.url("/api/sessions/events");
    let (alices, _) = stack.ready_session().await;
    let mut bobs_stream = Subscription::open(&bob.client, &changes, None).await;
    assert_eq!(
        bobs_stream.next().await.unwrap().data["sessions"],
        json!([])
    );
    let repo = stack.make_repo("bobs");
    let created = bob
        .client
        .post(stack.url("/api/sessions"))
        .json(&json!({"repo_url": format!("file://{}", repo.display())}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let bobs: Value = created.json().await.unwrap();
    let bobs = bobs["session_id"].as_str().unwrap().to_owned();
    loop {
        let change = next_change(&mut bobs_stream).await;
        assert_eq!(change.data["session"]["session_id"], bobs.as_str());
        if change.data["session"]["status"] == "ready" {
            break;
        }
    }
    let mut alices_streams = Vec::new();
    for _ in 0..5 {
        let mut stream = Subscription::open(&stack.client, &changes, None).await;
        let snapshot = stream.next().await.unwrap();
        assert_eq!(snapshot.data["total"], 1, "{}", snapshot.text);
        alices_streams.push(stream);
    }
    let mut roots_stream = Subscription::open(&root.client, &changes, None).await;
    assert_eq!(roots_stream.next().await.unwrap().data["total"], 2);

    // Both pooled connections wait on a lock the test holds.
    let (locker, connection) = tokio_postgres::connect(&stack.db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let blocked: Vec<_> = (0..2)
        .map(|_| {
            let request = stack
                .client
                .get(stack.url(&format!("/api/sessions/{alices}/runs")))
                .send();
            tokio::spawn(request)
        })
        .collect();
    // Postgres has no event for a waiter: a bounded poll.
    let mut waiting = 0;
    for _ in 0..600 {
        let rows = stack
            .db
            .query(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await;
        waiting = rows[0].get::<_, i64>(0);
        if waiting == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        waiting, 2,
        "the backend's two pooled connections never waited"
    );

    for change in 1..=3 {
        let marker = format!("alice change {change}");
        stack
            .db
            .execute(&format!(
                "UPDATE sessions SET error = '{marker}' WHERE id = '{alices}'"
            ))
            .await;
        for stream in alices_streams.iter_mut().chain([&mut roots_stream]) {
            until_marked(stream, &alices, &marker).await;
        }
    }
    // Bob heard of none of them: the next thing he hears of is his own.
    stack
        .db
        .execute(&format!(
            "UPDATE sessions SET error = 'bob change' WHERE id = '{bobs}'"
        ))
        .await;
    until_marked(&mut bobs_stream, &bobs, "bob change").await;
    until_marked(&mut roots_stream, &bobs, "bob change").await;

    locker.batch_execute("ROLLBACK").await.unwrap();
    for request in blocked {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    // Nor of the deletion of alice's session.
    assert_eq!(stack.delete_session(&alices).await.status(), 204);
    for stream in alices_streams.iter_mut().chain([&mut roots_stream]) {
        until_deleted(stream, &alices).await;
    }
    stack
        .db
        .execute(&format!(
            "UPDATE sessions SET error = 'bob change 2' WHERE id = '{bobs}'"
        ))
        .await;
    until_marked(&mut bobs_stream, &bobs, "bob change 2").await;
}
