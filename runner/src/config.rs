//! The runner's configuration, read once from the environment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use codex_sdk::{ApiKey, ApprovalMode, SandboxMode};
use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// Everything the runner needs to start.
#[derive(Clone)]
pub struct Config {
    /// `RUNNER_ADDR`: where the HTTP API listens.
    pub addr: String,
    /// `RUNNER_TOKEN`: when set, every request must carry
    /// `Authorization: Bearer <token>`. Without it the runner listens on
    /// loopback only.
    pub token: service_kit::RequiredToken,
    /// `WORKSPACES_ROOT`: every thread's working directory must be under it.
    pub workspaces_root: PathBuf,
    /// `CODEX_BIN`: the Codex CLI; `codex` on `PATH` when unset.
    pub codex_bin: Option<PathBuf>,
    /// `RUNNER_CODEX_CONFIG`: the contents of the TOML file that becomes each
    /// thread's `config.toml`.
    pub codex_config: Option<String>,
    /// `CODEX_API_KEY`, else `OPENAI_API_KEY`: handed to the CLI only.
    pub api_key: Option<ApiKey>,
    /// `RUNNER_DEFAULT_SANDBOX`: sandbox of threads that do not choose one.
    pub default_sandbox: SandboxMode,
    /// `RUNNER_DEFAULT_APPROVAL`: approval policy of threads that do not choose one.
    pub default_approval: ApprovalMode,
    /// `RUNNER_PROCESS_CONTAINMENT`: how each run's processes are held.
    pub process_containment: ContainmentMode,
    /// `RUNNER_DRIVER`: how a run talks to the CLI.
    pub driver: DriverMode,
    pub limits: Limits,
    /// How far a request may widen the sandbox.
    pub sandbox: SandboxLimits,
}

/// What a thread's request may ask of the sandbox: it may narrow the
/// operator's choice, never widen it past these.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// `RUNNER_CODEX_HOMES`: where each thread's `CODEX_HOME` (and its
    /// agent's temp folder) lives; never inside `WORKSPACES_ROOT`, so no
    /// agent can rewrite the configuration its CLI starts with.
    pub codex_homes: PathBuf,
    /// `RUNNER_MAX_SANDBOX`: the widest `sandboxMode` a request may ask for;
    /// unset, `RUNNER_DEFAULT_SANDBOX`.
    pub max_sandbox: SandboxMode,
    /// `RUNNER_ALLOW_NETWORK`: whether a request may turn the network on in a
    /// `workspace-write` sandbox (`networkAccessEnabled`).
    pub allow_network: bool,
    /// `RUNNER_ALLOW_UNSANDBOXED_APPROVALS`: whether approvals reach a
    /// person (app-server driver). The CLI carries out an approved command
    /// or file change outside its sandbox, as the runner's user, so on a
    /// runner shared by people who must not reach each other (or the
    /// runner's user) approvals are declined at once: off by default.
    pub allow_unsandboxed_approvals: bool,
    /// `RUNNER_ALLOW_WEB_SEARCH`: whether a request may turn the CLI's live
    /// web search on (`webSearchEnabled`).
    pub allow_web_search: bool,
    /// `RUNNER_HIDDEN_PATHS` (comma-separated): folders every run sees
    /// empty, besides `WORKSPACES_ROOT` and `RUNNER_CODEX_HOMES`, which are
    /// always hidden but for the thread's own session folder and home. For
    /// what else on the host an agent must not read: the service's data
    /// folder, its configuration. Needs a PID namespace per run.
    pub hidden_paths: Vec<PathBuf>,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            codex_homes: default_codex_homes(
                std::env::var("XDG_STATE_HOME").ok().as_deref(),
                std::env::var("HOME").ok().as_deref(),
            )
            .unwrap_or_else(|| PathBuf::from("/var/lib/repo-runner/codex-homes")),
            max_sandbox: SandboxMode::WorkspaceWrite,
            allow_network: false,
            allow_web_search: false,
            allow_unsandboxed_approvals: false,
            hidden_paths: Vec::new(),
        }
    }
}

/// `RUNNER_DRIVER`; `app-server` unless set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverMode {
    /// `codex exec --experimental-json`: whole items, no approvals.
    Exec,
    /// `codex app-server`: deltas, approvals, steering, interrupts.
    AppServer,
}

