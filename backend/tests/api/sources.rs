//! Where sessions clone from: `file://` and smart HTTP (`git http-backend`),
//! with branches, tags, shallow clones, private repositories and failures.

use serde_json::json;
use test_support::git;

use crate::helpers::{bare_clone, TestStack};
use test_support::git_http::{GitServer, PRIVATE_TOKEN};

/// A stack plus an HTTP git server serving `project.git` and
/// `private/secret.git`.
async fn with_http() -> (TestStack, GitServer, std::path::PathBuf) {
    let stack = TestStack::start().await;
    let repo = stack.make_repo("project");
    let served = stack.repos.join("served");
    bare_clone(&repo, &served.join("project.git"));
    bare_clone(&repo, &served.join("private/secret.git"));
    let server = GitServer::start(&served).await.unwrap();
    (stack, server, repo)
}

fn head(stack: &TestStack, session: &str) -> String {
    git(&stack.workspace(session), &["rev-parse", "HEAD"])
}

#[tokio::test]
async fn an_http_clone_checks_out_the_default_branch() {
    let (stack, server, repo) = with_http().await;
    let session = stack
        .session(json!({"repo_url": format!("{}/project.git", server.base)}))
        .await;
    assert_eq!(session["status"], "ready", "{session}");
    let id = session["session_id"].as_str().unwrap();
    assert_eq!(head(&stack, id), git(&repo, &["rev-parse", "main"]));
    assert_eq!(
        session["base_commit"].as_str().unwrap(),
        git(&repo, &["rev-parse", "main"])
    );
    let progress = &session["clone_progress"];
    assert!(
        progress["received_objects"].as_u64().unwrap() > 0,
        "{progress}"
    );
    assert_eq!(progress["received_objects"], progress["total_objects"]);
}

#[tokio::test]
async fn a_branch_a_tag_and_a_commit_can_be_checked_out() {
    let (stack, server, repo) = with_http().await;
    let url = format!("{}/project.git", server.base);
    let initial = git(&repo, &["rev-list", "--max-parents=0", "main"]);
    for (git_ref, expected, branch) in [
        (
            "feature",
            git(&repo, &["rev-parse", "feature"]),
            Some("feature"),
        ),
        ("v1", git(&repo, &["rev-parse", "v1^{commit}"]), None),
        (initial.as_str(), initial.clone(), None),
    ] {
        let session = stack
            .session(json!({"repo_url": url, "ref": git_ref}))
            .await;
        assert_eq!(session["status"], "ready", "{git_ref}: {session}");
        assert_eq!(session["ref"], git_ref);
        let id = session["session_id"].as_str().unwrap();
        assert_eq!(head(&stack, id), expected, "{git_ref}");
        if let Some(branch) = branch {
            let current = git(&stack.workspace(id), &["rev-parse", "--abbrev-ref", "HEAD"]);
            assert_eq!(current, branch);
        }
    }
}

#[tokio::test]
async fn a_shallow_clone_has_only_the_requested_depth() {
    let (stack, server, _) = with_http().await;
    let session = stack
        .session(json!({"repo_url": format!("{}/project.git", server.base), "depth": 1}))
        .await;
    assert_eq!(session["status"], "ready", "{session}");
    let id = session["session_id"].as_str().unwrap();
    let workspace = stack.workspace(id);
    assert!(workspace.join(".git/shallow").exists());
    assert_eq!(git(&workspace, &["rev-list", "--count", "HEAD"]), "1");

    let tagged = stack
        .session(json!({"repo_url": format!("{}/project.git", server.base), "depth": 1, "ref": "feature"}))
        .await;
    assert_eq!(tagged["status"], "ready", "{tagged}");
    let id = tagged["session_id"].as_str().unwrap();
    assert_eq!(
        git(&stack.workspace(id), &["rev-list", "--count", "HEAD"]),
        "1"
    );
}

