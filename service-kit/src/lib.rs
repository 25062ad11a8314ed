//! What the runner, the backend and the frontend-proxy do the same way:
//! logging set-up, binding their listener, the signal that stops them, the
//! error contract (one table of codes and statuses, the JSON body, `Allow`
//! on a 405), the limits of their connections and the `Host` check against
//! DNS rebinding.

mod bearer;
mod connections;
mod error;
mod host;
pub mod methods;
mod request_log;
pub mod sse;

use std::net::SocketAddr;

use anyhow::Context;
use poem::listener::{Acceptor, TcpAcceptor};

pub use bearer::RequiredToken;
pub use connections::{ConnectionLimits, LimitedConnections, LimitedIo};
pub use error::{error_response, json_error, ErrorCode};
pub use host::{allowed_hosts_from_env, AllowedHosts};
pub use methods::{AllowedMethods, Routes};
pub use request_log::{log_request, log_request_as};

/// Logs to stderr, filtered by `RUST_LOG` (`info` by default), coloured only
/// on a terminal.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Binds `addr` (port 0 picks a free port) and returns the acceptor with the
/// address it got. `variable` names the setting in the error message.
pub async fn bind(addr: &str, variable: &str) -> anyhow::Result<(TcpAcceptor, SocketAddr)> {
    let listener = listen(addr)
        .await
        .with_context(|| format!("cannot listen on {variable} {addr}"))?;
    let acceptor = TcpAcceptor::from_tokio(listener)
        .with_context(|| format!("cannot listen on {variable} {addr}"))?;
    let local = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .context("the listener has no address")?;
    Ok((acceptor, local))
}

/// Connections the kernel queues before they are accepted (capped by
/// `net.core.somaxconn`). tokio's default is 1024: a burst of a couple of
/// thousand browsers attaching at once overflowed it, and each dropped
/// connection waited a second for its SYN to be sent again.
const LISTEN_BACKLOG: u32 = 4096;

/// The first of `addr`'s addresses that can be bound, listening.
async fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for address in tokio::net::lookup_host(addr).await? {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As tokio's own `bind`: a restarted service can bind at once.
        socket.set_reuseaddr(true)?;
        match socket
            .bind(address)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// Resolves on Ctrl-C or SIGTERM (what `kill`, the run script and container
/// engines send).
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// `HTTP_IDLE_TIMEOUT_SECS` when unset.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// `HTTP_HEADER_TIMEOUT_SECS` when unset.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 30;
/// `HTTP_MAX_CONNECTIONS` when unset.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// `HTTP_MAX_URL_BYTES` when unset.
pub const DEFAULT_MAX_URL_BYTES: usize = 8 * 1024;
/// `HTTP_MAX_HEADER_BYTES` when unset.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;

/// What every connection of a service may hold (see [`LimitedConnections`]), read
/// by each service at start-up:
/// - `HTTP_IDLE_TIMEOUT_SECS` (default 60, at least 1): a connection that
///   neither reads nor writes a byte for this long is dropped. An event
///   stream stays open as long as its keep-alive comments come more often
///   than this, so keep it above the services' `*_KEEP_ALIVE_SECS`.
/// - `HTTP_HEADER_TIMEOUT_SECS` (default 30, at least 1): the time a client
///   has to send a request's whole head, so one that drips a byte at a time
///   (slowloris) is dropped too.
/// - `HTTP_MAX_CONNECTIONS` (default 8192, at least 1): open connections;
///   one more is answered `503 too_many_connections` and closed.
/// - `HTTP_MAX_URL_BYTES` (default 8192) and `HTTP_MAX_HEADER_BYTES`
///   (default 32768): a larger request target is `414 uri_too_long`, larger
///   headers (names and values together) `431 headers_too_large`
///   ([`ConnectionLimits::check_request`]).
pub fn connection_limits_from_env() -> anyhow::Result<ConnectionLimits> {
    fn number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
        match std::env::var(name) {
            Ok(raw) if !raw.trim().is_empty() => raw
                .trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("{name} is not a whole number: {raw:?}")),
            _ => Ok(default),
        }
    }
    let secs = |name, default| {
        number::<u64>(name, default).map(|s| std::time::Duration::from_secs(s.max(1)))
    };
    Ok(ConnectionLimits {
        idle_timeout: secs("HTTP_IDLE_TIMEOUT_SECS", DEFAULT_IDLE_TIMEOUT_SECS)?,
        header_timeout: secs("HTTP_HEADER_TIMEOUT_SECS", DEFAULT_HEADER_TIMEOUT_SECS)?,
        max_connections: number("HTTP_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)?.max(1),
        max_url_bytes: number("HTTP_MAX_URL_BYTES", DEFAULT_MAX_URL_BYTES)?,
        max_header_bytes: number("HTTP_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES)?,
    })
}
