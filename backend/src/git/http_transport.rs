//! Plain-http clones and pushes: git's smart HTTP protocol spoken by our own client in
//! place of libgit2's.
//!
//! libgit2 1.9 never sends plain http through a proxy: given one, it writes
//! its requests in proxy form but connects straight to the server, which it
//! resolves by itself. So the egress proxy could not check those
//! connections, and a redirect to another port of the same host was
//! followed without any check. This transport replaces libgit2's for
//! `http://`; libgit2 still speaks the git protocol over it, and https
//! still goes through the egress proxy's `CONNECT`, which libgit2 honours.
//!
//! - Names are resolved once by [`resolve_checked`], which refuses an
//!   address the [`ClonePolicy`] refuses, and the client connects to exactly
//!   the addresses it returned: no second DNS answer (rebinding).
//! - Redirects are never followed, with or without credentials.
//! - The token is sent only to the URL the user named, the only URL there
//!   is.
//! - Every wait for the server is bounded by the clone's I/O timeout, and a
//!   response by the clone's byte limit.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::egress::resolve_checked;
use super::Credentials;
use crate::domain::ClonePolicy;

/// What a clone on this thread gives its http requests.
#[derive(Clone)]
pub(crate) struct HttpContext {
    /// `host:port` of the one URL this clone or push may reach: libgit2
    /// hands the transport whatever URL the repository's configuration
    /// made of it (`url.<base>.insteadOf`), and credentials go nowhere else.
    origin: Option<String>,
    client: reqwest::Client,
    credentials: Option<Credentials>,
    io_timeout: Duration,
    max_bytes: u64,
    runtime: tokio::runtime::Handle,
}

impl HttpContext {
    /// `None` outside a tokio runtime (the backend always has one).
    pub(crate) fn new(
        url: &str,
        policy: &ClonePolicy,
        credentials: Option<Credentials>,
        connect_timeout: Duration,
        io_timeout: Duration,
        max_bytes: u64,
    ) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver(policy.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .no_proxy()
            // Forges answer the smart protocol only to git's user agent.
            .user_agent(concat!(
                "git/2.0 (repo-runner/",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()
            .ok()?;
        Some(Self {
            origin: origin_of(url),
            client,
            credentials,
            io_timeout,
            max_bytes,
            runtime,
        })
    }
}

thread_local! {
    /// The context of the clone running on this thread: libgit2 creates the
    /// transport on the thread that clones, and the factory has no other
    /// way to know which clone it serves.
    static CONTEXT: RefCell<Option<HttpContext>> = const { RefCell::new(None) };
}

/// While it lives, http transports made on this thread use its context.
pub(crate) struct Scope(());

impl Scope {
    pub(crate) fn enter(context: HttpContext) -> Self {
        CONTEXT.with(|slot| *slot.borrow_mut() = Some(context));
        Scope(())
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CONTEXT.with(|slot| slot.borrow_mut().take());
    }
}

/// Replaces libgit2's `http://` transport for the whole process. Call once
/// at start-up, before any clone.
pub(crate) fn register() -> Result<(), git2::Error> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        #[allow(unsafe_code)]
        // SAFETY: libgit2's transport registry is global; this runs once
        // (OnceLock), at start-up before any clone creates a transport.
        // libgit2 adds "://" to the scheme, so https is not matched.
        let registered = unsafe {
            git2::transport::register("http", |remote| {
                let context = CONTEXT
                    .with(|slot| slot.borrow().clone())
                    .ok_or_else(|| git2::Error::from_str("no clone on this thread may use http"))?;
                Transport::smart(remote, true, Subtransport(context))
            })
        };
        registered.map_err(|e| e.message().to_owned())
    })
    .clone()
    .map_err(|message| git2::Error::from_str(&message))
}

/// Resolves through [`resolve_checked`]: the client connects only to
/// addresses the policy allows, and to no address it did not check.
pub(crate) struct CheckedResolver(pub(crate) ClonePolicy);

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            // The port is the client's business; any will do for the check.
            match resolve_checked(name.as_str(), 0, &policy).await {
                Some(addresses) => Ok(Box::new(addresses.into_iter()) as Addrs),
                None => Err("the host resolves to an address clones may not reach".into()),
            }
        })
    }
}

/// `host:port` of an http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(format!(
        "{}:{}",
        url.host_str()?,
        url.port_or_known_default()?
    ))
}

struct Subtransport(HttpContext);

