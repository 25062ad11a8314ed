//! The backend's configuration, read once from the environment.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Serialized};
use figment::Figment;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `AUTH_MODE`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request needs a token or the sign-in cookie.
    Token,
    /// No authentication: everyone is the anonymous principal.
    None,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Token => "token",
            AuthMode::None => "none",
        }
    }
}

/// A sustained rate and a burst; `per_second == 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// `BACKEND_TRUSTED_PROXIES`: addresses and networks, comma-separated.
pub(crate) fn parse_networks(raw: &str) -> Result<Vec<IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{s}` is neither an IP address nor a network (a.b.c.d/n)"))
        })
        .collect()
}

#[derive(Clone)]
pub struct Config {
    /// `BACKEND_ADDR`
    pub addr: String,
    /// `DATABASE_URL` (may hold a password: never logged).
    pub database_url: String,
    /// `DATABASE_POOL_SIZE`
    pub pool_size: usize,
    /// `RUNNER_URL`: an http(s) URL; paths are added to it segment by
    /// segment, percent-encoded (`RunnerClient`).
    pub runner_url: url::Url,
    /// `RUNNER_TOKEN`: sent to the runner as `Authorization: Bearer`
    /// (never logged).
    pub runner_token: Option<String>,
    /// `WORKSPACES_ROOT`: shared with the runner.
    pub workspaces_root: PathBuf,
    /// `ALLOW_LOCAL_REPOS`: allow `file://` and local paths as `repo_url`.
    pub allow_local_repos: bool,
    /// `BACKEND_FORBIDDEN_CLONE_PATHS`: folders a local clone may not read,
    /// besides `WORKSPACES_ROOT` (always): the runner's Codex homes, the
    /// service's data.
    pub forbidden_clone_paths: Vec<PathBuf>,
    /// `ALLOW_PRIVATE_CLONE_HOSTS` and `ALLOWED_CLONE_HOSTS`: which hosts a
    /// clone may reach (public addresses only, by default).
    pub clone_policy: crate::domain::ClonePolicy,
    /// `CORS_ORIGINS`: comma-separated origins allowed to call the API from
    /// a browser; empty allows none (same-origin only), `*` allows any
    /// (without credentials). The page's own origin is always allowed.
    pub cors_origins: Vec<String>,
    /// `AUTH_MODE`: `token` (the default) or `none`.
    pub auth_mode: AuthMode,
    /// `AUTH_MODE_NONE_ON_PUBLIC=yes`: `AUTH_MODE=none` on an address that
    /// is not loopback, knowingly.
    pub auth_none_on_public: bool,
    /// `BACKEND_SIGNIN_TTL_HOURS`: how long a browser's sign-in lasts.
    pub signin_ttl: Duration,
    /// `BACKEND_PREVIEW_GRANT_TTL_SECS`: how long a preview grant (the
    /// Preview tab's credential for one session's files) lasts.
    pub preview_grant_ttl: Duration,
    /// `BACKEND_COOKIE_SECURE`: mark the sign-in cookie `Secure` always
    /// (`true`), never (`false`), or when the request came over TLS, as
    /// `X-Forwarded-Proto: https` says (`auto`, the default).
    pub cookie_secure: CookieSecure,
    /// `BACKEND_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` names the
    /// client, for the per-address rate limit.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `BACKEND_METRICS_TOKEN`: the bearer token `/metrics` needs (never
    /// logged); unset, `/metrics` is off.
    pub metrics_token: Option<String>,
    /// `BACKEND_SECRET_KEY` (at least 32 characters): seals the tokens of
    /// sessions created with `keep_token`; unset, `keep_token` is refused.
    pub sealer: Option<crate::auth::sealed::Sealer>,
    /// `FORGES`: hosts beyond github.com, gitlab.com and codeberg.org whose
    /// pull requests the backend can open, `host[:port]=kind:api_base`,
    /// comma-separated.
    pub forges: crate::forge::Forges,
    /// `BACKEND_COMMIT_EMAIL_DOMAIN`: a user without an email set by
    /// `backend admin user email` authors commits as `name@<this>`.
    pub commit_email_domain: String,
    pub limits: Limits,
}

