//! The error contract the runner shares with the backend: a method a path
//! does not answer is a 405 that says (in `Allow`) which it does, and a body
//! that is not JSON is a 415; both with the JSON error schema.

use serde_json::json;

use crate::assert_error;
use crate::helpers::TestRunner;

#[tokio::test]
async fn a_method_a_path_does_not_answer_is_405_with_allow() {
    let runner = TestRunner::start().await;
    let id = uuid::Uuid::new_v4();
    for (method, path, allow) in [
        ("PUT", "/threads".to_owned(), "POST"),
        ("GET", "/threads".to_owned(), "POST"),
        ("POST", format!("/threads/{id}"), "GET, HEAD, DELETE"),
        ("DELETE", "/runs".to_owned(), "POST"),
        ("DELETE", format!("/runs/{id}"), "GET, HEAD"),
        ("GET", format!("/runs/{id}/cancel"), "POST"),
        ("POST", format!("/runs/{id}/events"), "GET, HEAD"),
        ("POST", "/health".to_owned(), "GET, HEAD"),
    ] {
        let response = runner
            .client
            .request(method.parse().unwrap(), runner.url(&path))
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
    let head = runner
        .client
        .head(runner.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let runner = TestRunner::start().await;
    let body = json!({"workingDirectory": runner.repo}).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
        None,
    ] {
        for path in ["/threads", "/runs"] {
            let mut request = runner.client.post(runner.url(path)).body(body.clone());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let response = request.send().await.unwrap();
            let error = assert_error(response, 415, "unsupported_media_type").await;
            assert!(
                error["message"]
                    .as_str()
                    .unwrap()
                    .contains("application/json"),
                "{content_type:?} {path}: {error}"
            );
        }
    }
    // JSON with parameters, or a `+json` type, is JSON.
    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.repo-runner+json",
    ] {
        let response = runner
            .client
            .post(runner.url("/threads"))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{content_type}");
    }
}
