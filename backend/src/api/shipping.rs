//! Getting the agent's work out: patches to download, the workspace's git
//! state, commits, pushes to the session's origin, and pull requests on
//! the forge that hosts it.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use poem::Body;
use poem_openapi::param::Path;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, OpenApi};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::models::{
    CommitCreated, CreateCommit, CreatePullRequest, GitState, PullRequest, PushBranch, Pushed,
    WorkspaceCommit,
};
use super::ApiTags;
use crate::auth::{Caller, Principal};
use crate::domain::{BranchName, CommitMessage, RepoUrl};
use crate::engine::{CommitIntent, Engine, WorkspaceRefused};
use crate::git::{self, CloneError, CloneRequest, Credentials, KeptToken, PatchError, PushError};
use crate::http_error::{ApiError, ApiResult};
use crate::store::SessionRow;

pub struct ShippingApi {
    pub engine: Arc<Engine>,
    /// Bounds git work in progress (`BACKEND_MAX_CONCURRENT_DIFFS`, shared
    /// with the diff): each holds a blocking thread.
    pub gate: Arc<Semaphore>,
}

#[derive(ApiResponse)]
enum PatchDownload {
    /// A patch `git apply` takes (`git diff --binary --full-index`
    /// format, renames found), streamed; empty when nothing changed.
    #[oai(status = 200, content_type = "text/x-diff")]
    Ok(
        Binary<Body>,
        /// `attachment; filename="…patch"`
        #[oai(header = "Content-Disposition")]
        String,
    ),
}

#[derive(ApiResponse)]
enum CommitMade {
    /// The commit was made, and its branch is the workspace's HEAD.
    #[oai(status = 201)]
    Created(Json<CommitCreated>),
}

#[derive(ApiResponse)]
enum PullRequestOpened {
    /// The forge opened it.
    #[oai(status = 201)]
    Created(Json<PullRequest>),
}

/// Bytes of patch gathered before they are sent on.
const PATCH_CHUNK: usize = 64 * 1024;
/// Chunks waiting for a slow client: the patch is made as fast as it is
/// read, never all in memory.
const PATCH_CHUNKS_AHEAD: usize = 4;
/// Longest pull request title and body.
const MAX_TITLE_CHARS: usize = 1000;
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A file name made of the characters every browser keeps.
fn file_name(stem: &str) -> String {
    let safe: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("attachment; filename=\"{safe}.patch\"")
}

/// The credentials of a token given in a request (none for an empty one).
fn token_of(raw: Option<&str>) -> Option<Credentials> {
    raw.filter(|t| !t.is_empty()).map(|token| Credentials {
        username: None,
        token: token.to_owned(),
    })
}

fn git_error(error: git2::Error) -> ApiError {
    match git::refusal(&error) {
        Some(why) => ApiError::conflict(why.to_owned()),
        None => ApiError::internal(&error),
    }
}

impl ShippingApi {
    /// `gate`: the API's one gate of blocking git work, shared with the
    /// diff.
    pub(crate) fn new(engine: Arc<Engine>, gate: Arc<Semaphore>) -> Self {
        Self { engine, gate }
    }

    /// The session the caller may see, ready, with its canonical workspace.
    async fn ready(&self, raw: &str, caller: &Principal) -> ApiResult<(SessionRow, PathBuf)> {
        super::access::ready_workspace(self.engine.reads(), raw, caller).await
    }

    /// Refuses while a run may change the workspace under a commit or push.
    async fn idle(&self, session: &SessionRow) -> ApiResult<()> {
        if self.engine.reads().session_busy(session.id).await? {
            return Err(ApiError::conflict(format!(
                "a run of session {} is queued or running: try again once it has ended",
                session.id
            )));
        }
        Ok(())
    }

    /// A git failure, or the 404 of a session deleted while the work ran
    /// (its folder went from under libgit2).
    async fn git_failure(&self, session: uuid::Uuid, error: git2::Error) -> ApiError {
        match self.engine.reads().session(session).await {
            Ok(None) => ApiError::not_found(format!("session {session} was deleted")),
            _ => git_error(error),
        }
    }

