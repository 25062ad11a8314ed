//! Attacks on the file endpoints and the diff, performed against the real
//! stack: a FIFO that would pin the backend's blocking threads, symlinks
//! used as an oracle for what exists outside the workspace, a
//! `core.worktree` that points the diff outside, and diffs of huge files.

use std::os::unix::fs::{symlink, FileTypeExt};

use codex_sdk::SandboxMode;
use futures_util::future::join_all;
use serde_json::{json, Value};
use test_support::HANG_GUARD;

use crate::helpers::{assert_error, TestStack};

/// Runs `prompt` to its end and returns the run as the API shows it.
async fn run_to_end(stack: &TestStack, session: &str, prompt: &str) -> Value {
    let run = stack.prompt(session, prompt).await;
    let events = tokio::time::timeout(HANG_GUARD, stack.events(&run))
        .await
        .expect("the run never ended");
    assert_eq!(
        events.last().map(|e| e.label()),
        Some("run.completed".to_owned()),
        "the run must complete, its outcome included"
    );
    stack.get_json(&format!("/api/runs/{run}")).await
}

#[tokio::test]
async fn a_fifo_is_refused_at_once_and_stalls_no_read_or_clone() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;

    // The agent makes the FIFO (and a symlink to it); the run's outcome
    // (status snapshots) must not block on it either.
    let run = run_to_end(&stack, &session, "make a fifo").await;
    assert_eq!(run["status"], "completed", "{run}");
    let workspace = stack.workspace(&session);
    assert!(std::fs::metadata(workspace.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());

    // Many concurrent reads of the FIFO, directly and through the link.
    let reads = (0..50).map(|i| {
        let path = if i % 2 == 0 { "pipe" } else { "pipe-link" };
        let url = format!("/api/sessions/{session}/files/{path}");
        let stack = &stack;
        async move { stack.get(&url).await }
    });
    let responses = tokio::time::timeout(HANG_GUARD, join_all(reads))
        .await
        .expect("reads of a FIFO must not hang");
    for response in responses {
        let body = assert_error(response, 400, "bad_request").await;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("not a regular file"),
            "{body}"
        );
    }

    // The same backend still serves files, trees, diffs and new clones.
    let file = stack
        .get_json(&format!("/api/sessions/{session}/files/main.txt"))
        .await;
    assert_eq!(file["content"], "second commit on main\n");
    stack
        .get_json(&format!("/api/sessions/{session}/files"))
        .await;
    stack
        .get_json(&format!("/api/sessions/{session}/diff"))
        .await;
    let repo = stack.make_repo("another");
    let other = stack
        .session(json!({"repo_url": format!("file://{}", repo.display())}))
        .await;
    assert_eq!(other["status"], "ready", "{other}");
}

