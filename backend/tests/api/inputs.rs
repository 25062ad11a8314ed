//! Bad input: every refusal is the JSON error schema, never a 500 or a hang,
//! and nothing is lost or created by it.

use serde_json::json;

use crate::helpers::{assert_error, TestStack};

#[tokio::test]
async fn dangerous_or_malformed_repo_urls_are_refused() {
    let stack = TestStack::start().await;
    for url in [
        "ext::sh -c touch% /tmp/pwned",
        "ext::ssh",
        "-uevil",
        "--upload-pack=touch /tmp/x",
        "ftp://example.org/r.git",
        "https://",
        "not a url",
        "",
    ] {
        let response = stack.post("/api/sessions", json!({"repo_url": url})).await;
        let body = assert_error(response, 422, "validation_error").await;
        assert!(
            body["message"].as_str().unwrap().contains("repo_url"),
            "{url}: {body}"
        );
    }
    for (body, field) in [
        (
            json!({"repo_url": "https://example.org/r.git", "ref": "a..b"}),
            "ref",
        ),
        (
            json!({"repo_url": "https://example.org/r.git", "ref": "-x"}),
            "ref",
        ),
        (
            json!({"repo_url": "https://example.org/r.git", "depth": 0}),
            "depth",
        ),
        (
            json!({"repo_url": "ssh://git@example.org/r.git", "token": "t"}),
            "token",
        ),
    ] {
        let response = stack.post("/api/sessions", body).await;
        let body = assert_error(response, 422, "validation_error").await;
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    let listed = stack.get_json("/api/sessions").await;
    assert_eq!(listed["total"], 0, "no refused request created a session");
}

#[tokio::test]
async fn local_repositories_need_allow_local_repos() {
    let stack = TestStack::start_with(false).await;
    let repo = stack.make_repo("local");
    for url in [
        format!("file://{}", repo.display()),
        repo.display().to_string(),
    ] {
        let response = stack.post("/api/sessions", json!({"repo_url": url})).await;
        let body = assert_error(response, 422, "validation_error").await;
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("ALLOW_LOCAL_REPOS"));
    }
}

