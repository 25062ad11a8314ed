//! Options of the client and of a thread, mirroring `CodexOptions` and
//! `ThreadOptions` of `@openai/codex-sdk`, and their translation to the CLI's
//! command line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A secret string whose `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself; only for handing it to the CLI's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// How a client finds and talks to the CLI.
#[derive(Debug, Clone, Default)]
pub struct CodexOptions {
    /// The `codex` executable; `codex` on `PATH` when unset.
    pub codex_path: Option<PathBuf>,
    /// Overrides the OpenAI base URL (`openai_base_url` config).
    pub base_url: Option<String>,
    /// Passed to the CLI as `CODEX_API_KEY`.
    pub api_key: Option<ApiKey>,
    /// The CLI's whole environment when set. When unset the CLI gets a small
    /// allow-list of the caller's variables (`PATH`, `HOME`, locale, ...), so
    /// that the caller's secrets do not reach the agent's shell.
    pub env: Option<BTreeMap<String, String>>,
    /// `--config key=value` pairs; the value is TOML (`"o3"`, `true`, `[1]`).
    pub config_overrides: Vec<(String, String)>,
    /// How a run talks to the CLI.
    pub driver: Driver,
}

/// How a run talks to the CLI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Driver {
    /// `codex exec --experimental-json`, one process per run: whole items,
    /// no approvals (the policy must not ask), no steering.
    #[default]
    Exec,
    /// `codex app-server`, one process per run: the same events plus
    /// deltas of messages, reasoning and command output, approvals,
    /// steering and a graceful interrupt (see `app_server_run`).
    AppServer,
}

// The CLI's vocabulary is defined once, in `runner-protocol` (which has no
// runtime dependencies), and spoken by the SDK and the runner's wire alike.
pub use runner_protocol::{ApprovalMode, ReasoningEffort, SandboxMode};

/// Per-thread options, applied to every run of the thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadOptions {
    pub model: Option<String>,
    pub sandbox_mode: Option<SandboxMode>,
    pub working_directory: Option<PathBuf>,
    pub skip_git_repo_check: bool,
    pub model_reasoning_effort: Option<ReasoningEffort>,
    pub network_access_enabled: Option<bool>,
    pub web_search_enabled: Option<bool>,
    pub approval_policy: Option<ApprovalMode>,
    pub additional_directories: Vec<PathBuf>,
    /// `CODEX_HOME` of this thread's CLI: where its config and sessions live.
    /// Unset: the CLI's default (`~/.codex`).
    pub codex_home: Option<PathBuf>,
    /// The agent's own temporary directory. When set, the agent's commands
    /// get it as `TMPDIR` (and `TMP`, `TEMP`) and may write it, while `/tmp`
    /// and the CLI's own `$TMPDIR` are no longer writable roots of the
    /// `workspace-write` sandbox: temp folders shared by every thread would
    /// let one agent write where another one works.
    pub private_tmp: Option<PathBuf>,
    /// Folders inside [`Containment::hidden`](crate::Containment::hidden)
    /// that this thread's CLI still sees: its session's folder and its own
    /// home. Absolute, canonical.
    pub exposed: Vec<PathBuf>,
    /// Whether approvals reach a person (app-server driver). The CLI
    /// carries out what is approved, a command or a file change, outside
    /// its sandbox, as its own user: unless this is set (or the sandbox is
    /// `danger-full-access` already), every approval the CLI asks for is
    /// declined at once, and the stream says so (`approval.requested` with
    /// `refused`, then `approval.resolved` by `repo-runner`).
    pub approvals_run_unsandboxed: bool,
}

/// The variables an agent's command may inherit from the CLI (patterns of
/// the CLI's `shell_environment_policy.include_only`). Everything else, the
/// API key and `CODEX_HOME` first, stays with the CLI.
pub(crate) const AGENT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_*",
    "TZ",
    "TERM",
    "TMPDIR",
    "TMP",
    "TEMP",
    // The process markers (`process.rs`): not secrets, and what lets a
    // process that left the run's group be found.
    crate::process::OWNER_MARKER,
    crate::process::RUN_MARKER,
];

/// Names never passed to an agent's command even when allowed above or set
/// by a caller's environment (`shell_environment_policy.exclude`, matched
/// case-insensitively, on top of the CLI's own `*KEY*`/`*SECRET*`/`*TOKEN*`).
pub(crate) const AGENT_ENV_EXCLUDED: &[&str] = &[
    "*KEY*",
    "*SECRET*",
    "*TOKEN*",
    "*PASSWORD*",
    "*CREDENTIAL*",
    "CODEX_*",
    "OPENAI_*",
    "DATABASE_URL",
];

