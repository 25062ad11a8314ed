//! The proxy against a fake backend whose event stream the test drives, so
//! "passed on as it arrives" is shown by order, not by timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use frontend_proxy::config::Config;
use frontend_proxy::startup::Application;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::sse::{Event, SSE};
use poem::web::Data;
use poem::{get, handler, post, EndpointExt, IntoResponse, Request, Response, Route, Server};
use serde_json::Value;
use test_support::{Subscription, HANG_GUARD};
use tokio::sync::{mpsc, Mutex as AsyncMutex};

#[derive(Clone)]
struct Fake {
    /// Events the test releases into the stream, one by one.
    release: Arc<AsyncMutex<mpsc::Receiver<u64>>>,
    /// Told when the stream is dropped (the client went away).
    dropped: mpsc::Sender<()>,
    last_event_id: Arc<Mutex<Option<String>>>,
}

struct DropSignal(mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

#[handler]
fn events(req: &Request, Data(fake): Data<&Fake>) -> SSE {
    *fake.last_event_id.lock().unwrap() = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let release = fake.release.clone();
    let guard = DropSignal(fake.dropped.clone());
    SSE::new(async_stream::stream! {
        let _guard = guard;
        loop {
            let next = release.lock().await.recv().await;
            match next {
                Some(0) | None => break,
                Some(id) => yield Event::message(format!("{{\"n\":{id}}}")).id(id.to_string()).event_type("tick"),
            }
        }
    })
    // Like the backend's: the proxy learns that a client left when it next
    // writes to it, which an idle stream's keep-alive makes happen.
    .keep_alive(std::time::Duration::from_millis(200))
}

#[handler]
async fn echo(body: Vec<u8>) -> Response {
    Response::builder()
        .status(poem::http::StatusCode::CREATED)
        .header("x-echo", "yes")
        .body(body)
}

#[handler]
fn missing() -> impl IntoResponse {
    (
        poem::http::StatusCode::NOT_FOUND,
        poem::web::Json(
            serde_json::json!({"error": "Not Found", "message": "no", "code": "not_found"}),
        ),
    )
}

struct Harness {
    proxy: String,
    release: mpsc::Sender<u64>,
    dropped: mpsc::Receiver<()>,
    last_event_id: Arc<Mutex<Option<String>>>,
    client: reqwest::Client,
}

async fn start_proxy(backend_url: String) -> String {
    let app = Application::build(Config {
        proxy_addr: "127.0.0.1:0".into(),
        preview_addr: "127.0.0.1:0".into(),
        backend_url,
        demo_mode: true,
    })
    .await
    .unwrap();
    let proxy = format!("http://{}", app.addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    proxy
}

async fn harness() -> Harness {
    let (release, release_rx) = mpsc::channel(16);
    let (dropped_tx, dropped) = mpsc::channel(4);
    let last_event_id = Arc::new(Mutex::new(None));
    let fake = Fake {
        release: Arc::new(AsyncMutex::new(release_rx)),
        dropped: dropped_tx,
        last_event_id: last_event_id.clone(),
    };
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let backend = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new()
        .at("/api/runs/:id/events", get(events))
        .at("/api/echo", post(echo))
        .at("/api/missing", get(missing))
        .data(fake);
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    Harness {
        proxy: start_proxy(format!("http://{backend}")).await,
        release,
        dropped,
        last_event_id,
        client: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn events_pass_through_one_by_one_before_the_stream_ends() {
    let h = harness().await;
    let url = format!("{}/api/runs/r1/events", h.proxy);
    h.release.send(1).await.unwrap();
    let mut stream = Subscription::open(&h.client, &url, None).await;

    let first = stream.next().await.unwrap();
    assert_eq!((first.id, first.event.as_str()), (1, "tick"));
    h.release.send(2).await.unwrap();
    let second = stream.next().await.unwrap();
    assert_eq!(second.data, serde_json::json!({"n": 2}));
    h.release.send(0).await.unwrap();
    assert_eq!(stream.next().await, None);
}

#[tokio::test]
async fn last_event_id_reaches_the_backend() {
    let h = harness().await;
    let url = format!("{}/api/runs/r1/events", h.proxy);
    h.release.send(8).await.unwrap();
    let mut stream = Subscription::open(&h.client, &url, Some(7)).await;
    assert_eq!(stream.next().await.unwrap().id, 8);
    assert_eq!(h.last_event_id.lock().unwrap().as_deref(), Some("7"));
}

#[tokio::test]
async fn a_client_that_goes_away_closes_the_upstream_stream() {
    let mut h = harness().await;
    let url = format!("{}/api/runs/r1/events", h.proxy);
    h.release.send(1).await.unwrap();
    let mut stream = Subscription::open(&h.client, &url, None).await;
    assert_eq!(stream.next().await.unwrap().id, 1);

    drop(stream);

    tokio::time::timeout(HANG_GUARD, h.dropped.recv())
        .await
        .expect("the upstream stream was never closed");
}

#[tokio::test]
async fn bodies_statuses_and_headers_pass_through() {
    let h = harness().await;
    let response = h
        .client
        .post(format!("{}/api/echo?x=1", h.proxy))
        .body("hello through the proxy")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-echo"], "yes");
    assert_eq!(response.text().await.unwrap(), "hello through the proxy");
    let not_found = h
        .client
        .get(format!("{}/api/missing", h.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(not_found.status(), 404);
    let body: Value = not_found.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
}

#[tokio::test]
async fn a_backend_that_is_down_gets_502_json_and_the_dashboard_still_loads() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let proxy = start_proxy(format!("http://127.0.0.1:{port}")).await;
    let client = reqwest::Client::new();

    let response = client
        .get(format!("{proxy}/api/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "backend_unavailable");
    assert_eq!(body["error"], "Bad Gateway");
    assert!(body["message"].as_str().unwrap().contains("backend"));

    let page = client.get(format!("{proxy}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("repo-runner"));
    let script = client.get(format!("{proxy}/app.js")).send().await.unwrap();
    assert_eq!(script.status(), 200);
    let mode: Value = client
        .get(format!("{proxy}/mode.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mode["demo"], true);
}

#[tokio::test]
async fn the_proxys_own_routes_answer_json_errors_and_405_with_allow() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let proxy = start_proxy(format!("http://127.0.0.1:{port}")).await;
    let client = reqwest::Client::new();

    for (method, path) in [
        ("POST", "/"),
        ("PUT", "/app.js"),
        ("DELETE", "/index.html"),
        ("POST", "/mode.json"),
    ] {
        let response = client
            .request(method.parse().unwrap(), format!("{proxy}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], "GET, HEAD", "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "error": "Method Not Allowed",
                "code": "method_not_allowed",
                "message": format!("{method} is not allowed on {path}; it answers GET, HEAD"),
            })
        );
    }
    // What `Allow` lists is answered.
    for path in ["/", "/app.js", "/mode.json"] {
        let head = client.head(format!("{proxy}{path}")).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
    }
    let no_file = client.get(format!("{proxy}/nope.js")).send().await.unwrap();
    assert_eq!(no_file.status(), 404);
    let body: Value = no_file.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    // An unchanged file is still a bodiless 304, not an error.
    let script = client.get(format!("{proxy}/app.js")).send().await.unwrap();
    let etag = script.headers()["etag"].clone();
    let unchanged = client
        .get(format!("{proxy}/app.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), 304);
}

#[tokio::test]
async fn every_dashboard_response_forbids_framing_and_sniffing_and_loads_only_its_own_code() {
    let h = harness().await;
    let get = |path: &str| h.client.get(format!("{}{path}", h.proxy)).send();
    let mode: Value = get("/mode.json").await.unwrap().json().await.unwrap();
    let preview_port = mode["preview_port"].as_u64().unwrap();

    let index = get("/").await.unwrap();
    let asset = get("/app.js").await.unwrap();
    let no_file = get("/nope.js").await.unwrap();
    let api = get("/api/missing").await.unwrap();
    let refused = h
        .client
        .post(format!("{}/mode.json", h.proxy))
        .send()
        .await
        .unwrap();
    let rebound = h
        .client
        .get(format!("{}/", h.proxy))
        .header("host", "evil.attacker.example")
        .send()
        .await
        .unwrap();
    let docs = get("/docs").await.unwrap();

    let statuses: Vec<u16> = [&index, &asset, &no_file, &api, &refused, &rebound, &docs]
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses, [200, 200, 404, 404, 405, 421, 404]);
    let dashboard_policy = format!(
        "default-src 'self'; img-src 'self' data:; connect-src 'self'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'; \
         script-src 'self'; style-src 'self'; \
         frame-src http://127.0.0.1:{preview_port} http://localhost:{preview_port}"
    );
    let docs_policy = "default-src 'self'; img-src 'self' data:; connect-src 'self'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'; \
         script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; frame-src 'none'";
    for (response, policy) in [
        (&index, dashboard_policy.as_str()),
        (&asset, &dashboard_policy),
        (&no_file, &dashboard_policy),
        (&api, &dashboard_policy),
        (&refused, &dashboard_policy),
        (&rebound, &dashboard_policy),
        (&docs, docs_policy),
    ] {
        let headers = response.headers();
        let shown = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            [
                shown("content-security-policy"),
                shown("x-frame-options"),
                shown("x-content-type-options"),
                shown("referrer-policy"),
            ],
            [
                Some(policy.to_owned()),
                Some("DENY".into()),
                Some("nosniff".into()),
                Some("same-origin".into()),
            ],
            "{}",
            response.url()
        );
    }
}
