//! Cloning a session's repository: progress, credentials, depth, ref, and a
//! checkout whose size and room on disk are checked before it is written.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use git2::build::{CheckoutBuilder, CloneLocal, RepoBuilder};
use git2::{
    BranchType, Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions, ObjectType, Oid,
    ProxyOptions, RemoteCallbacks, RemoteRedirect, Repository, Tree, TreeWalkMode, TreeWalkResult,
};

pub(crate) use super::clone_error::CloneError;
use super::http_transport::{self, HttpContext};
use super::local_source::LocalSource;
use crate::domain::{ClonePolicy, Depth, GitRef, HostKind, RepoUrl};

/// A token for a private https remote; its `Debug` hides it.
#[derive(Clone)]
pub struct Credentials {
    pub username: Option<String>,
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(***)")
    }
}

/// Credentials as a session keeps them (sealed, `auth::sealed`).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct KeptToken {
    username: Option<String>,
    token: String,
}

impl From<&Credentials> for KeptToken {
    fn from(credentials: &Credentials) -> Self {
        Self {
            username: credentials.username.clone(),
            token: credentials.token.clone(),
        }
    }
}

impl KeptToken {
    pub(crate) fn to_bytes(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Credentials> {
        let kept: Self = serde_json::from_slice(bytes).ok()?;
        Some(Credentials {
            username: kept.username,
            token: kept.token,
        })
    }
}

#[derive(Debug)]
pub struct CloneRequest {
    pub url: RepoUrl,
    pub git_ref: Option<GitRef>,
    pub depth: Option<Depth>,
    pub credentials: Option<Credentials>,
    /// For a local `url`, the check its path passed: a local clone without
    /// one is refused.
    pub local: Option<LocalSource>,
    pub max_bytes: u64,
    /// Which addresses the clone may connect to.
    pub policy: ClonePolicy,
    /// How long one connection attempt may take (`BACKEND_CLONE_CONNECT_TIMEOUT_SECS`).
    pub connect_timeout: std::time::Duration,
    /// How long the server may stay silent (`BACKEND_CLONE_IO_TIMEOUT_SECS`).
    pub io_timeout: std::time::Duration,
}

/// What the checkout may take on disk.
#[derive(Debug, Clone)]
pub struct DiskLimits {
    /// Most bytes the checked-out files may add up to.
    pub max_checkout_bytes: u64,
    /// Free bytes to leave on the filesystem of the workspace.
    pub min_free_bytes: u64,
    /// Bytes that checkouts in progress in this process are about to write,
    /// shared by all clones: free space they will take is not free for
    /// another checkout.
    pub reserved: Arc<AtomicU64>,
}

/// A checkout's share of [`DiskLimits::reserved`], given back on drop.
struct Reservation<'a> {
    reserved: &'a AtomicU64,
    bytes: u64,
}

impl<'a> Reservation<'a> {
    /// Reserves `bytes`; returns what the other checkouts had reserved.
    fn take(reserved: &'a AtomicU64, bytes: u64) -> (Self, u64) {
        let others = reserved.fetch_add(bytes, Ordering::SeqCst);
        (Self { reserved, bytes }, others)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.reserved.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// Shared with the task that records progress; updated by libgit2.
#[derive(Debug, Default)]
pub struct CloneProgress {
    pub received_objects: AtomicU64,
    pub total_objects: AtomicU64,
    pub indexed_deltas: AtomicU64,
    pub total_deltas: AtomicU64,
    pub received_bytes: AtomicU64,
    pub checkout_done: AtomicU64,
    pub checkout_total: AtomicU64,
    /// Set to stop the clone (session deleted).
    pub cancel: AtomicBool,
}

/// The counters of a [`CloneProgress`] at one moment, as they are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CloneCounts {
    pub received_objects: u64,
    pub total_objects: u64,
    pub indexed_deltas: u64,
    pub total_deltas: u64,
    pub received_bytes: u64,
    pub checkout_done: u64,
    pub checkout_total: u64,
}

impl CloneProgress {
    pub(crate) fn counts(&self) -> CloneCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CloneCounts {
            received_objects: get(&self.received_objects),
            total_objects: get(&self.total_objects),
            indexed_deltas: get(&self.indexed_deltas),
            total_deltas: get(&self.total_deltas),
            received_bytes: get(&self.received_bytes),
            checkout_done: get(&self.checkout_done),
            checkout_total: get(&self.checkout_total),
        }
    }
}