impl From<DriverMode> for codex_sdk::Driver {
    fn from(mode: DriverMode) -> Self {
        match mode {
            DriverMode::Exec => codex_sdk::Driver::Exec,
            DriverMode::AppServer => codex_sdk::Driver::AppServer,
        }
    }
}

/// `RUNNER_PROCESS_CONTAINMENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainmentMode {
    /// A PID and mount namespace per run when this host allows one (root
    /// or `CAP_SYS_ADMIN`, else a user namespace; util-linux), else the
    /// process group with a warning at start-up; but no start at all when
    /// that would leave `danger-full-access` agents side by side.
    Auto,
    /// A PID and mount namespace per run, or the runner does not start.
    PidNamespace,
    /// The process group only: sessions are not isolated (warned at start).
    Off,
}

/// The bounds of every buffer and table of the runner.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `RUNNER_RUN_RETENTION_SECS`: how long a finished run stays readable.
    pub run_retention: Duration,
    /// `RUNNER_MAX_FINISHED_RUNS`: finished runs kept at most (oldest go first).
    pub max_finished_runs: usize,
    /// `RUNNER_MAX_EVENTS_PER_RUN`: a run that emits more fails.
    pub max_events_per_run: usize,
    /// `RUNNER_MAX_EVENT_BYTES`: an event larger than this has its longest
    /// strings cut (see `event_size`).
    pub max_event_bytes: usize,
    /// `RUNNER_MAX_RUN_BYTES`: a run whose events take more fails.
    pub max_run_bytes: usize,
    /// `RUNNER_MAX_THREADS`: threads kept at most; a new one releases the
    /// least recently used idle thread, and is refused (429) only when every
    /// thread has an active run.
    pub max_threads: usize,
    /// `RUNNER_THREAD_IDLE_SECS`: a thread without a run for this long is
    /// released (its Codex conversation stays resumable).
    pub thread_idle: Duration,
    /// `RUNNER_MAX_PROMPT_BYTES`: longest prompt accepted.
    pub max_prompt_bytes: usize,
    /// `RUNNER_MAX_BODY_BYTES`: largest request body accepted.
    pub max_body_bytes: usize,
    /// `RUNNER_KEEP_ALIVE_SECS`: idle time before an SSE keep-alive comment.
    pub keep_alive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            run_retention: Duration::from_secs(3600),
            max_finished_runs: 1000,
            max_events_per_run: 50_000,
            max_event_bytes: 256 * 1024,
            max_run_bytes: 64 * 1024 * 1024,
            max_threads: 10_000,
            thread_idle: Duration::from_secs(3600),
            max_prompt_bytes: 256 * 1024,
            max_body_bytes: 1024 * 1024,
            keep_alive: Duration::from_secs(15),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("token", &self.token)
            .field("workspaces_root", &self.workspaces_root)
            .field("codex_bin", &self.codex_bin)
            .field(
                "codex_config",
                &self.codex_config.as_ref().map(|_| "<template>"),
            )
            .field("api_key", &self.api_key)
            .field("default_sandbox", &self.default_sandbox)
            .field("default_approval", &self.default_approval)
            .field("process_containment", &self.process_containment)
            .field("driver", &self.driver)
            .field("limits", &self.limits)
            .field("sandbox", &self.sandbox)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid runner configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("cannot read RUNNER_CODEX_CONFIG {path}")]
    Template {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {name} {path}")]
    Root {
        name: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("RUNNER_DEFAULT_SANDBOX {default} is wider than RUNNER_MAX_SANDBOX {max}")]
    DefaultWiderThanMax {
        default: &'static str,
        max: &'static str,
    },
    #[error(
        "RUNNER_CODEX_HOMES {homes} and WORKSPACES_ROOT {workspaces} overlap: an agent could \
         rewrite the configuration of its own or another thread's CLI"
    )]
    Overlap { homes: String, workspaces: String },
    #[error("RUNNER_HIDDEN_PATHS {path}: {reason}")]
    Hidden { path: String, reason: String },
    #[error(
        "RUNNER_CODEX_HOMES {0} is relative: give an absolute folder (a relative one would be \
         another folder wherever a runner starts, and runners started elsewhere would not find \
         their threads' homes)"
    )]
    RelativeHomes(String),
    #[error(
        "RUNNER_CODEX_HOMES is unset and neither XDG_STATE_HOME nor HOME names an absolute \
         folder for its default: set RUNNER_CODEX_HOMES"
    )]
    NoHomes,
}