/// Builds the CLI's arguments the way the TypeScript SDK's `CodexExec.run`
/// does, flag for flag and in the same order.
pub(crate) fn command_args(
    codex: &CodexOptions,
    thread: &ThreadOptions,
    resume_thread_id: Option<&str>,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["exec".into(), "--experimental-json".into()];
    let config = |args: &mut Vec<String>, value: String| {
        args.push("--config".into());
        args.push(value);
    };
    for (key, value) in &codex.config_overrides {
        config(&mut args, format!("{key}={value}"));
    }
    if let Some(url) = &codex.base_url {
        config(&mut args, format!("openai_base_url={}", toml_string(url)));
    }
    if let Some(model) = &thread.model {
        args.extend(["--model".into(), model.clone()]);
    }
    if let Some(mode) = thread.sandbox_mode {
        args.extend(["--sandbox".into(), mode.as_str().into()]);
    }
    if let Some(dir) = &thread.working_directory {
        args.extend(["--cd".into(), dir.display().to_string()]);
    }
    for dir in &thread.additional_directories {
        args.extend(["--add-dir".into(), dir.display().to_string()]);
    }
    if let Some(tmp) = &thread.private_tmp {
        args.extend(["--add-dir".into(), tmp.display().to_string()]);
        config(
            &mut args,
            "sandbox_workspace_write.exclude_slash_tmp=true".into(),
        );
        config(
            &mut args,
            "sandbox_workspace_write.exclude_tmpdir_env_var=true".into(),
        );
    }
    if thread.skip_git_repo_check {
        args.push("--skip-git-repo-check".into());
    }
    if let Some(effort) = thread.model_reasoning_effort {
        config(
            &mut args,
            format!("model_reasoning_effort=\"{}\"", effort.as_str()),
        );
    }
    if let Some(network) = thread.network_access_enabled {
        config(
            &mut args,
            format!("sandbox_workspace_write.network_access={network}"),
        );
    }
    match thread.web_search_enabled {
        Some(true) => config(&mut args, "web_search=\"live\"".into()),
        Some(false) => config(&mut args, "web_search=\"disabled\"".into()),
        None => {}
    }
    for (key, value) in shell_environment_policy(thread)
        .into_iter()
        .chain(untrusted_project(thread))
    {
        config(&mut args, format!("{key}={value}"));
    }
    if let Some(policy) = thread.approval_policy {
        config(
            &mut args,
            format!("approval_policy=\"{}\"", policy.as_str()),
        );
    }
    if let Some(id) = resume_thread_id {
        args.extend(["resume".into(), id.into()]);
    }
    args
}

/// The `--config` pairs of `codex app-server` for one run of `thread`:
/// what `command_args` gives `codex exec` as `--config`, and what it gives
/// as flags of its own, where the app-server has no parameter for it
/// (additional writable folders, the agent's temp folder).
pub(crate) fn app_server_config(
    codex: &CodexOptions,
    thread: &ThreadOptions,
) -> Vec<(String, String)> {
    let mut pairs = codex.config_overrides.clone();
    if let Some(url) = &codex.base_url {
        pairs.push(("openai_base_url".into(), toml_string(url)));
    }
    let mut writable: Vec<String> = thread
        .additional_directories
        .iter()
        .map(|dir| toml_string(&dir.display().to_string()))
        .collect();
    if let Some(tmp) = &thread.private_tmp {
        writable.push(toml_string(&tmp.display().to_string()));
        pairs.push((
            "sandbox_workspace_write.exclude_slash_tmp".into(),
            "true".into(),
        ));
        pairs.push((
            "sandbox_workspace_write.exclude_tmpdir_env_var".into(),
            "true".into(),
        ));
    }
    if !writable.is_empty() {
        pairs.push((
            "sandbox_workspace_write.writable_roots".into(),
            format!("[{}]", writable.join(",")),
        ));
    }
    if let Some(effort) = thread.model_reasoning_effort {
        pairs.push((
            "model_reasoning_effort".into(),
            format!("\"{}\"", effort.as_str()),
        ));
    }
    if let Some(network) = thread.network_access_enabled {
        pairs.push((
            "sandbox_workspace_write.network_access".into(),
            network.to_string(),
        ));
    }
    match thread.web_search_enabled {
        Some(true) => pairs.push(("web_search".into(), "\"live\"".into())),
        Some(false) => pairs.push(("web_search".into(), "\"disabled\"".into())),
        None => {}
    }
    pairs.extend(shell_environment_policy(thread));
    pairs.extend(untrusted_project(thread));
    pairs
}

/// Marks the working directory `untrusted`, always on the command line,
/// where nothing in a `config.toml` outranks it. The CLI (0.169.0) loads a
/// trusted project's own `.codex/` (its `config.toml` with MCP servers,
/// profiles, sandbox and approval settings, `hooks.json`, execution-policy
/// `rules/`) as a layer of configuration, and the app-server marks a
/// workspace trusted in `CODEX_HOME` when a thread starts in it with a
/// writable sandbox: a cloned repository would then start processes of its
/// choosing, outside any sandbox.
fn untrusted_project(thread: &ThreadOptions) -> Option<(String, String)> {
    let dir = thread.working_directory.as_ref()?;
    Some((
        "projects".to_owned(),
        format!(
            "{{{}={{trust_level=\"untrusted\"}}}}",
            toml_string(&dir.display().to_string())
        ),
    ))
}

