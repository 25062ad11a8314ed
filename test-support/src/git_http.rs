//! A smart-HTTP git server for tests and benchmarks: `git http-backend`
//! (CGI) behind a small poem server on 127.0.0.1. It streams
//! `http-backend`'s output as it comes, so a large pack reaches the client
//! at the speed `git upload-pack` makes it, as from a real server.
//! Repositories under `/private/` need HTTP basic auth with the password
//! [`PRIVATE_TOKEN`].

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{handler, Body, EndpointExt, Request, Response, Route};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// The password of the repositories under `/private/`.
pub const PRIVATE_TOKEN: &str = "tok_s3cret_value_42";

/// Stderr kept from a failed `http-backend`, for the log.
const STDERR_TAIL_BYTES: usize = 2048;

/// A smart-HTTP git server on 127.0.0.1, port 0, serving the bare
/// repositories under its root (`root/name.git` as `{base}/name.git`).
/// It stops when dropped.
pub struct GitServer {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Root(PathBuf);

impl GitServer {
    pub async fn start(root: &Path) -> anyhow::Result<Self> {
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("the git server has no address")?;
        let app = Route::new()
            .at("/*path", cgi)
            .data(Root(root.to_path_buf()));
        let task = tokio::spawn(async move {
            if let Err(e) = poem::Server::new_with_acceptor(acceptor).run(app).await {
                tracing::error!(error = %e, "the git server stopped");
            }
        });
        Ok(Self {
            base: format!("http://{addr}"),
            task,
        })
    }
}

/// Whether the request carries basic auth with [`PRIVATE_TOKEN`].
fn authorized(req: &Request) -> bool {
    use base64::Engine;
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|header| header.strip_prefix("Basic "))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .is_some_and(|decoded| {
            String::from_utf8_lossy(&decoded).ends_with(&format!(":{PRIVATE_TOKEN}"))
        })
}

#[handler]
async fn cgi(req: &Request, body: Body, Data(root): Data<&Root>) -> Response {
    if req.uri().path().starts_with("/private/") && !authorized(req) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Basic realm=\"git\"")
            .body("authentication required");
    }
    match http_backend(req, body, &root.0).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                path = req.uri().path(),
                "git http-backend failed"
            );
            Response::builder().status(StatusCode::BAD_GATEWAY).finish()
        }
    }
}

/// Runs `git http-backend` for one request: the request body goes to its
/// stdin, its CGI headers become the response's, and the rest of its stdout
/// is streamed as the body.
async fn http_backend(req: &Request, body: Body, root: &Path) -> anyhow::Result<Response> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut child = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", req.uri().path())
        .env("REQUEST_METHOD", req.method().as_str())
        .env("QUERY_STRING", req.uri().query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        // http-backend inflates a gzip request body itself when told.
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", "test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start git http-backend")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    // Written beside the reading of the output, so that neither side can
    // wait for the other. An error here is http-backend refusing the
    // request early, which its exit status and stderr below report; the
    // closed stdin is its end of input either way.
    let mut input = body.into_async_read();
    tokio::spawn(async move {
        if let Err(e) = tokio::io::copy(&mut input, &mut stdin).await {
            tracing::debug!(error = %e, "http-backend did not read the whole request");
        }
    });
    // Reaped once it is done; a client that hangs up closes the pipe and
    // ends it.
    let path = req.uri().path().to_owned();
    tokio::spawn(async move {
        let mut tail = Vec::new();
        if let Err(e) = (&mut stderr)
            .take(STDERR_TAIL_BYTES as u64)
            .read_to_end(&mut tail)
            .await
        {
            tracing::debug!(error = %e, "cannot read http-backend's stderr");
        }
        // The rest is not kept, but read so that it cannot block the child.
        if let Err(e) = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await {
            tracing::debug!(error = %e, "cannot read http-backend's stderr");
        }
        match child.wait().await {
            Ok(status) if status.success() => {}
            Ok(status) => tracing::warn!(
                %status, path,
                stderr = %String::from_utf8_lossy(&tail).trim(),
                "git http-backend failed"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot reap git http-backend"),
        }
    });
    let mut reader = BufReader::new(stdout);
    let mut response = Response::builder().status(StatusCode::OK);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            bail!("git http-backend ended before its headers did");
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            bail!("git http-backend wrote a bad header line {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .with_context(|| format!("git http-backend wrote a bad status {value:?}"))?;
            response = response.status(code);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    Ok(response.body(Body::from_async_read(reader)))
}