/// `RUNNER_CODEX_HOMES` when it is unset: `$XDG_STATE_HOME/repo-runner/
/// codex-homes`, else `$HOME/.local/state/repo-runner/codex-homes`; only an
/// absolute value of either counts (as the XDG base directory
/// specification says of a relative one). Absolute, so it is the same
/// folder wherever the runner starts.
fn default_codex_homes(xdg_state_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    let absolute = |value: Option<&str>| value.map(PathBuf::from).filter(|p| p.is_absolute());
    let state =
        absolute(xdg_state_home).or_else(|| absolute(home).map(|h| h.join(".local/state")))?;
    Some(state.join("repo-runner/codex-homes"))
}

#[derive(Serialize, Deserialize)]
struct Raw {
    runner_addr: String,
    runner_token: Option<String>,
    workspaces_root: PathBuf,
    codex_bin: Option<PathBuf>,
    runner_codex_config: Option<PathBuf>,
    codex_api_key: Option<String>,
    openai_api_key: Option<String>,
    runner_default_sandbox: SandboxMode,
    runner_default_approval: ApprovalMode,
    runner_process_containment: ContainmentMode,
    runner_driver: DriverMode,
    runner_run_retention_secs: u64,
    runner_max_finished_runs: usize,
    runner_max_events_per_run: usize,
    runner_max_event_bytes: usize,
    runner_max_run_bytes: usize,
    runner_max_threads: usize,
    runner_thread_idle_secs: u64,
    runner_max_prompt_bytes: usize,
    runner_max_body_bytes: usize,
    runner_keep_alive_secs: u64,
    runner_codex_homes: Option<PathBuf>,
    runner_max_sandbox: Option<SandboxMode>,
    runner_allow_network: bool,
    runner_allow_web_search: bool,
    runner_allow_unsandboxed_approvals: bool,
    runner_hidden_paths: String,
}

impl Default for Raw {
    fn default() -> Self {
        let limits = Limits::default();
        let sandbox = SandboxLimits::default();
        Self {
            runner_addr: "127.0.0.1:9102".into(),
            runner_token: None,
            workspaces_root: PathBuf::from(".data/workspaces"),
            codex_bin: None,
            runner_codex_config: None,
            codex_api_key: None,
            openai_api_key: None,
            runner_default_sandbox: SandboxMode::WorkspaceWrite,
            runner_default_approval: ApprovalMode::Never,
            runner_process_containment: ContainmentMode::Auto,
            runner_driver: DriverMode::AppServer,
            runner_run_retention_secs: limits.run_retention.as_secs(),
            runner_max_finished_runs: limits.max_finished_runs,
            runner_max_events_per_run: limits.max_events_per_run,
            runner_max_event_bytes: limits.max_event_bytes,
            runner_max_run_bytes: limits.max_run_bytes,
            runner_max_threads: limits.max_threads,
            runner_thread_idle_secs: limits.thread_idle.as_secs(),
            runner_max_prompt_bytes: limits.max_prompt_bytes,
            runner_max_body_bytes: limits.max_body_bytes,
            runner_keep_alive_secs: limits.keep_alive.as_secs(),
            runner_codex_homes: None,
            runner_max_sandbox: None,
            runner_allow_network: sandbox.allow_network,
            runner_allow_web_search: sandbox.allow_web_search,
            runner_allow_unsandboxed_approvals: sandbox.allow_unsandboxed_approvals,
            runner_hidden_paths: String::new(),
        }
    }
}