impl CloneError {
    pub(super) fn from_git(error: &git2::Error, progress: &CloneProgress, max_bytes: u64) -> Self {
        if progress.cancel.load(Ordering::Relaxed) {
            return CloneError::Cancelled;
        }
        if progress.received_bytes.load(Ordering::Relaxed) > max_bytes {
            return CloneError::TooLarge(max_bytes);
        }
        let message = error.message().to_owned();
        let lower = message.to_lowercase();
        if lower.contains("clone limit") {
            return CloneError::TooLarge(max_bytes);
        }
        if lower.contains("redirect") {
            return CloneError::Redirected;
        }
        if error.code() == ErrorCode::Auth
            || lower.contains("authentication")
            || lower.contains("401")
            || lower.contains("403")
            || lower.contains("credentials")
        {
            return CloneError::AuthRequired;
        }
        if lower.contains("404")
            || lower.contains("not found")
            || lower.contains("does not appear to be a git repository")
            || lower.contains("could not find repository")
            || (error.class() == ErrorClass::Os && lower.contains("no such file"))
        {
            return CloneError::NotFound;
        }
        let connecting = [
            "failed to connect",
            "connection refused",
            "timed out",
            "failed to resolve",
            "could not resolve",
        ];
        if error.class() == ErrorClass::Os && connecting.iter().any(|c| lower.contains(c)) {
            return CloneError::Unreachable;
        }
        match error.class() {
            ErrorClass::Net | ErrorClass::Ssl | ErrorClass::Ssh => CloneError::Unreachable,
            ErrorClass::Http => CloneError::Network(message),
            ErrorClass::Os | ErrorClass::Filesystem => CloneError::Disk(message),
            _ => CloneError::Other(message),
        }
    }
}

/// Clones into `dest` and checks out the requested ref; returns the commit
/// checked out.
///
/// The clone itself writes no files: one checkout, below, writes the tree
/// of whatever ref was asked for, after its size and the free space were
/// checked, so a small pack of huge files cannot fill the disk.
///
/// A local repository is fetched through libgit2's local transport, never
/// "cloned locally": that copies (or hard-links) the source's object folder
/// without a byte passing the transfer callback, so `max_bytes` would not
/// hold, and a hard link would let the agent write into the source's
/// objects. The transport packs what the refs reach and counts each byte
/// it writes, as a network clone's are; before that, [`LocalSource::open`]
/// refuses a source whose object stores already hold more.
pub(crate) fn clone(
    request: &CloneRequest,
    dest: &Path,
    progress: &Arc<CloneProgress>,
    disk: &DiskLimits,
) -> Result<Oid, CloneError> {
    let root = dest.parent().unwrap_or(dest);
    ensure_free(root, 0, disk.min_free_bytes)?;
    let mut builder = RepoBuilder::new();
    builder.fetch_options(fetch_options(request, progress));
    builder.clone_local(CloneLocal::None);
    let mut no_checkout = CheckoutBuilder::new();
    no_checkout.dry_run();
    builder.with_checkout(no_checkout);
    let url = match (&request.local, request.url.is_local()) {
        (Some(source), true) => source.open(request.max_bytes, &progress.cancel)?,
        (None, false) => pinned_url(request)?,
        _ => {
            return Err(CloneError::Other(
                "a local repository's path was not checked".to_owned(),
            ))
        }
    };
    // The egress proxy connects only to origins of clones in progress.
    let _origin = request
        .url
        .is_http()
        .then(|| super::egress::grant(request.url.fetch_url()));
    // Plain http goes through our own transport (see `http_transport`),
    // which finds this clone's settings on this thread, for the clone and
    // for the fetch of a ref below.
    let _http = if url.starts_with("http://") {
        let context = HttpContext::new(
            &url,
            &request.policy,
            request.credentials.clone(),
            request.connect_timeout,
            request.io_timeout,
            request.max_bytes,
        )
        .ok_or_else(|| CloneError::Other("no runtime for an http clone".to_owned()))?;
        Some(http_transport::Scope::enter(context))
    } else {
        None
    };
    let (repo, oid, branch) = match request.depth {
        // libgit2's local transport cannot fetch shallow; a local
        // repository is fetched whole (see `fetch_one`).
        Some(depth) => fetch_one(request, &url, dest, progress, depth)?,
        None => {
            let repo = builder
                .clone(&url, dest)
                .map_err(|e| CloneError::from_git(&e, progress, request.max_bytes))?;
            let (oid, branch) = match &request.git_ref {
                // HEAD already names the default branch; only its files are
                // missing.
                None => {
                    let oid = repo
                        .head()
                        .and_then(|h| h.peel_to_commit())
                        .map(|c| c.id())
                        .map_err(|e| CloneError::Other(e.message().to_owned()))?;
                    (oid, None)
                }
                Some(git_ref) => find_ref(&repo, git_ref, request, progress)?,
            };
            (repo, oid, branch)
        }
    };
    checkout(&repo, oid, root, progress, disk)?;
    if let Some(branch) = branch {
        set_branch(&repo, &branch, oid)?;
    } else if request.git_ref.is_some() {
        repo.set_head_detached(oid)
            .map_err(|e| CloneError::Other(e.message().to_owned()))?;
    }
    // The agent's `git fetch` goes where the user said, not to the pinned
    // address.
    repo.remote_set_url("origin", request.url.fetch_url())
        .map_err(|e| CloneError::Other(e.message().to_owned()))?;
    Ok(oid)
}

