//! Preview grants against the real backend (and, for the audit's attack,
//! the real frontend-proxy in front of it): a grant reads its one session's
//! files and tree and nothing else, for no one but the session's owner or an
//! admin, and dies with its session, its token, its browser sign-in and its
//! expiry; an API token is no grant. The attack replayed: one session's
//! page asking the preview for another session's files, with its own grant
//! or none, and the old preview holding an admin's token.

use std::path::{Path, PathBuf};

use frontend_proxy::config::Config as ProxyConfig;
use frontend_proxy::startup::Application as Proxy;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use test_support::git;

use crate::helpers::{assert_error, client_with_header, client_with_token, TestStack, TestUser};

/// A repository under `repos/<name>` whose one commit holds `files`.
fn repo_with(stack: &TestStack, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = stack.repos.join(name);
    test_support::init_repo(&dir);
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-q", "-m", "files"]);
    dir
}

/// A ready session of the user of `client` cloning `repo`; its id.
async fn session_of(stack: &TestStack, client: &reqwest::Client, repo: &Path) -> String {
    let created = client
        .post(stack.url("/api/sessions"))
        .json(&json!({"repo_url": format!("file://{}", repo.display())}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let id = created.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = stack.wait_cloned_as(client, &id).await;
    assert_eq!(session["status"], "ready", "{session}");
    id
}

/// `POST /api/sessions/{session}/preview` as the user of `client`.
async fn ask_grant(
    stack: &TestStack,
    client: &reqwest::Client,
    session: &str,
) -> reqwest::Response {
    client
        .post(stack.url(&format!("/api/sessions/{session}/preview")))
        .send()
        .await
        .unwrap()
}

/// A grant for `session`, asked as the user of `client`; the whole answer.
async fn grant(stack: &TestStack, client: &reqwest::Client, session: &str) -> Value {
    let response = ask_grant(stack, client, session).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// A client that presents `grant` as the preview does.
fn with_grant(grant: &str) -> reqwest::Client {
    client_with_header(reqwest::header::AUTHORIZATION, &format!("Preview {grant}"))
}

fn grant_of(answer: &Value) -> String {
    answer["grant"].as_str().unwrap().to_owned()
}

async fn get(stack: &TestStack, client: &reqwest::Client, path: &str) -> reqwest::Response {
    client.get(stack.url(path)).send().await.unwrap()
}

const PAGE: (&str, &str) = ("site/index.html", "<script src=\"app.js\"></script>");
const SCRIPT: (&str, &str) = ("site/app.js", "window.ok = 1;");

#[tokio::test]
async fn a_grant_reads_its_sessions_files_and_tree_and_nothing_else() {
    let stack = TestStack::start().await;
    let alice = stack.client.clone();
    let session = session_of(&stack, &alice, &repo_with(&stack, "site", &[PAGE, SCRIPT])).await;

    let answer = grant(&stack, &alice, &session).await;

    let secret = grant_of(&answer);
    assert!(secret.starts_with("rrp_") && secret.len() == 47, "{secret}");
    assert_eq!(answer["url_path"], format!("/{session}/{secret}/"));
    let expires: chrono::DateTime<chrono::Utc> =
        answer["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(
        ttl > chrono::Duration::minutes(59) && ttl <= chrono::Duration::hours(1),
        "BACKEND_PREVIEW_GRANT_TTL_SECS defaults to an hour: {ttl}"
    );
    let preview = with_grant(&secret);
    let file = get(
        &stack,
        &preview,
        &format!("/api/sessions/{session}/files/site/app.js"),
    )
    .await;
    assert_eq!(file.status(), 200);
    assert_eq!(file.json::<Value>().await.unwrap()["content"], SCRIPT.1);
    let encoded = get(
        &stack,
        &preview,
        &format!("/api/sessions/{session}/files/site%2Fapp.js"),
    )
    .await;
    assert_eq!(encoded.status(), 200);
    let tree = get(&stack, &preview, &format!("/api/sessions/{session}/files")).await;
    assert_eq!(tree.status(), 200);
    let tree: Value = tree.json().await.unwrap();
    assert!(
        tree["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "site/index.html"),
        "{tree}"
    );
    // `.git` and paths out of the workspace stay refused.
    let git_config = get(
        &stack,
        &preview,
        &format!("/api/sessions/{session}/files/.git/config"),
    )
    .await;
    assert_eq!(git_config.status(), 400);

    // Every other route, and every other method, is a 401: the grant names
    // nobody there, whatever it could read.
    let routes = [
        (Method::GET, "/api/sessions".to_owned()),
        (Method::GET, format!("/api/sessions/{session}")),
        (Method::DELETE, format!("/api/sessions/{session}")),
        (Method::POST, format!("/api/sessions/{session}/prompt")),
        (Method::POST, format!("/api/sessions/{session}/preview")),
        (Method::GET, format!("/api/sessions/{session}/runs")),
        (Method::GET, format!("/api/sessions/{session}/diff")),
        (Method::GET, "/api/sessions/events".to_owned()),
        (Method::GET, "/api/auth/me".to_owned()),
        (Method::DELETE, "/api/auth/session".to_owned()),
        (Method::GET, "/api/models".to_owned()),
        (
            Method::POST,
            format!("/api/sessions/{session}/files/site/app.js"),
        ),
        (
            Method::DELETE,
            format!("/api/sessions/{session}/files/site/app.js"),
        ),
    ];
    for (method, path) in routes {
        let response = preview
            .request(method.clone(), stack.url(&path))
            .json(&json!({"prompt": "create a file"}))
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "unauthorized").await;
    }
    // The session is untouched, and the grant never reached a log line.
    assert_eq!(
        stack.get_json(&format!("/api/sessions/{session}")).await["status"],
        "ready"
    );
    assert!(!stack.log.lines().iter().any(|l| l.contains(&secret)));
}

#[tokio::test]
async fn only_the_owner_or_an_admin_gets_a_grant_and_it_reads_no_other_session() {
    let stack = TestStack::start().await;
    let alice = stack.client.clone();
    let bob = stack.add_user("bob", false).await;
    let root = stack.add_user("root", true).await;
    let alices = session_of(&stack, &alice, &repo_with(&stack, "a", &[PAGE, SCRIPT])).await;
    let alices_other = session_of(&stack, &alice, &repo_with(&stack, "a2", &[SCRIPT])).await;
    let bobs = session_of(&stack, &bob.client, &repo_with(&stack, "b", &[SCRIPT])).await;

    // Bob gets no grant for alice's session: it does not exist for him.
    let refused = ask_grant(&stack, &bob.client, &alices).await;
    let body = assert_error(refused, 404, "not_found").await;
    assert_eq!(body["message"], format!("session {alices} does not exist"));
    // An admin does, as for anything of anyone's.
    let admins = grant_of(&grant(&stack, &root.client, &alices).await);
    let read = get(
        &stack,
        &with_grant(&admins),
        &format!("/api/sessions/{alices}/files/site/app.js"),
    )
    .await;
    assert_eq!(read.status(), 200);

    // Alice's grant reads her session, and neither bob's nor her other one;
    // nor does the admin's grant, bound to alice's session, read bob's.
    let alices_grant = with_grant(&grant_of(&grant(&stack, &alice, &alices).await));
    for (client, other) in [
        (&alices_grant, &bobs),
        (&alices_grant, &alices_other),
        (&with_grant(&admins), &bobs),
    ] {
        for path in [
            format!("/api/sessions/{other}/files/site/app.js"),
            format!("/api/sessions/{other}/files"),
        ] {
            let response = get(&stack, client, &path).await;
            let body = assert_error(response, 404, "not_found").await;
            assert_eq!(body["message"], format!("session {other} does not exist"));
        }
    }
    // A path that walks out of the session is no way round it.
    let walked = get(
        &stack,
        &alices_grant,
        &format!("/api/sessions/{alices}/files/../../{bobs}/files/site/app.js"),
    )
    .await;
    assert_ne!(walked.status(), 200);
}

#[tokio::test]
async fn an_api_token_is_no_grant_and_a_grant_is_no_token() {
    let stack = TestStack::start().await;
    let root = stack.add_user("root", true).await;
    let session = session_of(&stack, &stack.client, &repo_with(&stack, "s", &[SCRIPT])).await;
    let secret = grant_of(&grant(&stack, &stack.client, &session).await);
    let file = format!("/api/sessions/{session}/files/site/app.js");

    // The admin's token, handed over as a grant (the old PREVIEW_TOKEN), reads nothing.
    let as_grant = get(&stack, &with_grant(&root.token), &file).await;
    assert_error(as_grant, 401, "unauthorized").await;
    // The grant, handed over as a token, signs nobody in.
    let as_token = get(&stack, &client_with_token(&secret), &file).await;
    assert_error(as_token, 401, "unauthorized").await;
    for wrong in [
        "",
        "rrp_",
        "rrp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let response = stack
            .client
            .get(stack.url(&file))
            .header("authorization", format!("Preview {wrong}"))
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "unauthorized").await;
    }
}

/// The id of `user`'s one token.
async fn token_id(stack: &TestStack, user: &TestUser) -> String {
    let rows = stack
        .db
        .query(&format!(
            "SELECT id::text FROM api_tokens WHERE user_id = '{}'",
            user.id
        ))
        .await;
    assert_eq!(rows.len(), 1);
    rows[0].get(0)
}

#[tokio::test]
async fn a_grant_dies_with_its_expiry_session_token_and_browser_and_outlives_a_restart() {
    let mut stack = TestStack::start().await;
    let alice = stack.client.clone();
    let repo = repo_with(&stack, "s", &[SCRIPT]);
    let session = session_of(&stack, &alice, &repo).await;
    let file = format!("/api/sessions/{session}/files/site/app.js");
    let live = grant_of(&grant(&stack, &alice, &session).await);
    let expiring = grant_of(&grant(&stack, &alice, &session).await);

    // A restart keeps grants (they are in Postgres).
    stack.stop_backend().await;
    stack.start_backend().await;
    assert_eq!(get(&stack, &with_grant(&live), &file).await.status(), 200);

    // Expired.
    stack
        .db
        .execute(&format!(
            "UPDATE preview_grants SET expires_at = now() - interval '1 second'
             WHERE grant_sha256 = sha256('{expiring}'::bytea)"
        ))
        .await;
    assert_error(
        get(&stack, &with_grant(&expiring), &file).await,
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(get(&stack, &with_grant(&live), &file).await.status(), 200);

    // The browser that asked signs out.
    let signed_in = reqwest::Client::new()
        .post(stack.url("/api/auth/session"))
        .json(&json!({"token": stack.user.as_ref().unwrap().token}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let browser = reqwest::Client::builder()
        .default_headers(
            [(reqwest::header::COOKIE, cookie.parse().unwrap())]
                .into_iter()
                .collect(),
        )
        .build()
        .unwrap();
    let browsers = grant_of(&grant(&stack, &browser, &session).await);
    assert_eq!(
        get(&stack, &with_grant(&browsers), &file).await.status(),
        200
    );
    let signed_out = browser
        .delete(stack.url("/api/auth/session"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 204);
    assert_error(
        get(&stack, &with_grant(&browsers), &file).await,
        401,
        "unauthorized",
    )
    .await;

    // Its token is revoked.
    let carol = stack.add_user("carol", true).await;
    let carols = grant_of(&grant(&stack, &carol.client, &session).await);
    assert_eq!(get(&stack, &with_grant(&carols), &file).await.status(), 200);
    let revoked = stack
        .admin(&["token", "revoke", &token_id(&stack, &carol).await])
        .await;
    assert!(revoked.success, "{}", revoked.stderr);
    assert_error(
        get(&stack, &with_grant(&carols), &file).await,
        401,
        "unauthorized",
    )
    .await;

    // Its session is deleted: the grant goes with it.
    assert_eq!(stack.delete_session(&session).await.status(), 204);
    assert_error(
        get(&stack, &with_grant(&live), &file).await,
        401,
        "unauthorized",
    )
    .await;
    let left = stack
        .db
        .query(&format!(
            "SELECT count(*) FROM preview_grants WHERE session_id = '{session}'"
        ))
        .await;
    assert_eq!(left[0].get::<_, i64>(0), 0);
}

#[tokio::test]
async fn without_authentication_a_grant_still_reads_one_session_and_dies_when_tokens_return() {
    let mut stack = TestStack::start_configured(true, &[("AUTH_MODE", "none")]).await;
    let anyone = reqwest::Client::new();
    let one = session_of(&stack, &anyone, &repo_with(&stack, "one", &[SCRIPT])).await;
    let two = session_of(&stack, &anyone, &repo_with(&stack, "two", &[SCRIPT])).await;
    let secret = grant_of(&grant(&stack, &anyone, &one).await);

    let own = get(
        &stack,
        &with_grant(&secret),
        &format!("/api/sessions/{one}/files/site/app.js"),
    )
    .await;
    let other = get(
        &stack,
        &with_grant(&secret),
        &format!("/api/sessions/{two}/files/site/app.js"),
    )
    .await;
    let elsewhere = get(&stack, &with_grant(&secret), "/api/sessions").await;

    assert_eq!(own.status(), 200);
    assert_error(other, 404, "not_found").await;
    assert_error(elsewhere, 401, "unauthorized").await;
    // Tokens required again: a grant that names nobody is void.
    stack.kill_backend().await;
    stack.backend_env.retain(|(k, _)| k != "AUTH_MODE");
    stack.start_backend().await;
    let after = get(
        &stack,
        &with_grant(&secret),
        &format!("/api/sessions/{one}/files/site/app.js"),
    )
    .await;
    assert_error(after, 401, "unauthorized").await;
}

/// The real frontend-proxy in front of the stack's backend; its preview
/// listener's origin.
async fn preview_listener(stack: &TestStack) -> String {
    let proxy = Proxy::build(ProxyConfig {
        proxy_addr: "127.0.0.1:0".into(),
        preview_addr: "127.0.0.1:0".into(),
        backend_url: stack.base.clone(),
        demo_mode: false,
    })
    .await
    .unwrap();
    let origin = format!("http://{}", proxy.preview_addr());
    tokio::spawn(proxy.run_until_stopped(std::future::pending()));
    origin
}

#[tokio::test]
async fn through_the_preview_one_sessions_page_reads_no_other_sessions_files() {
    let stack = TestStack::start().await;
    let bob = stack.add_user("bob", false).await;
    let root = stack.add_user("root", true).await;
    let alices = session_of(
        &stack,
        &stack.client,
        &repo_with(&stack, "a", &[PAGE, SCRIPT]),
    )
    .await;
    let bobs = session_of(
        &stack,
        &bob.client,
        &repo_with(&stack, "b", &[("secret.js", "window.secret = 'bob';")]),
    )
    .await;
    let preview = preview_listener(&stack).await;
    let answer = grant(&stack, &stack.client, &alices).await;
    let url_path = answer["url_path"].as_str().unwrap();
    let secret = grant_of(&answer);
    let browser = reqwest::Client::new();
    let fetch = |path: String| {
        let browser = browser.clone();
        async move { browser.get(path).send().await.unwrap() }
    };

    // Alice's page and its relative subresources load.
    let page = fetch(format!("{preview}{url_path}site/")).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await.unwrap(), PAGE.1);
    let script = fetch(format!("{preview}{url_path}site/app.js")).await;
    assert_eq!(script.status(), 200);
    assert_eq!(script.text().await.unwrap(), SCRIPT.1);
    // Bob's file, with alice's grant and with none: neither loads.
    let with_alices = fetch(format!("{preview}/{bobs}/{secret}/secret.js")).await;
    assert_eq!(with_alices.status(), StatusCode::NOT_FOUND);
    assert!(!with_alices.text().await.unwrap().contains("bob'"));
    let without = fetch(format!("{preview}/{bobs}/secret.js")).await;
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    // An admin's API token in a grant's place reads nothing either.
    let admins_token = fetch(format!("{preview}/{bobs}/{}/secret.js", root.token)).await;
    assert_eq!(admins_token.status(), StatusCode::UNAUTHORIZED);

    // Once alice's session is deleted, her grant is dead.
    assert_eq!(stack.delete_session(&alices).await.status(), 204);
    let gone = fetch(format!("{preview}{url_path}site/app.js")).await;
    assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);
    assert!(!stack.log.lines().iter().any(|l| l.contains(&secret)));
}