impl SmartSubtransport for Subtransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        if origin_of(url).is_none() || origin_of(url) != self.0.origin {
            return Err(git2::Error::from_str(
                "the server redirected to another origin: refused",
            ));
        }
        let base = url.trim_end_matches('/');
        let request = match action {
            Service::UploadPackLs => Request {
                url: format!("{base}/info/refs?service=git-upload-pack"),
                post: None,
                expect: "application/x-git-upload-pack-advertisement",
            },
            Service::UploadPack => Request {
                url: format!("{base}/git-upload-pack"),
                post: Some("application/x-git-upload-pack-request"),
                expect: "application/x-git-upload-pack-result",
            },
            // A push (`git::push`): its request body is the pack.
            Service::ReceivePackLs => Request {
                url: format!("{base}/info/refs?service=git-receive-pack"),
                post: None,
                expect: "application/x-git-receive-pack-advertisement",
            },
            Service::ReceivePack => Request {
                url: format!("{base}/git-receive-pack"),
                post: Some("application/x-git-receive-pack-request"),
                expect: "application/x-git-receive-pack-result",
            },
        };
        Ok(Box::new(Stream {
            context: self.0.clone(),
            request,
            body: Vec::new(),
            response: None,
            pending: bytes::Bytes::new(),
            read: 0,
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

struct Request {
    url: String,
    /// The content type of the body of a POST; `None` for a GET.
    post: Option<&'static str>,
    /// The content type of a smart-protocol answer.
    expect: &'static str,
}

/// One request: libgit2 writes its body, then reads the answer.
struct Stream {
    context: HttpContext,
    request: Request,
    body: Vec<u8>,
    response: Option<reqwest::Response>,
    /// Bytes of the last chunk that did not fit the caller's buffer.
    pending: bytes::Bytes,
    read: u64,
}

/// Longest request body libgit2 may write for a fetch (its wants and
/// haves); a push's body is its pack, bounded by the clone limit.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

fn failed(message: String) -> io::Error {
    io::Error::other(message)
}

impl Stream {
    fn wait<T>(
        &self,
        future: impl std::future::Future<Output = reqwest::Result<T>>,
    ) -> io::Result<T> {
        self.context
            .runtime
            .block_on(tokio::time::timeout(self.context.io_timeout, future))
            .map_err(|_| failed("the server timed out".to_owned()))?
            .map_err(|error| {
                // reqwest's chain names the cause (refused, resolver, ...);
                // the URL holds no credentials, they travel in a header.
                let mut message = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    message = format!("{message}: {cause}");
                    source = cause.source();
                }
                failed(format!("failed to connect: {message}"))
            })
    }

    fn send(&mut self) -> io::Result<reqwest::Response> {
        let client = self.context.client.clone();
        let mut builder = if let Some(content_type) = self.request.post {
            client
                .post(&self.request.url)
                .header("content-type", content_type)
                .header("accept", self.request.expect)
                .body(std::mem::take(&mut self.body))
        } else {
            client.get(&self.request.url)
        };
        if let Some(credentials) = &self.context.credentials {
            let user = credentials.username.as_deref().unwrap_or("x-access-token");
            builder = builder.basic_auth(user, Some(&credentials.token));
        }
        let response = self.wait(builder.send())?;
        let status = response.status();
        // The messages carry the words `CloneError` sorts by.
        if status.is_redirection() {
            return Err(failed(format!(
                "the server redirected ({status}); clones do not follow redirects"
            )));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(failed(format!("authentication required ({status})")));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(failed("repository not found (404)".to_owned()));
        }
        if !status.is_success() {
            return Err(failed(format!("the server answered {status}")));
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with(self.request.expect) {
            return Err(failed(
                "not found: the server does not speak git's smart HTTP protocol".to_owned(),
            ));
        }
        Ok(response)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            self.response = Some(self.send()?);
        }
        if self.pending.is_empty() {
            let Some(response) = self.response.as_mut() else {
                return Ok(0);
            };
            let chunk = self
                .context
                .runtime
                .block_on(tokio::time::timeout(
                    self.context.io_timeout,
                    response.chunk(),
                ))
                .map_err(|_| failed("the server timed out".to_owned()))?
                .map_err(|error| failed(format!("the connection failed: {error}")))?;
            match chunk {
                Some(chunk) => self.pending = chunk,
                None => return Ok(0),
            }
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending = self.pending.slice(n..);
        self.read += n as u64;
        if self.read > self.context.max_bytes {
            return Err(failed(format!(
                "the server sent more than the clone limit of {} bytes",
                self.context.max_bytes
            )));
        }
        Ok(n)
    }
}

impl Write for Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let limit = if self.request.url.ends_with("/git-receive-pack") {
            usize::try_from(self.context.max_bytes).unwrap_or(usize::MAX)
        } else {
            MAX_REQUEST_BYTES
        };
        if self.body.len() + data.len() > limit {
            return Err(failed("the clone's request grew too large".to_owned()));
        }
        self.body.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_resolver_refuses_a_name_of_a_refused_address() {
        // `localhost` comes from the hosts file: no DNS server is asked.
        let strict = CheckedResolver(ClonePolicy::default());
        let refused = strict.resolve("localhost".parse().unwrap()).await;
        assert!(refused.is_err());

        let open = CheckedResolver(ClonePolicy::new(true, ""));
        let addresses: Vec<_> = open
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addresses.is_empty());
        assert!(
            addresses.iter().all(|a| a.ip().is_loopback()),
            "{addresses:?}"
        );
    }
}
