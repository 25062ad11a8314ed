//! The clone egress proxy: every https clone goes through it, so the
//! address a clone connects to is the address the [`ClonePolicy`] checked.
//!
//! libgit2 resolves names and connects by itself, so a check made before a
//! clone could be undone by a DNS answer that changes in between (DNS
//! rebinding). Instead libgit2 is told to use this proxy on loopback: for
//! `CONNECT host:port` the proxy resolves the host once, refuses unless
//! every address is allowed, connects to a checked address within the
//! connect timeout, and then only copies bytes. Refusals and failures
//! answer `502` without detail, which libgit2 reports as a failed
//! connection: one message for every unreachable host.
//!
//! Plain http does not come here: libgit2 1.9 writes its requests in proxy
//! form but connects straight to the server, so http clones use our own
//! transport instead (`http_transport`), and this proxy refuses anything
//! but `CONNECT`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::domain::{ClonePolicy, HostKind};

/// Longest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;

static PROXY_URL: OnceLock<String> = OnceLock::new();

/// `host:port` of every clone in progress, with how many clones use it: the
/// proxy connects to nothing else, so a redirect to another port or host
/// fails, and the proxy is no open relay for other local processes.
static ORIGINS: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();

fn origins() -> std::sync::MutexGuard<'static, HashMap<String, usize>> {
    // The map holds plain counts; a panic elsewhere cannot leave it worse
    // than a count off by one.
    ORIGINS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `host:port` of a URL (`http://h/`, or a `CONNECT` target `h:p`), in
/// one form for comparison.
fn authority(url: &str) -> Option<String> {
    let parsed = if url.contains("://") {
        url::Url::parse(url).ok()?
    } else {
        url::Url::parse(&format!("http://{url}/")).ok()?
    };
    Some(format!(
        "{}:{}",
        parsed.host_str()?,
        parsed.port_or_known_default()?
    ))
}

/// While it lives, the proxy may connect to the origin of one clone.
#[derive(Debug)]
pub struct OriginGrant(Option<String>);

/// Lets the proxy reach `url`'s origin for one clone.
pub(crate) fn grant(url: &str) -> OriginGrant {
    let key = authority(url);
    if let Some(key) = &key {
        *origins().entry(key.clone()).or_insert(0) += 1;
    }
    OriginGrant(key)
}

impl Drop for OriginGrant {
    fn drop(&mut self) {
        if let Some(key) = &self.0 {
            let mut map = origins();
            if let Some(count) = map.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    map.remove(key);
                }
            }
        }
    }
}

fn granted(authority: &str) -> bool {
    origins().contains_key(authority)
}

/// `http://127.0.0.1:<port>` of this process's proxy, once started.
pub(crate) fn proxy_url() -> Option<&'static str> {
    PROXY_URL.get().map(String::as_str)
}

/// Binds the proxy on loopback and serves it on the current runtime for the
/// life of the process.
pub(crate) async fn start(
    policy: ClonePolicy,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // A second start in one process (tests build several applications)
    // keeps the first proxy, which serves the same policy's purpose.
    let _already_set = PROXY_URL.set(format!("http://{addr}"));
    // Not one of the engine's tasks: it lives as long as the process, since
    // clones in progress use it until the engine has stopped them; it ends
    // with the runtime, after the engine.
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let policy = policy.clone();
            tokio::spawn(async move {
                if let Err(error) = serve(client, &policy, connect_timeout, io_timeout).await {
                    tracing::debug!(%error, "clone proxy connection ended");
                }
            });
        }
    });
    Ok(addr)
}

async fn serve(
    mut client: TcpStream,
    policy: &ClonePolicy,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(io_timeout, read_head(&mut client))
        .await
        .map_err(|_| std::io::Error::other("no request head"))??;
    let text = String::from_utf8_lossy(&head);
    let request_line = text.lines().next().unwrap_or_default().to_owned();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    tracing::debug!(method, target, "clone proxy request");
    let upstream = match authority(target) {
        _ if !method.eq_ignore_ascii_case("CONNECT") => None,
        Some(authority) if granted(&authority) => {
            connect_checked(&authority, policy, connect_timeout).await
        }
        Some(authority) => {
            tracing::info!(
                authority,
                "clone refused: not the origin of a clone in progress (a redirect?)"
            );
            None
        }
        None => None,
    };
    let Some(mut upstream) = upstream else {
        client
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
        return Ok(());
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    // Either side ending ends both: libgit2 closes its side when its own
    // I/O timeout fires, and a silent upstream must not keep this task and
    // its socket alive after that.
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    tokio::select! {
        result = tokio::io::copy(&mut client_read, &mut upstream_write) => { result?; }
        result = tokio::io::copy(&mut upstream_read, &mut client_write) => { result?; }
    }
    Ok(())
}

/// Reads up to the end of the request head (and whatever came with it).
async fn read_head(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buffer).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Err(std::io::Error::other(
                "incomplete or oversized request head",
            ));
        }
        head.extend_from_slice(&buffer[..n]);
    }
    Ok(head)
}

/// Resolves `host` once and returns its addresses (with `port`), or `None`
/// when it does not resolve or the policy refuses any of them. Whoever
/// connects must connect to these addresses only, so that the address
/// connected to is the address checked.
pub(crate) async fn resolve_checked(
    host: &str,
    port: u16,
    policy: &ClonePolicy,
) -> Option<Vec<SocketAddr>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let kind = crate::domain::classify_host(host)?;
    let addresses: Vec<SocketAddr> = match &kind {
        HostKind::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        HostKind::Name(name) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .ok()?
            .collect(),
    };
    let ips: Vec<IpAddr> = addresses.iter().map(SocketAddr::ip).collect();
    policy.allows_resolved(&kind, &ips).then_some(addresses)
}

/// Connects to a checked address of `host:port` (see [`resolve_checked`])
/// within the connect timeout.
async fn connect_checked(
    authority: &str,
    policy: &ClonePolicy,
    connect_timeout: Duration,
) -> Option<TcpStream> {
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    for address in resolve_checked(host, port, policy).await? {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await
        {
            return Some(stream);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ask(proxy: SocketAddr, request: String) -> String {
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn names_of_internal_addresses_are_refused_and_never_connected() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = target.local_addr().unwrap().port();
        let proxy = start(
            ClonePolicy::default(),
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let _grants = [
            grant(&format!("http://localhost:{port}/")),
            grant(&format!("http://127.0.0.1:{port}/")),
        ];

        for request in [
            format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"),
            format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"),
            format!(
                "GET http://localhost:{port}/r.git/info/refs HTTP/1.1\r\nHost: localhost\r\n\r\n"
            ),
        ] {
            let answer = ask(proxy, request).await;
            assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        }
        // An origin no clone is using is refused too, whatever its address.
        let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_port = other.local_addr().unwrap().port();
        let open = start(
            ClonePolicy::new(true, ""),
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let answer = ask(
            open,
            format!("CONNECT 127.0.0.1:{other_port} HTTP/1.1\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        let accepted = tokio::time::timeout(Duration::from_millis(1), other.accept()).await;
        assert!(accepted.is_err());
        // Nothing ever connected to the target.
        let accepted = tokio::time::timeout(Duration::from_millis(1), target.accept()).await;
        assert!(accepted.is_err());
    }
}
