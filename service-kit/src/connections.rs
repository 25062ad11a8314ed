//! What a connection may hold, on every service: an idle timeout, a
//! deadline for each request head, and a cap on open connections.
//!
//! poem's own `Server::idle_timeout` is not enough: when it fires it asks
//! hyper for a graceful shutdown, which waits for the request in progress,
//! so a client that sent half its headers keeps the connection for ever.
//! Here the stream itself fails with `TimedOut`, and hyper drops it.
//!
//! - **Idle:** a connection that neither reads nor writes a byte for the
//!   idle timeout fails. An event stream lives on as long as its keep-alive
//!   comments are written more often than that.
//! - **Request head:** a client that drips one header byte at a time is
//!   never idle; it gets the head deadline instead. The clock starts at the
//!   first byte of a request (or at accept) and stops at the blank line
//!   that ends the head. Bodies are bounded by each service's size limit
//!   and the idle timeout; responses by nothing here, so a long event
//!   stream is unaffected.
//! - **Connections:** beyond the cap, a new connection is answered at once
//!   with a `503` in the JSON error schema and closed, so a flood of idle
//!   sockets cannot exhaust the process's file descriptors, and the client
//!   learns why.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// What each connection of a service may hold; see the module comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `HTTP_IDLE_TIMEOUT_SECS`.
    pub idle_timeout: Duration,
    /// `HTTP_HEADER_TIMEOUT_SECS`.
    pub header_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// `HTTP_MAX_URL_BYTES`: the request target (path and query).
    pub max_url_bytes: usize,
    /// `HTTP_MAX_HEADER_BYTES`: names and values of all headers together.
    pub max_header_bytes: usize,
}

impl ConnectionLimits {
    /// The largest request head a connection reads: room for the largest
    /// URL and headers [`ConnectionLimits::check_request`] lets through,
    /// and the request line's and separators' bytes. A larger one is
    /// answered `431 headers_too_large` and the connection closed.
    pub fn max_head_bytes(&self) -> usize {
        self.max_url_bytes
            .saturating_add(self.max_header_bytes.saturating_mul(2))
            .saturating_add(16 * 1024)
    }

    /// Refuses a request whose URL or headers are larger than the limits,
    /// with `414 uri_too_long` or `431 headers_too_large` in the JSON error
    /// schema, before any route runs. (hyper itself reads at most about
    /// 400 KiB of a request head; one larger is a bare 431 and a closed
    /// connection. These limits are well under that.)
    pub async fn check_request<E: poem::Endpoint>(
        self,
        ep: std::sync::Arc<E>,
        req: poem::Request,
    ) -> poem::Result<poem::Response> {
        use poem::IntoResponse;
        let url = req
            .uri()
            .path_and_query()
            .map_or(0, |target| target.as_str().len());
        if url > self.max_url_bytes {
            return Ok(crate::error_response(
                crate::ErrorCode::UriTooLong,
                format!(
                    "the URL is {url} bytes, more than this service reads ({} bytes, HTTP_MAX_URL_BYTES)",
                    self.max_url_bytes
                ),
            ));
        }
        let headers: usize = req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if headers > self.max_header_bytes {
            return Ok(crate::error_response(
                crate::ErrorCode::HeadersTooLarge,
                format!(
                    "the headers are {headers} bytes, more than this service reads ({} bytes, HTTP_MAX_HEADER_BYTES)",
                    self.max_header_bytes
                ),
            ));
        }
        ep.call(req).await.map(IntoResponse::into_response)
    }
}

/// Wraps an acceptor so that each connection it yields keeps the
/// [`ConnectionLimits`].
pub struct LimitedConnections<A> {
    inner: A,
    limits: ConnectionLimits,
    open: Arc<Semaphore>,
}

impl<A> LimitedConnections<A> {
    pub fn new(inner: A, limits: ConnectionLimits) -> Self {
        Self {
            inner,
            limits,
            open: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        }
    }
}

/// The whole answer to a connection over the cap.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json; charset=utf-8\r\n\
connection: close\r\n\
retry-after: 1\r\n\
content-length: 122\r\n\r\n\
{\"error\":\"Service Unavailable\",\"message\":\"too many open connections (HTTP_MAX_CONNECTIONS)\",\"code\":\"too_many_connections\"}";

/// A connection whose small writes can be sent at once.
pub trait NoDelay {
    /// Turns Nagle's algorithm off. With it on, an event written right
    /// after the response head waits for the client's delayed ACK: about
    /// 40 ms on Linux before a run's first event reached its subscriber.
    fn set_nodelay(&self) -> io::Result<()>;
}

impl NoDelay for tokio::net::TcpStream {
    fn set_nodelay(&self) -> io::Result<()> {
        tokio::net::TcpStream::set_nodelay(self, true)
    }
}

impl<A: Acceptor> Acceptor for LimitedConnections<A>
where
    A::Io: NoDelay,
{
    type Io = LimitedIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    fn accept(
        &mut self,
    ) -> impl Future<Output = io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)>> + Send {
        let limits = self.limits;
        let open = self.open.clone();
        let inner = &mut self.inner;
        async move {
            loop {
                let (mut io, local, remote, scheme) = inner.accept().await?;
                if let Err(error) = io.set_nodelay() {
                    // Only slower: the connection works either way.
                    tracing::debug!(%error, %remote, "cannot set TCP_NODELAY");
                }
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    tracing::warn!(%remote, "connection refused: HTTP_MAX_CONNECTIONS reached");
                    // Answered on its own task so a client that does not
                    // read cannot stall the accept loop; bounded by the
                    // idle timeout. Its result only says whether the client
                    // heard the 503, which changes nothing here.
                    tokio::spawn(async move {
                        let _heard = tokio::time::timeout(limits.idle_timeout, async {
                            io.write_all(TOO_MANY).await?;
                            io.shutdown().await
                        })
                        .await;
                    });
                    continue;
                };
                let io = LimitedIo {
                    inner: io,
                    limits,
                    idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
                    head: Head::Reading {
                        deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
                        tail: Vec::with_capacity(3),
                        read: 0,
                    },
                    _permit: permit,
                };
                return Ok((io, local, remote, scheme));
            }
        }
    }
}

