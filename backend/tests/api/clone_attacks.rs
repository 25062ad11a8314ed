//! Attacks through clone URLs: local paths disguised as remotes, internal
//! addresses in every spelling, probing ports through error messages, and
//! a redirect that would carry a token to another port.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::TestStack;

/// A stack whose backend applies the default clone policy (public hosts
/// only) and does not allow local repositories.
async fn strict_stack() -> TestStack {
    let mut stack = TestStack::start_with(false).await;
    stack.kill_backend().await;
    stack
        .backend_env
        .push(("ALLOW_PRIVATE_CLONE_HOSTS".to_owned(), "false".to_owned()));
    stack.start_backend().await;
    stack
}

/// A listener on 127.0.0.1 that counts the connections it accepts and
/// answers none of them.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, count)
}

async fn sessions(stack: &TestStack) -> Value {
    stack.get_json("/api/sessions").await
}

#[tokio::test]
async fn a_symlink_named_like_an_scp_remote_cannot_clone_another_workspace() {
    let stack = strict_stack().await;
    // The victim: a workspace holding a secret, and inside the attacker's
    // workspace a symlink to it named like `user@host:path`.
    let victim = stack.root.join("victim/repo");
    test_support::init_repo(&victim);
    std::fs::write(victim.join("secret.txt"), "victim's secret\n").unwrap();
    let attacker = stack.root.join("attacker/repo");
    std::fs::create_dir_all(&attacker).unwrap();
    std::os::unix::fs::symlink(&victim, attacker.join("l@127.0.0.1:x")).unwrap();
    let relative_to_root = "attacker/repo/l@127.0.0.1:x";
    let absolute = attacker.join("l@127.0.0.1:x").display().to_string();

    for repo_url in [
        relative_to_root.to_owned(),
        format!("./{relative_to_root}"),
        absolute.clone(),
        format!("file://{absolute}"),
        format!("FILE://{absolute}"),
        format!("file:{absolute}"),
        "l@127.0.0.1:x".to_owned(),
    ] {
        let response = stack
            .post("/api/sessions", json!({"repo_url": repo_url}))
            .await;
        assert_eq!(response.status(), 422, "{repo_url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "validation_error", "{repo_url}: {body}");
    }
    assert_eq!(sessions(&stack).await["sessions"], json!([]));
}

#[tokio::test]
async fn internal_addresses_are_refused_in_every_spelling_before_any_connection() {
    let stack = strict_stack().await;
    let (port, connections) = counting_listener().await;

    for host in [
        "127.0.0.1".to_owned(),
        "127.1".to_owned(),
        "2130706433".to_owned(),
        "0x7f.1".to_owned(),
        "0177.0.0.1".to_owned(),
        "0.0.0.0".to_owned(),
        "localhost".to_owned(),
        "[::1]".to_owned(),
        "[::ffff:127.0.0.1]".to_owned(),
        // Values only: refused before any connection is tried.
        "10.0.0.1".to_owned(),
        "169.254.169.254".to_owned(),
        "100.64.0.1".to_owned(),
    ] {
        for repo_url in [
            format!("http://{host}:{port}/r.git"),
            format!("git://{host}:{port}/r.git"),
            format!("ssh://git@{host}:{port}/r.git"),
        ] {
            let response = stack
                .post("/api/sessions", json!({"repo_url": repo_url}))
                .await;
            assert_eq!(response.status(), 422, "{repo_url}");
            let body: Value = response.json().await.unwrap();
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("internal address"),
                "{repo_url}: {body}"
            );
        }
    }
    for repo_url in [
        format!("git@127.0.0.1:{port}/r.git"),
        "git@[::1]:r.git".to_owned(),
        "-oProxyCommand=touch@x:y".to_owned(),
        "git@-oProxyCommand=x:y".to_owned(),
    ] {
        let response = stack
            .post("/api/sessions", json!({"repo_url": repo_url}))
            .await;
        assert_eq!(response.status(), 422, "{repo_url}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    assert_eq!(sessions(&stack).await["sessions"], json!([]));
}

#[tokio::test]
async fn closed_and_silent_ports_fail_with_one_message() {
    // The operator allows loopback here; what is tested is that the error
    // does not tell a closed port from one that never answers.
    let mut stack = TestStack::start_with(false).await;
    stack.kill_backend().await;
    stack
        .backend_env
        .push(("BACKEND_CLONE_IO_TIMEOUT_SECS".to_owned(), "1".to_owned()));
    stack.start_backend().await;
    let (silent, _) = counting_listener().await;
    // Bound but not listening: a connection is refused, and the port stays
    // this test's, so no other process can start listening on it meanwhile.
    let closed_socket = tokio::net::TcpSocket::new_v4().unwrap();
    closed_socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = closed_socket.local_addr().unwrap().port();

    let mut errors = Vec::new();
    for port in [closed, silent] {
        let session = stack
            .session(json!({"repo_url": format!("http://127.0.0.1:{port}/r.git")}))
            .await;
        assert_eq!(session["status"], "failed", "{session}");
        errors.push(session["error"].clone());
    }

    assert_eq!(errors[0], errors[1]);
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("could not reach the repository host"),
        "{errors:?}"
    );
    drop(closed_socket);
}

/// Answers every request with `response`, and records the request heads.
async fn http_server(response: String) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            let response = response.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let answer = if text.to_lowercase().contains("authorization:")
                    || !response.contains("{auth}")
                {
                    response.replace("{auth}", "")
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\n\r\n".to_owned()
                };
                seen.lock().unwrap().push(text);
                // A client that hung up is no failure of the server.
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, heads)
}