/// A shallow clone, as `git clone --depth N --single-branch`: the remote's
/// refs are listed, and only the ref to check out is fetched (the default
/// branch when none is named), so a repository with many branches costs one
/// branch's history. A commit id that is no advertised ref is fetched by id
/// when the server allows it, else with the whole history. A local
/// repository is fetched without depth, which libgit2's local transport
/// does not support; its files are the same.
fn fetch_one(
    request: &CloneRequest,
    url: &str,
    dest: &Path,
    progress: &Arc<CloneProgress>,
    depth: Depth,
) -> Result<(Repository, Oid, Option<String>), CloneError> {
    let git = |e: git2::Error| CloneError::from_git(&e, progress, request.max_bytes);
    let other = |e: git2::Error| CloneError::Other(e.message().to_owned());
    let repo = Repository::init(dest).map_err(other)?;
    let mut remote = repo.remote("origin", url).map_err(other)?;
    let shallow = (!request.url.is_local()).then_some(depth);

    let connection = remote
        .connect_auth(
            git2::Direction::Fetch,
            Some(callbacks(request, progress)),
            proxy_options(request),
        )
        .map_err(git)?;
    let advertised: Vec<(String, Oid)> = connection
        .list()
        .map_err(git)?
        .iter()
        .map(|head| (head.name().to_owned(), head.oid()))
        .collect();
    let default_branch = connection
        .default_branch()
        .ok()
        .and_then(|name| name.as_str().ok().map(str::to_owned));
    drop(connection);
    let wanted = choose(&advertised, default_branch, request.git_ref.as_ref())?;

    let fetch = |remote: &mut git2::Remote<'_>, refspecs: &[String], depth: Option<Depth>| {
        let mut options = fetch_options(request, progress);
        options.depth(depth.map_or(0, Depth::get));
        remote.fetch(refspecs, Some(&mut options), None)
    };
    let (oid, branch) = match wanted {
        Wanted::Branch(name) => {
            fetch(
                &mut remote,
                &[format!("+refs/heads/{name}:refs/remotes/origin/{name}")],
                shallow,
            )
            .map_err(git)?;
            let oid = peel(&repo, &format!("refs/remotes/origin/{name}"))?;
            (oid, Some(name))
        }
        Wanted::Tag(name) => {
            fetch(
                &mut remote,
                &[format!("+refs/tags/{name}:refs/tags/{name}")],
                shallow,
            )
            .map_err(git)?;
            (peel(&repo, &format!("refs/tags/{name}"))?, None)
        }
        Wanted::Commit(id) => {
            // The tip of an advertised ref is fetched through that ref;
            // else by id; a server that refuses ids it did not advertise
            // (git's protocol v0 default) gets the whole history instead.
            let tip = advertised
                .iter()
                .find(|(name, oid)| name.starts_with("refs/") && oid.to_string().starts_with(&id));
            let by_id = match tip {
                Some((name, oid)) => {
                    Some(fetch(&mut remote, &[format!("+{name}:{name}")], shallow).map(|()| *oid))
                }
                None => Oid::from_str(&id)
                    .ok()
                    .filter(|_| id.len() == 40)
                    .map(|oid| fetch(&mut remote, &[oid.to_string()], shallow).map(|()| oid)),
            };
            match by_id {
                Some(Ok(oid)) if repo.find_commit(oid).is_ok() => (oid, None),
                Some(Err(e)) if progress.cancel.load(Ordering::Relaxed) => return Err(git(e)),
                _ => {
                    fetch(
                        &mut remote,
                        &[
                            "+refs/heads/*:refs/remotes/origin/*".to_owned(),
                            "+refs/tags/*:refs/tags/*".to_owned(),
                        ],
                        None,
                    )
                    .map_err(git)?;
                    let commit = repo
                        .revparse_single(&id)
                        .and_then(|o| o.peel_to_commit())
                        .map_err(|_| CloneError::RefNotFound(id.clone()))?;
                    (commit.id(), None)
                }
            }
        }
    };
    drop(remote);
    Ok((repo, oid, branch))
}