/// `BACKEND_COOKIE_SECURE`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CookieSecure {
    Auto,
    True,
    False,
}

/// Bounds of every buffer, queue and request of the backend.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `BACKEND_MAX_PROMPT_CHARS`
    pub max_prompt_chars: usize,
    /// `BACKEND_MAX_QUEUED_RUNS`: queued runs per session; more answer 409.
    pub max_queued_runs: i64,
    /// `BACKEND_MAX_BODY_BYTES`
    pub max_body_bytes: usize,
    /// `BACKEND_MAX_FILE_BYTES`: largest file `GET /files/{path}` returns.
    pub max_file_bytes: u64,
    /// `BACKEND_MAX_DIFF_BYTES`: a longer diff is cut and flagged.
    pub max_diff_bytes: usize,
    /// `BACKEND_MAX_TREE_ENTRIES`: a larger tree is cut and flagged.
    pub max_tree_entries: usize,
    /// `BACKEND_MAX_CONCURRENT_DIFFS`: diffs computed at once; more wait.
    pub max_concurrent_diffs: usize,
    /// `BACKEND_MAX_EVENTS_PER_RUN`: events of an active run kept in memory
    /// (its live tail); stored ones make room for new ones.
    pub max_events_per_run: usize,
    /// `BACKEND_LIVE_TAIL_BYTES`: the data bytes of those events.
    pub live_tail_bytes: usize,
    /// `BACKEND_MAX_CLONE_BYTES`: a clone that receives more is stopped.
    pub max_clone_bytes: u64,
    /// `BACKEND_CLONE_TIMEOUT_SECS`: a clone still running after this is
    /// stopped and fails.
    pub clone_timeout: Duration,
    /// `BACKEND_CLONE_CONNECT_TIMEOUT_SECS`: a clone's connection attempt.
    pub clone_connect_timeout: Duration,
    /// `BACKEND_CLONE_IO_TIMEOUT_SECS`: a clone whose server sends or takes
    /// nothing for this long fails.
    pub clone_io_timeout: Duration,
    /// `BACKEND_MAX_CHECKOUT_BYTES`: a checkout whose files add up to more
    /// is refused before anything is written.
    pub max_checkout_bytes: u64,
    /// `BACKEND_MIN_FREE_DISK_BYTES`: free space a clone and its checkout
    /// must leave on the workspaces' filesystem.
    pub min_free_disk_bytes: u64,
    /// `BACKEND_KEEP_ALIVE_SECS`
    pub keep_alive: Duration,
    /// `BACKEND_EVENT_BATCH`: most events written in one insert.
    pub event_batch: usize,
    /// `BACKEND_EVENT_BATCH_WAIT_MS`: how long a batch that is not full
    /// waits for more events before it is written.
    pub event_batch_wait: Duration,
    /// `BACKEND_USER_MAX_SESSIONS`: sessions one user may hold.
    pub user_max_sessions: i64,
    /// `BACKEND_USER_MAX_ACTIVE_RUNS`: runs one user may have queued or
    /// running at once, over all their sessions.
    pub user_max_active_runs: i64,
    /// `BACKEND_USER_MAX_WORKSPACE_BYTES`: a user whose workspaces hold
    /// more cannot create a session (0: no limit).
    pub user_max_workspace_bytes: u64,
    /// `BACKEND_USER_MAX_STREAMS`: event streams (of runs and of session
    /// changes together) one user may hold open; with `AUTH_MODE=none`, all
    /// callers together (0: no limit).
    pub user_max_streams: usize,
    /// `BACKEND_IP_RATE_PER_SEC` and `BACKEND_IP_RATE_BURST`.
    pub ip_rate: Rate,
    /// `BACKEND_USER_RATE_PER_SEC` and `BACKEND_USER_RATE_BURST`.
    pub user_rate: Rate,
    /// `BACKEND_SESSION_IDLE_TTL_HOURS`: a session without activity for
    /// this long expires (its workspace is removed); `None`: never.
    pub session_idle_ttl: Option<Duration>,
    /// `BACKEND_WORKSPACES_MAX_BYTES`: past this total, the sweeper expires
    /// the longest-idle sessions until it fits (0: no quota).
    pub workspaces_max_bytes: u64,
    /// `BACKEND_SWEEP_INTERVAL_SECS`: how often the sweeper looks.
    pub sweep_interval: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("database_url", &redact_url(&self.database_url))
            .field("pool_size", &self.pool_size)
            .field("runner_url", &self.runner_url)
            .field("runner_token", &self.runner_token.as_ref().map(|_| "<set>"))
            .field("workspaces_root", &self.workspaces_root)
            .field("allow_local_repos", &self.allow_local_repos)
            .field("forbidden_clone_paths", &self.forbidden_clone_paths)
            .field("clone_policy", &self.clone_policy)
            .field("cors_origins", &self.cors_origins)
            .field("auth_mode", &self.auth_mode)
            .field("auth_none_on_public", &self.auth_none_on_public)
            .field("signin_ttl", &self.signin_ttl)
            .field("preview_grant_ttl", &self.preview_grant_ttl)
            .field("cookie_secure", &self.cookie_secure)
            .field("trusted_proxies", &self.trusted_proxies)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<set>"),
            )
            .field("sealer", &self.sealer)
            .field("forges", &self.forges)
            .field("commit_email_domain", &self.commit_email_domain)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable>".into(),
    }
}

