//! The preview listener against a fake backend that answers the files API
//! the way the backend does (`GET /api/sessions/{id}/files[/{path}]`, JSON,
//! base64 for binary, the error schema, a preview grant bound to one
//! session) and records what it was asked. The real chain (real backend, a
//! real run writing the files, Chromium) is in `e2e/dashboard.test.mjs`; the
//! real backend behind the real proxy in `backend/tests/api/previews.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use frontend_proxy::config::Config;
use frontend_proxy::startup::Application;
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json, Path};
use poem::{get, handler, EndpointExt, IntoResponse, Request, Response, Route, Server};
use serde_json::{json, Value};

const SESSION: &str = "0b8f3a52-8f43-4c8e-9a8e-3f1c2d4e5f60";
/// Another session, which `GRANT` does not read.
const OTHER: &str = "11111111-2222-4333-8444-555555555555";
/// The live grant of `SESSION`.
const GRANT: &str = "rrp_LiveLiveLiveLiveLiveLiveLiveLiveLiveLiveLiv";
/// A grant of `SESSION` that has expired.
const EXPIRED: &str = "rrp_ExpiredExpiredExpiredExpiredExpiredExpiredE";

/// A request the fake backend got: its path, its `Cookie` and its
/// `Authorization` header.
type Asked = (String, Option<String>, Option<String>);

/// The fake workspace: path -> content; folders are implied by the paths.
#[derive(Clone, Default)]
struct Workspace {
    files: Arc<BTreeMap<String, Vec<u8>>>,
    /// Each request the backend got: path, its `Cookie` and `Authorization`
    /// headers, if any.
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl Workspace {
    fn dirs(&self) -> Vec<String> {
        let mut dirs: Vec<String> = Vec::new();
        for path in self.files.keys() {
            let mut parts: Vec<&str> = path.split('/').collect();
            parts.pop();
            for n in 1..=parts.len() {
                let dir = parts[..n].join("/");
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        dirs
    }

    fn record(&self, req: &Request) {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|c| c.to_str().unwrap().to_owned())
        };
        self.asked.lock().unwrap().push((
            req.original_uri().path().to_owned(),
            header("cookie"),
            header("authorization"),
        ));
    }

    /// As the backend judges a request with a grant: `GRANT` reads
    /// `SESSION` alone; anything else is no credential.
    fn refusal(&self, req: &Request, session: &str) -> Option<Response> {
        self.record(req);
        let authorization = req.headers().get("authorization");
        if authorization.and_then(|a| a.to_str().ok()) != Some(&format!("Preview {GRANT}")) {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the preview grant is not valid: it is wrong, expired or revoked",
            ));
        }
        (session != SESSION)
            .then(|| error(StatusCode::NOT_FOUND, "not_found", "session does not exist"))
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": status.canonical_reason(), "message": message, "code": code});
    (status, Json(body)).into_response()
}

#[handler]
fn list_files(req: &Request, Path(session): Path<String>, Data(ws): Data<&Workspace>) -> Response {
    if let Some(refusal) = ws.refusal(req, &session) {
        return refusal;
    }
    let mut entries: Vec<Value> = ws
        .dirs()
        .into_iter()
        .map(|d| json!({"path": d, "kind": "dir", "size": 0}))
        .collect();
    for (path, content) in ws.files.iter() {
        entries.push(json!({"path": path, "kind": "file", "size": content.len()}));
    }
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Json(json!({"entries": entries, "truncated": false})).into_response()
}

#[handler]
fn read_file(
    req: &Request,
    Path((session, path)): Path<(String, String)>,
    Data(ws): Data<&Workspace>,
) -> Response {
    if let Some(refusal) = ws.refusal(req, &session) {
        return refusal;
    }
    if ws.dirs().contains(&path) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("{path} is a directory"),
        );
    }
    let Some(content) = ws.files.get(&path) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{path}: no such file"),
        );
    };
    let body = match std::str::from_utf8(content) {
        Ok(text) => {
            json!({"path": path, "size": content.len(), "binary": false, "encoding": "utf-8", "content": text})
        }
        Err(_) => json!({"path": path, "size": content.len(), "binary": true, "encoding": "base64",
            "content": base64::engine::general_purpose::STANDARD.encode(content)}),
    };
    let mut response = Json(body).into_response();
    // Whatever the backend says, a preview sets no cookie.
    response
        .headers_mut()
        .insert("set-cookie", "backend=1".parse().unwrap());
    response
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xfe";