/// The parameters of `thread/start` (and `thread/resume`) for `thread`.
pub(crate) fn app_server_thread_params(thread: &ThreadOptions) -> serde_json::Value {
    let mut params = serde_json::Map::new();
    if let Some(dir) = &thread.working_directory {
        params.insert("cwd".into(), dir.display().to_string().into());
    }
    if let Some(model) = &thread.model {
        params.insert("model".into(), model.clone().into());
    }
    if let Some(mode) = thread.sandbox_mode {
        params.insert("sandbox".into(), mode.as_str().into());
    }
    if let Some(policy) = thread.approval_policy {
        params.insert("approvalPolicy".into(), policy.as_str().into());
    }
    serde_json::Value::Object(params)
}

/// The CLI's `shell_environment_policy`, always given on the command line
/// so that no `config.toml` can loosen it: the CLI holds the API key in its
/// environment, and its default policy (0.169.0) passes its whole
/// environment on to the agent's commands.
fn shell_environment_policy(thread: &ThreadOptions) -> Vec<(String, String)> {
    let list = |items: &[&str]| {
        let quoted: Vec<String> = items.iter().map(|item| toml_string(item)).collect();
        format!("[{}]", quoted.join(","))
    };
    let mut pairs = vec![
        (
            "shell_environment_policy.inherit".to_owned(),
            "\"all\"".to_owned(),
        ),
        (
            "shell_environment_policy.ignore_default_excludes".to_owned(),
            "false".to_owned(),
        ),
        (
            "shell_environment_policy.exclude".to_owned(),
            list(AGENT_ENV_EXCLUDED),
        ),
        (
            "shell_environment_policy.include_only".to_owned(),
            list(AGENT_ENV),
        ),
    ];
    if let Some(tmp) = &thread.private_tmp {
        let tmp = toml_string(&tmp.display().to_string());
        for name in ["TMPDIR", "TMP", "TEMP"] {
            pairs.push((format!("shell_environment_policy.set.{name}"), tmp.clone()));
        }
    }
    pairs
}

/// A TOML basic string; JSON string escaping is a valid subset of it.
fn toml_string(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_follow_the_typescript_sdk_order() {
        let codex = CodexOptions {
            base_url: Some("http://127.0.0.1:1/v1".into()),
            config_overrides: vec![("model_provider".into(), "\"mock\"".into())],
            ..Default::default()
        };
        let thread = ThreadOptions {
            model: Some("gpt-5.5".into()),
            sandbox_mode: Some(SandboxMode::WorkspaceWrite),
            working_directory: Some("/w/s/repo".into()),
            additional_directories: vec!["/w/extra".into()],
            skip_git_repo_check: true,
            model_reasoning_effort: Some(ReasoningEffort::High),
            network_access_enabled: Some(false),
            web_search_enabled: Some(false),
            approval_policy: Some(ApprovalMode::Never),
            codex_home: None,
            private_tmp: Some("/h/tmp".into()),
            exposed: vec!["/w/s".into()],
            approvals_run_unsandboxed: false,
        };
        let args = command_args(&codex, &thread, Some("thread-1"));
        let expected = [
            "exec",
            "--experimental-json",
            "--config",
            "model_provider=\"mock\"",
            "--config",
            "openai_base_url=\"http://127.0.0.1:1/v1\"",
            "--model",
            "gpt-5.5",
            "--sandbox",
            "workspace-write",
            "--cd",
            "/w/s/repo",
            "--add-dir",
            "/w/extra",
            "--add-dir",
            "/h/tmp",
            "--config",
            "sandbox_workspace_write.exclude_slash_tmp=true",
            "--config",
            "sandbox_workspace_write.exclude_tmpdir_env_var=true",
            "--skip-git-repo-check",
            "--config",
            "model_reasoning_effort=\"high\"",
            "--config",
            "sandbox_workspace_write.network_access=false",
            "--config",
            "web_search=\"disabled\"",
            "--config",
            "shell_environment_policy.inherit=\"all\"",
            "--config",
            "shell_environment_policy.ignore_default_excludes=false",
            "--config",
            "shell_environment_policy.exclude=[\"*KEY*\",\"*SECRET*\",\"*TOKEN*\",\"*PASSWORD*\",\"*CREDENTIAL*\",\"CODEX_*\",\"OPENAI_*\",\"DATABASE_URL\"]",
            "--config",
            "shell_environment_policy.include_only=[\"PATH\",\"HOME\",\"USER\",\"LOGNAME\",\"SHELL\",\"LANG\",\"LC_*\",\"TZ\",\"TERM\",\"TMPDIR\",\"TMP\",\"TEMP\",\"CODEX_SDK_OWNER\",\"CODEX_SDK_RUN\"]",
            "--config",
            "shell_environment_policy.set.TMPDIR=\"/h/tmp\"",
            "--config",
            "shell_environment_policy.set.TMP=\"/h/tmp\"",
            "--config",
            "shell_environment_policy.set.TEMP=\"/h/tmp\"",
            "--config",
            "projects={\"/w/s/repo\"={trust_level=\"untrusted\"}}",
            "--config",
            "approval_policy=\"never\"",
            "resume",
            "thread-1",
        ];
        assert_eq!(args, expected);
    }

    #[test]
    fn api_key_debug_is_redacted() {
        let key = ApiKey::new("sk-secret");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
    }
}