#[tokio::test]
async fn a_redirect_to_another_port_never_reaches_it_with_the_token() {
    let stack = TestStack::start_with(false).await;
    // libgit2 would follow a redirect to another port of the same host;
    // clones follow no redirect at all, with or without a token.
    for token in [None, Some("SECRET123")] {
        let (target, target_heads) =
            http_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()).await;
        // Asks for credentials when a token is expected, then sends the
        // request to another port of the same host.
        let redirect = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target}/r.git/info/refs?service=git-upload-pack\r\nContent-Length: 0\r\n\r\n"
        );
        let (origin, origin_heads) = http_server(match token {
            Some(_) => format!("{{auth}}{redirect}"),
            None => redirect,
        })
        .await;
        let mut body = json!({"repo_url": format!("http://127.0.0.1:{origin}/r.git")});
        if let Some(token) = token {
            body["token"] = json!(token);
        }

        let session = stack.session(body).await;

        assert_eq!(session["status"], "failed", "{session}");
        assert!(
            session["error"].as_str().unwrap().contains("redirect"),
            "{session}"
        );
        assert!(!origin_heads.lock().unwrap().is_empty());
        assert_eq!(
            *target_heads.lock().unwrap(),
            Vec::<String>::new(),
            "the other port was reached; origin saw {:?}",
            origin_heads.lock().unwrap()
        );
        assert!(!session.to_string().contains("SECRET123"));
    }
}

#[tokio::test]
async fn plain_http_clones_use_the_transport_that_checks_addresses() {
    // libgit2 1.9 would connect to a plain-http server by itself, even with
    // a proxy set; the backend's own transport resolves, checks and
    // connects instead. Its requests are in origin form, with its agent.
    let stack = TestStack::start_with(false).await;
    let (port, heads) =
        http_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()).await;

    let session = stack
        .session(json!({"repo_url": format!("http://localhost:{port}/r.git")}))
        .await;

    assert_eq!(session["status"], "failed", "{session}");
    assert!(
        session["error"].as_str().unwrap().contains("not found"),
        "{session}"
    );
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /r.git/info/refs?service=git-upload-pack HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        heads[0]
            .to_lowercase()
            .contains("user-agent: git/2.0 (repo-runner/"),
        "{}",
        heads[0]
    );
}

