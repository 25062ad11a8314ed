//! Getting the agent's work out: patches that `git apply` takes, the
//! workspace's git state, commits, pushes to a smart-HTTP git server made
//! here, and pull requests on loopback stand-ins of the forges' APIs.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use test_support::forge::{Forge, ForgeStandIn, REPOSITORY};
use test_support::git;
use test_support::git_http::{GitServer, PRIVATE_TOKEN};

use crate::helpers::{assert_error, bare_clone, TestStack};

const SECRET_KEY: &str = "test-secret-key-of-at-least-32-characters";
const FORGE_TOKEN: &str = "forge_token_1234";

/// A repository with a file of each kind the agent changes below.
fn origin_repo(dir: &Path) -> PathBuf {
    test_support::init_repo(dir);
    std::fs::write(dir.join("main.txt"), "moved, never edited\n").unwrap();
    std::fs::write(dir.join("gone.txt"), "deleted by the agent\n").unwrap();
    std::fs::write(dir.join("tool.sh"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::write(dir.join("image.bin"), [0u8, 9, 8, 7, 0, 255]).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "files of every kind"]);
    dir.to_path_buf()
}

/// A smart-HTTP server whose `acme/widgets.git` (the forge stand-ins'
/// repository) and `private/acme/widgets.git` hold `origin`, and a stack
/// whose FORGES maps the server to a GitHub stand-in.
struct Shipping {
    stack: TestStack,
    server: GitServer,
    forge: ForgeStandIn,
    served: PathBuf,
    _dir: tempfile::TempDir,
}

impl Shipping {
    async fn start(extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let origin = origin_repo(&dir.path().join("origin"));
        let served = dir.path().join("served");
        bare_clone(&origin, &served.join(format!("{REPOSITORY}.git")));
        bare_clone(&origin, &served.join(format!("private/{REPOSITORY}.git")));
        let server = GitServer::start(&served).await.unwrap();
        let forge = ForgeStandIn::start(Forge::GitHub, FORGE_TOKEN).await;
        let host = server.base.trim_start_matches("http://").to_owned();
        let forges = format!("{host}=github:{}", forge.api_base);
        let mut env = vec![
            ("FORGES", forges.as_str()),
            ("BACKEND_SECRET_KEY", SECRET_KEY),
        ];
        env.extend_from_slice(extra_env);
        let stack = TestStack::start_configured(true, &env).await;
        Self {
            stack,
            server,
            forge,
            served,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("{}/{REPOSITORY}.git", self.server.base)
    }

    fn bare(&self) -> PathBuf {
        self.served.join(format!("{REPOSITORY}.git"))
    }

    /// A ready session of the served repository.
    async fn session(&self, body: Value) -> String {
        let session = self.stack.session(body).await;
        assert_eq!(session["status"], "ready", "{session}");
        session["session_id"].as_str().unwrap().to_owned()
    }

    /// Runs a prompt to its end; returns the run's id.
    async fn run(&self, session: &str, prompt: &str) -> String {
        let run = self.stack.prompt(session, prompt).await;
        let events = self.stack.events(&run).await;
        assert_eq!(events.last().unwrap().event, "run.completed", "{events:?}");
        run
    }

    async fn git_state(&self, session: &str) -> Value {
        let response = self
            .stack
            .get(&format!("/api/sessions/{session}/git"))
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn patch(&self, path: &str) -> Vec<u8> {
        let response = self.stack.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/x-diff");
        let disposition = headers["content-disposition"].to_str().unwrap();
        assert!(
            disposition.starts_with("attachment; filename=\"") && disposition.ends_with(".patch\""),
            "{disposition}"
        );
        response.bytes().await.unwrap().to_vec()
    }
}

/// A fresh clone of `origin` at `commit`.
fn fresh_clone(origin: &Path, into: &Path, commit: &str) -> PathBuf {
    git(
        origin.parent().unwrap(),
        &[
            "clone",
            "-q",
            origin.to_str().unwrap(),
            into.to_str().unwrap(),
        ],
    );
    git(into, &["checkout", "-q", commit]);
    into.to_path_buf()
}

fn apply(dir: &Path, patch: &[u8]) {
    let file = dir.with_extension("patch");
    std::fs::write(&file, patch).unwrap();
    git(
        dir,
        &["apply", "--whitespace=nowarn", file.to_str().unwrap()],
    );
}

/// The tree `git add -A` makes of the folder's files.
fn tree_of(dir: &Path) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["write-tree"])
}