/// Where the connection is in its request/response cycle, as far as the
/// head deadline cares.
enum Head {
    /// Reading a request head, which must end before the deadline. `tail`
    /// holds the last bytes read, so a blank line split across two reads is
    /// still seen.
    Reading {
        deadline: Pin<Box<Sleep>>,
        tail: Vec<u8>,
        /// Bytes of the head read so far.
        read: usize,
    },
    /// The head is complete: the body and the handler run on the idle
    /// timeout only.
    Done,
    /// The server has written (a response); the next byte read starts the
    /// next request's head.
    Answered,
}

/// A connection that fails once it has been idle too long or its request
/// head took too long, and that holds one of the service's connection slots.
pub struct LimitedIo<T> {
    inner: T,
    limits: ConnectionLimits,
    idle: Pin<Box<Sleep>>,
    head: Head,
    _permit: OwnedSemaphorePermit,
}

/// The answer to a request head larger than any the limits let through:
/// hyper would otherwise read up to about 400 KiB of it and answer a bare
/// 431 without a body.
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
content-type: application/json; charset=utf-8\r\n\
connection: close\r\n\
content-length: 157\r\n\r\n\
{\"error\":\"Request Header Fields Too Large\",\"message\":\"the request head is larger than this service reads (HTTP_MAX_HEADER_BYTES)\",\"code\":\"headers_too_large\"}";

/// Marks the error `read_bytes` returns for a head past the limit, so
/// `poll_read` answers it before failing.
struct HeadTooLarge;

impl std::fmt::Debug for HeadTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request head is too large")
    }
}

impl std::fmt::Display for HeadTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for HeadTooLarge {}

fn head_too_large() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, HeadTooLarge)
}

fn timed_out(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, message)
}

impl<T> LimitedIo<T> {
    fn progressed(&mut self) {
        self.idle
            .as_mut()
            .reset(Instant::now() + self.limits.idle_timeout);
    }

    /// Bytes arrived: a new head may start, or the one being read may end.
    fn read_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if matches!(self.head, Head::Answered) {
            self.head = Head::Reading {
                deadline: Box::pin(tokio::time::sleep(self.limits.header_timeout)),
                tail: Vec::with_capacity(3),
                read: 0,
            };
        }
        let max_head = self.limits.max_head_bytes();
        if let Head::Reading {
            deadline,
            tail,
            read,
        } = &mut self.head
        {
            if deadline.is_elapsed() {
                return Err(timed_out("the request head took too long"));
            }
            *read = read.saturating_add(bytes.len());
            let mut window = std::mem::take(tail);
            window.extend_from_slice(&bytes[..bytes.len().min(3)]);
            let ended = window.windows(4).any(|w| w == b"\r\n\r\n")
                || bytes.windows(4).any(|w| w == b"\r\n\r\n");
            if ended {
                self.head = Head::Done;
            } else if *read > max_head {
                return Err(head_too_large());
            } else {
                let keep = bytes.len().min(3);
                let mut last = window;
                last.clear();
                last.extend_from_slice(&bytes[bytes.len() - keep..]);
                *tail = last;
            }
        }
        Ok(())
    }

    /// Called when the inner stream is not ready: an error once a deadline
    /// has passed (the timers wake this task when they do).
    fn expired<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if self.idle.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(timed_out("the connection was idle too long")));
        }
        if let Head::Reading { deadline, .. } = &mut self.head {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(timed_out("the request head took too long")));
            }
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for LimitedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.progressed();
                let read = this.read_bytes(&buf.filled()[before..]);
                if let Err(error) = &read {
                    if error.get_ref().is_some_and(|e| e.is::<HeadTooLarge>()) {
                        // Best effort, as nothing of this request was
                        // answered yet the socket's buffer takes it at
                        // once; the connection is dropped either way.
                        let _sent = Pin::new(&mut this.inner).poll_write(cx, HEAD_TOO_LARGE);
                        tracing::debug!("refused a request head past HTTP_MAX_HEADER_BYTES");
                    }
                }
                Poll::Ready(read)
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.expired(cx),
        }
    }
}

impl<T> LimitedIo<T> {
    fn wrote<R>(&mut self, result: io::Result<R>) -> Poll<io::Result<R>> {
        self.progressed();
        if result.is_ok() {
            self.head = Head::Answered;
        }
        Poll::Ready(result)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LimitedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => this.wrote(result),
            Poll::Pending => this.expired(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.expired(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => this.wrote(result),
            Poll::Pending => this.expired(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_431_body_is_the_length_it_says() {
        let text = std::str::from_utf8(HEAD_TOO_LARGE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["code"], crate::ErrorCode::HeadersTooLarge.as_str());
        assert_eq!(parsed["error"], crate::ErrorCode::HeadersTooLarge.reason());
    }

    #[test]
    fn the_503_body_is_the_length_it_says() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            parsed["code"],
            crate::ErrorCode::TooManyConnections.as_str()
        );
        assert!(head.starts_with(&format!(
            "HTTP/1.1 {} {}",
            crate::ErrorCode::TooManyConnections.status().as_u16(),
            crate::ErrorCode::TooManyConnections.reason()
        )));
    }
}