#[derive(Serialize, Deserialize)]
struct Raw {
    backend_addr: String,
    database_url: String,
    database_pool_size: usize,
    runner_url: String,
    runner_token: Option<String>,
    workspaces_root: PathBuf,
    allow_local_repos: bool,
    backend_forbidden_clone_paths: String,
    allow_private_clone_hosts: bool,
    allowed_clone_hosts: String,
    cors_origins: String,
    auth_mode: AuthMode,
    auth_mode_none_on_public: String,
    backend_signin_ttl_hours: u64,
    backend_preview_grant_ttl_secs: u64,
    backend_cookie_secure: CookieSecure,
    backend_user_max_sessions: i64,
    backend_user_max_active_runs: i64,
    backend_user_max_workspace_bytes: u64,
    backend_user_max_streams: usize,
    backend_ip_rate_per_sec: u32,
    backend_ip_rate_burst: u32,
    backend_user_rate_per_sec: u32,
    backend_user_rate_burst: u32,
    backend_trusted_proxies: String,
    backend_metrics_token: Option<String>,
    backend_secret_key: Option<String>,
    forges: String,
    backend_commit_email_domain: String,
    backend_session_idle_ttl_hours: u64,
    backend_workspaces_max_bytes: u64,
    backend_sweep_interval_secs: u64,
    backend_max_prompt_chars: usize,
    backend_max_queued_runs: i64,
    backend_max_body_bytes: usize,
    backend_max_file_bytes: u64,
    backend_max_diff_bytes: usize,
    backend_max_tree_entries: usize,
    backend_max_concurrent_diffs: usize,
    backend_max_events_per_run: usize,
    backend_live_tail_bytes: usize,
    backend_max_clone_bytes: u64,
    backend_clone_timeout_secs: u64,
    backend_clone_connect_timeout_secs: u64,
    backend_clone_io_timeout_secs: u64,
    backend_max_checkout_bytes: u64,
    backend_min_free_disk_bytes: u64,
    backend_keep_alive_secs: u64,
    backend_event_batch: usize,
    backend_event_batch_wait_ms: u64,
}