    async fn permit(&self) -> ApiResult<OwnedSemaphorePermit> {
        // Waiting costs a parked task, not a blocking thread.
        self.gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::internal(&e))
    }

    /// Streams what `make` writes; an error before its first byte is the
    /// response's status, one after it cuts the download short (and is
    /// logged).
    async fn stream_patch<F>(
        &self,
        session: uuid::Uuid,
        name: String,
        make: F,
    ) -> ApiResult<PatchDownload>
    where
        F: FnOnce(git::Sink<'_>) -> Result<(), PatchError> + Send + 'static,
    {
        let permit = self.permit().await?;
        let (tx, mut rx) = mpsc::channel::<Result<Bytes, PatchError>>(PATCH_CHUNKS_AHEAD);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _entered = span.enter();
            let mut buffer = Vec::with_capacity(PATCH_CHUNK);
            let mut open = true;
            let made = make(&mut |piece: &[u8]| {
                buffer.extend_from_slice(piece);
                if buffer.len() >= PATCH_CHUNK {
                    let chunk = Bytes::from(std::mem::take(&mut buffer));
                    // A client that went away stops the patch.
                    open = tx.blocking_send(Ok(chunk)).is_ok();
                }
                open
            });
            let last = match made {
                Ok(()) if buffer.is_empty() => return,
                Ok(()) => Ok(Bytes::from(buffer)),
                Err(error) => Err(error),
            };
            if open {
                // Fails only when the client went away: nothing to tell.
                drop(tx.blocking_send(last));
            }
        });
        let first = match rx.recv().await {
            None => Bytes::new(),
            Some(Ok(chunk)) => chunk,
            Some(Err(PatchError::Missing(what))) => {
                return Err(ApiError::conflict(format!(
                    "{what} is no longer in the workspace's repository: the patch cannot be made"
                )))
            }
            Some(Err(PatchError::Git(error))) => {
                return Err(self.git_failure(session, error).await)
            }
        };
        let rest = async_stream::stream! {
            yield Ok::<Bytes, std::io::Error>(first);
            while let Some(chunk) = rx.recv().await {
                match chunk {
                    Ok(chunk) => yield Ok(chunk),
                    Err(error) => {
                        tracing::error!(%error, "the patch failed part way; the download is cut short");
                        yield Err(std::io::Error::other("the patch failed part way"));
                        break;
                    }
                }
            }
        };
        Ok(PatchDownload::Ok(
            Binary(Body::from_bytes_stream(rest)),
            file_name(&name),
        ))
    }

    /// The credentials of a push: the request's token, else the session's
    /// kept one, else none.
    async fn credentials(
        &self,
        session: &SessionRow,
        given: Option<&str>,
    ) -> ApiResult<Option<Credentials>> {
        if let Some(given) = token_of(given) {
            return Ok(Some(given));
        }
        let Some(sealed) = self.engine.reads().session_token(session.id).await? else {
            return Ok(None);
        };
        let Some(sealer) = self.engine.config().sealer.as_ref() else {
            tracing::warn!("the session kept a token, and BACKEND_SECRET_KEY is unset");
            return Err(ApiError::invalid(
                "the session's kept token cannot be opened: the server's BACKEND_SECRET_KEY is unset; give a token",
            ));
        };
        let opened = sealer
            .open(session.id, &sealed)
            .ok()
            .and_then(|bytes| KeptToken::from_bytes(&bytes));
        match opened {
            Some(credentials) => Ok(Some(credentials)),
            None => {
                tracing::warn!("the session's kept token does not open with BACKEND_SECRET_KEY");
                Err(ApiError::invalid(
                    "the session's kept token cannot be opened (BACKEND_SECRET_KEY changed); give a token",
                ))
            }
        }
    }

    /// Pushes `branch` to `remote_branch` of the session's origin.
    async fn push_branch(
        &self,
        session: &SessionRow,
        dir: PathBuf,
        branch: BranchName,
        remote_branch: BranchName,
        to_default_branch: bool,
        credentials: Option<Credentials>,
    ) -> Result<git::Pushed, WorkspaceRefused<PushError>> {
        let config = self.engine.config();
        let url = RepoUrl::parse(
            &session.repo_url,
            config.allow_local_repos,
            &config.clone_policy,
        )
        .map_err(|e| WorkspaceRefused::Git(PushError::Remote(CloneError::Other(e.to_string()))))?;
        let local =
            self.engine.local_source(&url).await.map_err(|_| {
                WorkspaceRefused::Git(PushError::Remote(CloneError::ForbiddenSource))
            })?;
        let request = git::PushRequest {
            remote: CloneRequest {
                url,
                git_ref: None,
                depth: None,
                credentials,
                local,
                max_bytes: config.limits.max_clone_bytes,
                policy: config.clone_policy.clone(),
                connect_timeout: config.limits.clone_connect_timeout,
                io_timeout: config.limits.clone_io_timeout,
            },
            branch,
            remote_branch,
            to_default_branch,
        };
        let permit = self.permit().await.map_err(|_| {
            WorkspaceRefused::Git(PushError::Remote(CloneError::Other("shutting down".into())))
        })?;
        self.engine.push(session, dir, request, permit).await
    }

    /// The branch HEAD names, for a push or pull request that names none.
    async fn head_branch(
        &self,
        session: &SessionRow,
        dir: &std::path::Path,
    ) -> ApiResult<BranchName> {
        let state = self.git_state(session, dir.to_path_buf()).await?;
        let branch = state.branch.ok_or_else(|| {
            ApiError::conflict(
                "HEAD is detached: commit first (which makes a branch), or name a branch",
            )
        })?;
        BranchName::parse(&branch).map_err(|e| ApiError::conflict(e.to_string()))
    }

    async fn git_state(&self, session: &SessionRow, dir: PathBuf) -> ApiResult<git::GitState> {
        let git = self.engine.reads().workspace_git(session.id, dir);
        let base = session.base_commit.clone();
        // The permit goes with the blocking work: a client that leaves does
        // not free its place while the work goes on.
        let permit = self.permit().await?;
        let state = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            git.state(base.as_deref(), 100)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
        match state {
            Ok(state) => Ok(state),
            Err(error) => Err(self.git_failure(session.id, error).await),
        }
    }
}