/// What a shallow clone fetches.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Branch(String),
    Tag(String),
    Commit(String),
}

/// The ref to fetch, among what the remote advertised: a branch before a
/// tag of the same name, as git does; the default branch when none is
/// named; else a commit id.
fn choose(
    advertised: &[(String, Oid)],
    default_branch: Option<String>,
    git_ref: Option<&GitRef>,
) -> Result<Wanted, CloneError> {
    let has = |name: &str| advertised.iter().any(|(n, _)| n == name);
    let Some(git_ref) = git_ref else {
        let head = default_branch
            .or_else(|| {
                // An old server names no HEAD target: the branch at HEAD's
                // commit, as git guesses it.
                let head = advertised.iter().find(|(n, _)| n == "HEAD")?.1;
                advertised
                    .iter()
                    .find(|(n, oid)| *oid == head && n.starts_with("refs/heads/"))
                    .map(|(n, _)| n.clone())
            })
            .ok_or_else(|| CloneError::RefNotFound("HEAD".to_owned()))?;
        let name = head.strip_prefix("refs/heads/").unwrap_or(&head);
        return Ok(Wanted::Branch(name.to_owned()));
    };
    let name = git_ref.as_str();
    let (branch, tag) = branch_or_tag(name);
    if let Some(branch) = branch.filter(|b| has(&format!("refs/heads/{b}"))) {
        return Ok(Wanted::Branch(branch.to_owned()));
    }
    if let Some(tag) = tag.filter(|t| has(&format!("refs/tags/{t}"))) {
        return Ok(Wanted::Tag(tag.to_owned()));
    }
    if git_ref.looks_like_commit() {
        return Ok(Wanted::Commit(name.to_lowercase()));
    }
    Err(CloneError::RefNotFound(name.to_owned()))
}

/// The commit a fetched ref points at.
fn peel(repo: &Repository, refname: &str) -> Result<Oid, CloneError> {
    repo.find_reference(refname)
        .and_then(|r| r.peel_to_commit())
        .map(|c| c.id())
        .map_err(|_| CloneError::RefNotFound(refname.to_owned()))
}

