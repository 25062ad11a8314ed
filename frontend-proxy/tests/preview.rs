//! The preview listener against a fake backend that answers the files API
//! the way the backend does (`GET /api/sessions/{id}/files[/{path}]`, JSON,
//! base64 for binary, the error schema) and records what it was asked.
//! The real chain (real backend, a real run writing the files, Chromium) is
//! in `e2e/dashboard.test.mjs`.

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

/// A request the fake backend got: its path and its `Cookie` header.
type Asked = (String, Option<String>);

/// The fake workspace: path -> content; folders are implied by the paths.
#[derive(Clone, Default)]
struct Workspace {
    files: Arc<BTreeMap<String, Vec<u8>>>,
    /// Each request the backend got: path and its `Cookie` header, if any.
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
        self.asked.lock().unwrap().push((
            req.original_uri().path().to_owned(),
            req.headers()
                .get("cookie")
                .map(|c| c.to_str().unwrap().to_owned()),
        ));
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": status.canonical_reason(), "message": message, "code": code});
    (status, Json(body)).into_response()
}

#[handler]
fn list_files(req: &Request, Path(session): Path<String>, Data(ws): Data<&Workspace>) -> Response {
    ws.record(req);
    if session != SESSION {
        return error(StatusCode::NOT_FOUND, "not_found", "session does not exist");
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
    ws.record(req);
    if session != SESSION {
        return error(StatusCode::NOT_FOUND, "not_found", "session does not exist");
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
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("http://{}{path}", self.preview))
            .send()
            .await
            .unwrap()
    }

    fn asked(&self) -> Vec<String> {
        let asked = self.workspace.asked.lock().unwrap();
        asked.iter().map(|(path, _)| path.clone()).collect()
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
        preview_token: None,
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

    let page = h.get(&format!("/{SESSION}/snake/")).await;

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

    let folder = h.get(&format!("/{SESSION}/snake")).await;
    let session = h.get(&format!("/{SESSION}")).await;

    assert_eq!(folder.status(), 308);
    assert_eq!(folder.headers()["location"], "./snake/");
    assert_eq!(session.status(), 308);
    assert_eq!(session.headers()["location"], format!("/{SESSION}/"));
}

#[tokio::test]
async fn a_folder_without_index_html_lists_its_files() {
    let h = harness().await;

    let root = h.get(&format!("/{SESSION}/")).await;
    let notes = h.get(&format!("/{SESSION}/notes/")).await;

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
        let response = h.get(&format!("/{SESSION}/{path}")).await;
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
        let response = h.get(&format!("/{SESSION}/{path}")).await;
        assert_json_error(response, 403, "forbidden").await;
    }
    // Sent as is, without a client normalising the dots away.
    let mut socket = tokio::net::TcpStream::connect(h.preview).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut socket,
        format!(
            "GET /{SESSION}/snake/../.git/config HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
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

    let file = h.get(&format!("/{SESSION}/snake/nope.js")).await;
    let folder = h.get(&format!("/{SESSION}/nope/")).await;
    let session = h
        .get("/11111111-2222-4333-8444-555555555555/index.html")
        .await;
    let not_an_id = h.get("/not-a-session/index.html").await;
    let method = h
        .client
        .post(format!("http://{}/{SESSION}/snake/", h.preview))
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
        .get(format!("http://{}/{SESSION}/snake/snake.js", h.preview))
        .header("cookie", "dashboard_session=secret")
        .send()
        .await
        .unwrap();
    let error = h.get(&format!("/{SESSION}/.git/config")).await;

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
            None
        )],
        "the backend was asked once, without the browser's cookie"
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
        .get(format!("http://{}/{SESSION}/snake/", h.preview))
        .header("host", "evil.attacker.example")
        .send()
        .await
        .unwrap();
    let localhost = h
        .client
        .get(format!("http://{}/{SESSION}/snake/", h.preview))
        .header("host", format!("localhost:{}", h.preview.port()))
        .send()
        .await
        .unwrap();

    assert_eq!(
        mode,
        json!({"demo": false, "preview_port": h.preview.port()})
    );
    assert_json_error(rebound, 421, "host_not_allowed").await;
    assert_eq!(localhost.status(), 200);
}