#[tokio::test]
async fn paths_that_leave_the_workspace_answer_like_missing_files() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let workspace = stack.workspace(&session);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "outside secret\n").unwrap();
    // What an agent can do in its workspace: links to files that exist
    // outside, to files that do not, and to a folder outside.
    symlink("/etc/passwd", workspace.join("to-passwd")).unwrap();
    symlink("/etc/nonexistent", workspace.join("to-nothing")).unwrap();
    symlink(
        outside.path().join("secret.txt"),
        workspace.join("to-secret"),
    )
    .unwrap();
    symlink("/etc", workspace.join("to-etc")).unwrap();
    symlink("main.txt", workspace.join("inside-link")).unwrap();
    symlink(".git/config", workspace.join("git-link")).unwrap();

    let answer = |path: &'static str| {
        let url = format!("/api/sessions/{session}/files/{path}");
        let stack = &stack;
        async move {
            let response = stack.get(&url).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            // The message names the path asked for; everything else must
            // be the same.
            let message = body["message"].as_str().unwrap().replace(path, "PATH");
            (status, body["code"].clone(), body["error"].clone(), message)
        }
    };
    let missing = answer("no-such-file").await;
    assert_eq!(
        missing,
        (
            404,
            json!("not_found"),
            json!("Not Found"),
            "PATH: no such file".to_owned()
        )
    );
    for path in [
        "to-passwd",
        "to-nothing",
        "to-secret",
        "to-etc/passwd",
        "to-etc/nonexistent",
    ] {
        assert_eq!(answer(path).await, missing, "{path}");
    }

    // A link that stays inside is still followed.
    let file = stack
        .get_json(&format!("/api/sessions/{session}/files/inside-link"))
        .await;
    assert_eq!(file["content"], "second commit on main\n");
    // One that leads into `.git` is refused like the path `.git/config`.
    let body = assert_error(
        stack
            .get(&format!("/api/sessions/{session}/files/git-link"))
            .await,
        400,
        "bad_request",
    )
    .await;
    assert_eq!(body["message"], "path must not name the .git folder");

    // The tree shows every link the same way, whatever its target.
    let tree = stack
        .get_json(&format!("/api/sessions/{session}/files"))
        .await;
    let links: Vec<&Value> = tree["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"].as_str().unwrap().starts_with("to-"))
        .collect();
    assert_eq!(
        links,
        [
            &json!({"path": "to-etc", "kind": "symlink", "size": 0}),
            &json!({"path": "to-nothing", "kind": "symlink", "size": 0}),
            &json!({"path": "to-passwd", "kind": "symlink", "size": 0}),
            &json!({"path": "to-secret", "kind": "symlink", "size": 0}),
        ]
    );
}

#[tokio::test]
async fn a_core_worktree_outside_the_workspace_is_ignored() {
    let stack = TestStack::start_custom(true, SandboxMode::DangerFullAccess, &[]).await;
    let (session, _) = stack.ready_session().await;
    // The folder the agent points the work tree at: made by the test, next
    // to the workspaces (`$(cd ../../.. && pwd)/outside` from a workspace).
    let outside = stack.root.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = format!("TOP-SECRET-{}", uuid::Uuid::new_v4());
    std::fs::write(outside.join("secret.txt"), format!("{secret}\n")).unwrap();
    std::fs::write(outside.join("main.txt"), format!("{secret}\n")).unwrap();

    let run = run_to_end(&stack, &session, "redirect the worktree").await;

    // The attack happened: the workspace's config now redirects the tree.
    let config = std::fs::read_to_string(stack.workspace(&session).join(".git/config")).unwrap();
    assert!(
        config.contains(&format!("worktree = {}", outside.display())),
        "{config}"
    );
    assert_eq!(
        run["files"],
        json!({"created": [], "modified": [], "deleted": []}),
        "the run's outcome reads the workspace, not the redirected tree"
    );
    let diff = stack
        .get_json(&format!("/api/sessions/{session}/diff"))
        .await;
    assert_eq!(diff["patch"], "", "{diff}");
    assert_eq!(diff["files_changed"], 0);
    let tree = stack
        .get_json(&format!("/api/sessions/{session}/files"))
        .await;
    assert!(!tree.to_string().contains("secret.txt"), "{tree}");
    assert_error(
        stack
            .get(&format!("/api/sessions/{session}/files/secret.txt"))
            .await,
        404,
        "not_found",
    )
    .await;
    let main = stack
        .get_json(&format!("/api/sessions/{session}/files/main.txt"))
        .await;
    assert_eq!(main["content"], "second commit on main\n");
    for body in [&diff, &tree, &run, &main] {
        assert!(!body.to_string().contains(&secret), "{body}");
    }

    // The same redirect through `include.path` (as the agent could write
    // it): still the workspace's own tree.
    let workspace = stack.workspace(&session);
    test_support::git(&workspace, &["config", "--unset", "core.worktree"]);
    let included = outside.join("evil.config");
    std::fs::write(
        &included,
        format!("[core]\n\tworktree = {}\n", outside.display()),
    )
    .unwrap();
    test_support::git(
        &workspace,
        &["config", "include.path", included.to_str().unwrap()],
    );
    let again = stack
        .get_json(&format!("/api/sessions/{session}/diff"))
        .await;
    assert_eq!(again, diff);
}

