//! The preview: a session's workspace served as a static site, on a
//! listener of its own (`PREVIEW_ADDR`), at `/{session_id}/{grant}/{path}`.
//!
//! A preview runs whatever the agent wrote, so it gets an origin apart from
//! the dashboard and, through its `Content-Security-Policy`, a sandbox of
//! its own (an opaque origin: no cookies, no storage shared with anyone,
//! another session's page included), nothing loaded or fetched from outside
//! its own address, and no framing except by the dashboard. Files are read
//! through the backend's API, never from the disk, so the backend's
//! refusals (`.git`, symlinks out of the workspace, anything outside it,
//! files over its size limit) hold here too; `.git` is refused here as well,
//! before the backend is asked.
//!
//! The proxy holds no credential of its own. Every address carries a
//! preview grant, which the signed-in dashboard gets from the backend for
//! one session (`POST /api/sessions/{id}/preview`); since it is in the path,
//! the page's relative subresources carry it too. The backend is asked with
//! that grant (`Authorization: Preview <grant>`) and nothing else of the
//! request but the path, and the grant reads that one session's files and
//! nothing else: a page of one session that names another session's files
//! gets a 404, with its own grant, or a 401, with none. The browser's
//! cookies and headers are never passed on. Grants never reach the log: the
//! request log shows `<grant>` in their place.
//!
//! A folder answers with its `index.html`, or else with a list of its files;
//! a folder named without its trailing slash is redirected to it, so that
//! the page's relative links resolve inside the folder.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use poem::http::{header, HeaderValue, StatusCode};
use poem::web::{Data, Path};
use poem::{handler, Endpoint, IntoResponse, Request, Response};
use serde::Deserialize;
use service_kit::ErrorCode;
use thiserror::Error;
use uuid::Uuid;

use crate::proxy::Upstream;

/// What the preview's responses need besides the backend.
#[derive(Clone)]
pub struct Preview {
    upstream: Upstream,
    /// The whole `Content-Security-Policy` of every preview response.
    policy: HeaderValue,
}

/// A preview grant as an address carries it: `rrp_` and 43 characters of
/// URL-safe base64 (256 bits). Only the backend knows whether it is live;
/// anything else in its place (an API token, a file name of an address
/// from before grants) is refused here, without asking.
#[derive(Clone)]
pub struct Grant(String);

impl Grant {
    pub fn parse(segment: &str) -> Option<Self> {
        let key = segment.strip_prefix("rrp_")?;
        let valid = key.len() == 43
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| Self(segment.to_owned()))
    }

    /// `Authorization: Preview <grant>`, marked sensitive.
    fn authorization(&self) -> Result<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Preview {}", self.0))
            .map_err(|_| PreviewError::NoGrant)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grant(<redacted>)")
    }
}

/// The path as the request log shows it: the segment after the session,
/// where a grant goes, replaced.
pub fn logged_path(path: &str) -> String {
    let mut segments = path.splitn(4, '/');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some(""), Some(session), Some(grant), rest) if !grant.is_empty() => {
            let rest = rest.map(|r| format!("/{r}")).unwrap_or_default();
            format!("/{session}/<grant>{rest}")
        }
        _ => path.to_owned(),
    }
}

impl Preview {
    /// `frame_ancestors` are the origins the dashboard is reached by (see
    /// [`dashboard_origins`]): only they may show a preview in a frame.
    pub fn new(upstream: Upstream, frame_ancestors: &str) -> Self {
        let policy = format!(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; \
             style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
             media-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; \
             object-src 'none'; base-uri 'none'; form-action 'none'; \
             frame-ancestors {frame_ancestors}; sandbox allow-scripts"
        );
        Self {
            upstream,
            // The origins come from addresses and ALLOWED_HOSTS, which are
            // header-safe; a policy that is not is replaced by one that
            // allows no framing at all rather than by none.
            policy: HeaderValue::from_str(&policy).unwrap_or_else(|_| {
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; sandbox")
            }),
        }
    }
}

