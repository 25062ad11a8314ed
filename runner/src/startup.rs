//! Builds the runner application: binds first (port 0 works in tests), then
//! serves until stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use codex_sdk::{Codex, CodexOptions};
use poem::listener::TcpAcceptor;
use poem::{EndpointExt, Server};

use crate::api::{routes, AppState};
use crate::config::Config;
use crate::registry::Registry;

pub struct Application {
    acceptor: TcpAcceptor,
    idle_timeout: Duration,
    hosts: std::sync::Arc<service_kit::AllowedHosts>,
    addr: SocketAddr,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let root = config.canonical_root()?;
        let codex = Codex::new(CodexOptions {
            codex_path: config.codex_bin.clone(),
            api_key: config.api_key.clone(),
            // The CLI would otherwise start a login shell of the runner's user
            // at each run to copy its environment: that is the environment
            // the runner keeps from the agent, and a login profile may leave
            // background processes (in a session of their own) behind.
            config_overrides: vec![("features.shell_snapshot".into(), "false".into())],
            ..Default::default()
        });
        let (acceptor, addr) = service_kit::bind(&config.addr, "RUNNER_ADDR").await?;
        let state = AppState {
            shutdown: tokio_util::sync::CancellationToken::new(),
            registry: Arc::new(Registry::new(config.limits.clone())),
            config: Arc::new(config),
            root: Arc::new(root),
            codex,
        };
        Ok(Self {
            acceptor,
            idle_timeout: service_kit::idle_timeout_from_env()?,
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
        let retention_sweep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                registry.prune_finished_runs();
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
        let result = Server::new_with_acceptor(service_kit::IdleTimeout::new(
            self.acceptor,
            self.idle_timeout,
        ))
        .run_with_graceful_shutdown(
            routes(self.state).around(move |ep, req| hosts.clone().check(ep, req)),
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
