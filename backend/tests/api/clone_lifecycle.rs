//! A clone's life: its checkout's size and the disk it needs, its deadline,
//! its progress writes, and what is left behind when its session is deleted
//! (while cloning, or just as it finishes) or the backend restarts.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use test_support::{git, init_repo, HANG_GUARD};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::TestStack;

/// A git "server" on 127.0.0.1 that accepts connections and never answers.
struct SilentServer {
    listener: TcpListener,
    url: String,
}

impl SilentServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/r.git", listener.local_addr().unwrap());
        Self { listener, url }
    }

    /// Waits for the clone to connect; the connection stays silent for as
    /// long as the returned stream is kept.
    async fn accept(&self) -> TcpStream {
        let (stream, _) = tokio::time::timeout(HANG_GUARD, self.listener.accept())
            .await
            .expect("the clone never connected")
            .unwrap();
        stream
    }
}

async fn create(stack: &TestStack, body: Value) -> String {
    let response = stack.post("/api/sessions", body).await;
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.unwrap();
    created["session_id"].as_str().unwrap().to_owned()
}

async fn delete(stack: &TestStack, session: &str) {
    let response = stack.delete_session(session).await;
    assert_eq!(response.status(), 204, "DELETE {session}");
}

/// Polls (bounded) until `path` no longer exists: the cleanup runs in the
/// background once the clone stops, and announces itself nowhere.
async fn wait_gone(path: &Path) {
    for _ in 0..1200 {
        if !path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} is still there", path.display());
}

/// Everything under `root`, and under its `.snapshots` (the backend's own
/// folder of every session's snapshot state, which itself may stay).
fn left_under(root: &Path) -> Vec<std::ffi::OsString> {
    let snapshots = root.join(".snapshots");
    let mut left: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != ".snapshots")
        .collect();
    if let Ok(entries) = std::fs::read_dir(&snapshots) {
        left.extend(entries.map(|e| e.unwrap().file_name()));
    }
    left
}

/// Polls (bounded) until nothing is left under `root`.
async fn wait_empty(root: &Path) {
    for _ in 0..1200 {
        if left_under(root).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = left_under(root);
    panic!("left under the workspaces root: {left:?}");
}

#[tokio::test]
async fn a_checkout_larger_than_the_limit_fails_and_writes_nothing() {
    let stack =
        TestStack::start_configured(true, &[("BACKEND_MAX_CHECKOUT_BYTES", "2000000")]).await;
    // Two 3 MB files of zeros: a pack of a few kilobytes, 6 MB on disk.
    let big = stack.repos.join("big");
    init_repo(&big);
    std::fs::write(big.join("zeros-a"), vec![0u8; 3_000_000]).unwrap();
    std::fs::write(big.join("zeros-b"), vec![0u8; 3_000_000]).unwrap();
    git(&big, &["add", "."]);
    git(&big, &["commit", "-q", "-m", "zeros"]);

    let failed = stack
        .session(json!({"repo_url": format!("file://{}", big.display())}))
        .await;

    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["error"],
        "the repository's files add up to more than the checkout limit of 2000000 bytes (BACKEND_MAX_CHECKOUT_BYTES)"
    );
    let id = failed["session_id"].as_str().unwrap();
    wait_gone(&stack.root.join(id)).await;
    // A repository under the limit still clones, the default branch named
    // as the ref too.
    let small = stack.make_repo("small");
    for git_ref in [None, Some("main")] {
        let mut body = json!({"repo_url": format!("file://{}", small.display())});
        if let Some(git_ref) = git_ref {
            body["ref"] = json!(git_ref);
        }
        let ready = stack.session(body).await;
        assert_eq!(ready["status"], "ready", "{ready}");
        let workspace = stack.workspace(ready["session_id"].as_str().unwrap());
        assert_eq!(
            git(&workspace, &["rev-parse", "HEAD"]),
            git(&small, &["rev-parse", "main"])
        );
        assert_eq!(
            git(&workspace, &["symbolic-ref", "HEAD"]),
            "refs/heads/main"
        );
        assert_eq!(git(&workspace, &["status", "--porcelain"]), "");
        assert!(workspace.join("main.txt").exists());
    }
}

#[tokio::test]
async fn a_requested_branch_over_the_checkout_limit_fails_too() {
    let stack =
        TestStack::start_configured(true, &[("BACKEND_MAX_CHECKOUT_BYTES", "2000000")]).await;
    let repo = stack.make_repo("project");
    git(&repo, &["checkout", "-q", "-b", "heavy"]);
    std::fs::write(repo.join("zeros-a"), vec![0u8; 3_000_000]).unwrap();
    std::fs::write(repo.join("zeros-b"), vec![0u8; 3_000_000]).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "zeros"]);
    git(&repo, &["checkout", "-q", "main"]);

    let failed = stack
        .session(json!({"repo_url": format!("file://{}", repo.display()), "ref": "heavy"}))
        .await;

    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["error"],
        "the repository's files add up to more than the checkout limit of 2000000 bytes (BACKEND_MAX_CHECKOUT_BYTES)"
    );
    wait_gone(&stack.root.join(failed["session_id"].as_str().unwrap())).await;
}

#[tokio::test]
async fn a_clone_without_the_reserved_free_space_fails_before_writing() {
    // An exabyte: more than any test machine has free.
    let stack = TestStack::start_configured(
        true,
        &[("BACKEND_MIN_FREE_DISK_BYTES", "1000000000000000000")],
    )
    .await;
    let repo = stack.make_repo("project");

    let failed = stack
        .session(json!({"repo_url": format!("file://{}", repo.display())}))
        .await;

    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.starts_with("not enough free disk space for the workspace")
            && error.contains("BACKEND_MIN_FREE_DISK_BYTES"),
        "{error}"
    );
    wait_gone(&stack.root.join(failed["session_id"].as_str().unwrap())).await;
}