/// The CSP `frame-ancestors` sources for a dashboard bound to `proxy_addr`
/// and reached by the names of `ALLOWED_HOSTS` (the same names its `Host`
/// check lets in). IPv6 literals cannot be written in a CSP source, so a
/// dashboard opened as `http://[::1]:9100` cannot frame a preview.
pub fn dashboard_origins(proxy_addr: SocketAddr, allowed_hosts: &str) -> String {
    named_origins(proxy_addr, allowed_hosts, None)
}

/// The CSP `frame-src` sources of the dashboard: the dashboard builds the
/// Preview tab's address from its own host name and the preview listener's
/// port (`tabs.js`, `previewUrl`), so these are the names of
/// [`dashboard_origins`], each at `preview_port`.
pub fn preview_origins(proxy_addr: SocketAddr, allowed_hosts: &str, preview_port: u16) -> String {
    named_origins(proxy_addr, allowed_hosts, Some(preview_port))
}

/// The origins of the names the dashboard is reached by: at the ports it
/// is reached at (`None`: the bound port for the bound address, an
/// `ALLOWED_HOSTS` entry's own port or else any), or each at `port`.
fn named_origins(proxy_addr: SocketAddr, allowed_hosts: &str, port: Option<u16>) -> String {
    let bound = port.unwrap_or(proxy_addr.port());
    let mut sources: Vec<String> = Vec::new();
    match proxy_addr.ip() {
        ip if ip.is_unspecified() || ip.is_loopback() => {
            sources.push(format!("http://127.0.0.1:{bound}"));
            sources.push(format!("http://localhost:{bound}"));
        }
        IpAddr::V4(ip) => sources.push(format!("http://{ip}:{bound}")),
        IpAddr::V6(_) => {}
    }
    for entry in allowed_hosts
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        if entry == "*" {
            return match port {
                None => "*".into(),
                Some(port) => format!("http://*:{port} https://*:{port}"),
            };
        }
        // An entry is a host name, possibly with a port; anything else
        // (a bracketed IPv6 literal, stray characters) is left out.
        let valid = entry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !valid || entry.starts_with(':') {
            continue;
        }
        let entry = entry.to_ascii_lowercase();
        let host = match (port, entry.split_once(':')) {
            (Some(port), Some((name, _))) => format!("{name}:{port}"),
            (Some(port), None) => format!("{entry}:{port}"),
            (None, Some(_)) => entry,
            (None, None) => format!("{entry}:*"),
        };
        sources.push(format!("http://{host}"));
        sources.push(format!("https://{host}"));
    }
    if sources.is_empty() {
        "'none'".into()
    } else {
        sources.join(" ")
    }
}

/// Adds the preview's security headers to every response, errors included.
pub async fn secure<E: Endpoint>(
    ep: std::sync::Arc<E>,
    req: Request,
    policy: HeaderValue,
) -> poem::Result<Response> {
    let mut response = match ep.call(req).await {
        Ok(response) => response.into_response(),
        Err(error) => service_kit::json_error(error).await,
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The workspace changes under the agent: the reload button must show
    // what is there now.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A preview never sets a cookie, whatever an upstream said.
    headers.remove(header::SET_COOKIE);
    Ok(response)
}

impl Preview {
    pub fn policy(&self) -> HeaderValue {
        self.policy.clone()
    }
}

/// Why a preview request is not served; each is a JSON error response.
#[derive(Debug, Error)]
enum PreviewError {
    #[error("{0} is not a session id")]
    SessionId(String),
    /// The address has no grant where one goes.
    #[error(
        "a preview's address carries a grant for its session: open the preview from the \
         dashboard's Preview tab"
    )]
    NoGrant,
    #[error("the preview does not serve .git, . or .. in a path")]
    Refused,
    #[error("{0}: no such file or folder")]
    NotFound(String),
    /// The backend's own error (4xx), passed on as it is.
    #[error("the backend refused the request")]
    Backend(Box<Response>),
    #[error("the backend is unreachable")]
    Unreachable(#[source] reqwest::Error),
    #[error("the backend's answer was not understood")]
    Unexpected(String),
}