#[tokio::test]
async fn a_password_in_an_scp_remote_is_never_stored_or_returned() {
    let stack = TestStack::start_with(false).await;
    let response = stack
        .post(
            "/api/sessions",
            json!({"repo_url": "bob:SCP_SECRET_1@127.0.0.1:team/repo.git"}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["repo_url"], "bob@127.0.0.1:team/repo.git");
    let session = stack
        .wait_cloned(created["session_id"].as_str().unwrap())
        .await;

    assert_eq!(session["status"], "failed", "{session}");
    let everything = stack.get("/api/sessions").await.text().await.unwrap();
    assert!(!everything.contains("SCP_SECRET_1"), "{everything}");
    for row in stack
        .db
        .query("SELECT row_to_json(s)::text FROM sessions s")
        .await
    {
        let text: String = row.get(0);
        assert!(!text.contains("SCP_SECRET_1"), "stored: {text}");
    }
}

/// A git:// server on 127.0.0.1 made of `git daemon --inetd`, one per
/// connection; records the first bytes each connection sent.
async fn git_daemon(base: std::path::PathBuf) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let base = base.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut first = vec![0u8; 512];
                let n = socket.read(&mut first).await.unwrap_or(0);
                if n == 0 {
                    return; // a connection that only checked the port
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&first[..n]).into_owned());
                let mut daemon = tokio::process::Command::new("git")
                    .arg("daemon")
                    .arg("--inetd")
                    .arg("--export-all")
                    .arg(format!("--base-path={}", base.display()))
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap();
                let mut stdin = daemon.stdin.take().unwrap();
                let mut stdout = daemon.stdout.take().unwrap();
                stdin.write_all(&first[..n]).await.unwrap();
                let (mut read, mut write) = socket.into_split();
                // Either side ending ends the exchange; how it ended is the
                // clone's business, which the test asserts on.
                tokio::select! {
                    _ = tokio::io::copy(&mut read, &mut stdin) => {}
                    _ = tokio::io::copy(&mut stdout, &mut write) => {}
                }
                // Reaped so no zombie is left; its status is the clone's
                // business, asserted on by the test.
                let _ = daemon.wait().await;
            });
        }
    });
    (port, requests)
}

#[tokio::test]
async fn a_git_protocol_clone_connects_to_the_address_it_checked() {
    // ssh and git:// cannot use the egress proxy: the name is resolved and
    // checked once, and libgit2 is given the checked address, so a second
    // DNS answer (rebinding) is never asked for. The git protocol names
    // the host it was given in its request, which shows what libgit2 got.
    let stack = TestStack::start().await;
    let repo = stack.make_repo("project");
    let served = stack.repos.join("daemon");
    crate::helpers::bare_clone(&repo, &served.join("project.git"));
    let (port, requests) = git_daemon(served).await;

    let url = format!("git://localhost:{port}/project.git");
    let session = stack.session(json!({ "repo_url": url })).await;

    assert_eq!(session["status"], "ready", "{session}");
    assert_eq!(session["repo_url"], url);
    let id = session["session_id"].as_str().unwrap();
    assert_eq!(
        test_support::git(&stack.workspace(id), &["rev-parse", "HEAD"]),
        test_support::git(&repo, &["rev-parse", "main"])
    );
    let requests = requests.lock().unwrap();
    assert!(!requests.is_empty());
    for request in requests.iter() {
        // libgit2 names the host without the port.
        assert!(
            request.contains("\0host=127.0.0.1\0") && !request.contains("localhost"),
            "libgit2 was given the name, not the checked address: {request:?}"
        );
    }
}

/// Alice's ready session, with a commit of her own that exists only in her
/// workspace; returns the session's id, her workspace and that commit.
async fn alice_with_a_secret(stack: &TestStack) -> (String, std::path::PathBuf, String) {
    let (id, _) = stack.ready_session().await;
    let workspace = stack.workspace(&id);
    std::fs::write(workspace.join("secret.txt"), "alice's secret\n").unwrap();
    test_support::git(&workspace, &["add", "secret.txt"]);
    test_support::git(&workspace, &["commit", "-q", "-m", "alice's secret"]);
    let commit = test_support::git(&workspace, &["rev-parse", "HEAD"]);
    (id, workspace, commit)
}

