//! DNS rebinding: a request whose `Host` is not the backend's address (or
//! an `ALLOWED_HOSTS` entry) is refused with 421. The names are values in
//! a header only; every connection goes to 127.0.0.1.

use crate::helpers::{assert_error, TestStack};

async fn get_with_host(stack: &TestStack, path: &str, host: &str) -> reqwest::Response {
    stack
        .client
        .get(stack.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

fn port(stack: &TestStack) -> u16 {
    stack.base.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_rebound_host_name_is_refused() {
    let stack = TestStack::start().await;

    let response = get_with_host(&stack, "/api/sessions", "evil.attacker.example").await;
    assert_error(response, 421, "host_not_allowed").await;
    let with_port = format!("evil.attacker.example:{}", port(&stack));
    let response = get_with_host(&stack, "/api/sessions", &with_port).await;
    assert_error(response, 421, "host_not_allowed").await;
}

#[tokio::test]
async fn the_bound_address_and_localhost_are_served() {
    let stack = TestStack::start().await;

    for host in [
        format!("127.0.0.1:{}", port(&stack)),
        format!("localhost:{}", port(&stack)),
    ] {
        let response = get_with_host(&stack, "/api/sessions", &host).await;
        assert_eq!(response.status(), 200, "{host}");
    }
}

#[tokio::test]
async fn an_allowed_hosts_entry_is_served() {
    let mut stack = TestStack::start().await;
    stack.kill_backend().await;
    stack.backend_env.push((
        "ALLOWED_HOSTS".to_owned(),
        "backend, app.example:443".to_owned(),
    ));
    stack.start_backend().await;

    let service_name = format!("backend:{}", port(&stack));
    assert_eq!(
        get_with_host(&stack, "/api/sessions", &service_name)
            .await
            .status(),
        200
    );
    assert_eq!(
        get_with_host(&stack, "/api/sessions", "app.example:443")
            .await
            .status(),
        200
    );
    let response = get_with_host(&stack, "/api/sessions", "app.example:444").await;
    assert_error(response, 421, "host_not_allowed").await;
}