impl IntoResponse for PreviewError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            PreviewError::SessionId(_) => service_kit::error_response(ErrorCode::NotFound, message),
            PreviewError::NoGrant => service_kit::error_response(ErrorCode::Unauthorized, message),
            PreviewError::Refused => service_kit::error_response(ErrorCode::Forbidden, message),
            PreviewError::NotFound(_) => service_kit::error_response(ErrorCode::NotFound, message),
            PreviewError::Backend(response) => *response,
            PreviewError::Unreachable(error) => {
                tracing::warn!(error = %error.without_url(), "backend unreachable");
                crate::proxy::bad_gateway()
            }
            PreviewError::Unexpected(detail) => {
                tracing::error!(%detail, "unexpected answer from the backend");
                service_kit::error_response(
                    ErrorCode::BackendUnavailable,
                    "the backend's answer was not understood",
                )
            }
        }
    }
}

type Result<T> = std::result::Result<T, PreviewError>;

/// `GET /api/sessions/{id}/files/{path}`.
#[derive(Deserialize)]
struct FileContent {
    /// `utf-8` or `base64`.
    encoding: String,
    content: String,
}

/// `GET /api/sessions/{id}/files`.
#[derive(Deserialize)]
struct FileTree {
    entries: Vec<TreeEntry>,
    truncated: bool,
}

#[derive(Deserialize)]
struct TreeEntry {
    path: String,
    /// `file`, `dir` or `symlink`.
    kind: String,
}

/// What the backend said about one path.
enum Lookup {
    File(Vec<u8>),
    /// Nothing there, or no such session (404), with the backend's answer.
    Missing(Response),
    /// Something the backend will not read as a file: a folder, or a FIFO
    /// and the like (400).
    NotAFile(Response),
}