impl Config {
    /// Reads the environment; a bad value is an error that names it.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars_os().map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        }))
    }

    /// Reads the configuration from `vars` as if they were the environment
    /// (variables the runner does not know are ignored).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let var = |name: &str| {
            vars.iter()
                .find(|(known, _)| known == name)
                .map(|(_, value)| value.as_str())
        };
        let default_homes = default_codex_homes(var("XDG_STATE_HOME"), var("HOME"));
        let raw: Raw = Figment::from(Serialized::defaults(Raw::default()))
            .merge(Vars::known(vars.iter().cloned()))
            .extract()
            .map_err(Box::new)?;
        let codex_homes = match raw.runner_codex_homes {
            Some(homes) if homes.is_absolute() => homes,
            Some(homes) => return Err(ConfigError::RelativeHomes(homes.display().to_string())),
            None => default_homes.ok_or(ConfigError::NoHomes)?,
        };
        let codex_config = raw
            .runner_codex_config
            .map(|path| {
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Template {
                    path: path.display().to_string(),
                    source,
                })
            })
            .transpose()?;
        let api_key = raw
            .codex_api_key
            .or(raw.openai_api_key)
            .filter(|k| !k.trim().is_empty())
            .map(ApiKey::new);
        let max_sandbox = raw.runner_max_sandbox.unwrap_or(raw.runner_default_sandbox);
        if raw.runner_default_sandbox > max_sandbox {
            return Err(ConfigError::DefaultWiderThanMax {
                default: raw.runner_default_sandbox.as_str(),
                max: max_sandbox.as_str(),
            });
        }
        Ok(Self {
            addr: raw.runner_addr,
            token: service_kit::RequiredToken::new(raw.runner_token.as_deref()),
            workspaces_root: raw.workspaces_root,
            codex_bin: raw.codex_bin,
            codex_config,
            api_key,
            default_sandbox: raw.runner_default_sandbox,
            default_approval: raw.runner_default_approval,
            process_containment: raw.runner_process_containment,
            driver: raw.runner_driver,
            limits: Limits {
                run_retention: Duration::from_secs(raw.runner_run_retention_secs),
                max_finished_runs: raw.runner_max_finished_runs,
                max_events_per_run: raw.runner_max_events_per_run.max(2),
                // Room for a stub of any event and a useful prefix of a cut one.
                max_event_bytes: raw.runner_max_event_bytes.max(MIN_EVENT_BYTES),
                max_run_bytes: raw.runner_max_run_bytes,
                max_threads: raw.runner_max_threads,
                thread_idle: Duration::from_secs(raw.runner_thread_idle_secs.max(1)),
                max_prompt_bytes: raw.runner_max_prompt_bytes,
                max_body_bytes: raw.runner_max_body_bytes,
                keep_alive: Duration::from_secs(raw.runner_keep_alive_secs.max(1)),
            },
            sandbox: SandboxLimits {
                codex_homes,
                max_sandbox,
                allow_network: raw.runner_allow_network,
                allow_web_search: raw.runner_allow_web_search,
                allow_unsandboxed_approvals: raw.runner_allow_unsandboxed_approvals,
                hidden_paths: raw
                    .runner_hidden_paths
                    .split(',')
                    .map(str::trim)
                    .filter(|path| !path.is_empty())
                    .map(PathBuf::from)
                    .collect(),
            },
        })
    }

    /// The workspaces root, created if missing and with symlinks resolved.
    pub fn canonical_root(&self) -> Result<PathBuf, ConfigError> {
        canonical_dir("WORKSPACES_ROOT", &self.workspaces_root)
    }

    /// The root of the threads' `CODEX_HOME`s, created if missing and with
    /// symlinks resolved; refused when it overlaps the workspaces root
    /// (`workspaces`, canonical). Agents write only their working directory,
    /// the directories added to it from the same session and their own temp
    /// folder (`/tmp` and `$TMPDIR` are not writable roots): all of them
    /// are under `WORKSPACES_ROOT` or are a thread's own temp folder, so a
    /// homes root apart from the workspaces root is out of every agent's
    /// reach.
    pub fn canonical_codex_homes(&self, workspaces: &Path) -> Result<PathBuf, ConfigError> {
        let homes = canonical_dir("RUNNER_CODEX_HOMES", &self.sandbox.codex_homes)?;
        if homes.starts_with(workspaces) || workspaces.starts_with(&homes) {
            return Err(ConfigError::Overlap {
                homes: homes.display().to_string(),
                workspaces: workspaces.display().to_string(),
            });
        }
        Ok(homes)
    }

    /// `RUNNER_HIDDEN_PATHS`, with symlinks resolved. Each must exist (a
    /// folder made later would not be hidden) and none may be `/`, which
    /// would hide the CLI itself.
    pub fn canonical_hidden_paths(&self) -> Result<Vec<PathBuf>, ConfigError> {
        self.sandbox
            .hidden_paths
            .iter()
            .map(|path| {
                let hidden = path.canonicalize().map_err(|source| ConfigError::Hidden {
                    path: path.display().to_string(),
                    reason: source.to_string(),
                })?;
                if hidden.parent().is_none() {
                    return Err(ConfigError::Hidden {
                        path: path.display().to_string(),
                        reason: "hiding / would hide the Codex CLI itself".into(),
                    });
                }
                Ok(hidden)
            })
            .collect()
    }
}