/// Writes the commit's tree into the work tree (and index), once its size
/// is known to fit the limit and the disk.
fn checkout(
    repo: &Repository,
    oid: Oid,
    root: &Path,
    progress: &Arc<CloneProgress>,
    disk: &DiskLimits,
) -> Result<(), CloneError> {
    let other = |e: git2::Error| CloneError::Other(e.message().to_owned());
    let commit = repo.find_commit(oid).map_err(other)?;
    let tree = commit.tree().map_err(other)?;
    let size = tree_size(repo, &tree, disk.max_checkout_bytes)?;
    // Held until the files are written. Counting others' reservations on
    // top of today's free space is conservative: what they already wrote is
    // counted twice, never zero times.
    let (_reservation, others) = Reservation::take(&disk.reserved, size);
    ensure_free(root, size.saturating_add(others), disk.min_free_bytes)?;
    let mut checkout = CheckoutBuilder::new();
    checkout.force();
    let checkout_progress = progress.clone();
    checkout.progress(move |_, done, total| {
        checkout_progress
            .checkout_done
            .store(done as u64, Ordering::Relaxed);
        checkout_progress
            .checkout_total
            .store(total as u64, Ordering::Relaxed);
    });
    repo.checkout_tree(tree.as_object(), Some(&mut checkout))
        .map_err(|e| CloneError::Disk(e.message().to_owned()))
}

/// The bytes the tree's files take once checked out, read from object
/// headers (nothing is inflated); refuses beyond `max`.
fn tree_size(repo: &Repository, tree: &Tree<'_>, max: u64) -> Result<u64, CloneError> {
    let odb = repo
        .odb()
        .map_err(|e| CloneError::Other(e.message().to_owned()))?;
    let mut total = 0u64;
    let mut failure = None;
    let walked = tree.walk(TreeWalkMode::PreOrder, |_, entry| {
        // Submodules (commits) are not checked out; trees are folders.
        if entry.kind() != Some(ObjectType::Blob) {
            return TreeWalkResult::Ok;
        }
        match odb.read_header(entry.id()) {
            Ok((size, _)) => total = total.saturating_add(size as u64),
            Err(e) => {
                failure = Some(CloneError::Other(e.message().to_owned()));
                return TreeWalkResult::Abort;
            }
        }
        if total > max {
            failure = Some(CloneError::CheckoutTooLarge(max));
            return TreeWalkResult::Abort;
        }
        TreeWalkResult::Ok
    });
    if let Some(failure) = failure {
        return Err(failure);
    }
    walked.map_err(|e| CloneError::Other(e.message().to_owned()))?;
    Ok(total)
}

/// Refuses unless `needed` bytes fit on the filesystem of `path` with
/// `reserve` bytes left over.
fn ensure_free(path: &Path, needed: u64, reserve: u64) -> Result<(), CloneError> {
    let stats = nix::sys::statvfs::statvfs(path)
        .map_err(|e| CloneError::Disk(format!("cannot read the free disk space: {e}")))?;
    #[allow(clippy::useless_conversion)] // the field types differ by platform
    let free = u64::from(stats.blocks_available()).saturating_mul(u64::from(stats.fragment_size()));
    let needed = needed.saturating_add(reserve);
    if free < needed {
        return Err(CloneError::DiskFull { free, needed });
    }
    Ok(())
}

/// The URL libgit2 is given: refused when its host resolves to an address
/// the policy refuses (a name pointing at loopback or the private network).
///
/// An http(s) URL is returned as it is: the egress proxy checks again what
/// it connects to. ssh and git:// cannot go through a proxy, and libgit2
/// would resolve the name again when it connects (DNS rebinding), so their
/// host is replaced by the checked address that accepted a connection
/// first: libgit2 connects to exactly that address.
pub(super) fn pinned_url(request: &CloneRequest) -> Result<String, CloneError> {
    let url = request.url.fetch_url();
    let Some((host, port)) = request.url.endpoint() else {
        return Ok(url.to_owned());
    };
    let addresses: Vec<std::net::IpAddr> = match host {
        HostKind::Ip(ip) => vec![*ip],
        HostKind::Name(name) => std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), *port))
            .map_err(|_| CloneError::Unreachable)?
            .map(|a| a.ip())
            .collect(),
    };
    // Every address is checked, as the proxy does: a name with one refused
    // address is refused, whichever address would have been used.
    if !request.policy.allows_resolved(host, &addresses) {
        return Err(CloneError::Unreachable);
    }
    if request.url.is_http() {
        return Ok(url.to_owned());
    }
    let reachable = addresses
        .iter()
        .find(|ip| {
            let target = std::net::SocketAddr::new(**ip, *port);
            std::net::TcpStream::connect_timeout(&target, request.connect_timeout).is_ok()
        })
        .ok_or(CloneError::Unreachable)?;
    with_host(url, *reachable).ok_or(CloneError::Unreachable)
}

