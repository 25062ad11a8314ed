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