/// The smallest `RUNNER_MAX_EVENT_BYTES` honoured.
pub const MIN_EVENT_BYTES: usize = 1024;

fn canonical_dir(name: &'static str, path: &Path) -> Result<PathBuf, ConfigError> {
    let error = |source| ConfigError::Root {
        name,
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(error)?;
    path.canonicalize().map_err(error)
}

/// The runner's variables out of a list of `(name, value)`, read as figment's
/// `Env::raw()` reads the process's: a value is parsed as a figment `Value`,
/// and an error names the variable.
struct Vars(Dict);

impl Vars {
    fn known(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(
            vars.into_iter()
                .filter(|(name, _)| {
                    ENV_KEYS
                        .iter()
                        .any(|key| key.eq_ignore_ascii_case(name.trim()))
                })
                .map(|(name, value)| {
                    let value = match value.parse::<Value>() {
                        Ok(value) => value,
                        Err(never) => match never {},
                    };
                    (name.trim().to_ascii_lowercase(), value)
                })
                .collect(),
        )
    }
}

impl Provider for Vars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable(s)").interpolater(|_: &Profile, keys: &[&str]| {
            keys.iter()
                .map(|key| key.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join(".")
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

const ENV_KEYS: [&str; 27] = [
    "RUNNER_DRIVER",
    "RUNNER_HIDDEN_PATHS",
    "RUNNER_ADDR",
    "RUNNER_TOKEN",
    "WORKSPACES_ROOT",
    "CODEX_BIN",
    "RUNNER_CODEX_CONFIG",
    "CODEX_API_KEY",
    "OPENAI_API_KEY",
    "RUNNER_DEFAULT_SANDBOX",
    "RUNNER_DEFAULT_APPROVAL",
    "RUNNER_PROCESS_CONTAINMENT",
    "RUNNER_RUN_RETENTION_SECS",
    "RUNNER_MAX_FINISHED_RUNS",
    "RUNNER_MAX_EVENTS_PER_RUN",
    "RUNNER_MAX_EVENT_BYTES",
    "RUNNER_MAX_RUN_BYTES",
    "RUNNER_MAX_THREADS",
    "RUNNER_THREAD_IDLE_SECS",
    "RUNNER_MAX_PROMPT_BYTES",
    "RUNNER_MAX_BODY_BYTES",
    "RUNNER_KEEP_ALIVE_SECS",
    "RUNNER_CODEX_HOMES",
    "RUNNER_MAX_SANDBOX",
    "RUNNER_ALLOW_NETWORK",
    "RUNNER_ALLOW_WEB_SEARCH",
    "RUNNER_ALLOW_UNSANDBOXED_APPROVALS",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// `pairs` as an environment, with a `HOME` (for the default of
    /// `RUNNER_CODEX_HOMES`) unless they give one.
    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        if !pairs.iter().any(|(name, _)| *name == "HOME") {
            vars.push(("HOME".to_owned(), "/home/runner-test".to_owned()));
        }
        vars
    }

    #[test]
    fn codex_homes_default_to_an_absolute_folder_and_a_relative_one_is_refused() {
        let config = Config::from_vars(vars(&[("HOME", "/home/alice")])).unwrap();
        assert_eq!(
            config.sandbox.codex_homes,
            PathBuf::from("/home/alice/.local/state/repo-runner/codex-homes")
        );
        let config = Config::from_vars(vars(&[
            ("HOME", "/home/alice"),
            ("XDG_STATE_HOME", "/state"),
        ]))
        .unwrap();
        assert_eq!(
            config.sandbox.codex_homes,
            PathBuf::from("/state/repo-runner/codex-homes")
        );
        // A relative XDG_STATE_HOME does not count.
        let config = Config::from_vars(vars(&[
            ("HOME", "/home/alice"),
            ("XDG_STATE_HOME", "state"),
        ]))
        .unwrap();
        assert!(config.sandbox.codex_homes.starts_with("/home/alice"));
        assert!(matches!(
            Config::from_vars(Vec::new()),
            Err(ConfigError::NoHomes)
        ));
        let relative = [
            ("HOME", "/home/alice"),
            ("RUNNER_CODEX_HOMES", ".data/codex-homes"),
        ];
        assert_eq!(
            Config::from_vars(vars(&relative)).unwrap_err().to_string(),
            "RUNNER_CODEX_HOMES .data/codex-homes is relative: give an absolute folder (a relative \
             one would be another folder wherever a runner starts, and runners started elsewhere \
             would not find their threads' homes)"
        );
        let given = [("RUNNER_CODEX_HOMES", "/srv/homes")];
        assert_eq!(
            Config::from_vars(vars(&given)).unwrap().sandbox.codex_homes,
            PathBuf::from("/srv/homes")
        );
    }

    #[test]
    fn the_max_sandbox_follows_the_default_and_may_not_be_narrower() {
        let wide = [
            ("RUNNER_DEFAULT_SANDBOX", "danger-full-access"),
            ("RUNNER_ALLOW_NETWORK", "true"),
        ];
        let config = Config::from_vars(vars(&wide)).unwrap();
        assert_eq!(config.sandbox.max_sandbox, SandboxMode::DangerFullAccess);
        assert!(config.sandbox.allow_network);
        assert!(!config.sandbox.allow_web_search);

        let narrower = [wide[0], wide[1], ("RUNNER_MAX_SANDBOX", "read-only")];
        let error = Config::from_vars(vars(&narrower)).unwrap_err().to_string();
        assert_eq!(
            error,
            "RUNNER_DEFAULT_SANDBOX danger-full-access is wider than RUNNER_MAX_SANDBOX read-only"
        );
    }

    #[test]
    fn hidden_paths_are_a_list_of_existing_folders_never_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let list = format!(" {} ,, {}/b ", a.display(), dir.path().display());
        let config = Config::from_vars(vars(&[("RUNNER_HIDDEN_PATHS", &list)])).unwrap();
        assert_eq!(config.sandbox.hidden_paths.len(), 2);
        let missing = config.canonical_hidden_paths().unwrap_err().to_string();
        assert!(
            missing.starts_with("RUNNER_HIDDEN_PATHS ") && missing.contains("/b"),
            "{missing}"
        );
        std::fs::create_dir(dir.path().join("b")).unwrap();
        assert_eq!(config.canonical_hidden_paths().unwrap().len(), 2);

        let root = Config::from_vars(vars(&[("RUNNER_HIDDEN_PATHS", "/")])).unwrap();
        assert!(root
            .canonical_hidden_paths()
            .unwrap_err()
            .to_string()
            .contains("hide the Codex CLI"));
        let none = Config::from_vars(vars(&[])).unwrap();
        assert!(none.canonical_hidden_paths().unwrap().is_empty());
    }

    #[test]
    fn values_are_typed_and_a_bad_one_names_its_variable() {
        let config = Config::from_vars(vars(&[
            ("RUNNER_MAX_EVENT_BYTES", "4096"),
            ("RUNNER_ADDR", "127.0.0.1:7"),
            ("UNRELATED", "x"),
        ]))
        .unwrap();
        assert_eq!(config.limits.max_event_bytes, 4096);
        assert_eq!(config.addr, "127.0.0.1:7");

        let error = Config::from_vars(vars(&[("RUNNER_MAX_EVENT_BYTES", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("RUNNER_MAX_EVENT_BYTES"), "{error}");
    }
}