/// `url` with its host replaced by `ip` (user, port and path kept).
fn with_host(url: &str, ip: std::net::IpAddr) -> Option<String> {
    let mut parsed = url::Url::parse(url).ok()?;
    parsed.set_ip_host(ip).ok()?;
    Some(parsed.to_string())
}

/// `scheme://host:port` of a URL, to keep credentials on their own origin.
fn origin(url: &str) -> Option<(String, String, u16)> {
    let url = url::Url::parse(url).ok()?;
    Some((
        url.scheme().to_owned(),
        url.host_str()?.to_owned(),
        url.port_or_known_default()?,
    ))
}

fn fetch_options<'a>(
    request: &'a CloneRequest,
    progress: &'a Arc<CloneProgress>,
) -> FetchOptions<'a> {
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(request, progress));
    if let Some(proxy) = proxy_options(request) {
        options.proxy_options(proxy);
    }
    // A redirect could carry the token to another host.
    options.follow_redirects(RemoteRedirect::None);
    if let Some(depth) = request.depth {
        options.depth(depth.get());
    }
    options
}

/// https connects only through the egress proxy, which connects to the
/// address it checked (see `egress`); plain http has its own transport.
pub(super) fn proxy_options(request: &CloneRequest) -> Option<ProxyOptions<'static>> {
    let https = request.url.fetch_url().starts_with("https://");
    let proxy = super::egress::proxy_url().filter(|_| https)?;
    let mut options = ProxyOptions::new();
    options.url(proxy);
    Some(options)
}

/// Progress, the byte limit, cancelling, and credentials for the URL's own
/// origin only.
pub(super) fn callbacks<'a>(
    request: &'a CloneRequest,
    progress: &'a Arc<CloneProgress>,
) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let transfer = progress.clone();
    let max_bytes = request.max_bytes;
    callbacks.transfer_progress(move |stats| {
        transfer
            .received_objects
            .store(stats.received_objects() as u64, Ordering::Relaxed);
        transfer
            .total_objects
            .store(stats.total_objects() as u64, Ordering::Relaxed);
        transfer
            .indexed_deltas
            .store(stats.indexed_deltas() as u64, Ordering::Relaxed);
        transfer
            .total_deltas
            .store(stats.total_deltas() as u64, Ordering::Relaxed);
        transfer
            .received_bytes
            .store(stats.received_bytes() as u64, Ordering::Relaxed);
        // Returning false aborts the transfer.
        !transfer.cancel.load(Ordering::Relaxed) && (stats.received_bytes() as u64) <= max_bytes
    });
    // libgit2 asks again for as long as the server refuses: answer once.
    let mut asked = false;
    let credentials = request.credentials.clone();
    let home = origin(request.url.fetch_url());
    callbacks.credentials(move |url, username_from_url, allowed| {
        // libgit2 follows a redirect to another port of the same host; the
        // token is for the origin the user named and nowhere else.
        if origin(url) != home {
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Http,
                "the server redirected to another origin",
            ));
        }
        if asked {
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Http,
                "authentication failed",
            ));
        }
        asked = true;
        match &credentials {
            Some(creds) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                let user = creds
                    .username
                    .as_deref()
                    .or(username_from_url)
                    .unwrap_or("x-access-token");
                Cred::userpass_plaintext(user, &creds.token)
            }
            _ => Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Http,
                "authentication required",
            )),
        }
    });
    callbacks
}