#[tokio::test]
async fn deleting_a_cloning_session_removes_its_folder_when_the_clone_stops() {
    let stack = TestStack::start().await;
    let server = SilentServer::start().await;
    let id = create(&stack, json!({"repo_url": server.url})).await;
    let connection = server.accept().await;

    delete(&stack, &id).await;

    let response = stack.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(response.status(), 404);
    // The server gives up; the clone stops and its task cleans up.
    drop(connection);
    drop(server);
    wait_gone(&stack.root.join(&id)).await;
    wait_empty(&stack.root).await;
}

#[tokio::test]
async fn a_clone_past_its_deadline_fails_and_leaves_nothing() {
    let stack = TestStack::start_configured(true, &[("BACKEND_CLONE_TIMEOUT_SECS", "3")]).await;
    // Counts the clone-progress writes: every UPDATE of a session that is
    // still cloning.
    for sql in [
        "CREATE TABLE progress_writes (n int)",
        "CREATE FUNCTION count_write() RETURNS trigger AS
           $$ BEGIN INSERT INTO progress_writes VALUES (1); RETURN NEW; END $$
           LANGUAGE plpgsql",
        "CREATE TRIGGER count_writes AFTER UPDATE ON sessions
           FOR EACH ROW WHEN (NEW.status = 'cloning') EXECUTE FUNCTION count_write()",
    ] {
        stack.db.query(sql).await;
    }
    let server = SilentServer::start().await;
    let id = create(&stack, json!({"repo_url": server.url})).await;
    let connection = server.accept().await;

    let failed = stack.wait_cloned(&id).await;

    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["error"],
        "the clone took longer than the limit of 3 seconds (BACKEND_CLONE_TIMEOUT_SECS)"
    );
    drop(connection);
    drop(server);
    wait_gone(&stack.root.join(&id)).await;
    let after = stack.get_json(&format!("/api/sessions/{id}")).await;
    assert_eq!(after["status"], "failed");
    assert_eq!(after["error"], failed["error"]);
    // Progress that never changed is written once, not once per tick.
    let writes = stack.db.query("SELECT count(*) FROM progress_writes").await;
    assert_eq!(writes[0].get::<_, i64>(0), 1);
}

#[tokio::test]
async fn deletes_racing_clone_completion_leave_no_folder_and_no_thread() {
    let stack = TestStack::start().await;
    // Remembers every runner thread a session row ever named, even if the
    // row is deleted a moment later.
    for sql in [
        "CREATE TABLE threads_seen (id text)",
        "CREATE FUNCTION remember_thread() RETURNS trigger AS
           $$ BEGIN INSERT INTO threads_seen VALUES (NEW.runner_thread_id); RETURN NEW; END $$
           LANGUAGE plpgsql",
        "CREATE TRIGGER remember_threads AFTER UPDATE ON sessions
           FOR EACH ROW WHEN (NEW.runner_thread_id IS NOT NULL) EXECUTE FUNCTION remember_thread()",
    ] {
        stack.db.query(sql).await;
    }
    let repo = stack.make_repo("project");
    let url = format!("file://{}", repo.display());
    // How long a clone takes on this machine now: the gaps below span it,
    // so the deletes land before, during and just after completion however
    // loaded the machine is.
    let started = std::time::Instant::now();
    let first = create(&stack, json!({"repo_url": url})).await;
    stack.wait_cloned(&first).await;
    let clone_ms = started.elapsed().as_millis().max(4) as u64;
    delete(&stack, &first).await;
    stack.db.query("DELETE FROM threads_seen").await;

    for _ in 0..100 {
        let id = create(&stack, json!({"repo_url": url})).await;
        let gap = u64::from(uuid::Uuid::new_v4().as_u128() as u32) % (clone_ms * 3 / 2);
        tokio::time::sleep(Duration::from_millis(gap)).await;
        delete(&stack, &id).await;
    }

    let sessions = stack.get_json("/api/sessions").await;
    assert_eq!(sessions["total"], 0);
    wait_empty(&stack.root).await;
    let threads = stack.db.query("SELECT DISTINCT id FROM threads_seen").await;
    assert!(
        !threads.is_empty(),
        "some clones finished before their delete: the race was run"
    );
    for row in threads {
        let thread: String = row.get(0);
        let response = stack
            .client
            .get(stack.runner_url(&format!("/threads/{thread}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "runner thread {thread} was left");
    }
}

#[tokio::test]
async fn a_restart_fails_interrupted_clones_and_removes_leftover_folders() {
    let mut stack = TestStack::start().await;
    let (ready, _) = stack.ready_session().await;
    let server = SilentServer::start().await;
    let cloning = create(&stack, json!({"repo_url": server.url})).await;
    let _connection = server.accept().await;
    // What a session deleted during a crash leaves: a folder of no session.
    let orphan = stack.root.join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(orphan.join("repo")).unwrap();
    std::fs::write(orphan.join("repo/file.txt"), "left behind\n").unwrap();
    // Not named like a session: not ours to remove.
    let foreign = stack.root.join("operator-notes");
    std::fs::create_dir_all(&foreign).unwrap();

    stack.kill_backend().await;
    stack.start_backend().await;

    let interrupted = stack.get_json(&format!("/api/sessions/{cloning}")).await;
    assert_eq!(interrupted["status"], "failed", "{interrupted}");
    assert_eq!(
        interrupted["error"],
        "the clone was interrupted by a restart of the backend; delete this session and create it again"
    );
    assert!(!stack.root.join(&cloning).exists());
    assert!(!orphan.exists());
    assert!(foreign.exists());
    assert!(stack.workspace(&ready).join("README.md").exists());
}