impl Default for Raw {
    fn default() -> Self {
        Self {
            backend_addr: "127.0.0.1:9101".into(),
            database_url: "postgres://postgres@127.0.0.1:9103/repo_runner".into(),
            database_pool_size: 16,
            runner_url: "http://127.0.0.1:9102".into(),
            runner_token: None,
            workspaces_root: PathBuf::from(".data/workspaces"),
            allow_local_repos: false,
            backend_forbidden_clone_paths: String::new(),
            allow_private_clone_hosts: false,
            allowed_clone_hosts: String::new(),
            cors_origins: String::new(),
            auth_mode: AuthMode::Token,
            auth_mode_none_on_public: String::new(),
            backend_signin_ttl_hours: 7 * 24,
            backend_preview_grant_ttl_secs: 3600,
            backend_cookie_secure: CookieSecure::Auto,
            backend_user_max_sessions: 100,
            backend_user_max_active_runs: 20,
            backend_user_max_workspace_bytes: 20 * 1024 * 1024 * 1024,
            backend_user_max_streams: 64,
            backend_ip_rate_per_sec: 50,
            backend_ip_rate_burst: 200,
            backend_user_rate_per_sec: 20,
            backend_user_rate_burst: 100,
            backend_trusted_proxies: "127.0.0.0/8,::1".into(),
            backend_metrics_token: None,
            backend_secret_key: None,
            forges: String::new(),
            backend_commit_email_domain: "users.repo-runner.invalid".into(),
            backend_session_idle_ttl_hours: 30 * 24,
            backend_workspaces_max_bytes: 0,
            backend_sweep_interval_secs: 300,
            backend_max_prompt_chars: 32_000,
            backend_max_queued_runs: 100,
            backend_max_body_bytes: 256 * 1024,
            backend_max_file_bytes: 1024 * 1024,
            backend_max_diff_bytes: 4 * 1024 * 1024,
            backend_max_tree_entries: 20_000,
            backend_max_concurrent_diffs: 2,
            backend_max_events_per_run: 50_000,
            backend_live_tail_bytes: 32 * 1024 * 1024,
            backend_max_clone_bytes: 2 * 1024 * 1024 * 1024,
            backend_clone_timeout_secs: 600,
            backend_clone_connect_timeout_secs: 10,
            backend_clone_io_timeout_secs: 60,
            backend_max_checkout_bytes: 4 * 1024 * 1024 * 1024,
            backend_min_free_disk_bytes: 1024 * 1024 * 1024,
            backend_keep_alive_secs: 15,
            backend_event_batch: 1024,
            backend_event_batch_wait_ms: 50,
        }
    }
}