impl Preview {
    async fn get(&self, url: url::Url, grant: &Grant) -> Result<reqwest::Response> {
        self.upstream
            .client
            .get(url)
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, grant.authorization()?)
            .send()
            .await
            .map_err(PreviewError::Unreachable)
    }

    /// `/api/sessions/{session}/files[/{segments}]`, each segment encoded.
    fn files_url(&self, session: Uuid, segments: &[&str]) -> Result<url::Url> {
        let mut url = url::Url::parse(&self.upstream.base)
            .map_err(|e| PreviewError::Unexpected(format!("BACKEND_URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| PreviewError::Unexpected("BACKEND_URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(["api", "sessions", &session.to_string(), "files"])
            .extend(segments);
        Ok(url)
    }

    async fn read(&self, session: Uuid, grant: &Grant, segments: &[&str]) -> Result<Lookup> {
        let response = self.get(self.files_url(session, segments)?, grant).await?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            // No such file, or no such session: the backend's message says
            // which.
            return Ok(Lookup::Missing(backend_error(response).await));
        }
        if status == reqwest::StatusCode::BAD_REQUEST {
            return Ok(Lookup::NotAFile(backend_error(response).await));
        }
        if !status.is_success() {
            return Err(fail(response).await);
        }
        let content: FileContent = response
            .json()
            .await
            .map_err(|e| PreviewError::Unexpected(e.to_string()))?;
        let bytes = match content.encoding.as_str() {
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(content.content)
                .map_err(|e| PreviewError::Unexpected(e.to_string()))?,
            _ => content.content.into_bytes(),
        };
        Ok(Lookup::File(bytes))
    }

    async fn tree(&self, session: Uuid, grant: &Grant) -> Result<FileTree> {
        let response = self.get(self.files_url(session, &[])?, grant).await?;
        if !response.status().is_success() {
            return Err(fail(response).await);
        }
        response
            .json()
            .await
            .map_err(|e| PreviewError::Unexpected(e.to_string()))
    }

    /// Serves `path` (relative, `/`-separated, maybe empty) of `session`
    /// with `grant`.
    async fn serve(&self, session: &str, grant: &str, path: &str) -> Result<Response> {
        let session =
            Uuid::parse_str(session).map_err(|_| PreviewError::SessionId(session.to_owned()))?;
        let grant = Grant::parse(grant).ok_or(PreviewError::NoGrant)?;
        let folder = path.is_empty() || path.ends_with('/');
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if segments
            .iter()
            .any(|s| *s == "." || *s == ".." || s.eq_ignore_ascii_case(".git") || s.contains('\\'))
        {
            return Err(PreviewError::Refused);
        }
        if folder {
            let mut index = segments.clone();
            index.push("index.html");
            return match self.read(session, &grant, &index).await? {
                Lookup::File(bytes) => Ok(file_response("index.html", bytes)),
                Lookup::NotAFile(response) => Ok(response),
                Lookup::Missing(_) => self.listing(session, &grant, &segments).await,
            };
        }
        match self.read(session, &grant, &segments).await? {
            Lookup::File(bytes) => Ok(file_response(path, bytes)),
            Lookup::Missing(response) => Ok(response),
            Lookup::NotAFile(response) => {
                // A folder named without its slash: send the browser to the
                // folder, so relative links resolve inside it.
                let tree = self.tree(session, &grant).await?;
                let wanted = segments.join("/");
                if tree
                    .entries
                    .iter()
                    .any(|e| e.kind == "dir" && e.path == wanted)
                {
                    let last = segments.last().copied().unwrap_or_default();
                    let location = format!("{}/", encode_segment(last));
                    Ok(Response::builder()
                        .status(StatusCode::PERMANENT_REDIRECT)
                        .header(header::LOCATION, location)
                        .finish())
                } else {
                    Ok(response)
                }
            }
        }
    }

    /// A folder without an `index.html`: the list of what is in it.
    async fn listing(&self, session: Uuid, grant: &Grant, segments: &[&str]) -> Result<Response> {
        let tree = self.tree(session, grant).await?;
        let folder = segments.join("/");
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        if !folder.is_empty()
            && !tree
                .entries
                .iter()
                .any(|e| e.kind == "dir" && e.path == folder)
        {
            return Err(PreviewError::NotFound(prefix));
        }
        let mut items = String::new();
        for entry in &tree.entries {
            let Some(name) = entry.path.strip_prefix(&prefix) else {
                continue;
            };
            if name.is_empty() || name.contains('/') {
                continue;
            }
            let slash = if entry.kind == "dir" { "/" } else { "" };
            // Writing to a String cannot fail.
            let _ = writeln!(
                items,
                "<li><a href=\"{}{slash}\">{}{slash}</a></li>",
                escape_html(&encode_segment(name)),
                escape_html(&visible_name(name))
            );
        }
        let title = escape_html(&visible_name(&format!("/{prefix}")));
        let mut page = format!(
            "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
             <body>\n<h1>{title}</h1>\n<p>No index.html here; the files of this folder:</p>\n<ul>\n{items}</ul>\n"
        );
        if tree.truncated {
            page.push_str("<p>The workspace has more files than the list shows.</p>\n");
        }
        page.push_str("</body>\n</html>\n");
        Ok(file_response("index.html", page.into_bytes()))
    }
}

/// A backend error, passed on as it is (it has the API's error schema).
async fn backend_error(response: reqwest::Response) -> Response {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    match response.bytes().await {
        Ok(bytes) => Response::builder()
            .status(status)
            .content_type("application/json; charset=utf-8")
            .body(bytes.to_vec()),
        Err(error) => PreviewError::Unreachable(error).into_response(),
    }
}

/// A backend error other than a missing or unreadable file: a 4xx (session
/// not found, not ready, file too large) passes as it is, anything else is
/// a 502.
async fn fail(response: reqwest::Response) -> PreviewError {
    let status = response.status();
    if status.is_client_error() {
        PreviewError::Backend(Box::new(backend_error(response).await))
    } else {
        PreviewError::Unexpected(format!("status {status}"))
    }
}

fn file_response(path: &str, bytes: Vec<u8>) -> Response {
    Response::builder()
        .content_type(content_type(path))
        .body(bytes)
}

/// The content type of a file by its extension; `application/octet-stream`
/// for one not known, which a browser downloads rather than renders.
pub fn content_type(path: &str) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(mime.essence_str(), "application/json" | "image/svg+xml");
    if textual {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_owned()
    }
}

