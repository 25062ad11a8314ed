//! A smart-HTTP git server for tests: `git http-backend` (CGI) behind a
//! small poem server. Repositories under `/private/` need HTTP basic auth
//! with the password `PRIVATE_TOKEN`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{handler, Body, EndpointExt, Request, Response, Route, Server};
use tokio::io::AsyncWriteExt;

pub const PRIVATE_TOKEN: &str = "tok_s3cret_value_42";

pub struct GitHttp {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Root(PathBuf);

impl GitHttp {
    /// Serves the bare repositories under `root` (e.g. `root/r.git`).
    pub async fn start(root: &Path) -> Self {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let app = Route::new()
            .at("/*path", cgi)
            .data(Root(root.to_path_buf()));
        let task = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self {
            base: format!("http://{addr}"),
            task,
        }
    }
}

fn authorized(req: &Request) -> bool {
    use base64::Engine;
    let Some(header) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = header.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    String::from_utf8_lossy(&decoded).ends_with(&format!(":{PRIVATE_TOKEN}"))
}

#[handler]
async fn cgi(req: &Request, body: Body, Data(root): Data<&Root>) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/private/") && !authorized(req) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Basic realm=\"git\"")
            .body("authentication required");
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root.0)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &path)
        .env("REQUEST_METHOD", req.method().as_str())
        .env("QUERY_STRING", req.uri().query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        // http-backend inflates gzip request bodies itself when told.
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", "test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let input = body.into_vec().await.unwrap_or_default();
    let mut stdin = child.stdin.take().unwrap();
    let writer = async move {
        let _ = stdin.write_all(&input).await;
    };
    let (_, output) = tokio::join!(writer, child.wait_with_output());
    let output = output.unwrap();
    parse_cgi(&output.stdout)
}

fn parse_cgi(out: &[u8]) -> Response {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return Response::builder().status(StatusCode::BAD_GATEWAY).finish();
    };
    let head = String::from_utf8_lossy(&out[..end]);
    let mut builder = Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            builder = builder.status(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY));
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    builder.body(out[end + sep..].to_vec())
}
