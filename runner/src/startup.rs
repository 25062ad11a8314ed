//! Builds the runner application: binds first (port 0 works in tests), then
//! serves until stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use codex_sdk::{Codex, CodexOptions, Containment, NamespaceTools, SandboxMode};
use poem::listener::TcpAcceptor;
use poem::{EndpointExt, Server};

use crate::api::{routes, AppState};
use crate::config::{Config, ContainmentMode};
use crate::registry::Registry;
use crate::workspace::{sweep_homes, CodexHomes};

pub struct Application {
    acceptor: TcpAcceptor,
    connections: service_kit::ConnectionLimits,
    hosts: std::sync::Arc<service_kit::AllowedHosts>,
    addr: SocketAddr,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let root = config.canonical_root()?;
        // Bound first: a second runner started by mistake on a taken address
        // stops here, before it could kill the CLIs of the first.
        let (acceptor, addr) = service_kit::bind(&config.addr, "RUNNER_ADDR").await?;
        if !config.token.is_set() && !addr.ip().is_loopback() {
            anyhow::bail!(
                "RUNNER_ADDR {addr} is not a loopback address and RUNNER_TOKEN is not set: \
                 anyone who can reach the port could run agents. Set RUNNER_TOKEN (and the \
                 same on the backend), or listen on 127.0.0.1"
            );
        }
        let homes_root = config.canonical_codex_homes(&root)?;
        warn_of_old_default_homes(&homes_root);
        // Every session's files and every thread's home, hidden from each
        // run but for its own (see `api::create_thread`).
        let mut hidden = vec![root.clone(), homes_root.clone()];
        hidden.extend(config.canonical_hidden_paths()?);
        let containment = containment(&config, &root, hidden).await?;
        // A home of its own for the model list: not a thread's (the sweep
        // keeps to names it made), out of every agent's sight.
        let models = Arc::new(crate::models::Catalog::new(
            config
                .codex_bin
                .clone()
                .unwrap_or_else(|| std::path::PathBuf::from("codex")),
            homes_root.join(".models"),
            config.codex_config.clone(),
            config.api_key.clone(),
        ));
        let homes = Arc::new(CodexHomes::new(homes_root, root.clone()));
        sweep_homes(homes.clone()).await;
        let codex = Codex::new(CodexOptions {
            codex_path: config.codex_bin.clone(),
            api_key: config.api_key.clone(),
            // The CLI would otherwise start a login shell of the runner's user
            // at each run to copy its environment: that is the environment
            // the runner keeps from the agent, and a login profile may leave
            // background processes (in a session of their own) behind.
            config_overrides: vec![("features.shell_snapshot".into(), "false".into())],
            driver: config.driver.into(),
            ..Default::default()
        })
        .with_containment(containment);
        let state = AppState {
            shutdown: tokio_util::sync::CancellationToken::new(),
            registry: Arc::new(Registry::new(config.limits.clone())),
            config: Arc::new(config),
            root: Arc::new(root),
            homes,
            codex,
            models,
        };
        Ok(Self {
            acceptor,
            connections: service_kit::connection_limits_from_env()?,
            hosts: std::sync::Arc::new(service_kit::AllowedHosts::new(
                addr,
                &service_kit::allowed_hosts_from_env(),
            )),
            addr,
            state,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves. Then event streams end at once and
    /// every active run is cancelled, so no Codex process outlives the
    /// runner; it waits (bounded) for them to be gone.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let registry_for_shutdown = self.state.registry.clone();
        let registry = self.state.registry.clone();
        let homes = self.state.homes.clone();
        // Idle threads go within half their idle time of expiring; finished
        // runs and the homes of removed workspaces every 30 s.
        let idle_every = (registry.limits().thread_idle / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        let retention_sweep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            let mut idle_tick = tokio::time::interval(idle_every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        registry.prune_finished_runs();
                        sweep_homes(homes.clone()).await;
                    }
                    _ = idle_tick.tick() => {
                        let released = registry.release_idle_threads();
                        if released > 0 {
                            tracing::info!(released, "idle threads released (RUNNER_THREAD_IDLE_SECS)");
                        }
                    }
                }
            }
        });
        tracing::info!(addr = %self.addr, root = %self.state.root.display(), "runner listening");
        let token = self.state.shutdown.clone();
        let registry = self.state.registry.clone();
        let stopping = async move {
            shutdown.await;
            tracing::info!("runner stopping: ending streams and cancelling runs");
            // Streams first: a subscriber must see the runner go away, not a
            // cancellation it did not ask for.
            token.cancel();
            registry.cancel_all();
        };
        let hosts = self.hosts;
        let limits = self.connections;
        let result = Server::new_with_acceptor(service_kit::LimitedConnections::new(
            self.acceptor,
            self.connections,
        ))
        .run_with_graceful_shutdown(
            routes(self.state)
                .around(move |ep, req| hosts.clone().check(ep, req))
                .around(move |ep, req| limits.check_request(ep, req)),
            stopping,
            Some(Duration::from_secs(5)),
        )
        .await;
        retention_sweep.abort();
        let registry = registry_for_shutdown;
        let deadline = tokio::time::Instant::now() + codex_sdk::TERM_GRACE * 3;
        while registry.active_runs() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        result.context("the runner's server failed")
    }
}