/// `POST /api/sessions` as `client`.
async fn create_as(stack: &TestStack, client: &reqwest::Client, body: Value) -> reqwest::Response {
    client
        .post(stack.url("/api/sessions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The names of the folders under `WORKSPACES_ROOT`.
/// The session folders under the root; the backend's own `.snapshots`
/// (every session's snapshot state) is left out.
fn session_folders(stack: &TestStack) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&stack.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != ".snapshots")
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn another_users_workspace_cannot_be_cloned_by_its_path_in_any_spelling() {
    let stack = TestStack::start().await;
    let (alice_session, alice, _) = alice_with_a_secret(&stack).await;
    let mallory = stack.add_user("mallory", false).await;
    // Symlinks in a folder local clones may read, into the workspaces.
    std::os::unix::fs::symlink(&alice, stack.repos.join("to-alice")).unwrap();
    std::os::unix::fs::symlink(&stack.root, stack.repos.join("to-root")).unwrap();
    let alice = alice.display().to_string();
    let root = stack.root.display().to_string();
    let repos = stack.repos.display().to_string();

    for repo_url in [
        alice.clone(),
        format!("{alice}/"),
        format!("{alice}/.git"),
        format!("file://{alice}"),
        format!("file://{alice}/"),
        format!("FILE://{alice}"),
        format!("file:{alice}"),
        format!("{repos}/../workspaces/{alice_session}/repo"),
        format!("{root}/{alice_session}/repo/../repo"),
        format!("{root}/./{alice_session}//repo"),
        format!("{repos}/to-alice"),
        format!("file://{repos}/to-alice/"),
        format!("{repos}/to-root/{alice_session}/repo"),
        format!("{repos}/to-root/../workspaces/{alice_session}/repo"),
        format!("{root}/{alice_session}"),
        root.clone(),
        // Not there yet: a clone could find it made by then.
        format!("{root}/{alice_session}/later"),
    ] {
        let response = create_as(&stack, &mallory.client, json!({ "repo_url": repo_url })).await;

        let body = crate::helpers::assert_error(response, 422, "validation_error").await;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("WORKSPACES_ROOT"),
            "{repo_url}: {body}"
        );
    }
    let rows = stack.db.query("SELECT count(*) FROM sessions").await;
    assert_eq!(rows[0].get::<_, i64>(0), 1, "only alice's session exists");
    assert_eq!(session_folders(&stack), [alice_session]);
}

/// A relative forbidden folder would name another folder wherever the
/// backend starts: the backend does not start with one.
#[tokio::test]
async fn a_relative_forbidden_folder_is_refused_at_start() {
    let stack = TestStack::start().await;
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_backend"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &stack.db.url)
        .env("WORKSPACES_ROOT", &stack.root)
        .env("BACKEND_ADDR", "127.0.0.1:0")
        .env("BACKEND_FORBIDDEN_CLONE_PATHS", "/srv/data, .data")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("BACKEND_FORBIDDEN_CLONE_PATHS must list absolute folders; got .data"),
        "{stderr}"
    );
}

#[tokio::test]
async fn folders_listed_as_forbidden_are_refused_and_others_clone() {
    let mut stack = TestStack::start().await;
    let private = stack.make_repo("private");
    let codex_homes = stack.root.with_file_name("codex-homes");
    stack.kill_backend().await;
    stack.backend_env.push((
        "BACKEND_FORBIDDEN_CLONE_PATHS".to_owned(),
        format!("{}, {}", codex_homes.display(), private.display()),
    ));
    stack.start_backend().await;
    let public = stack.make_repo("public");
    std::os::unix::fs::symlink(&private, stack.repos.join("to-private")).unwrap();

    for repo_url in [
        private.display().to_string(),
        format!("file://{}/.git", private.display()),
        stack.repos.join("to-private").display().to_string(),
        codex_homes.join("some-home").display().to_string(),
    ] {
        let response = stack
            .post("/api/sessions", json!({ "repo_url": repo_url }))
            .await;

        let body = crate::helpers::assert_error(response, 422, "validation_error").await;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("BACKEND_FORBIDDEN_CLONE_PATHS"),
            "{repo_url}: {body}"
        );
    }
    assert_eq!(sessions(&stack).await["sessions"], json!([]));
    let ready = stack
        .session(json!({"repo_url": format!("file://{}", public.display())}))
        .await;
    assert_eq!(ready["status"], "ready", "{ready}");
}