#[tokio::test]
async fn malformed_requests_get_json_errors() {
    let stack = TestStack::start().await;
    let client = &stack.client;
    let not_json = client
        .post(stack.url("/api/sessions"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_error(not_json, 400, "bad_request").await;
    let missing_field = stack.post("/api/sessions", json!({"url": "x"})).await;
    assert_error(missing_field, 400, "bad_request").await;
    let wrong_type = stack
        .post("/api/sessions", json!({"repo_url": ["x"]}))
        .await;
    assert_error(wrong_type, 400, "bad_request").await;
    let too_large = stack
        .post("/api/sessions", json!({"repo_url": "x".repeat(100_000)}))
        .await;
    assert_error(too_large, 413, "payload_too_large").await;
    let unknown_route = stack.get("/api/nope").await;
    assert_error(unknown_route, 404, "not_found").await;
    let unknown_field = stack
        .post(
            "/api/sessions",
            json!({"repo_url": "https://example.org/r.git", "branch": "main"}),
        )
        .await;
    assert_error(unknown_field, 400, "bad_request").await;
    for path in [
        "/api/sessions/not-a-uuid",
        &format!("/api/sessions/{}", uuid::Uuid::new_v4()),
        &format!("/api/runs/{}", uuid::Uuid::new_v4()),
        &format!("/api/runs/{}/events", uuid::Uuid::new_v4()),
        &format!("/api/sessions/{}/runs", uuid::Uuid::new_v4()),
        &format!("/api/sessions/{}/files", uuid::Uuid::new_v4()),
    ] {
        assert_error(stack.get(path).await, 404, "not_found").await;
    }
    let bad_page = stack.get("/api/sessions?limit=0").await;
    assert_error(bad_page, 400, "bad_request").await;
}

#[tokio::test]
async fn a_method_a_path_does_not_answer_is_405_with_allow() {
    let stack = TestStack::start().await;
    let id = uuid::Uuid::new_v4();
    for (method, path, allow) in [
        ("PUT", "/api/sessions".to_owned(), "GET, HEAD, POST"),
        ("DELETE", "/api/sessions".to_owned(), "GET, HEAD, POST"),
        ("POST", format!("/api/sessions/{id}"), "GET, HEAD, DELETE"),
        ("GET", format!("/api/sessions/{id}/prompt"), "POST"),
        ("DELETE", format!("/api/runs/{id}"), "GET, HEAD"),
        ("GET", format!("/api/runs/{id}/cancel"), "POST"),
        ("POST", format!("/api/runs/{id}/events"), "GET, HEAD"),
        ("POST", format!("/api/sessions/{id}/files"), "GET, HEAD"),
        (
            "POST",
            format!("/api/sessions/{id}/files/a.txt"),
            "GET, HEAD",
        ),
        (
            "DELETE",
            format!("/api/sessions/{id}/files/a/b.txt"),
            "GET, HEAD",
        ),
        ("PUT", format!("/api/sessions/{id}/diff"), "GET, HEAD"),
        ("PUT", "/api/openapi.json".to_owned(), "GET, HEAD"),
        ("POST", "/docs".to_owned(), "GET, HEAD"),
        ("POST", "/health".to_owned(), "GET, HEAD"),
        ("POST", "/ready".to_owned(), "GET, HEAD"),
    ] {
        let response = stack
            .client
            .request(method.parse().unwrap(), stack.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
        let body = assert_error(response, 405, "method_not_allowed").await;
        assert_eq!(
            body["message"],
            format!("{method} is not allowed on {path}; it answers {allow}")
        );
    }
    // What `Allow` lists is answered: HEAD goes to the GET endpoint.
    let head = stack
        .client
        .head(stack.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415_and_creates_nothing() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let body = json!({"repo_url": "https://example.org/r.git"}).to_string();
    let prompt = json!({"prompt": "hi"}).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
        None,
    ] {
        for (path, body) in [
            ("/api/sessions".to_owned(), &body),
            (format!("/api/sessions/{session}/prompt"), &prompt),
        ] {
            let mut request = stack.client.post(stack.url(&path)).body(body.clone());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let response = request.send().await.unwrap();
            assert_error(response, 415, "unsupported_media_type").await;
        }
    }
    let listed = stack.get_json("/api/sessions").await;
    assert_eq!(listed["total"], 1, "no refused request created a session");
    let runs = stack
        .get_json(&format!("/api/sessions/{session}/runs"))
        .await;
    assert_eq!(runs["runs"], json!([]), "no refused prompt queued a run");
}

#[tokio::test]
async fn bad_prompts_are_refused_and_queue_nothing() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let path = format!("/api/sessions/{session}/prompt");
    for prompt in [json!(""), json!("   \n\t ")] {
        let response = stack.post(&path, json!({"prompt": prompt})).await;
        assert_error(response, 422, "validation_error").await;
    }
    let long = stack
        .post(&path, json!({"prompt": "x".repeat(40_000)}))
        .await;
    assert_error(long, 422, "validation_error").await;
    let missing = stack.post(&path, json!({})).await;
    assert_error(missing, 400, "bad_request").await;
    let runs = stack
        .get_json(&format!("/api/sessions/{session}/runs"))
        .await;
    assert_eq!(runs["runs"], json!([]));
    let unknown = stack
        .post(
            &format!("/api/sessions/{}/prompt", uuid::Uuid::new_v4()),
            json!({"prompt": "hi"}),
        )
        .await;
    assert_error(unknown, 404, "not_found").await;

    let run = stack.prompt(&session, "hello").await;
    let bad_resume = stack
        .client
        .get(stack.url(&format!("/api/runs/{run}/events")))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_error(bad_resume, 400, "bad_request").await;
    assert_eq!(
        stack.events(&run).await.last().unwrap().event,
        "run.completed"
    );
}

#[tokio::test]
async fn file_paths_cannot_leave_the_workspace() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let workspace = stack.workspace(&session);
    let outside = stack.repos.join("outside-secret.txt");
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, workspace.join("escape")).unwrap();
    std::fs::write(workspace.join("blob.bin"), [0u8, 159, 146, 150, 255]).unwrap();

    for path in [
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e/%2e%2e/etc/passwd",
        "sub/..%2F..%2Foutside",
        "%2Fetc%2Fpasswd",
        ".git/config",
    ] {
        // Sent as is: an HTTP client would normalise `%2e%2e` away.
        let (status, body) =
            raw_get(&stack, &format!("/api/sessions/{session}/files/{path}")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "bad_request");
        assert!(!body.to_string().contains("secret"));
    }
    // A symlink out answers like a missing file: no oracle for what exists
    // outside (files_attacks.rs holds the full comparison).
    let escape = stack
        .get(&format!("/api/sessions/{session}/files/escape"))
        .await;
    let body = assert_error(escape, 404, "not_found").await;
    assert!(!body.to_string().contains("secret"));
    let missing = stack
        .get(&format!("/api/sessions/{session}/files/nope.txt"))
        .await;
    assert_error(missing, 404, "not_found").await;
    let nested_missing = stack
        .get(&format!("/api/sessions/{session}/files/a/b/c.txt"))
        .await;
    assert_error(nested_missing, 404, "not_found").await;

    let binary = stack
        .get_json(&format!("/api/sessions/{session}/files/blob.bin"))
        .await;
    assert_eq!(binary["binary"], true);
    assert_eq!(binary["encoding"], "base64");
    assert_eq!(binary["content"], "AJ+Slv8=");
    assert_eq!(binary["size"], 5);
}