const ENV_KEYS: [&str; 50] = [
    "BACKEND_ADDR",
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    "RUNNER_URL",
    "RUNNER_TOKEN",
    "WORKSPACES_ROOT",
    "ALLOW_LOCAL_REPOS",
    "BACKEND_FORBIDDEN_CLONE_PATHS",
    "ALLOW_PRIVATE_CLONE_HOSTS",
    "ALLOWED_CLONE_HOSTS",
    "CORS_ORIGINS",
    "AUTH_MODE",
    "AUTH_MODE_NONE_ON_PUBLIC",
    "BACKEND_SIGNIN_TTL_HOURS",
    "BACKEND_PREVIEW_GRANT_TTL_SECS",
    "BACKEND_COOKIE_SECURE",
    "BACKEND_USER_MAX_SESSIONS",
    "BACKEND_USER_MAX_ACTIVE_RUNS",
    "BACKEND_USER_MAX_WORKSPACE_BYTES",
    "BACKEND_USER_MAX_STREAMS",
    "BACKEND_IP_RATE_PER_SEC",
    "BACKEND_IP_RATE_BURST",
    "BACKEND_USER_RATE_PER_SEC",
    "BACKEND_USER_RATE_BURST",
    "BACKEND_TRUSTED_PROXIES",
    "BACKEND_METRICS_TOKEN",
    "BACKEND_SECRET_KEY",
    "FORGES",
    "BACKEND_COMMIT_EMAIL_DOMAIN",
    "BACKEND_SESSION_IDLE_TTL_HOURS",
    "BACKEND_WORKSPACES_MAX_BYTES",
    "BACKEND_SWEEP_INTERVAL_SECS",
    "BACKEND_MAX_PROMPT_CHARS",
    "BACKEND_MAX_QUEUED_RUNS",
    "BACKEND_MAX_BODY_BYTES",
    "BACKEND_MAX_FILE_BYTES",
    "BACKEND_MAX_DIFF_BYTES",
    "BACKEND_MAX_TREE_ENTRIES",
    "BACKEND_MAX_CONCURRENT_DIFFS",
    "BACKEND_MAX_EVENTS_PER_RUN",
    "BACKEND_LIVE_TAIL_BYTES",
    "BACKEND_MAX_CLONE_BYTES",
    "BACKEND_CLONE_TIMEOUT_SECS",
    "BACKEND_CLONE_CONNECT_TIMEOUT_SECS",
    "BACKEND_CLONE_IO_TIMEOUT_SECS",
    "BACKEND_MAX_CHECKOUT_BYTES",
    "BACKEND_MIN_FREE_DISK_BYTES",
    "BACKEND_KEEP_ALIVE_SECS",
    "BACKEND_EVENT_BATCH",
    "BACKEND_EVENT_BATCH_WAIT_MS",
];

impl Config {
    pub fn from_env() -> Result<Self, Box<figment::Error>> {
        let raw: Raw = Figment::from(Serialized::defaults(Raw::default()))
            .merge(Env::raw().only(&ENV_KEYS))
            .extract()
            .map_err(Box::new)?;
        let limits = Limits::from(&raw);
        let runner_token = raw
            .runner_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if runner_token
            .as_deref()
            .is_some_and(|t| !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(Box::new(figment::Error::from(
                "RUNNER_TOKEN must be printable ASCII without spaces (e.g. `openssl rand -hex 32`)"
                    .to_owned(),
            )));
        }
        let metrics_token = raw
            .backend_metrics_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if metrics_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(Box::new(figment::Error::from(
                "BACKEND_METRICS_TOKEN must be at least 16 characters (e.g. `openssl rand -hex 32`)"
                    .to_owned(),
            )));
        }
        let sealer = raw
            .backend_secret_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .map(crate::auth::sealed::Sealer::new)
            .transpose()
            .map_err(|e| Box::new(figment::Error::from(e.to_string())))?;
        let forges = crate::forge::Forges::parse(&raw.forges)
            .map_err(|e| Box::new(figment::Error::from(format!("FORGES: {e}"))))?;
        let commit_email_domain = raw.backend_commit_email_domain.trim().to_owned();
        if commit_email_domain.is_empty()
            || !commit_email_domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(Box::new(figment::Error::from(
                "BACKEND_COMMIT_EMAIL_DOMAIN must be a domain name, e.g. users.example.com"
                    .to_owned(),
            )));
        }
        let runner_url = url::Url::parse(raw.runner_url.trim())
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .ok_or_else(|| {
                Box::new(figment::Error::from(
                    "RUNNER_URL must be an http(s) URL, e.g. http://127.0.0.1:9102".to_owned(),
                ))
            })?;
        let trusted_proxies = parse_networks(&raw.backend_trusted_proxies).map_err(|e| {
            Box::new(figment::Error::from(format!(
                "BACKEND_TRUSTED_PROXIES: {e}"
            )))
        })?;
        // Absolute only: a folder taken from the working directory would be
        // another folder when the backend starts elsewhere, and the refusal
        // it stands for would silently not hold.
        let forbidden_clone_paths: Vec<PathBuf> = raw
            .backend_forbidden_clone_paths
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        if let Some(relative) = forbidden_clone_paths.iter().find(|p| p.is_relative()) {
            return Err(Box::new(figment::Error::from(format!(
                "BACKEND_FORBIDDEN_CLONE_PATHS must list absolute folders; got {}",
                relative.display()
            ))));
        }
        Ok(Self {
            addr: raw.backend_addr,
            database_url: raw.database_url,
            pool_size: raw.database_pool_size.max(2),
            runner_url,
            runner_token,
            workspaces_root: raw.workspaces_root,
            allow_local_repos: raw.allow_local_repos,
            forbidden_clone_paths,
            clone_policy: crate::domain::ClonePolicy::new(
                raw.allow_private_clone_hosts,
                &raw.allowed_clone_hosts,
            ),
            cors_origins: raw
                .cors_origins
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect(),
            auth_mode: raw.auth_mode,
            auth_none_on_public: raw.auth_mode_none_on_public.trim() == "yes",
            signin_ttl: Duration::from_secs(raw.backend_signin_ttl_hours.clamp(1, 24 * 365) * 3600),
            preview_grant_ttl: Duration::from_secs(
                raw.backend_preview_grant_ttl_secs.clamp(1, 7 * 24 * 3600),
            ),
            cookie_secure: raw.backend_cookie_secure,
            trusted_proxies,
            metrics_token,
            sealer,
            forges,
            commit_email_domain,
            limits,
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from(&Raw::default())
    }
}

