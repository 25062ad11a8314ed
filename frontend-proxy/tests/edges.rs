//! The server's edges with small connection limits: a client that sends
//! half a request and then nothing loses its connection, and so does one
//! that drips its headers a byte at a time; an event stream longer than the
//! timeouts, kept busy by keep-alive comments, stays open; a connection over
//! the cap is told so. The same acceptor serves the runner and the backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use frontend_proxy::config::Config;
use frontend_proxy::startup::Application;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::sse::{Event, SSE};
use poem::web::Data;
use poem::{get, handler, EndpointExt, Route, Server};
use service_kit::ConnectionLimits;
use test_support::HANG_GUARD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

/// Small enough for a test; the header timeout is longer than the idle
/// one, so the drip test proves the header deadline, not the idle timeout.
const LIMITS: ConnectionLimits = ConnectionLimits {
    idle_timeout: Duration::from_secs(1),
    header_timeout: Duration::from_secs(2),
    max_connections: 64,
    max_url_bytes: service_kit::DEFAULT_MAX_URL_BYTES,
    max_header_bytes: service_kit::DEFAULT_MAX_HEADER_BYTES,
};

type Release = Arc<Mutex<mpsc::Receiver<u64>>>;

#[handler]
fn events(Data(release): Data<&Release>) -> SSE {
    let release = release.clone();
    SSE::new(async_stream::stream! {
        while let Some(id) = release.lock().await.recv().await {
            yield Event::message("{}").id(id.to_string()).event_type("tick");
        }
    })
    .keep_alive(Duration::from_millis(200))
}

/// A fake backend whose stream sends what the test releases, and the real
/// proxy in front of it; returns the proxy's address.
async fn proxy() -> (std::net::SocketAddr, mpsc::Sender<u64>) {
    proxy_with(LIMITS).await
}

async fn proxy_with(limits: ConnectionLimits) -> (std::net::SocketAddr, mpsc::Sender<u64>) {
    let (release, release_rx) = mpsc::channel(4);
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let backend = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new()
        .at("/api/runs/:id/events", get(events))
        .data(Arc::new(Mutex::new(release_rx)));
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    let app = Application::build_with(
        Config {
            proxy_addr: "127.0.0.1:0".into(),
            preview_addr: "127.0.0.1:0".into(),
            backend_url: format!("http://{backend}"),
            demo_mode: false,
        },
        limits,
    )
    .await
    .unwrap();
    let addr = app.addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    (addr, release)
}

#[tokio::test]
async fn a_connection_that_stops_half_way_through_its_headers_is_closed() {
    let (addr, _release) = proxy().await;
    let mut socket = TcpStream::connect(addr).await.unwrap();

    socket
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nX-Slow").as_bytes())
        .await
        .unwrap();

    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(HANG_GUARD, socket.read(&mut buf))
        .await
        .expect("the server kept the half-sent request open");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the server answered instead of closing: {read:?}"
    );
}

#[tokio::test]
async fn a_client_that_drips_its_headers_is_closed_at_the_header_deadline() {
    let (addr, _release) = proxy().await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await
        .unwrap();

    // One header byte every 100 ms: never idle, never done. The server
    // must end it; the guard only stops a test that would hang.
    let closed = tokio::time::timeout(HANG_GUARD, async {
        loop {
            if socket.write_all(b"X").await.is_err() {
                break;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(100), socket.read(&mut buf)).await {
                Err(_) => continue,
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => panic!(
                    "the server answered a request with no end of headers: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the dripping client kept its connection");
}

#[tokio::test]
async fn a_connection_over_the_cap_gets_a_503_and_the_others_keep_working() {
    let (addr, _release) = proxy_with(ConnectionLimits {
        max_connections: 2,
        idle_timeout: Duration::from_secs(30),
        ..LIMITS
    })
    .await;
    let held: Vec<TcpStream> = vec![
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];

    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(HANG_GUARD, third.read_to_string(&mut answer))
        .await
        .expect("the connection over the cap was neither answered nor closed")
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["code"], "too_many_connections");

    // A slot that is given back serves the next client.
    drop(held);
    let health = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let response = reqwest::get(format!("http://{addr}/mode.json")).await;
            match response {
                Ok(response) if response.status() == 200 => break response,
                // The dropped sockets are closed by the server's side a
                // moment later: until then the cap still answers 503.
                Ok(response) if response.status() == 503 => tokio::task::yield_now().await,
                other => panic!("unexpected answer: {other:?}"),
            }
        }
    })
    .await
    .expect("the freed slots never served anyone");
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn an_event_stream_longer_than_the_idle_timeout_stays_open() {
    let (addr, release) = proxy().await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(format!("GET /api/runs/r1/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();

    // Ten keep-alive comments 200 ms apart span twice the idle timeout.
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(HANG_GUARD, async {
        while String::from_utf8_lossy(&seen).matches(":\n\n").count() < 10 {
            let n = socket.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "the stream was closed");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("keep-alive comments stopped");
    release.send(7).await.unwrap();
    tokio::time::timeout(HANG_GUARD, async {
        while !String::from_utf8_lossy(&seen).contains("id: 7") {
            let n = socket.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "the stream was closed");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the event after the idle timeout never came");
}

#[tokio::test]
async fn the_dashboard_refuses_a_rebound_host_name() {
    let (addr, _release) = proxy().await;
    let client = reqwest::Client::new();

    let refused = client
        .get(format!("http://{addr}/"))
        .header("host", "evil.attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 421);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "host_not_allowed");
    let served = client
        .get(format!("http://{addr}/"))
        .header("host", format!("localhost:{}", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
}

#[tokio::test]
async fn the_preview_listener_keeps_its_own_connection_cap() {
    let app = Application::build_with(
        Config {
            proxy_addr: "127.0.0.1:0".into(),
            preview_addr: "127.0.0.1:0".into(),
            // Nothing listens there: the cap answers before any request.
            backend_url: "http://127.0.0.1:9".into(),
            demo_mode: false,
        },
        ConnectionLimits {
            max_connections: 1,
            idle_timeout: Duration::from_secs(30),
            ..LIMITS
        },
    )
    .await
    .unwrap();
    let (dashboard, preview) = (app.addr(), app.preview_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let _held = TcpStream::connect(preview).await.unwrap();

    let mut second = TcpStream::connect(preview).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(HANG_GUARD, second.read_to_string(&mut answer))
        .await
        .expect("the connection over the cap was neither answered nor closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("\"code\":\"too_many_connections\""),
        "{answer}"
    );
    // The dashboard's connections are counted apart.
    let mode = reqwest::get(format!("http://{dashboard}/mode.json"))
        .await
        .unwrap();
    assert_eq!(mode.status(), 200);
}