/// The tree of the workspace's files as the backend recorded them after
/// `run`.
fn snapshot_tree(workspace: &Path, run: &str) -> String {
    git(
        workspace,
        &[
            "rev-parse",
            &format!("refs/repo-runner/runs/{run}/after^{{tree}}"),
        ],
    )
}

#[tokio::test]
async fn run_and_session_patches_apply_to_a_fresh_clone() {
    let shipping = Shipping::start(&[]).await;
    let stack = &shipping.stack;
    let session = shipping.session(json!({"repo_url": shipping.url()})).await;
    let workspace = stack.workspace(&session);
    let base = git(&workspace, &["rev-parse", "HEAD"]);
    let first = shipping.run(&session, "change every kind of file").await;
    let second = shipping.run(&session, "create a file").await;

    let first_patch = shipping.patch(&format!("/api/runs/{first}/patch")).await;
    let text = String::from_utf8_lossy(&first_patch);
    for expected in [
        "GIT binary patch",
        "rename from main.txt\nrename to moved.txt",
        "old mode 100644\nnew mode 100755",
        "deleted file mode 100644",
        "new file mode 100644\nindex 0000000000000000000000000000000000000000..e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
    let second_patch = shipping.patch(&format!("/api/runs/{second}/patch")).await;
    let session_patch = shipping
        .patch(&format!("/api/sessions/{session}/patch"))
        .await;

    let scratch = tempfile::tempdir().unwrap();
    // Each run's patch applies to the state before it.
    let by_runs = fresh_clone(&shipping.bare(), &scratch.path().join("by-runs"), &base);
    apply(&by_runs, &first_patch);
    assert_eq!(tree_of(&by_runs), snapshot_tree(&workspace, &first));
    apply(&by_runs, &second_patch);
    let after = snapshot_tree(&workspace, &second);
    assert_eq!(tree_of(&by_runs), after);
    // The session's patch is both at once, against the base commit.
    let whole = fresh_clone(&shipping.bare(), &scratch.path().join("whole"), &base);
    apply(&whole, &session_patch);
    assert_eq!(tree_of(&whole), after);
    // Nothing was done to the user's branches or index: the agent's files
    // are still uncommitted changes.
    assert_eq!(git(&workspace, &["rev-parse", "HEAD"]), base);
    let status = git(&workspace, &["status", "--porcelain"]);
    assert!(status.contains("?? empty"), "{status}");
}

#[tokio::test]
async fn commit_push_and_open_a_pull_request() {
    let shipping = Shipping::start(&[]).await;
    let stack = &shipping.stack;
    let session = shipping.session(json!({"repo_url": shipping.url()})).await;
    let workspace = stack.workspace(&session);
    let base = git(&workspace, &["rev-parse", "HEAD"]);
    shipping.run(&session, "create a file").await;

    let state = shipping.git_state(&session).await;
    assert_eq!(state["branch"], "main");
    assert_eq!(state["cloned_branch"], "main");
    assert_eq!(state["head"], base.as_str());
    assert_eq!(state["base_commit"], base.as_str());
    assert_eq!(state["ahead"], 0);
    // hello.txt made, README.md deleted.
    assert_eq!(state["dirty"], 2, "{state}");

    let commits = format!("/api/sessions/{session}/commits");
    let made = stack
        .post(
            &commits,
            json!({"message": "Add hello\n\nThe agent's work."}),
        )
        .await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let branch = format!("repo-runner/{}", &session.replace('-', "")[..8]);
    assert_eq!(made["branch"], branch.as_str());
    let sha = made["sha"].as_str().unwrap().to_owned();

    let state = shipping.git_state(&session).await;
    assert_eq!(state["branch"], branch.as_str());
    assert_eq!(state["head"], sha.as_str());
    assert_eq!(
        (state["ahead"].as_u64(), state["dirty"].as_u64()),
        (Some(1), Some(0))
    );
    let commit = &state["commits"][0];
    assert_eq!(commit["sha"], sha.as_str());
    assert_eq!(commit["subject"], "Add hello");
    assert_eq!(commit["author_name"], "alice");
    assert_eq!(commit["author_email"], "alice@users.repo-runner.invalid");
    // The repository agrees: the branch, the parent, a clean status.
    assert_eq!(git(&workspace, &["rev-parse", &format!("{sha}^")]), base);
    assert_eq!(git(&workspace, &["status", "--porcelain"]), "");
    assert_eq!(git(&workspace, &["rev-parse", "main"]), base);
    let nothing = stack.post(&commits, json!({"message": "again"})).await;
    let body = assert_error(nothing, 422, "validation_error").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nothing to commit"),
        "{body}"
    );

    // Push: the branch lands on the server, the default branch does not move.
    let push = format!("/api/sessions/{session}/push");
    let pushed = stack.post(&push, json!({})).await;
    assert_eq!(pushed.status(), 200);
    let pushed: Value = pushed.json().await.unwrap();
    assert_eq!(pushed, json!({"remote_branch": branch, "sha": sha}));
    let bare = shipping.bare();
    assert_eq!(
        git(&bare, &["rev-parse", &format!("refs/heads/{branch}")]),
        sha
    );
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/main"]), base);

    // Onto the default branch only when asked; and never a non-fast-forward.
    let refused = stack.post(&push, json!({"remote_branch": "main"})).await;
    let body = assert_error(refused, 409, "conflict").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("to_default_branch"),
        "{body}"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let other = fresh_clone(&bare, &elsewhere.path().join("other"), "main");
    std::fs::write(other.join("other.txt"), "someone else\n").unwrap();
    git(&other, &["add", "."]);
    git(&other, &["commit", "-q", "-m", "someone else's work"]);
    git(&other, &["push", "-q", "origin", "HEAD:main"]);
    let moved = git(&bare, &["rev-parse", "refs/heads/main"]);
    let rejected = stack
        .post(
            &push,
            json!({"remote_branch": "main", "to_default_branch": true}),
        )
        .await;
    let body = assert_error(rejected, 409, "conflict").await;
    assert!(
        body["message"].as_str().unwrap().contains("fast-forward"),
        "{body}"
    );
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/main"]), moved);

    // The pull request, from the pushed branch into the default one.
    let pulls = format!("/api/sessions/{session}/pull-requests");
    let no_token = stack.post(&pulls, json!({"title": "Add hello"})).await;
    assert_error(no_token, 422, "validation_error").await;
    let same = stack
        .post(
            &pulls,
            json!({"title": "x", "base": branch, "token": FORGE_TOKEN}),
        )
        .await;
    let body = assert_error(same, 422, "validation_error").await;
    assert!(
        body["message"].as_str().unwrap().contains("head and base"),
        "{body}"
    );
    let opened = stack
        .post(
            &pulls,
            json!({"title": "Add hello", "body": "Made by the agent", "draft": true, "token": FORGE_TOKEN}),
        )
        .await;
    assert_eq!(opened.status(), 201);
    let opened: Value = opened.json().await.unwrap();
    assert_eq!(opened["number"], 1);
    assert_eq!(opened["head"], branch.as_str());
    assert_eq!(opened["base"], "main");
    let url = opened["url"].as_str().unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/pull/1"),
        "{url}"
    );
    let requests = shipping.forge.requests();
    let sent = requests.last().unwrap();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, format!("/repos/{REPOSITORY}/pulls"));
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {FORGE_TOKEN}").as_str())
    );
    assert_eq!(
        sent.json(),
        json!({"title": "Add hello", "head": branch, "base": "main", "body": "Made by the agent", "draft": true})
    );
    let state = shipping.git_state(&session).await;
    assert_eq!(state["pull_requests"][0]["url"], url);
    // The forge's own words come back when it refuses.
    let again = stack
        .post(&pulls, json!({"title": "Add hello", "token": FORGE_TOKEN}))
        .await;
    let body = assert_error(again, 422, "validation_error").await;
    assert!(
        body["message"].as_str().unwrap().contains("already exists"),
        "{body}"
    );
    let bad_token = stack
        .post(&pulls, json!({"title": "Add hello", "token": "wrong"}))
        .await;
    let body = assert_error(bad_token, 422, "validation_error").await;
    assert!(
        body["message"].as_str().unwrap().contains("refused"),
        "{body}"
    );

    // No token reached the log or the workspace's configuration.
    let config = std::fs::read_to_string(workspace.join(".git/config")).unwrap();
    for line in stack
        .log
        .lines()
        .iter()
        .map(String::as_str)
        .chain([config.as_str()])
    {
        assert!(
            !line.contains(FORGE_TOKEN) && !line.contains("wrong\""),
            "{line}"
        );
    }
}