#[tokio::test]
async fn a_diff_over_huge_files_stays_within_its_limits() {
    let stack = TestStack::start_custom(
        true,
        SandboxMode::WorkspaceWrite,
        &[
            ("BACKEND_MAX_FILE_BYTES", "65536"),
            ("BACKEND_MAX_DIFF_BYTES", "16384"),
            ("BACKEND_MAX_CONCURRENT_DIFFS", "1"),
        ],
    )
    .await;
    let (session, _) = stack.ready_session().await;
    let workspace = stack.workspace(&session);
    // A 4 MB file (over the per-file limit) and a 40 kB one (under it, but
    // its patch alone is over the diff limit).
    let huge: String = (0..220_000)
        .map(|i| format!("huge line {i:07}\n"))
        .collect();
    assert!(huge.len() > 3_000_000);
    std::fs::write(workspace.join("huge.txt"), &huge).unwrap();
    let medium: String = (0..2_000)
        .map(|i| format!("medium line {i:06}\n"))
        .collect();
    std::fs::write(workspace.join("medium.txt"), &medium).unwrap();

    // Several at once: they queue behind BACKEND_MAX_CONCURRENT_DIFFS and
    // each still answers in full.
    let url = format!("/api/sessions/{session}/diff");
    let diffs = tokio::time::timeout(HANG_GUARD, join_all((0..6).map(|_| stack.get_json(&url))))
        .await
        .expect("queued diffs must all be served");
    for diff in &diffs {
        assert_eq!(diff, &diffs[0]);
    }
    let diff = &diffs[0];
    assert_eq!(
        diff["too_large"],
        json!(["huge.txt"]),
        "{}",
        diff["too_large"]
    );
    assert_eq!(diff["truncated"], true);
    let patch = diff["patch"].as_str().unwrap();
    assert!(patch.len() <= 16384, "{}", patch.len());
    assert!(
        !patch.contains("huge line"),
        "the huge file is never loaded"
    );
    assert!(patch.contains("+medium line 000000"), "{patch}");
    assert_eq!(diff["files_changed"], 2);
}

#[tokio::test]
async fn a_git_folder_swapped_for_a_symlink_is_not_followed() {
    let stack = TestStack::start().await;
    let (session, repo) = stack.ready_session().await;
    let workspace = stack.workspace(&session);
    // An outside copy of the repository whose work tree holds a secret and
    // whose config points its work tree there.
    let outside = stack.repos.join("outside-copy");
    test_support::git(
        &stack.repos,
        &[
            "clone",
            "-q",
            repo.to_str().unwrap(),
            outside.to_str().unwrap(),
        ],
    );
    std::fs::write(outside.join("secret.txt"), "OUTSIDE-SECRET\n").unwrap();
    test_support::git(
        &outside,
        &["config", "core.worktree", outside.to_str().unwrap()],
    );
    std::fs::rename(workspace.join(".git"), workspace.join("old-git")).unwrap();
    symlink(outside.join(".git"), workspace.join(".git")).unwrap();

    let response = stack.get(&format!("/api/sessions/{session}/diff")).await;
    let body = assert_error(response, 409, "conflict").await;
    assert_eq!(
        body["message"],
        "the workspace's .git is not a plain repository folder (a symlink, a gitfile, commondir, alternates, or objects or refs elsewhere)"
    );
    let tree = stack
        .get_json(&format!("/api/sessions/{session}/files"))
        .await;
    assert!(!tree.to_string().contains("OUTSIDE-SECRET"), "{tree}");
    assert!(!tree.to_string().contains("secret.txt"), "{tree}");
}