/// Decides how runs are contained, and kills what a previous runner on the
/// same workspaces root left running (a runner that died without its
/// clean-up: `SIGKILL`, OOM, power). One runner per root is assumed.
///
/// `auto` refuses to start rather than fall back when the fallback would
/// leave nothing between sessions: no namespace and `danger-full-access`
/// allowed. `off` is the operator saying so, and is warned about.
async fn containment(
    config: &Config,
    root: &std::path::Path,
    hidden: Vec<std::path::PathBuf>,
) -> anyhow::Result<Containment> {
    let marker = root.display().to_string();
    let killed = codex_sdk::kill_marked(codex_sdk::OWNER_MARKER, &marker);
    // Logged here: the SDK cannot know these were left by a dead runner.
    if killed > 0 {
        tracing::warn!(
            killed,
            "killed processes a previous runner on this root left running"
        );
    }
    let pid_namespace = match config.process_containment {
        ContainmentMode::Off => {
            tracing::warn!(
                max_sandbox = config.sandbox.max_sandbox.as_str(),
                "RUNNER_PROCESS_CONTAINMENT=off: sessions are not isolated from each other: every \
                 agent can read every session's workspace and Codex home (and write them under \
                 danger-full-access), and a process an agent detaches with setsid and a cleared \
                 environment outlives its run"
            );
            None
        }
        ContainmentMode::PidNamespace => Some(NamespaceTools::probe().await.context(
            "RUNNER_PROCESS_CONTAINMENT=pid-namespace, but a PID namespace cannot be made here",
        )?),
        ContainmentMode::Auto => match NamespaceTools::probe().await {
            Ok(tools) => Some(tools),
            // Without the namespace nothing at all would stand between one
            // session's agent and every other session's files.
            Err(error) if config.sandbox.max_sandbox == SandboxMode::DangerFullAccess => {
                return Err(anyhow::Error::new(error).context(
                    "RUNNER_PROCESS_CONTAINMENT=auto: no PID and mount namespace per run can be \
                     made here, and RUNNER_MAX_SANDBOX allows danger-full-access, so every agent \
                     could read and write every other session's workspace and Codex home. Let \
                     the runner make user namespaces (see docs/SECURITY.md), or narrow \
                     RUNNER_MAX_SANDBOX to workspace-write, or set RUNNER_PROCESS_CONTAINMENT=off \
                     to run with sessions not isolated",
                ));
            }
            Err(error) => {
                tracing::warn!(
                    error.cause_chain = ?error,
                    "no PID namespace per run: a process an agent detaches with setsid can \
                     outlive its run, runs do not die with the runner, and an agent can read \
                     other sessions' workspaces and homes (RUNNER_PROCESS_CONTAINMENT)"
                );
                None
            }
        },
    };
    tracing::info!(
        pid_namespace = pid_namespace.is_some(),
        user_namespace = pid_namespace
            .as_ref()
            .is_some_and(|tools| tools.user_namespace.is_some()),
        "run containment"
    );
    Ok(Containment {
        pid_namespace,
        owner: Some(marker),
        hidden,
    })
}

/// `RUNNER_CODEX_HOMES` once defaulted to `.data/codex-homes`, relative to
/// wherever the runner started. Homes left there are not found under the
/// absolute default, and their threads could not resume their Codex
/// sessions: this says so at start rather than losing them quietly.
fn warn_of_old_default_homes(homes_root: &std::path::Path) {
    let old = std::path::Path::new(".data/codex-homes");
    let Ok(old) = old.canonicalize() else {
        return;
    };
    if old != homes_root && old.is_dir() {
        tracing::warn!(
            old = %old.display(),
            homes = %homes_root.display(),
            "Codex homes are in the old default folder (.data/codex-homes, relative to where \
             the runner started), not in RUNNER_CODEX_HOMES: move them there, or set \
             RUNNER_CODEX_HOMES to that folder, or their threads cannot resume their \
             conversations"
        );
    }
}