/// A GET written byte for byte on a socket, so the path reaches the server
/// exactly as given.
async fn raw_get(stack: &TestStack, path: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = stack.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    socket
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                stack.user.as_ref().map_or("", |u| u.token.as_str())
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.unwrap();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    // The body may be chunked; the JSON object is its one line with a brace.
    let json = body.lines().find(|l| l.starts_with('{')).unwrap_or("null");
    (status, serde_json::from_str(json).unwrap())
}

/// The largest URL and headers are bounded, with the JSON error schema,
/// before authentication or any route; a head beyond what hyper reads at
/// all is refused and the connection closed. The service answers after.
#[tokio::test]
async fn a_url_or_headers_too_large_are_refused_with_the_error_schema() {
    let stack = TestStack::start().await;
    let long = "a".repeat(9 * 1024);
    let response = stack.get(&format!("/api/sessions/{long}")).await;
    let body = assert_error(response, 414, "uri_too_long").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("HTTP_MAX_URL_BYTES"),
        "{body}"
    );
    // A query string counts too, and a URL just under the limit is read.
    let response = stack.get(&format!("/api/sessions?x={long}")).await;
    assert_error(response, 414, "uri_too_long").await;
    let response = stack
        .get(&format!("/api/sessions/{}", "a".repeat(7 * 1024)))
        .await;
    assert_error(response, 404, "not_found").await;

    let many = (0..40).fold(reqwest::header::HeaderMap::new(), |mut headers, i| {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap(),
            "b".repeat(1024).parse().unwrap(),
        );
        headers
    });
    let response = stack
        .client
        .get(stack.url("/api/sessions"))
        .headers(many.clone())
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 431, "headers_too_large").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("HTTP_MAX_HEADER_BYTES"),
        "{body}"
    );
    // Without a credential too: the size is checked first.
    let response = reqwest::Client::new()
        .get(stack.url("/api/sessions"))
        .headers(many)
        .send()
        .await
        .unwrap();
    assert_error(response, 431, "headers_too_large").await;

    // Past hyper's own buffer: refused, never read whole.
    let huge = reqwest::Client::new()
        .get(stack.url("/api/sessions"))
        .header("x-huge", "c".repeat(1024 * 1024))
        .send()
        .await;
    // Answered with the schema as soon as the head passes what any
    // request may be, before the client has sent it all.
    assert_error(huge.unwrap(), 431, "headers_too_large").await;
    let listed = stack.get("/api/sessions").await;
    assert_eq!(listed.status(), 200);
}
