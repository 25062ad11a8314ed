//! Users, tokens, the sign-in cookie and tenancy, against the real backend
//! binary: a caller without a credential learns nothing, and a user never
//! reaches another user's sessions, runs, events, files or diff.

use reqwest::StatusCode;
use serde_json::{json, Value};
use test_support::Subscription;

use crate::helpers::{assert_error, client_with_header, client_with_token, TestStack};

/// Every route of a session or run, by method and path.
fn routes_of(session: &str, run: &str) -> Vec<(reqwest::Method, String)> {
    use reqwest::Method;
    vec![
        (Method::GET, format!("/api/sessions/{session}")),
        (Method::DELETE, format!("/api/sessions/{session}")),
        (Method::POST, format!("/api/sessions/{session}/prompt")),
        (Method::GET, format!("/api/sessions/{session}/runs")),
        (Method::GET, format!("/api/sessions/{session}/files")),
        (
            Method::GET,
            format!("/api/sessions/{session}/files/hello.txt"),
        ),
        (
            Method::GET,
            format!("/api/sessions/{session}/files/dir%2Fa.txt"),
        ),
        (
            Method::GET,
            format!("/api/sessions/{session}/files/dir/a.txt"),
        ),
        (Method::GET, format!("/api/sessions/{session}/diff")),
        (Method::GET, format!("/api/runs/{run}")),
        (Method::POST, format!("/api/runs/{run}/cancel")),
        (Method::GET, format!("/api/runs/{run}/events")),
    ]
}

async fn send(
    client: &reqwest::Client,
    stack: &TestStack,
    method: reqwest::Method,
    path: &str,
) -> reqwest::Response {
    let mut request = client.request(method.clone(), stack.url(path));
    if method == reqwest::Method::POST {
        request = request.json(&json!({"prompt": "create a file"}));
    }
    request.send().await.unwrap()
}

/// `GET /api/sessions` as the user of `client`.
async fn sessions_listed_for(stack: &TestStack, client: &reqwest::Client) -> Value {
    let response = client.get(stack.url("/api/sessions")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn another_user_gets_404_for_everything_of_a_users_session() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "create a file").await;
    let events = stack.events(&run).await;
    assert_eq!(events.last().unwrap().event, "run.completed");
    let bob = stack.add_user("bob", false).await;

    for (method, path) in routes_of(&session, &run) {
        let response = send(&bob.client, &stack, method.clone(), &path).await;
        let body = assert_error(response, 404, "not_found").await;
        assert!(
            body["message"].as_str().unwrap().contains("does not exist"),
            "{method} {path}: {body}"
        );
    }
    // Bob's list is empty, and his change stream's snapshot too.
    let list = sessions_listed_for(&stack, &bob.client).await;
    assert_eq!(list["total"], 0);
    assert_eq!(list["sessions"], json!([]));
    let mut changes =
        Subscription::open(&bob.client, &stack.url("/api/sessions/events"), None).await;
    let snapshot = changes.next().await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data["sessions"], json!([]));

    // Nothing of alice's changed: her run is still there, once, completed.
    let runs = stack
        .get_json(&format!("/api/sessions/{session}/runs"))
        .await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
    assert_eq!(runs["runs"][0]["status"], "completed");
    assert!(stack.workspace(&session).join("hello.txt").exists());
}