/// `name` (the agent's) with every character that draws nothing, or
/// reorders what is drawn around it, shown as `⟨U+XXXX⟩`, as the dashboard
/// shows names (web/command.js): a listing must not pass `x\u{202e}fdp.sh`
/// off as `xhs.pdf`.
fn visible_name(name: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c,
                '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
                | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{2800}'
                | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}'
                | '\u{E0100}'..='\u{E01EF}')
    };
    name.chars()
        .map(|c| {
            if hidden(c) {
                format!("\u{27E8}U+{:04X}\u{27E9}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment for a relative link: everything but unreserved
/// characters percent-encoded.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    // `./` first, so a name with a colon is not read as a scheme.
    format!("./{out}")
}

/// Whether a request is for a page to show (a frame's or a tab's
/// document) rather than a subresource or a script's fetch. A browser says
/// so with `Sec-Fetch-Dest`; one that does not, with `Accept`.
fn is_document(req: &Request) -> bool {
    match req.headers().get("sec-fetch-dest").map(HeaderValue::to_str) {
        Some(Ok(dest)) => matches!(dest, "document" | "iframe" | "frame"),
        _ => req
            .headers()
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.starts_with("text/html")),
    }
}

/// The type of the message a refused page posts to its parent (the
/// dashboard's Preview tab, which then asks for a new grant).
pub const REFUSED_MESSAGE: &str = "repo-runner:preview-grant-refused";

/// A refused grant (expired, revoked, none): as it is for a subresource or
/// a fetch (the API's JSON error); for a page, a page that says so and
/// tells the dashboard which workspace path it was at, so that the Preview
/// tab can show it again with a new grant. The path is all it tells, and
/// the dashboard only ever builds an address of its own session from it.
fn answer(req: &Request, path: &str, response: Response) -> Response {
    if response.status() != StatusCode::UNAUTHORIZED || !is_document(req) {
        return response;
    }
    let message = serde_json::json!({"type": REFUSED_MESSAGE, "path": path})
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Preview not allowed</title></head>\n\
         <body>\n<p>This preview's address has no valid grant: it expired, was revoked, or is \
         missing. The dashboard's Preview tab asks for a new one: use Reload there.</p>\n\
         <script>parent.postMessage({message}, \"*\");</script>\n</body>\n</html>\n"
    );
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .content_type("text/html; charset=utf-8")
        .body(page)
}

/// `GET /{session_id}/{grant}/{path}`.
#[handler]
pub async fn file(
    req: &Request,
    Path((session, grant, path)): Path<(String, String, String)>,
    Data(preview): Data<&Preview>,
) -> Response {
    let response = match preview.serve(&session, &grant, &path).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    answer(req, &path, response)
}

/// `GET /{session_id}/{grant}/`: the workspace's root folder.
#[handler]
pub async fn root(
    req: &Request,
    Path((session, grant)): Path<(String, String)>,
    Data(preview): Data<&Preview>,
) -> Response {
    let response = match preview.serve(&session, &grant, "").await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    answer(req, "", response)
}

/// `GET /{session_id}/{grant}`: to the folder, so relative links resolve.
#[handler]
pub fn grant_without_slash(
    req: &Request,
    Path((session, grant)): Path<(String, String)>,
) -> Response {
    let refused = match (Uuid::parse_str(&session), Grant::parse(&grant)) {
        (Ok(id), Some(grant)) => {
            return Response::builder()
                .status(StatusCode::PERMANENT_REDIRECT)
                .header(header::LOCATION, format!("/{id}/{}/", grant.0))
                .finish()
        }
        (Err(_), _) => PreviewError::SessionId(session),
        (Ok(_), None) => PreviewError::NoGrant,
    };
    answer(req, "", refused.into_response())
}

/// `GET /{session_id}[/]`: an address without a grant.
#[handler]
pub fn without_grant(req: &Request) -> Response {
    answer(req, "", PreviewError::NoGrant.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        for (path, expected) in [
            ("index.html", "text/html; charset=utf-8"),
            ("a/snake.js", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("data.json", "application/json; charset=utf-8"),
            ("logo.svg", "image/svg+xml; charset=utf-8"),
            ("logo.png", "image/png"),
            ("font.woff2", "font/woff2"),
            ("Makefile", "application/octet-stream"),
        ] {
            assert_eq!(content_type(path), expected, "{path}");
        }
    }

    #[test]
    fn frame_ancestors_are_the_dashboards_names() {
        let addr = "127.0.0.1:9100".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(
            dashboard_origins(addr, ""),
            "http://127.0.0.1:9100 http://localhost:9100"
        );
        assert_eq!(
            dashboard_origins(addr, "app.example, [::1]:9100, box:8080"),
            "http://127.0.0.1:9100 http://localhost:9100 http://app.example:* \
             https://app.example:* http://box:8080 https://box:8080"
        );
        assert_eq!(dashboard_origins(addr, "*"), "*");
    }

    #[test]
    fn the_dashboard_frames_previews_by_its_own_names_at_the_preview_port() {
        let addr = "127.0.0.1:9100".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(
            preview_origins(addr, "", 9104),
            "http://127.0.0.1:9104 http://localhost:9104"
        );
        assert_eq!(
            preview_origins(addr, "app.example, [::1]:9100, box:8080", 9104),
            "http://127.0.0.1:9104 http://localhost:9104 http://app.example:9104 \
             https://app.example:9104 http://box:9104 https://box:9104"
        );
        assert_eq!(
            preview_origins(addr, "*", 9104),
            "http://*:9104 https://*:9104"
        );
    }

    #[test]
    fn a_grant_is_its_prefix_and_256_bits_and_nothing_else() {
        let key = "A".repeat(42);
        assert!(Grant::parse(&format!("rrp_{key}-")).is_some());
        assert!(Grant::parse(&format!("rrp_{key}_")).is_some());
        for refused in [
            format!("rrp_{key}"),
            format!("rrp_{key}AA"),
            format!("rrp_{key}="),
            format!("rrp_{key}%"),
            format!("rr_{key}AA"),
            "index.html".to_owned(),
            String::new(),
        ] {
            assert!(Grant::parse(&refused).is_none(), "{refused}");
        }
        let grant = Grant::parse(&format!("rrp_{key}A")).unwrap();
        assert_eq!(format!("{grant:?}"), "Grant(<redacted>)");
        assert!(grant.authorization().unwrap().is_sensitive());
    }

    #[test]
    fn the_log_shows_no_grant() {
        let id = "0b8f3a52-8f43-4c8e-9a8e-3f1c2d4e5f60";
        assert_eq!(
            logged_path(&format!("/{id}/rrp_secret/snake/a.js")),
            format!("/{id}/<grant>/snake/a.js")
        );
        assert_eq!(
            logged_path(&format!("/{id}/rrp_secret/")),
            format!("/{id}/<grant>/")
        );
        assert_eq!(
            logged_path(&format!("/{id}/rrp_secret")),
            format!("/{id}/<grant>")
        );
        assert_eq!(logged_path(&format!("/{id}/")), format!("/{id}/"));
        assert_eq!(logged_path(&format!("/{id}")), format!("/{id}"));
        assert_eq!(logged_path("/"), "/");
    }

    #[test]
    fn listing_links_are_encoded_and_escaped() {
        assert_eq!(encode_segment("a b<c>.html"), "./a%20b%3Cc%3E.html");
        assert_eq!(
            escape_html("<a href=\"x\">"),
            "&lt;a href=&quot;x&quot;&gt;"
        );
    }

    #[test]
    fn a_listing_shows_the_characters_a_name_hides() {
        assert_eq!(
            visible_name("invoice\u{202e}fdp.sh"),
            "invoice\u{27e8}U+202E\u{27e9}fdp.sh"
        );
        assert_eq!(
            visible_name("a\u{200b}b\u{3164}c\u{e0100}\n"),
            "a⟨U+200B⟩b⟨U+3164⟩c⟨U+E0100⟩⟨U+000A⟩"
        );
        assert_eq!(visible_name("snake game é.html"), "snake game é.html");
    }
}