#[tokio::test]
async fn a_repository_that_links_into_a_workspace_fails_before_anything_is_read() {
    let stack = TestStack::start().await;
    let (_, alice, secret) = alice_with_a_secret(&stack).await;
    let mallory = stack.add_user("mallory", false).await;
    // A `.git` file naming alice's git folder.
    let gitfile = stack.repos.join("gitfile");
    std::fs::create_dir_all(&gitfile).unwrap();
    std::fs::write(
        gitfile.join(".git"),
        format!("gitdir: {}\n", alice.join(".git").display()),
    )
    .unwrap();
    // Repositories whose branch is alice's commit, with her objects
    // borrowed (alternates) or linked (a symlinked object folder).
    let borrowing = |name: &str| {
        let repo = stack.repos.join(name);
        test_support::git(&stack.repos, &["init", "-q", "-b", "main", name]);
        std::fs::write(repo.join(".git/refs/heads/main"), format!("{secret}\n")).unwrap();
        repo
    };
    let alternates = borrowing("alternates");
    std::fs::write(
        alternates.join(".git/objects/info/alternates"),
        format!("{}\n", alice.join(".git/objects").display()),
    )
    .unwrap();
    let linked = borrowing("linked");
    std::fs::remove_dir_all(linked.join(".git/objects")).unwrap();
    std::os::unix::fs::symlink(alice.join(".git/objects"), linked.join(".git/objects")).unwrap();

    for repo in [gitfile, alternates, linked] {
        for depth in [None, Some(1)] {
            let mut body = json!({"repo_url": format!("file://{}", repo.display())});
            if let Some(depth) = depth {
                body["depth"] = json!(depth);
            }
            let response = create_as(&stack, &mallory.client, body).await;
            assert_eq!(response.status(), 202, "{}", repo.display());
            let created: Value = response.json().await.unwrap();
            let id = created["session_id"].as_str().unwrap();

            let failed = stack.wait_cloned_as(&mallory.client, id).await;

            assert_eq!(failed["status"], "failed", "{}: {failed}", repo.display());
            assert_eq!(
                failed["error"],
                "the local repository is in, or reaches through a symlink, a .git file or alternates into, a folder local clones may not read (WORKSPACES_ROOT or BACKEND_FORBIDDEN_CLONE_PATHS)",
                "{}",
                repo.display()
            );
            assert!(!stack.root.join(id).exists(), "{}", repo.display());
        }
    }
}

/// `bytes` random (incompressible) bytes.
fn random_bytes(bytes: usize) -> Vec<u8> {
    use std::io::Read;
    let mut data = Vec::with_capacity(bytes);
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(bytes as u64)
        .read_to_end(&mut data)
        .unwrap();
    data
}

#[tokio::test]
async fn a_local_repository_over_the_clone_limit_fails_and_one_under_it_clones() {
    let stack = TestStack::start_configured(true, &[("BACKEND_MAX_CLONE_BYTES", "1000000")]).await;
    // Three random megabytes: its objects take as much on disk as in a pack.
    let big = stack.repos.join("big");
    test_support::init_repo(&big);
    std::fs::write(big.join("noise.bin"), random_bytes(3_000_000)).unwrap();
    test_support::git(&big, &["add", "."]);
    test_support::git(&big, &["commit", "-q", "-m", "noise"]);
    let small = stack.make_repo("small");

    for repo_url in [
        big.display().to_string(),
        format!("file://{}", big.display()),
    ] {
        for depth in [None, Some(1)] {
            let mut body = json!({ "repo_url": repo_url });
            if let Some(depth) = depth {
                body["depth"] = json!(depth);
            }

            let failed = stack.session(body).await;

            assert_eq!(failed["status"], "failed", "{repo_url}: {failed}");
            assert_eq!(
                failed["error"],
                "the repository is larger than the clone limit of 1000000 bytes (BACKEND_MAX_CLONE_BYTES)",
                "{repo_url} depth {depth:?}"
            );
            assert!(!stack
                .root
                .join(failed["session_id"].as_str().unwrap())
                .exists());
        }
    }
    let ready = stack
        .session(json!({"repo_url": format!("file://{}", small.display())}))
        .await;
    assert_eq!(ready["status"], "ready", "{ready}");
}

#[tokio::test]
async fn a_local_clone_shares_no_file_with_its_source() {
    // libgit2's "local clone" hard-links the source's objects into the
    // workspace, where the agent could change them in place.
    use std::os::unix::fs::MetadataExt;
    let stack = TestStack::start().await;
    // Loose objects first, then a pack.
    let (loose, source) = stack.ready_session().await;
    test_support::git(&source, &["gc", "-q"]);
    let packed = stack
        .session(json!({"repo_url": source.display().to_string()}))
        .await;
    assert_eq!(packed["status"], "ready", "{packed}");
    let packed = packed["session_id"].as_str().unwrap().to_owned();

    for session in [loose, packed] {
        let mut folders = vec![stack.workspace(&session).join(".git/objects")];
        let mut files = 0;
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(folder).unwrap() {
                let entry = entry.unwrap();
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    folders.push(entry.path());
                } else {
                    files += 1;
                    assert_eq!(meta.nlink(), 1, "{}", entry.path().display());
                }
            }
        }
        assert!(files > 0);
    }
}