#[tokio::test]
async fn an_admin_sees_every_users_sessions() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let root = stack.add_user("root", true).await;
    let list = sessions_listed_for(&stack, &root.client).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["sessions"][0]["session_id"], session.as_str());
    let got = root
        .client
        .get(stack.url(&format!("/api/sessions/{session}/files")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
}

#[tokio::test]
async fn a_change_stream_tells_a_user_only_of_their_own_sessions() {
    let stack = TestStack::start().await;
    let bob = stack.add_user("bob", false).await;
    let mut bobs = Subscription::open(&bob.client, &stack.url("/api/sessions/events"), None).await;
    assert_eq!(bobs.next().await.unwrap().event, "snapshot");
    // Alice's session comes and goes; then bob makes one.
    let (alices, _) = stack.ready_session().await;
    assert_eq!(stack.delete_session(&alices).await.status(), 204);
    let repo = stack.make_repo("bobs");
    let created = bob
        .client
        .post(stack.url("/api/sessions"))
        .json(&json!({"repo_url": format!("file://{}", repo.display())}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let bobs_id: Value = created.json().await.unwrap();
    // The first thing bob hears of is his own session.
    let first = bobs.next().await.unwrap();
    assert_eq!(first.event, "updated", "{}", first.text);
    assert_eq!(first.data["session"]["session_id"], bobs_id["session_id"]);
}

#[tokio::test]
async fn a_missing_wrong_malformed_or_revoked_token_is_a_401_on_every_route() {
    let stack = TestStack::start().await;
    let anonymous = reqwest::Client::new();
    let wrong = client_with_token("rr_not-a-token");
    let paths = [
        "/api/sessions",
        "/api/sessions/events",
        "/api/runs/x",
        "/api/nothing-here",
        "/api/auth/me",
    ];
    for client in [&anonymous, &wrong] {
        for path in paths {
            let response = client.get(stack.url(path)).send().await.unwrap();
            assert_eq!(response.headers()["www-authenticate"], "Bearer", "{path}");
            assert_error(response, 401, "unauthorized").await;
        }
    }
    let basic = anonymous
        .get(stack.url("/api/sessions"))
        .basic_auth("alice", Some("x"))
        .send()
        .await
        .unwrap();
    assert_error(basic, 401, "unauthorized").await;
    // Bad input in the header is a 401, never a 500.
    let raw = anonymous
        .get(stack.url("/api/sessions"))
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_error(raw, 401, "unauthorized").await;

    // Health, readiness, the document and its UI are public.
    for path in ["/health", "/ready", "/api/openapi.json", "/docs"] {
        let response = anonymous.get(stack.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }

    // The right token works until it is revoked.
    let me: Value = stack.get_json("/api/auth/me").await;
    assert_eq!(me["user"]["name"], "alice");
    assert_eq!(me["user"]["id"], stack.user.as_ref().unwrap().id.as_str());
    assert_eq!(me["user"]["is_admin"], false);
    assert_eq!(me["auth_mode"], "token");
    let token_id = alices_token_id(&stack).await;
    let revoked = stack.admin(&["token", "revoke", &token_id]).await;
    assert!(revoked.success, "{}", revoked.stderr);
    assert_error(stack.get("/api/sessions").await, 401, "unauthorized").await;
    // A second revocation says there is nothing to revoke.
    assert!(!stack.admin(&["token", "revoke", &token_id]).await.success);
    // The secret never reached a log line.
    let token = &stack.user.as_ref().unwrap().token;
    assert!(!stack.log.lines().iter().any(|l| l.contains(token.as_str())));
}

/// Signs in with `token`; returns the cookie pair `rr_session=…`.
async fn sign_in(stack: &TestStack, token: &str) -> String {
    let response = reqwest::Client::new()
        .post(stack.url("/api/auth/session"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "not behind TLS: {set_cookie}"
    );
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["user"]["name"], "alice");
    set_cookie.split(';').next().unwrap().to_owned()
}

fn client_with_cookie(cookie: &str) -> reqwest::Client {
    client_with_header(reqwest::header::COOKIE, cookie)
}

/// A stack whose user's browser signed in with her token and follows a
/// run that sleeps, with the cookie; its command has started.
async fn a_browser_streaming_a_long_run() -> (TestStack, reqwest::Client, String, Subscription) {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let cookie = sign_in(&stack, &stack.user.as_ref().unwrap().token).await;
    let browser = client_with_cookie(&cookie);
    let run = stack.prompt(&session, "sleep").await;
    let mut stream = Subscription::open(
        &browser,
        &stack.url(&format!("/api/runs/{run}/events")),
        None,
    )
    .await;
    stream.until(|e| e.event == "item.started").await;
    (stack, browser, run, stream)
}

/// The id of alice's first token, as `backend admin token list` shows it.
async fn alices_token_id(stack: &TestStack) -> String {
    let listed = stack.admin(&["token", "list", "alice"]).await;
    assert!(listed.success, "{}", listed.stderr);
    listed
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_browser_signs_in_streams_with_the_cookie_and_signing_out_ends_the_stream() {
    let (stack, browser, run, stream) = a_browser_streaming_a_long_run().await;

    let signed_out = browser
        .delete(stack.url("/api/auth/session"))
        .header("origin", stack.base.as_str())
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 204);
    assert!(signed_out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // The stream ends without the run's end: the run goes on (it sleeps).
    let rest = stream.rest().await;
    assert!(
        rest.iter().all(|e| !e.event.starts_with("run.")),
        "{rest:?}"
    );
    assert_eq!(
        stack.get_json(&format!("/api/runs/{run}")).await["status"],
        "running"
    );
    assert_error(
        browser
            .get(stack.url("/api/sessions"))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // A wrong token signs nobody in.
    let refused = reqwest::Client::new()
        .post(stack.url("/api/auth/session"))
        .json(&json!({"token": "rr_wrong"}))
        .send()
        .await
        .unwrap();
    assert_error(refused, 401, "unauthorized").await;
    stack
        .post(&format!("/api/runs/{run}/cancel"), json!({}))
        .await;
}

#[tokio::test]
async fn revoking_a_token_ends_the_streams_of_the_browsers_signed_in_with_it() {
    let (stack, browser, _run, stream) = a_browser_streaming_a_long_run().await;
    let token_id = alices_token_id(&stack).await;
    assert!(stack.admin(&["token", "revoke", &token_id]).await.success);
    let rest = stream.rest().await;
    assert!(
        rest.iter().all(|e| !e.event.starts_with("run.")),
        "{rest:?}"
    );
    assert_error(
        browser
            .get(stack.url("/api/sessions"))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn a_cross_origin_state_change_with_the_cookie_is_refused_and_changes_nothing() {
    let stack = TestStack::start().await;
    let (session, _) = stack.ready_session().await;
    let cookie = sign_in(&stack, &stack.user.as_ref().unwrap().token).await;
    let browser = client_with_cookie(&cookie);
    let prompt = format!("/api/sessions/{session}/prompt");
    // A page of another site, and one of this site on another port (a
    // preview), with and without Sec-Fetch-Site.
    let attempts: [&[(&str, &str)]; 4] = [
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        &[
            ("origin", "http://127.0.0.1:9104"),
            ("sec-fetch-site", "same-site"),
        ],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
    ];
    for headers in attempts {
        let mut request = browser
            .post(stack.url(&prompt))
            .json(&json!({"prompt": "create a file"}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        assert_error(request.send().await.unwrap(), 403, "forbidden").await;
        let mut delete = browser.delete(stack.url(&format!("/api/sessions/{session}")));
        for (name, value) in headers {
            delete = delete.header(*name, *value);
        }
        assert_error(delete.send().await.unwrap(), 403, "forbidden").await;
    }
    let runs = stack
        .get_json(&format!("/api/sessions/{session}/runs"))
        .await;
    assert_eq!(runs["runs"], json!([]));
    assert_eq!(
        stack.get_json(&format!("/api/sessions/{session}")).await["status"],
        "ready"
    );
    // From the page's own origin, the same request goes through.
    let own = browser
        .post(stack.url(&prompt))
        .header("origin", stack.base.as_str())
        .json(&json!({"prompt": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 202);
    // A cross-origin sign-in (login CSRF) is refused too.
    let forced = reqwest::Client::new()
        .post(stack.url("/api/auth/session"))
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"token": stack.user.as_ref().unwrap().token}))
        .send()
        .await
        .unwrap();
    assert_error(forced, 403, "forbidden").await;
}

#[tokio::test]
async fn per_user_limits_are_a_429_that_names_the_setting() {
    let stack = TestStack::start_configured(
        true,
        &[
            ("BACKEND_USER_MAX_SESSIONS", "1"),
            ("BACKEND_USER_MAX_ACTIVE_RUNS", "1"),
        ],
    )
    .await;
    let (session, repo) = stack.ready_session().await;
    let second = stack
        .post(
            "/api/sessions",
            json!({"repo_url": format!("file://{}", repo.display())}),
        )
        .await;
    let body = assert_error(second, 429, "too_many_requests").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("BACKEND_USER_MAX_SESSIONS"),
        "{body}"
    );
    // Another user has limits of their own.
    let bob = stack.add_user("bob", false).await;
    let bobs = bob
        .client
        .post(stack.url("/api/sessions"))
        .json(&json!({"repo_url": format!("file://{}", repo.display())}))
        .send()
        .await
        .unwrap();
    assert_eq!(bobs.status(), 202);

    let run = stack.prompt(&session, "sleep").await;
    let refused = stack
        .post(
            &format!("/api/sessions/{session}/prompt"),
            json!({"prompt": "hello"}),
        )
        .await;
    let body = assert_error(refused, 429, "too_many_requests").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("BACKEND_USER_MAX_ACTIVE_RUNS"),
        "{body}"
    );
    // Once the run ends, a prompt is taken again.
    stack
        .post(&format!("/api/runs/{run}/cancel"), json!({}))
        .await;
    stack.events(&run).await;
    let again = stack
        .post(
            &format!("/api/sessions/{session}/prompt"),
            json!({"prompt": "hello"}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn the_admin_command_manages_users_and_tokens() {
    let stack = TestStack::start().await;
    let duplicate = stack.admin(&["user", "add", "alice"]).await;
    assert!(!duplicate.success);
    assert!(
        duplicate.stderr.contains("exists already"),
        "{}",
        duplicate.stderr
    );
    let bad = stack.admin(&["user", "add", "no spaces"]).await;
    assert!(!bad.success);
    assert!(!stack.admin(&["token", "create", "nobody"]).await.success);
    stack.add_user("root", true).await;
    let list = stack.admin(&["user", "list"]).await;
    assert!(list.success);
    let rows: Vec<Vec<&str>> = list
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", list.stdout);
    assert_eq!((rows[0][1], rows[0][2], rows[0][3]), ("alice", "user", "1"));
    assert_eq!((rows[1][1], rows[1][2], rows[1][3]), ("root", "admin", "1"));
    // `token create` prints the token alone: 256 bits behind `rr_`.
    let created = stack.admin(&["token", "create", "alice"]).await;
    let token = created.stdout.trim();
    assert_eq!(created.stdout.lines().count(), 1);
    assert!(token.starts_with("rr_") && token.len() == 46, "{token}");
    // Only its hash is stored.
    let stored = stack.db.query("SELECT token_sha256 FROM api_tokens").await;
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|r| r.get::<_, Vec<u8>>(0).len() == 32));
    let dump = stack
        .db
        .query("SELECT row_to_json(t)::text FROM api_tokens t")
        .await;
    assert!(dump.iter().all(|r| !r.get::<_, String>(0).contains(token)));
}

#[tokio::test]
async fn auth_mode_none_serves_without_credentials_on_loopback_only() {
    let stack = TestStack::start_configured(true, &[("AUTH_MODE", "none")]).await;
    let me = stack.get_json("/api/auth/me").await;
    assert_eq!(me, json!({"auth_mode": "none", "user": null}));
    let (session, _) = stack.ready_session().await;
    assert_eq!(
        stack.get_json("/api/sessions").await["sessions"][0]["session_id"],
        session.as_str()
    );

    // On an address that is not loopback it refuses to start, unless told.
    let start = |extra: Option<&'static str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_backend"));
        command
            .env("AUTH_MODE", "none")
            .env("BACKEND_ADDR", "0.0.0.0:0")
            .env("DATABASE_URL", &stack.db.url)
            .env("RUNNER_URL", stack.runner_url(""))
            .env("WORKSPACES_ROOT", &stack.root)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(value) = extra {
            command.env("AUTH_MODE_NONE_ON_PUBLIC", value);
        }
        command
    };
    let refused = start(None).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("AUTH_MODE_NONE_ON_PUBLIC=yes"), "{stderr}");

    let mut allowed = tokio::process::Command::from(start(Some("yes")))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = allowed.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let listening = tokio::time::timeout(test_support::HANG_GUARD, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("backend listening") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(listening);
    allowed.kill().await.unwrap();
}

/// POSTs `body` to a sign-in route as a browser of the dashboard would.
async fn auth_post(stack: &TestStack, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(stack.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The one-time code of a link `backend admin signin-link` printed.
async fn signin_code(stack: &TestStack, user: &str, extra: &[&str]) -> String {
    let mut args = vec!["signin-link", user, "--url", "http://127.0.0.1:9100/"];
    args.extend(extra);
    let made = stack.admin(&args).await;
    assert!(made.success, "{}", made.stderr);
    let link = made.stdout.trim();
    let (page, code) = link.split_once("#code=").unwrap();
    assert_eq!(page, "http://127.0.0.1:9100/");
    assert!(code.starts_with("rrs_") && code.len() == 47, "{code}");
    code.to_owned()
}

/// The second attack run's sign-in CSRF: a link carried a token and signed
/// the browser in unasked. A link now carries a one-time code that expires,
/// which the dashboard can look up (whom it signs in) without using it.
#[tokio::test]
async fn a_sign_in_code_says_whom_it_signs_in_and_works_once() {
    let stack = TestStack::start().await;
    let code = signin_code(&stack, "alice", &[]).await;

    let inspected = auth_post(&stack, "/api/auth/code", json!({"code": code})).await;
    assert_eq!(inspected.status(), 200);
    let inspected: Value = inspected.json().await.unwrap();
    assert_eq!(inspected["user"]["name"], "alice");
    let expires: chrono::DateTime<chrono::Utc> =
        inspected["expires_at"].as_str().unwrap().parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(left > chrono::Duration::minutes(9) && left <= chrono::Duration::minutes(10));

    let first = auth_post(&stack, "/api/auth/session", json!({"code": code})).await;
    assert_eq!(first.status(), 200);
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let me: Value = client_with_cookie(&cookie)
        .get(stack.url("/api/auth/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["name"], "alice");
    // Once.
    for path in ["/api/auth/session", "/api/auth/code"] {
        let again = auth_post(&stack, path, json!({"code": code})).await;
        let body = assert_error(again, 401, "unauthorized").await;
        assert!(body["message"].as_str().unwrap().contains("used already"));
    }
    // The browser's sign-in rests on a token of its own, which the operator
    // sees and can revoke.
    let listed = stack.admin(&["token", "list", "alice"]).await;
    let link_token = listed
        .stdout
        .lines()
        .find(|l| l.ends_with("sign-in link"))
        .unwrap_or_else(|| panic!("{}", listed.stdout))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(stack.admin(&["token", "revoke", &link_token]).await.success);
    let revoked = client_with_cookie(&cookie)
        .get(stack.url("/api/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 401);

    // A wrong code, an expired one, and both fields or none.
    let wrong = auth_post(&stack, "/api/auth/code", json!({"code": "rrs_nope"})).await;
    assert_error(wrong, 401, "unauthorized").await;
    let expired = signin_code(&stack, "alice", &["--minutes", "1"]).await;
    stack
        .db
        .execute("UPDATE signin_codes SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
        .await;
    let late = auth_post(&stack, "/api/auth/session", json!({"code": expired})).await;
    assert_error(late, 401, "unauthorized").await;
    let token = stack.user.as_ref().unwrap().token.clone();
    let both = auth_post(
        &stack,
        "/api/auth/session",
        json!({"code": code, "token": token}),
    )
    .await;
    assert_error(both, 422, "validation_error").await;
    let neither = auth_post(&stack, "/api/auth/session", json!({})).await;
    assert_error(neither, 422, "validation_error").await;
    // Codes are stored as hashes only, and never logged.
    let dump = stack
        .db
        .query("SELECT row_to_json(c)::text FROM signin_codes c")
        .await;
    assert!(dump.iter().all(|r| !r.get::<_, String>(0).contains(&code)));
    assert!(!stack.log.lines().iter().any(|l| l.contains(&code)));
    // An hour at most.
    let long = stack
        .admin(&["signin-link", "alice", "--minutes", "61"])
        .await;
    assert!(!long.success);
}

/// The second attack run's cookie tossing: a page on another port of the
/// host set a second `rr_session` (for a longer path, so sent first), and
/// the API acted as its owner. A request with more than one session cookie
/// signs no one in.
#[tokio::test]
async fn a_request_with_two_session_cookies_is_refused() {
    let stack = TestStack::start().await;
    let alice = sign_in(&stack, &stack.user.as_ref().unwrap().token).await;
    let mallory = stack.add_user("mallory", false).await;
    let mallory_cookie = auth_post(&stack, "/api/auth/session", json!({"token": mallory.token}))
        .await
        .headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    for pair in [
        format!("{mallory_cookie}; {alice}"),
        format!("{alice}; {mallory_cookie}"),
        format!("{alice}; __Host-{alice}"),
        format!("{alice}; rr_session="),
    ] {
        let response = client_with_cookie(&pair)
            .get(stack.url("/api/sessions"))
            .send()
            .await
            .unwrap();
        let body = assert_error(response, 401, "unauthorized").await;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("more than one sign-in cookie"),
            "{body}"
        );
    }
    // One cookie still works, by either name.
    for one in [alice.clone(), format!("__Host-{alice}")] {
        let response = client_with_cookie(&one)
            .get(stack.url("/api/sessions"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{one}");
    }
}

/// Behind TLS the cookie is `__Host-rr_session`: `Secure`, `Path=/`, no
/// `Domain`, which no other host of the site can set.
#[tokio::test]
async fn behind_tls_the_cookie_has_the_host_prefix() {
    let stack = TestStack::start().await;
    let response = reqwest::Client::new()
        .post(stack.url("/api/auth/session"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"token": stack.user.as_ref().unwrap().token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.starts_with("__Host-rr_session=rrc_"),
        "{set_cookie}"
    );
    for attribute in ["Secure", "Path=/", "HttpOnly", "SameSite=Strict"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Domain"), "{set_cookie}");
}

/// A browser that signs in again (another user's link, confirmed) ends the
/// sign-in it had: its old cookie, and the streams of its other tabs, stop
/// working, as the dashboard says ("this replaces that sign-in").
#[tokio::test]
async fn a_new_sign_in_replaces_the_browsers_old_one() {
    let stack = TestStack::start().await;
    let alice = sign_in(&stack, &stack.user.as_ref().unwrap().token).await;
    let mut old_tab = Subscription::open(
        &client_with_cookie(&alice),
        &stack.url("/api/sessions/events"),
        None,
    )
    .await;
    old_tab.until(|e| e.event == "snapshot").await;
    stack.add_user("bob", false).await;
    let code = signin_code(&stack, "bob", &[]).await;

    let replaced = client_with_cookie(&alice)
        .post(stack.url("/api/auth/session"))
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    let bob: Value = replaced.json().await.unwrap();
    assert_eq!(bob["user"]["name"], "bob");

    let old = client_with_cookie(&alice)
        .get(stack.url("/api/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    // The other tab's stream ends.
    old_tab.rest().await;
}