impl From<&Raw> for Limits {
    fn from(raw: &Raw) -> Self {
        Self {
            max_prompt_chars: raw.backend_max_prompt_chars,
            max_queued_runs: raw.backend_max_queued_runs,
            max_body_bytes: raw.backend_max_body_bytes,
            max_file_bytes: raw.backend_max_file_bytes,
            max_diff_bytes: raw.backend_max_diff_bytes,
            max_tree_entries: raw.backend_max_tree_entries,
            max_concurrent_diffs: raw.backend_max_concurrent_diffs.max(1),
            max_events_per_run: raw.backend_max_events_per_run.max(2),
            live_tail_bytes: raw.backend_live_tail_bytes.max(1024),
            max_clone_bytes: raw.backend_max_clone_bytes,
            clone_timeout: Duration::from_secs(raw.backend_clone_timeout_secs.max(1)),
            clone_connect_timeout: Duration::from_secs(
                raw.backend_clone_connect_timeout_secs.max(1),
            ),
            clone_io_timeout: Duration::from_secs(raw.backend_clone_io_timeout_secs.max(1)),
            max_checkout_bytes: raw.backend_max_checkout_bytes,
            min_free_disk_bytes: raw.backend_min_free_disk_bytes,
            keep_alive: Duration::from_secs(raw.backend_keep_alive_secs.max(1)),
            event_batch: raw.backend_event_batch.max(1),
            event_batch_wait: Duration::from_millis(raw.backend_event_batch_wait_ms.min(1000)),
            user_max_sessions: raw.backend_user_max_sessions.max(0),
            user_max_active_runs: raw.backend_user_max_active_runs.max(0),
            user_max_workspace_bytes: raw.backend_user_max_workspace_bytes,
            user_max_streams: raw.backend_user_max_streams,
            ip_rate: Rate {
                per_second: raw.backend_ip_rate_per_sec,
                burst: raw.backend_ip_rate_burst,
            },
            user_rate: Rate {
                per_second: raw.backend_user_rate_per_sec,
                burst: raw.backend_user_rate_burst,
            },
            session_idle_ttl: (raw.backend_session_idle_ttl_hours > 0).then(|| {
                Duration::from_secs(raw.backend_session_idle_ttl_hours.min(24 * 365 * 10) * 3600)
            }),
            workspaces_max_bytes: raw.backend_workspaces_max_bytes,
            sweep_interval: Duration::from_secs(
                raw.backend_sweep_interval_secs.clamp(1, 24 * 3600),
            ),
        }
    }
}