#[tokio::test]
async fn a_kept_token_pushes_and_a_refused_one_says_so() {
    let shipping = Shipping::start(&[]).await;
    let stack = &shipping.stack;
    let url = format!("{}/private/{REPOSITORY}.git", shipping.server.base);
    let session = shipping
        .session(json!({"repo_url": url, "token": PRIVATE_TOKEN, "keep_token": true}))
        .await;
    shipping.run(&session, "create a file").await;
    let made = stack
        .post(
            &format!("/api/sessions/{session}/commits"),
            json!({"message": "Add hello", "branch": "work/hello"}),
        )
        .await;
    assert_eq!(made.status(), 201);
    let sha = made.json::<Value>().await.unwrap()["sha"]
        .as_str()
        .unwrap()
        .to_owned();

    let push = format!("/api/sessions/{session}/push");
    let refused = stack.post(&push, json!({"token": "not-the-token"})).await;
    let body = assert_error(refused, 422, "validation_error").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("refused the credentials"),
        "{body}"
    );
    let pushed = stack.post(&push, json!({"remote_branch": "hello"})).await;
    assert_eq!(pushed.status(), 200);
    let bare = shipping.served.join(format!("private/{REPOSITORY}.git"));
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/hello"]), sha);

    // Sealed at rest; never in the workspace, the log, or a response.
    let rows = stack
        .db
        .query(&format!(
            "SELECT token_sealed FROM sessions WHERE id = '{session}'"
        ))
        .await;
    let sealed: Vec<u8> = rows[0].get(0);
    assert!(!sealed
        .windows(PRIVATE_TOKEN.len())
        .any(|w| w == PRIVATE_TOKEN.as_bytes()));
    let config = std::fs::read_to_string(stack.workspace(&session).join(".git/config")).unwrap();
    assert!(!config.contains(PRIVATE_TOKEN), "{config}");
    assert!(stack.log.lines().iter().all(|l| !l.contains(PRIVATE_TOKEN)));
    let shown = stack.get_json(&format!("/api/sessions/{session}")).await;
    assert!(!shown.to_string().contains(PRIVATE_TOKEN), "{shown}");
}