/// A commit or push the engine refused before git had a say, or whose
/// task failed.
fn refused<E: std::error::Error + 'static>(error: WorkspaceRefused<E>) -> ApiError {
    match error {
        WorkspaceRefused::Busy(_) | WorkspaceRefused::InUse(_) => {
            ApiError::conflict(error.to_string())
        }
        WorkspaceRefused::Store(error) => ApiError::from(error),
        WorkspaceRefused::Task(error) => ApiError::internal(&error),
        WorkspaceRefused::Git(error) => ApiError::internal(&error),
    }
}

fn push_error(error: PushError) -> ApiError {
    match error {
        PushError::NoSuchBranch(_) | PushError::CredentialsRefused => {
            ApiError::invalid(error.to_string())
        }
        PushError::DefaultBranch(_) | PushError::Rejected(_) | PushError::Rewritten => {
            ApiError::conflict(error.to_string())
        }
        PushError::Remote(CloneError::Other(_) | CloneError::Disk(_)) => {
            tracing::error!(%error, "the push failed");
            ApiError::invalid("the push failed; the server's log says why")
        }
        PushError::Remote(remote) => ApiError::invalid(format!("the push failed: {remote}")),
        PushError::Git(error) => git_error(error),
    }
}

fn parse_branch(raw: Option<&str>, what: &str) -> ApiResult<Option<BranchName>> {
    raw.map(|raw| BranchName::parse(raw).map_err(|e| ApiError::invalid(format!("{what}: {e}"))))
        .transpose()
}

