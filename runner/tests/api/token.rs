//! `RUNNER_TOKEN`: the runner answers only a client that carries it.

use serde_json::Value;

use crate::helpers::{config, TestRunner};

const TOKEN: &str = "runner-token-for-tests-0123456789abcdef";

fn with_token(config: &mut runner::config::Config) {
    config.token = service_kit::RequiredToken::new(Some(TOKEN));
}

async fn assert_unauthorized(response: reqwest::Response) {
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized", "{body}");
    assert_eq!(body["error"], "Unauthorized");
    assert!(!body.to_string().contains(TOKEN));
}

#[tokio::test]
async fn without_the_token_every_route_is_a_401_and_with_it_the_api_works() {
    let runner = TestRunner::start_with(|_| crate::helpers::script(), with_token).await;
    let client = reqwest::Client::new();

    for path in ["/health", "/threads", "/runs/x/events", "/no-such-route"] {
        assert_unauthorized(client.get(runner.url(path)).send().await.unwrap()).await;
    }
    assert_unauthorized(
        client
            .get(runner.url("/health"))
            .bearer_auth("runner-token-for-tests-0123456789abcdeX")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_unauthorized(
        client
            .post(runner.url("/threads"))
            .basic_auth("user", Some(TOKEN))
            .json(&serde_json::json!({"workingDirectory": runner.repo}))
            .send()
            .await
            .unwrap(),
    )
    .await;

    let health = client
        .get(runner.url("/health"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let thread = client
        .post(runner.url("/threads"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"workingDirectory": runner.repo}))
        .send()
        .await
        .unwrap();
    assert_eq!(thread.status(), 201, "{}", thread.text().await.unwrap());
}

#[tokio::test]
async fn without_a_token_the_runner_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("workspaces");
    std::fs::create_dir_all(&root).unwrap();
    let model = scripted_model::ScriptedModel::start(crate::helpers::script(), "127.0.0.1:0")
        .await
        .unwrap();
    let mut open = config(&root, &model);
    open.addr = "0.0.0.0:0".into();

    let error = runner::startup::Application::build(open)
        .await
        .err()
        .unwrap();

    let message = format!("{error:#}");
    assert!(message.contains("RUNNER_TOKEN"), "{message}");
    assert!(message.contains("not a loopback address"), "{message}");
}