/// Finds the ref among what the clone fetched, else fetches it explicitly
/// (a branch other than the default, or a tag beyond a shallow history).
/// Returns the commit and, for a branch, its name.
fn find_ref(
    repo: &Repository,
    git_ref: &GitRef,
    request: &CloneRequest,
    progress: &Arc<CloneProgress>,
) -> Result<(Oid, Option<String>), CloneError> {
    let name = git_ref.as_str();
    let mut target = resolve(repo, git_ref);
    if target.is_none() {
        let mut remote = repo
            .find_remote("origin")
            .map_err(|e| CloneError::Other(e.message().to_owned()))?;
        let (branch, tag) = branch_or_tag(name);
        let refspecs = [
            branch.map(|b| format!("+refs/heads/{b}:refs/remotes/origin/{b}")),
            tag.map(|t| format!("+refs/tags/{t}:refs/tags/{t}")),
        ];
        for refspec in refspecs.iter().flatten() {
            let mut options = fetch_options(request, progress);
            match remote.fetch(&[refspec.as_str()], Some(&mut options), None) {
                Ok(()) => {}
                Err(e) if progress.cancel.load(Ordering::Relaxed) => {
                    return Err(CloneError::from_git(&e, progress, request.max_bytes))
                }
                // A refspec naming nothing is how "not this kind of ref" shows.
                Err(_) => continue,
            }
            target = resolve(repo, git_ref);
            if target.is_some() {
                break;
            }
        }
    }
    let Some((oid, branch)) = target else {
        return Err(CloneError::RefNotFound(name.to_owned()));
    };
    repo.find_commit(oid)
        .map_err(|_| CloneError::RefNotFound(name.to_owned()))?;
    Ok((oid, branch))
}

/// Points HEAD at a local branch of that name on `oid`, as `git clone -b`
/// does. The default branch already exists (and is HEAD, which libgit2
/// refuses to force-update): it is reused.
fn set_branch(repo: &Repository, branch: &str, oid: Oid) -> Result<(), CloneError> {
    let other = |e: git2::Error| CloneError::Other(e.message().to_owned());
    let mut reference = match repo.find_branch(branch, BranchType::Local) {
        Ok(existing) => existing.into_reference(),
        Err(_) => {
            let commit = repo.find_commit(oid).map_err(other)?;
            repo.branch(branch, &commit, false)
                .map_err(other)?
                .into_reference()
        }
    };
    if reference.target() != Some(oid) {
        reference = reference
            .set_target(oid, "clone: the requested branch")
            .map_err(other)?;
    }
    let refname = reference
        .name()
        .map(str::to_owned)
        .map_err(|_| CloneError::Other("branch name is not UTF-8".into()))?;
    repo.set_head(&refname).map_err(other)
}

/// The branch and the tag a ref may name: `refs/heads/x` only the branch
/// `x`, `refs/tags/x` only the tag, a bare `x` either (the branch first, as
/// git does).
fn branch_or_tag(name: &str) -> (Option<&str>, Option<&str>) {
    if let Some(branch) = name.strip_prefix("refs/heads/") {
        (Some(branch), None)
    } else if let Some(tag) = name.strip_prefix("refs/tags/") {
        (None, Some(tag))
    } else {
        (Some(name), Some(name))
    }
}