#[tokio::test]
async fn a_missing_repository_fails_with_a_message() {
    let (stack, server, _) = with_http().await;
    for url in [
        format!("{}/nope.git", server.base),
        format!("file://{}/nope", stack.repos.display()),
    ] {
        let session = stack.session(json!({"repo_url": url})).await;
        assert_eq!(session["status"], "failed", "{session}");
        let error = session["error"].as_str().unwrap();
        assert!(error.starts_with("repository not found"), "{url}: {error}");
        let id = session["session_id"].as_str().unwrap();
        assert!(
            !stack.root.join(id).exists(),
            "a failed clone leaves nothing on disk"
        );
    }
}

#[tokio::test]
async fn a_missing_ref_fails_with_a_message() {
    let (stack, server, repo) = with_http().await;
    for url in [
        format!("{}/project.git", server.base),
        format!("file://{}", repo.display()),
    ] {
        let session = stack
            .session(json!({"repo_url": url, "ref": "no-such-branch"}))
            .await;
        assert_eq!(session["status"], "failed", "{session}");
        assert_eq!(
            session["error"],
            "ref \"no-such-branch\" was not found in the repository (no such branch, tag or commit)"
        );
    }
}

#[tokio::test]
async fn a_prompt_sent_to_a_failed_session_is_a_conflict_and_queued_ones_fail() {
    let stack = TestStack::start().await;
    // A server that answers 404, only once the prompt is queued: the clone
    // cannot fail before it (a gate, not a clock).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/nope.git", listener.local_addr().unwrap());
    let (open, gate) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _read = socket.read(&mut request).await.unwrap();
        gate.await.unwrap();
        socket
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
    });
    let response = stack.post("/api/sessions", json!({"repo_url": url})).await;
    let created: serde_json::Value = response.json().await.unwrap();
    let id = created["session_id"].as_str().unwrap();

    let queued = stack.prompt(id, "hello").await;
    open.send(()).unwrap();
    let events = stack.events(&queued).await;

    assert_eq!(test_support::labels(&events), ["run.failed"]);
    assert!(events[0].data["error"]
        .as_str()
        .unwrap()
        .starts_with("the session's clone failed: repository not found"));
    let refused = stack
        .post(
            &format!("/api/sessions/{id}/prompt"),
            json!({"prompt": "again"}),
        )
        .await;
    crate::helpers::assert_error(refused, 409, "conflict").await;
    server.await.unwrap();
}

#[tokio::test]
async fn a_private_repository_clones_with_a_token_that_is_never_kept() {
    let (stack, server, _) = with_http().await;
    let url = format!("{}/private/secret.git", server.base);

    let refused = stack.session(json!({"repo_url": url})).await;
    assert_eq!(refused["status"], "failed");
    assert!(refused["error"]
        .as_str()
        .unwrap()
        .starts_with("authentication required"));
    let wrong = stack
        .session(json!({"repo_url": url, "token": "wrong"}))
        .await;
    assert_eq!(wrong["status"], "failed");

    let response = stack
        .post(
            "/api/sessions",
            json!({"repo_url": url, "token": PRIVATE_TOKEN}),
        )
        .await;
    let body = response.text().await.unwrap();
    assert!(!body.contains(PRIVATE_TOKEN));
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let session = stack
        .wait_cloned(created["session_id"].as_str().unwrap())
        .await;
    assert_eq!(session["status"], "ready", "{session}");
    let in_url = format!(
        "{}/private/secret.git",
        server
            .base
            .replace("http://", &format!("http://user:{PRIVATE_TOKEN}@"))
    );
    let embedded = stack.session(json!({"repo_url": in_url})).await;
    assert_eq!(embedded["status"], "ready", "{embedded}");
    assert_eq!(
        embedded["repo_url"], url,
        "credentials are taken out of the URL"
    );

    let everything = stack.get("/api/sessions").await.text().await.unwrap();
    assert!(!everything.contains(PRIVATE_TOKEN));
    let stored = stack
        .db
        .query("SELECT row_to_json(s)::text FROM sessions s")
        .await;
    for row in stored {
        let text: String = row.get(0);
        assert!(!text.contains(PRIVATE_TOKEN), "the token is stored: {text}");
    }
    for id in [&session["session_id"], &embedded["session_id"]] {
        let config =
            std::fs::read_to_string(stack.workspace(id.as_str().unwrap()).join(".git/config"))
                .unwrap();
        assert!(
            !config.contains(PRIVATE_TOKEN),
            "the token is in .git/config"
        );
    }
}

