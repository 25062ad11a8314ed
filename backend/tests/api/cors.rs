//! `CORS_ORIGINS`: a list that omits the dashboard's own origin does not
//! break the dashboard, a foreign origin gets no allow header, `*` allows
//! any origin. The foreign origins are values only: nothing connects to
//! them.

use frontend_proxy::config::Config as ProxyConfig;
use frontend_proxy::startup::Application as Proxy;

use crate::helpers::TestStack;

const FOREIGN: &str = "https://evil.example";

async fn stack_with_cors(origins: &str) -> TestStack {
    let mut stack = TestStack::start().await;
    stack.kill_backend().await;
    stack
        .backend_env
        .push(("CORS_ORIGINS".to_owned(), origins.to_owned()));
    stack.start_backend().await;
    stack
}

/// Starts the real proxy in front of the stack's backend; returns its origin.
async fn proxy(stack: &TestStack) -> String {
    let proxy = Proxy::build(ProxyConfig {
        proxy_addr: "127.0.0.1:0".into(),
        preview_addr: "127.0.0.1:0".into(),
        backend_url: stack.base.clone(),
        demo_mode: false,
    })
    .await
    .unwrap();
    let origin = format!("http://{}", proxy.addr());
    tokio::spawn(proxy.run_until_stopped(std::future::pending()));
    origin
}

async fn post_with_origin(stack: &TestStack, url: &str, origin: &str) -> reqwest::Response {
    let repo = stack.make_repo("cors");
    stack
        .client
        .post(url)
        .header("origin", origin)
        .json(&serde_json::json!({ "repo_url": format!("file://{}", repo.display()) }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_dashboards_own_origin_passes_when_cors_origins_omits_it() {
    let stack = stack_with_cors("https://other.example").await;
    let dashboard = proxy(&stack).await;

    let response = post_with_origin(&stack, &format!("{dashboard}/api/sessions"), &dashboard).await;

    assert_eq!(response.status(), 202, "{:?}", response.text().await);
}

#[tokio::test]
async fn a_foreign_origin_gets_no_allow_header() {
    let stack = stack_with_cors("https://other.example").await;
    let dashboard = proxy(&stack).await;

    let response = post_with_origin(&stack, &format!("{dashboard}/api/sessions"), FOREIGN).await;

    assert_eq!(
        response.headers().get("access-control-allow-origin"),
        None,
        "status {}",
        response.status()
    );
    assert_ne!(response.status(), 202, "the foreign POST was not served");
    let preflight = stack
        .client
        .request(reqwest::Method::OPTIONS, stack.url("/api/sessions"))
        .header("origin", FOREIGN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.headers().get("access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_listed_origin_is_allowed() {
    let stack = stack_with_cors("https://other.example").await;

    let response =
        post_with_origin(&stack, &stack.url("/api/sessions"), "https://other.example").await;

    assert_eq!(response.status(), 202);
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "https://other.example"
    );
}

#[tokio::test]
async fn a_star_allows_any_origin_without_credentials() {
    let stack = stack_with_cors("*").await;

    let response = post_with_origin(&stack, &stack.url("/api/sessions"), FOREIGN).await;

    assert_eq!(response.status(), 202);
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        FOREIGN
    );
    assert_eq!(
        response.headers().get("access-control-allow-credentials"),
        None
    );
}