/// (commit, branch name if it is a branch)
fn resolve(repo: &Repository, git_ref: &GitRef) -> Option<(Oid, Option<String>)> {
    let name = git_ref.as_str();
    let (branch, tag) = branch_or_tag(name);
    let peel = |refname: &str| {
        repo.find_reference(refname)
            .ok()
            .and_then(|r| r.peel_to_commit().ok())
            .map(|c| c.id())
    };
    if let Some(branch) = branch {
        if let Some(oid) = peel(&format!("refs/remotes/origin/{branch}")) {
            return Some((oid, Some(branch.to_owned())));
        }
    }
    if let Some(tag) = tag {
        if let Some(oid) = peel(&format!("refs/tags/{tag}")) {
            return Some((oid, None));
        }
    }
    if git_ref.looks_like_commit() {
        if let Ok(object) = repo.revparse_single(name) {
            if let Ok(commit) = object.peel_to_commit() {
                return Some((commit.id(), None));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A repository with one commit of one `size`-byte file; returns it and
    /// the commit.
    fn repo_with_file(dir: &Path, size: usize) -> (Repository, Oid) {
        let repo = Repository::init(dir).unwrap();
        std::fs::write(dir.join("file"), vec![b'x'; size]).unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("file")).unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = git2::Signature::now("t", "t@example.invalid").unwrap();
        let oid = repo
            .commit(None, &signature, &signature, "one", &tree, &[])
            .unwrap();
        drop(tree);
        std::fs::remove_file(dir.join("file")).unwrap();
        (repo, oid)
    }

    #[test]
    fn a_local_clone_is_fetched_and_counted_not_copied() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let (repo, oid) = repo_with_file(&source, 100_000);
        repo.reference("refs/heads/main", oid, true, "main")
            .unwrap();
        repo.set_head("refs/heads/main").unwrap();
        let root = dir.path().join("workspaces");
        std::fs::create_dir_all(&root).unwrap();
        let forbidden = super::super::ForbiddenPaths::new(&root, &[]);
        let request = CloneRequest {
            url: RepoUrl::parse(&source.display().to_string(), true, &ClonePolicy::default())
                .unwrap(),
            git_ref: None,
            depth: None,
            credentials: None,
            local: Some(LocalSource::check(&source, forbidden).unwrap()),
            max_bytes: 1_000_000,
            policy: ClonePolicy::default(),
            connect_timeout: std::time::Duration::from_secs(1),
            io_timeout: std::time::Duration::from_secs(1),
        };
        let progress = Arc::new(CloneProgress::default());
        let dest = root.join("session/repo");
        std::fs::create_dir_all(root.join("session")).unwrap();

        let cloned = clone(&request, &dest, &progress, &limits(0)).unwrap();

        assert_eq!(cloned, oid);
        // Every byte passed the callback that applies the limit.
        assert!(
            progress.counts().received_bytes > 0,
            "{:?}",
            progress.counts()
        );
        let mut folders = vec![dest.join(".git/objects")];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(folder).unwrap() {
                let meta = entry.as_ref().unwrap().metadata().unwrap();
                if meta.is_dir() {
                    folders.push(entry.unwrap().path());
                } else {
                    assert_eq!(meta.nlink(), 1, "a file linked to the source's");
                }
            }
        }
    }

    #[test]
    fn a_pinned_url_keeps_everything_but_the_host() {
        let v4: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let v6: std::net::IpAddr = "::1".parse().unwrap();
        assert_eq!(
            with_host("ssh://git@example.com:2222/team/repo.git", v4).unwrap(),
            "ssh://git@127.0.0.1:2222/team/repo.git"
        );
        assert_eq!(
            with_host("git://example.com/repo.git", v6).unwrap(),
            "git://[::1]/repo.git"
        );
    }

    fn limits(reserved: u64) -> DiskLimits {
        DiskLimits {
            max_checkout_bytes: 1_000_000,
            min_free_bytes: 0,
            reserved: Arc::new(AtomicU64::new(reserved)),
        }
    }

    #[test]
    fn a_checkout_counts_the_space_other_checkouts_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, oid) = repo_with_file(dir.path(), 1000);
        let progress = Arc::new(CloneProgress::default());
        // Others about to write more than any disk holds.
        let full = limits(u64::MAX / 2);

        let refused = checkout(&repo, oid, dir.path(), &progress, &full);

        assert!(
            matches!(refused, Err(CloneError::DiskFull { .. })),
            "{refused:?}"
        );
        assert!(!dir.path().join("file").exists(), "nothing written");
        assert_eq!(full.reserved.load(Ordering::SeqCst), u64::MAX / 2);
        let free = limits(0);
        checkout(&repo, oid, dir.path(), &progress, &free).unwrap();
        assert_eq!(std::fs::read(dir.path().join("file")).unwrap().len(), 1000);
        assert_eq!(free.reserved.load(Ordering::SeqCst), 0, "given back");
    }

    #[test]
    fn a_checkout_over_the_limit_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, oid) = repo_with_file(dir.path(), 1_000_001);
        let progress = Arc::new(CloneProgress::default());

        let refused = checkout(&repo, oid, dir.path(), &progress, &limits(0));

        assert!(
            matches!(refused, Err(CloneError::CheckoutTooLarge(1_000_000))),
            "{refused:?}"
        );
        assert!(!dir.path().join("file").exists(), "nothing written");
    }
}
