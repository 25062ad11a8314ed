//! The server's edges with a small `HTTP_IDLE_TIMEOUT_SECS`: a client that
//! sends half a request and then nothing loses its connection, while an
//! event stream longer than the timeout, kept busy by keep-alive comments,
//! stays open.
//!
//! Every test of this binary sets the same variable before it builds the
//! proxy, so setting it from parallel tests cannot disagree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use frontend_proxy::config::Config;
use frontend_proxy::startup::Application;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::sse::{Event, SSE};
use poem::web::Data;
use poem::{get, handler, EndpointExt, Route, Server};
use test_support::HANG_GUARD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

const IDLE_TIMEOUT_SECS: &str = "1";

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
    std::env::set_var("HTTP_IDLE_TIMEOUT_SECS", IDLE_TIMEOUT_SECS);
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
    let app = Application::build(Config {
        proxy_addr: "127.0.0.1:0".into(),
        backend_url: format!("http://{backend}"),
        demo_mode: false,
    })
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