struct Harness {
    preview: std::net::SocketAddr,
    dashboard: std::net::SocketAddr,
    workspace: Workspace,
    client: reqwest::Client,
}

impl Harness {
    /// `path` of the preview, as given (with its grant, or without).
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("http://{}{path}", self.preview))
            .send()
            .await
            .unwrap()
    }

    /// `path` of `SESSION`'s workspace, with its grant.
    async fn page(&self, path: &str) -> reqwest::Response {
        self.get(&format!("/{SESSION}/{GRANT}/{path}")).await
    }

    fn asked(&self) -> Vec<String> {
        let asked = self.workspace.asked.lock().unwrap();
        asked.iter().map(|(path, ..)| path.clone()).collect()
    }
}

async fn harness() -> Harness {
    let files: BTreeMap<String, Vec<u8>> = [
        (
            "snake/index.html",
            b"<!doctype html><title>Snake</title>".to_vec(),
        ),
        ("snake/snake.js", b"document.title = 'ok';".to_vec()),
        ("snake/style.css", b"body { margin: 0 }".to_vec()),
        ("snake/logo.png", PNG.to_vec()),
        ("snake/Makefile", b"all:".to_vec()),
        ("notes/a b.md", b"# notes".to_vec()),
        ("README.md", b"# readme".to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let workspace = Workspace {
        files: Arc::new(files),
        asked: Arc::default(),
    };
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let backend = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new()
        .at("/api/sessions/:session/files", get(list_files))
        .at("/api/sessions/:session/files/*path", get(read_file))
        .data(workspace.clone());
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    let app = Application::build(Config {
        proxy_addr: "127.0.0.1:0".into(),
        preview_addr: "127.0.0.1:0".into(),
        backend_url: format!("http://{backend}"),
        demo_mode: false,
    })
    .await
    .unwrap();
    let (preview, dashboard) = (app.preview_addr(), app.addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Harness {
        preview,
        dashboard,
        workspace,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

fn content_type(response: &reqwest::Response) -> &str {
    response.headers()["content-type"].to_str().unwrap()
}

async fn assert_json_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert!(content_type(&response).starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body["error"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn a_folder_answers_with_its_index_html() {
    let h = harness().await;

    let page = h.page("snake/").await;

    assert_eq!(page.status(), 200);
    assert_eq!(content_type(&page), "text/html; charset=utf-8");
    assert_eq!(
        page.text().await.unwrap(),
        "<!doctype html><title>Snake</title>"
    );
}

#[tokio::test]
async fn a_folder_named_without_its_slash_is_redirected_to_it() {
    let h = harness().await;

    let folder = h.page("snake").await;
    let session = h.get(&format!("/{SESSION}/{GRANT}")).await;

    assert_eq!(folder.status(), 308);
    assert_eq!(folder.headers()["location"], "./snake/");
    assert_eq!(session.status(), 308);
    assert_eq!(
        session.headers()["location"],
        format!("/{SESSION}/{GRANT}/")
    );
}

#[tokio::test]
async fn a_folder_without_index_html_lists_its_files() {
    let h = harness().await;

    let root = h.page("").await;
    let notes = h.page("notes/").await;

    assert_eq!(root.status(), 200);
    assert_eq!(content_type(&root), "text/html; charset=utf-8");
    let root = root.text().await.unwrap();
    assert!(
        root.contains("<li><a href=\"./README.md\">README.md</a></li>"),
        "{root}"
    );
    assert!(
        root.contains("<li><a href=\"./snake/\">snake/</a></li>"),
        "{root}"
    );
    assert!(
        !root.contains("snake.js"),
        "only the folder's own entries: {root}"
    );
    let notes = notes.text().await.unwrap();
    assert!(
        notes.contains("<li><a href=\"./a%20b.md\">a b.md</a></li>"),
        "{notes}"
    );
}

#[tokio::test]
async fn files_are_served_with_the_content_type_of_their_extension() {
    let h = harness().await;
    for (path, expected, body) in [
        (
            "snake/snake.js",
            "text/javascript; charset=utf-8",
            &b"document.title = 'ok';"[..],
        ),
        (
            "snake/style.css",
            "text/css; charset=utf-8",
            b"body { margin: 0 }",
        ),
        ("snake/logo.png", "image/png", PNG),
        ("snake/Makefile", "application/octet-stream", b"all:"),
        ("notes/a%20b.md", "text/markdown; charset=utf-8", b"# notes"),
    ] {
        let response = h.page(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(content_type(&response), expected, "{path}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(&response.bytes().await.unwrap()[..], body, "{path}");
    }
}

#[tokio::test]
async fn git_paths_are_refused_without_asking_the_backend() {
    let h = harness().await;
    for path in [
        ".git/config",
        "snake/.git/HEAD",
        ".GIT/config",
        "%2egit/config",
        ".git/",
    ] {
        let response = h.page(path).await;
        assert_json_error(response, 403, "forbidden").await;
    }
    // Sent as is, without a client normalising the dots away.
    let mut socket = tokio::net::TcpStream::connect(h.preview).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut socket,
        format!(
            "GET /{SESSION}/{GRANT}/snake/../.git/config HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            h.preview
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut socket, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    assert_eq!(h.asked(), Vec::<String>::new());
}

#[tokio::test]
async fn what_is_missing_is_a_json_404() {
    let h = harness().await;

    let file = h.page("snake/nope.js").await;
    let folder = h.page("nope/").await;
    let session = h.get(&format!("/{OTHER}/{GRANT}/index.html")).await;
    let not_an_id = h.get(&format!("/not-a-session/{GRANT}/index.html")).await;
    let method = h
        .client
        .post(format!("http://{}/{SESSION}/{GRANT}/snake/", h.preview))
        .send()
        .await
        .unwrap();

    let body = assert_json_error(file, 404, "not_found").await;
    assert_eq!(body["message"], "snake/nope.js: no such file");
    assert_json_error(folder, 404, "not_found").await;
    let body = assert_json_error(session, 404, "not_found").await;
    assert_eq!(body["message"], "session does not exist");
    assert_json_error(not_an_id, 404, "not_found").await;
    assert_json_error(method, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn every_preview_response_is_sandboxed_and_carries_no_cookie_either_way() {
    let h = harness().await;

    let page = h
        .client
        .get(format!(
            "http://{}/{SESSION}/{GRANT}/snake/snake.js",
            h.preview
        ))
        .header("cookie", "dashboard_session=secret")
        .header("authorization", "Bearer rr_the_browsers_own")
        .send()
        .await
        .unwrap();
    let error = h.page(".git/config").await;

    for response in [&page, &error] {
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(policy.contains("sandbox allow-scripts"), "{policy}");
        assert!(policy.contains("default-src 'self'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(
            policy.contains(&format!(
                "frame-ancestors http://127.0.0.1:{0} http://localhost:{0};",
                h.dashboard.port()
            )),
            "{policy}"
        );
        assert!(response.headers().get("set-cookie").is_none());
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    let asked = h.workspace.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![(
            format!("/api/sessions/{SESSION}/files/snake/snake.js"),
            None,
            Some(format!("Preview {GRANT}")),
        )],
        "the backend was asked once, with the address's grant and without the browser's \
         cookie or credential"
    );
}

#[tokio::test]
async fn the_dashboard_names_the_preview_port_and_the_preview_refuses_a_rebound_host() {
    let h = harness().await;

    let mode: Value = h
        .client
        .get(format!("http://{}/mode.json", h.dashboard))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rebound = h
        .client
        .get(format!("http://{}/{SESSION}/{GRANT}/snake/", h.preview))
        .header("host", "evil.attacker.example")
        .send()
        .await
        .unwrap();
    let localhost = h
        .client
        .get(format!("http://{}/{SESSION}/{GRANT}/snake/", h.preview))
        .header("host", format!("localhost:{}", h.preview.port()))
        .send()
        .await
        .unwrap();

    assert_eq!(
        mode,
        json!({"demo": false, "preview_port": h.preview.port()})
    );
    // A refusal carries the preview's policy too.
    let policy = rebound.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("sandbox allow-scripts"), "{policy}");
    assert_eq!(rebound.headers()["x-content-type-options"], "nosniff");
    assert_json_error(rebound, 421, "host_not_allowed").await;
    assert_eq!(localhost.status(), 200);
}

#[tokio::test]
async fn an_address_without_a_grant_is_refused_without_asking_the_backend() {
    let h = harness().await;
    let admins_token = format!("rr_{}", "A".repeat(43));

    for path in [
        format!("/{SESSION}"),
        format!("/{SESSION}/"),
        // An address from before grants: its first folder is no grant.
        format!("/{SESSION}/snake/"),
        format!("/{SESSION}/snake"),
        format!("/{SESSION}/snake/snake.js"),
        format!("/{SESSION}/index.html"),
        // An API token (the old PREVIEW_TOKEN, an admin's) is no grant.
        format!("/{SESSION}/{admins_token}/snake/snake.js"),
        format!("/{SESSION}/{admins_token}/"),
        format!("/{SESSION}/{GRANT}x/snake/snake.js"),
    ] {
        let response = h.get(&path).await;
        let body = assert_json_error(response, 401, "unauthorized").await;
        assert!(
            body["message"].as_str().unwrap().contains("grant"),
            "{path}: {body}"
        );
    }

    assert_eq!(h.asked(), Vec::<String>::new());
}

#[tokio::test]
async fn a_grant_reads_its_session_alone_and_a_refused_one_is_passed_on() {
    let h = harness().await;

    let own = h.page("snake/snake.js").await;
    let others = h.get(&format!("/{OTHER}/{GRANT}/snake/snake.js")).await;
    let expired = h.get(&format!("/{SESSION}/{EXPIRED}/snake/snake.js")).await;

    assert_eq!(own.status(), 200);
    assert_json_error(others, 404, "not_found").await;
    assert_json_error(expired, 401, "unauthorized").await;
    let asked = h.workspace.asked.lock().unwrap().clone();
    let credentials: Vec<Option<String>> = asked.into_iter().map(|(_, _, a)| a).collect();
    assert_eq!(
        credentials,
        vec![
            Some(format!("Preview {GRANT}")),
            Some(format!("Preview {GRANT}")),
            Some(format!("Preview {EXPIRED}")),
        ]
    );
}

#[tokio::test]
async fn a_page_whose_grant_is_refused_asks_the_dashboard_for_a_new_one() {
    let h = harness().await;
    let as_frame = |path: String| {
        h.client
            .get(format!("http://{}{path}", h.preview))
            .header("sec-fetch-dest", "iframe")
            .send()
    };

    let expired = as_frame(format!("/{SESSION}/{EXPIRED}/snake/<x>.html"))
        .await
        .unwrap();
    let missing = as_frame(format!("/{SESSION}/snake/")).await.unwrap();
    let script = h
        .client
        .get(format!(
            "http://{}/{SESSION}/{EXPIRED}/snake/snake.js",
            h.preview
        ))
        .header("sec-fetch-dest", "script")
        .send()
        .await
        .unwrap();

    assert_eq!(expired.status(), 401);
    assert_eq!(content_type(&expired), "text/html; charset=utf-8");
    let policy = expired.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(policy.contains("sandbox allow-scripts"), "{policy}");
    let page = expired.text().await.unwrap();
    assert!(
        page.contains(
            r#"parent.postMessage({"path":"snake/\u003cx\u003e.html","type":"repo-runner:preview-grant-refused"}, "*")"#
        ),
        "{page}"
    );
    assert!(!page.contains(EXPIRED), "{page}");
    assert_eq!(missing.status(), 401);
    assert!(missing
        .text()
        .await
        .unwrap()
        .contains(r#""type":"repo-runner:preview-grant-refused""#));
    // A subresource gets the API's error, as any fetch does.
    assert_json_error(script, 401, "unauthorized").await;
}

/// A `tracing` writer that keeps every line.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_grant_reaches_the_log() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test's runtime runs on this thread alone, the servers' tasks
    // included.
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = harness().await;

    for path in [
        format!("/{SESSION}/{GRANT}/snake/snake.js"),
        format!("/{SESSION}/{EXPIRED}/snake/snake.js"),
        format!("/{SESSION}/{GRANT}"),
        format!("/{OTHER}/{GRANT}/"),
    ] {
        h.get(&path).await;
    }

    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains(&format!("/{SESSION}/<grant>/snake/snake.js")),
        "the requests were logged: {log}"
    );
    assert!(!log.contains(GRANT) && !log.contains(EXPIRED), "{log}");
}