#[OpenApi(tag = "ApiTags::Git")]
impl ShippingApi {
    /// Download the workspace's patch
    ///
    /// Everything the workspace holds that the session's base commit does
    /// not: commits on top of it (the agent's too) and uncommitted, new,
    /// deleted, renamed, binary and mode-changed files; ignored files are
    /// left out. Apply it to a clone of the base commit with `git apply`.
    #[oai(
        path = "/api/sessions/:session_id/patch",
        method = "get",
        operation_id = "get_session_patch"
    )]
    async fn session_patch(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
    ) -> ApiResult<PatchDownload> {
        let (session, dir) = self.ready(&session_id, &caller).await?;
        let base = session
            .base_commit
            .clone()
            .ok_or_else(|| ApiError::conflict("the session has no base commit"))?;
        let git = self.engine.reads().workspace_git(session.id, dir);
        let name = format!(
            "{}-{}",
            session
                .repo_url
                .trim_end_matches('/')
                .rsplit(['/', ':'])
                .next()
                .unwrap_or("workspace")
                .trim_end_matches(".git"),
            &session.id.simple().to_string()[..8]
        );
        self.stream_patch(session.id, name, move |sink| git.patch(&base, sink))
            .await
    }

    /// Download what one run changed
    ///
    /// The workspace as the run ended against the workspace as it began,
    /// both recorded by the backend: it applies to the state before the
    /// run. 409 for a run that has not ended, or whose snapshots are gone
    /// (a run from before snapshots, or a `.git` the agent rewrote).
    #[oai(
        path = "/api/runs/:run_id/patch",
        method = "get",
        operation_id = "get_run_patch"
    )]
    async fn run_patch(
        &self,
        Caller(caller): Caller,
        run_id: Path<String>,
    ) -> ApiResult<PatchDownload> {
        let run = super::access::run(self.engine.reads(), &run_id, &caller).await?;
        let id = run.id;
        let not_found = || ApiError::not_found(format!("run {id} does not exist"));
        let (session, dir) = match self.ready(&run.session_id.to_string(), &caller).await {
            Err(ApiError::NotFound(_)) => return Err(not_found()),
            other => other?,
        };
        let (Some(before), Some(after)) = (run.snapshot_before, run.snapshot_after) else {
            return Err(ApiError::conflict(format!(
                "run {id} is {} and has no recorded snapshots before and after it: it has no patch",
                run.status
            )));
        };
        let name = format!("run-{}", &id.simple().to_string()[..8]);
        self.stream_patch(session.id, name, move |sink| {
            git::snapshots_patch(&dir, &before, &after, sink)
        })
        .await
    }

    /// The workspace's git state
    ///
    /// The branch, HEAD, the commits on top of the base (the agent's too),
    /// the files not committed, and the pull requests opened.
    #[oai(
        path = "/api/sessions/:session_id/git",
        method = "get",
        operation_id = "get_git_state"
    )]
    async fn state(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
    ) -> ApiResult<Json<GitState>> {
        let (session, dir) = self.ready(&session_id, &caller).await?;
        let state = self.git_state(&session, dir).await?;
        let pull_requests = self.engine.reads().pull_requests(session.id).await?;
        Ok(Json(GitState {
            branch: state.branch,
            head: state.head,
            base_commit: session.base_commit,
            cloned_branch: session.cloned_branch,
            ahead: state.ahead,
            dirty: state.dirty,
            commits: state
                .commits
                .into_iter()
                .map(|c| WorkspaceCommit {
                    sha: c.sha,
                    subject: c.subject,
                    author_name: c.author_name,
                    author_email: c.author_email,
                    time: chrono::DateTime::from_timestamp(c.time, 0).unwrap_or_default(),
                })
                .collect(),
            commits_truncated: state.commits_truncated,
            pull_requests: pull_requests.into_iter().map(Into::into).collect(),
        }))
    }

    /// Commit every change in the workspace
    ///
    /// As `git add -A && git commit`, onto `branch` (made from HEAD when
    /// new, `repo-runner/<first 8 of the session id>` by default), which
    /// becomes HEAD. The author is the caller, with the email an admin set
    /// (`backend admin user email`) or `name@BACKEND_COMMIT_EMAIL_DOMAIN`.
    /// 409 while a run is queued or running, or for the branch the session
    /// was cloned from; 422 for an empty message or nothing to commit.
    #[oai(
        path = "/api/sessions/:session_id/commits",
        method = "post",
        operation_id = "create_commit"
    )]
    async fn commit(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
        body: Json<CreateCommit>,
    ) -> ApiResult<CommitMade> {
        let message =
            CommitMessage::parse(&body.message).map_err(|e| ApiError::invalid(e.to_string()))?;
        let (session, dir) = self.ready(&session_id, &caller).await?;
        let branch = match parse_branch(body.branch.as_deref(), "branch")? {
            Some(branch) => branch,
            None => BranchName::parse(&format!(
                "repo-runner/{}",
                &session.id.simple().to_string()[..8]
            ))
            .map_err(|e| ApiError::internal(&e))?,
        };
        self.idle(&session).await?;
        let domain = &self.engine.config().commit_email_domain;
        let (name, email) = match &caller.user {
            Some(user) => (
                user.name.clone(),
                user.email
                    .clone()
                    .unwrap_or_else(|| format!("{}@{domain}", user.name)),
            ),
            None => ("repo-runner".to_owned(), format!("anonymous@{domain}")),
        };
        let permit = self.permit().await?;
        let intent = CommitIntent {
            message,
            branch,
            author_name: name,
            author_email: email,
        };
        let made = self.engine.commit(&session, dir, intent, permit).await;
        let committed = match made {
            Ok(committed) => committed,
            Err(WorkspaceRefused::Git(error @ git::CommitError::NothingToCommit)) => {
                return Err(ApiError::invalid(error.to_string()))
            }
            Err(WorkspaceRefused::Git(
                error @ (git::CommitError::ClonedBranch(_)
                | git::CommitError::BranchElsewhere(_)
                | git::CommitError::BranchClash(_)
                | git::CommitError::NoHead),
            )) => return Err(ApiError::conflict(error.to_string())),
            Err(WorkspaceRefused::Git(git::CommitError::Git(error))) => {
                return Err(self.git_failure(session.id, error).await)
            }
            Err(other) => return Err(refused(other)),
        };
        tracing::info!(sha = %committed.sha, branch = %committed.branch, "committed");
        Ok(CommitMade::Created(Json(CommitCreated {
            sha: committed.sha,
            branch: committed.branch,
        })))
    }

    /// Push a branch to the session's origin
    ///
    /// To the URL the session was cloned from, never the workspace's own
    /// remotes, through the same checks as a clone. Never forced. 409 for
    /// the origin's default branch without `to_default_branch`, a rejected
    /// push (non-fast-forward, with git's reason) or while a run is queued
    /// or running; 422 when the origin refused the credentials.
    #[oai(
        path = "/api/sessions/:session_id/push",
        method = "post",
        operation_id = "push_branch"
    )]
    async fn push(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
        body: Json<PushBranch>,
    ) -> ApiResult<Json<Pushed>> {
        let branch = parse_branch(body.branch.as_deref(), "branch")?;
        let remote_branch = parse_branch(body.remote_branch.as_deref(), "remote_branch")?;
        let (session, dir) = self.ready(&session_id, &caller).await?;
        self.idle(&session).await?;
        let branch = match branch {
            Some(branch) => branch,
            None => self.head_branch(&session, &dir).await?,
        };
        let remote_branch = remote_branch.unwrap_or_else(|| branch.clone());
        let credentials = self.credentials(&session, body.token.as_deref()).await?;
        let pushed = self
            .push_branch(
                &session,
                dir,
                branch,
                remote_branch,
                body.to_default_branch.unwrap_or(false),
                credentials,
            )
            .await
            .map_err(|error| match error {
                WorkspaceRefused::Git(error) => push_error(error),
                other => refused(other),
            })?;
        tracing::info!(remote_branch = %pushed.remote_branch, sha = %pushed.sha, "pushed");
        Ok(Json(Pushed {
            remote_branch: pushed.remote_branch,
            sha: pushed.sha,
        }))
    }

    /// Open a pull request on the origin's forge
    ///
    /// Pushes the branch HEAD names (to the same name on the origin), then
    /// opens a pull request (GitHub, Gitea, Forgejo) or merge request
    /// (GitLab) from it into `base` (the origin's default branch when
    /// absent). The forge is known for github.com, gitlab.com and
    /// codeberg.org, and from `FORGES` for other hosts. 422 with the
    /// forge's own message when it refuses.
    #[oai(
        path = "/api/sessions/:session_id/pull-requests",
        method = "post",
        operation_id = "create_pull_request"
    )]
    async fn pull_request(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
        body: Json<CreatePullRequest>,
    ) -> ApiResult<PullRequestOpened> {
        let title = body.title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            return Err(ApiError::invalid(format!(
                "title must be 1 to {MAX_TITLE_CHARS} characters"
            )));
        }
        let text = body.body.as_deref().unwrap_or_default();
        if text.len() > MAX_BODY_BYTES {
            return Err(ApiError::invalid(format!(
                "body is {} bytes; the limit is {MAX_BODY_BYTES}",
                text.len()
            )));
        }
        let base = parse_branch(body.base.as_deref(), "base")?;
        let (session, dir) = self.ready(&session_id, &caller).await?;
        let forge = self
            .engine
            .forges()
            .for_origin(&session.repo_url)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        self.idle(&session).await?;
        let head = self.head_branch(&session, &dir).await?;
        if base.as_ref() == Some(&head) {
            return Err(ApiError::invalid(format!(
                "the pull request's head and base are both {head}: commit onto a branch of its own first"
            )));
        }
        let credentials = self
            .credentials(&session, body.token.as_deref())
            .await?
            .ok_or_else(|| {
                ApiError::invalid(
                    "a pull request needs a token: give one, or create the session with keep_token",
                )
            })?;
        let token = credentials.token.clone();
        let pushed = self
            .push_branch(&session, dir, head.clone(), head.clone(), false, Some(credentials))
            .await
            .map_err(|error| match error {
                WorkspaceRefused::Git(PushError::DefaultBranch(_)) => ApiError::invalid(format!(
                    "{head} is the repository's default branch: commit onto a branch of its own first"
                )),
                WorkspaceRefused::Git(other) => push_error(other),
                other => refused(other),
            })?;
        let base = match base {
            Some(base) => base.to_string(),
            None => pushed.default_branch.clone().ok_or_else(|| {
                ApiError::invalid("the origin names no default branch: give a base")
            })?,
        };
        if base == head.as_str() {
            return Err(ApiError::invalid(format!(
                "the pull request's head and base are both {head}: commit onto a branch of its own first"
            )));
        }
        let request = crate::forge::PullRequest {
            title: title.to_owned(),
            body: body.body.as_ref().map(|b| b.0.clone()),
            head: head.to_string(),
            base: base.clone(),
            draft: body.draft.unwrap_or(false),
        };
        let client = self
            .engine
            .forge_client()
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let opened = forge
            .open_pull_request(client, &request, &token)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "the forge did not open the pull request");
                match error {
                    crate::forge::ForgeError::Unavailable(_) => {
                        ApiError::unavailable(error.to_string())
                    }
                    other => ApiError::invalid(other.to_string()),
                }
            })?;
        let number = i64::try_from(opened.number).unwrap_or(i64::MAX);
        self.engine
            .record_pull_request(session.id, number, &opened.url, head.as_str(), &base)
            .await?;
        tracing::info!(number, url = %opened.url, "pull request opened");
        Ok(PullRequestOpened::Created(Json(PullRequest {
            number: opened.number,
            url: opened.url,
            head: head.to_string(),
            base,
            created_at: chrono::Utc::now(),
        })))
    }
}