/// Commits sent at once on one idle session take the workspace in turn:
/// one is made; each other is told that another commit holds the
/// workspace, or that nothing is left to commit — never that a run is.
#[tokio::test]
async fn concurrent_commits_say_what_holds_the_workspace() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    std::fs::write(stack.workspace(&session).join("new.txt"), "hello\n").unwrap();
    let url = format!("/api/sessions/{session}/commits");
    let answers = futures_util::future::join_all(
        (0..12).map(|i| stack.post(&url, json!({"message": format!("commit {i}")}))),
    )
    .await;
    let mut made = 0;
    for answer in answers {
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap();
        let message = body["message"].as_str().unwrap_or_default().to_owned();
        match status {
            201 => made += 1,
            409 => assert!(message.contains("another commit or push"), "{body}"),
            422 => assert!(message.contains("nothing to commit"), "{body}"),
            other => panic!("a commit answered {other}: {body}"),
        }
    }
    assert_eq!(made, 1);
}

#[tokio::test]
async fn keep_token_needs_the_servers_secret_key() {
    let stack = TestStack::start().await;
    let response = stack
        .post(
            "/api/sessions",
            json!({"repo_url": "http://127.0.0.1:9/acme/widgets.git", "token": "t", "keep_token": true}),
        )
        .await;
    let body = assert_error(response, 422, "validation_error").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("BACKEND_SECRET_KEY"),
        "{body}"
    );
    // Refused before anything was made.
    let sessions = stack.get_json("/api/sessions").await;
    assert_eq!(sessions["total"], 0, "{sessions}");
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let shipping = Shipping::start(&[]).await;
    let stack = &shipping.stack;
    let session = shipping.session(json!({"repo_url": shipping.url()})).await;
    let workspace = stack.workspace(&session);
    shipping.run(&session, "create a file").await;
    let head = git(&workspace, &["rev-parse", "HEAD"]);
    let commits = format!("/api/sessions/{session}/commits");
    let push = format!("/api/sessions/{session}/push");

    for branch in [
        "a..b",
        "x@{1}",
        "-x",
        "bell\u{7}",
        "with space",
        "main.lock",
        "HEAD",
        "",
    ] {
        let response = stack
            .post(&commits, json!({"message": "m", "branch": branch}))
            .await;
        assert_error(response, 422, "validation_error").await;
        let response = stack.post(&push, json!({"remote_branch": branch})).await;
        assert_error(response, 422, "validation_error").await;
    }
    let empty = stack.post(&commits, json!({"message": "  \n"})).await;
    assert_error(empty, 422, "validation_error").await;
    let huge = stack
        .post(&commits, json!({"message": "x".repeat(1024 * 1024)}))
        .await;
    assert!(
        matches!(huge.status().as_u16(), 413 | 422),
        "{}",
        huge.status()
    );
    let onto_main = stack
        .post(&commits, json!({"message": "m", "branch": "main"}))
        .await;
    let body = assert_error(onto_main, 409, "conflict").await;
    assert!(
        body["message"].as_str().unwrap().contains("cloned from"),
        "{body}"
    );

    // While a run is running, neither a commit nor a push.
    let run = stack.prompt(&session, "sleep").await;
    let mut events = stack.subscribe(&run, None).await;
    events.until(|e| e.event == "item.started").await;
    let busy = stack.post(&commits, json!({"message": "m"})).await;
    assert_error(busy, 409, "conflict").await;
    let busy = stack.post(&push, json!({})).await;
    assert_error(busy, 409, "conflict").await;
    let cancelled = stack
        .post(&format!("/api/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status(), 202);
    events.rest().await;

    // A run still running has no patch; an unknown one is a 404.
    let unknown = stack
        .get(&format!("/api/runs/{}/patch", uuid::Uuid::new_v4()))
        .await;
    assert_error(unknown, 404, "not_found").await;

    // Another tenant sees none of it.
    let bob = stack.add_user("bob", false).await;
    for path in [
        format!("/api/sessions/{session}/git"),
        format!("/api/sessions/{session}/patch"),
        format!("/api/runs/{run}/patch"),
    ] {
        let response = bob.client.get(stack.url(&path)).send().await.unwrap();
        assert_error(response, 404, "not_found").await;
    }
    for (path, body) in [
        (commits.clone(), json!({"message": "m"})),
        (push.clone(), json!({})),
        (
            format!("/api/sessions/{session}/pull-requests"),
            json!({"title": "t", "token": FORGE_TOKEN}),
        ),
    ] {
        let response = bob
            .client
            .post(stack.url(&path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, 404, "not_found").await;
    }

    assert_eq!(git(&workspace, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        git(&workspace, &["for-each-ref", "refs/heads"])
            .lines()
            .count(),
        1
    );
    assert_eq!(
        git(&shipping.bare(), &["for-each-ref", "refs/heads"])
            .lines()
            .count(),
        1
    );
}

#[tokio::test]
async fn a_pull_request_pushes_its_branch_first_and_gitlab_gets_a_merge_request() {
    // The stand-ins know `acme/widgets`; FORGES names this server GitLab.
    let dir = tempfile::tempdir().unwrap();
    let origin = origin_repo(&dir.path().join("origin"));
    let served = dir.path().join("served");
    bare_clone(&origin, &served.join(format!("{REPOSITORY}.git")));
    let server = GitServer::start(&served).await.unwrap();
    let gitlab = ForgeStandIn::start(Forge::GitLab, FORGE_TOKEN).await;
    let host = server.base.trim_start_matches("http://").to_owned();
    let forges = format!("{host}=gitlab:{}", gitlab.api_base);
    let stack = TestStack::start_configured(true, &[("FORGES", forges.as_str())]).await;
    // Alice's commits carry the email an admin set.
    let set = stack
        .admin(&["user", "email", "alice", "alice@example.com"])
        .await;
    assert!(set.success, "{}", set.stderr);
    let bad = stack
        .admin(&["user", "email", "alice", "not an email"])
        .await;
    assert!(!bad.success);
    let session = stack
        .session(json!({"repo_url": format!("{}/{REPOSITORY}.git", server.base)}))
        .await;
    let session = session["session_id"].as_str().unwrap().to_owned();
    let run = stack.prompt(&session, "create a file").await;
    stack.events(&run).await;
    let made = stack
        .post(
            &format!("/api/sessions/{session}/commits"),
            json!({"message": "Add hello", "branch": "feature/hello"}),
        )
        .await;
    assert_eq!(made.status(), 201);
    let sha = made.json::<Value>().await.unwrap()["sha"]
        .as_str()
        .unwrap()
        .to_owned();
    let state = stack
        .get_json(&format!("/api/sessions/{session}/git"))
        .await;
    assert_eq!(state["commits"][0]["author_email"], "alice@example.com");

    let bare = served.join(format!("{REPOSITORY}.git"));
    let before = git(
        &bare,
        &["for-each-ref", "--format=%(refname)", "refs/heads"],
    );
    assert!(!before.contains("feature/hello"), "{before}");
    let opened = stack
        .post(
            &format!("/api/sessions/{session}/pull-requests"),
            json!({"title": "Add hello", "body": "why", "draft": true, "token": FORGE_TOKEN}),
        )
        .await;
    assert_eq!(opened.status(), 201);
    let opened: Value = opened.json().await.unwrap();
    assert_eq!(
        (opened["head"].as_str(), opened["base"].as_str()),
        (Some("feature/hello"), Some("main"))
    );
    // Pushed first, then asked for as GitLab documents it.
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/feature/hello"]), sha);
    let sent = gitlab.requests().pop().unwrap();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/api/v4/projects/acme%2Fwidgets/merge_requests");
    assert_eq!(sent.header("private-token"), Some(FORGE_TOKEN));
    assert_eq!(
        sent.json(),
        json!({"source_branch": "feature/hello", "target_branch": "main", "title": "Draft: Add hello", "description": "why"})
    );
}

#[tokio::test]
async fn a_shallow_session_commits_and_pushes_too() {
    let shipping = Shipping::start(&[]).await;
    let stack = &shipping.stack;
    let session = shipping
        .session(json!({"repo_url": shipping.url(), "depth": 1}))
        .await;
    shipping.run(&session, "create a file").await;
    let state = shipping.git_state(&session).await;
    assert_eq!(
        (state["ahead"].as_u64(), state["dirty"].as_u64()),
        (Some(0), Some(2)),
        "{state}"
    );
    let made = stack
        .post(
            &format!("/api/sessions/{session}/commits"),
            json!({"message": "Add hello"}),
        )
        .await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let pushed = stack
        .post(&format!("/api/sessions/{session}/push"), json!({}))
        .await;
    assert_eq!(pushed.status(), 200);
    let branch = made["branch"].as_str().unwrap();
    let bare = shipping.bare();
    assert_eq!(
        git(&bare, &["rev-parse", &format!("refs/heads/{branch}")]),
        made["sha"].as_str().unwrap()
    );
    // The server can read the whole commit: its tree and its parent.
    git(&bare, &["fsck", "--no-progress", "--connectivity-only"]);
    let patch = shipping
        .patch(&format!("/api/sessions/{session}/patch"))
        .await;
    assert!(String::from_utf8_lossy(&patch).contains("+hello"));
}

/// What an agent that can write `.git` (`danger-full-access`, or an approved
/// command) does, done here by the test on the workspace directly.
#[tokio::test]
async fn what_an_agent_writes_in_git_cannot_redirect_a_push_or_a_write() {
    let shipping = Shipping::start(&[]).await;
    let stack = &shipping.stack;
    let url = format!("{}/private/{REPOSITORY}.git", shipping.server.base);
    let session = shipping
        .session(json!({"repo_url": url, "token": PRIVATE_TOKEN, "keep_token": true}))
        .await;
    let workspace = stack.workspace(&session);
    shipping.run(&session, "create a file").await;
    let made = stack
        .post(
            &format!("/api/sessions/{session}/commits"),
            json!({"message": "Add hello"}),
        )
        .await;
    assert_eq!(made.status(), 201);

    // 1. insteadOf would send the push, and the kept token, elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let trap = elsewhere.path().join("trap.git");
    git(
        elsewhere.path(),
        &["init", "-q", "--bare", trap.to_str().unwrap()],
    );
    for key in ["insteadOf", "pushInsteadOf"] {
        let rewrite = format!("url.file://{}.{key}", trap.display());
        git(&workspace, &["config", &rewrite, &url]);
        let push = stack
            .post(&format!("/api/sessions/{session}/push"), json!({}))
            .await;
        let body = assert_error(push, 409, "conflict").await;
        assert!(
            body["message"].as_str().unwrap().contains("insteadOf"),
            "{body}"
        );
        git(&workspace, &["config", "--unset", &rewrite]);
    }
    assert_eq!(git(&trap, &["for-each-ref"]), "");

    // 2. A symlink where the commit writes its index is replaced, never
    // followed: the file it points at stays as it was.
    let precious = elsewhere.path().join("precious");
    std::fs::write(&precious, "the server's secret\n").unwrap();
    std::os::unix::fs::symlink(&precious, workspace.join(".git/index.repo-runner")).unwrap();
    std::fs::write(workspace.join("more.txt"), "more\n").unwrap();
    let made = stack
        .post(
            &format!("/api/sessions/{session}/commits"),
            json!({"message": "More"}),
        )
        .await;
    assert_eq!(made.status(), 201);
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "the server's secret\n"
    );
    assert_eq!(git(&workspace, &["status", "--porcelain"]), "");

    // 3. A FIFO for a .gitignore is a clear 409, not a request that hangs.
    let fifo = workspace.join(".gitignore");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for path in [
        format!("/api/sessions/{session}/git"),
        format!("/api/sessions/{session}/patch"),
    ] {
        let response = stack.get(&path).await;
        let body = assert_error(response, 409, "conflict").await;
        assert!(
            body["message"].as_str().unwrap().contains("regular"),
            "{body}"
        );
    }
    std::fs::remove_file(&fifo).unwrap();

    // 4. Another repository's objects through `commondir` are refused.
    std::fs::write(
        workspace.join(".git/commondir"),
        elsewhere.path().to_str().unwrap(),
    )
    .unwrap();
    let response = stack.get(&format!("/api/sessions/{session}/git")).await;
    assert_error(response, 409, "conflict").await;
    std::fs::remove_file(workspace.join(".git/commondir")).unwrap();
    let state = shipping.git_state(&session).await;
    assert_eq!(state["ahead"], 2);

    // 5. A branch inside another branch's name is a 409, not a 500.
    std::fs::write(workspace.join("again.txt"), "again\n").unwrap();
    let inside = format!("{}/sub", state["branch"].as_str().unwrap());
    let response = stack
        .post(
            &format!("/api/sessions/{session}/commits"),
            json!({"message": "x", "branch": inside}),
        )
        .await;
    let body = assert_error(response, 409, "conflict").await;
    assert!(
        body["message"].as_str().unwrap().contains("in the way"),
        "{body}"
    );

    // The snapshot state is out of the session's folder.
    assert!(!workspace.parent().unwrap().join("snapshot").exists());
    assert!(stack
        .root
        .join(".snapshots")
        .join(&session)
        .join("index")
        .exists());
}