#[tokio::test]
async fn every_kind_of_ref_checks_out_over_http_and_file_full_and_shallow() {
    let (stack, server, repo) = with_http().await;
    // A branch whose name looks like a commit id, and an annotated tag.
    git(&repo, &["branch", "cafe1234", "feature"]);
    git(&repo, &["tag", "-a", "v2", "-m", "annotated", "main"]);
    let served = stack.repos.join("served");
    bare_clone(&repo, &served.join("refs.git"));
    let sha = |rev: &str| git(&repo, &["rev-parse", &format!("{rev}^{{commit}}")]);
    let initial = git(&repo, &["rev-list", "--max-parents=0", "main"]);
    // (ref, commit, branch checked out)
    let cases: Vec<(Option<String>, String, Option<&str>)> = vec![
        (None, sha("main"), Some("main")),
        (Some("main".into()), sha("main"), Some("main")),
        (Some("refs/heads/main".into()), sha("main"), Some("main")),
        (Some("feature".into()), sha("feature"), Some("feature")),
        (
            Some("refs/heads/feature".into()),
            sha("feature"),
            Some("feature"),
        ),
        (Some("cafe1234".into()), sha("feature"), Some("cafe1234")),
        (Some("v1".into()), sha("v1"), None),
        (Some("refs/tags/v2".into()), sha("v2"), None),
        (Some(sha("feature")), sha("feature"), None),
        (Some(sha("main")[..7].to_owned()), sha("main"), None),
        (Some(initial.clone()), initial.clone(), None),
        (Some(initial[..8].to_owned()), initial.clone(), None),
    ];
    let sources = [
        format!("{}/refs.git", server.base),
        format!("file://{}", served.join("refs.git").display()),
    ];
    for source in &sources {
        for depth in [None, Some(1)] {
            for (git_ref, commit, branch) in &cases {
                let mut body = json!({"repo_url": source});
                if let Some(git_ref) = git_ref {
                    body["ref"] = json!(git_ref);
                }
                if let Some(depth) = depth {
                    body["depth"] = json!(depth);
                }
                let case = format!("{source} ref={git_ref:?} depth={depth:?}");

                let session = stack.session(body).await;

                assert_eq!(session["status"], "ready", "{case}: {session}");
                let workspace = stack.workspace(session["session_id"].as_str().unwrap());
                assert_eq!(&git(&workspace, &["rev-parse", "HEAD"]), commit, "{case}");
                let head = git(&workspace, &["rev-parse", "--abbrev-ref", "HEAD"]);
                assert_eq!(head, branch.unwrap_or("HEAD"), "{case}");
                assert_eq!(git(&workspace, &["status", "--porcelain"]), "", "{case}");
                // A local repository is remembered by its path.
                let origin = git(&workspace, &["remote", "get-url", "origin"]);
                assert_eq!(origin, source.trim_start_matches("file://"), "{case}");
            }
        }
    }
}

#[tokio::test]
async fn a_shallow_clone_fetches_only_the_branch_it_checks_out() {
    let (stack, server, repo) = with_http().await;
    for n in 0..5 {
        git(&repo, &["branch", &format!("side-{n}"), "feature"]);
    }
    let served = stack.repos.join("served");
    bare_clone(&repo, &served.join("branches.git"));

    let session = stack
        .session(json!({"repo_url": format!("{}/branches.git", server.base), "depth": 1}))
        .await;

    assert_eq!(session["status"], "ready", "{session}");
    let workspace = stack.workspace(session["session_id"].as_str().unwrap());
    let refs = git(&workspace, &["for-each-ref", "--format=%(refname)"]);
    assert_eq!(refs, "refs/heads/main\nrefs/remotes/origin/main");
    assert_eq!(git(&workspace, &["rev-list", "--count", "--all"]), "1");
}
