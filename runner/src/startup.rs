//! Builds the runner application: binds first (port 0 works in tests), then
//! serves until stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use codex_sdk::{Codex, CodexOptions};
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::Server;

use crate::api::{routes, AppState};
use crate::config::Config;
use crate::registry::Registry;

pub struct Application {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let root = config.canonical_root()?;
        let codex = Codex::new(CodexOptions {
            codex_path: config.codex_bin.clone(),
            api_key: config.api_key.clone(),
            ..Default::default()
        });
        let acceptor = TcpListener::bind(config.addr.clone())
            .into_acceptor()
            .await
            .with_context(|| format!("cannot listen on RUNNER_ADDR {}", config.addr))?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("the listener has no address")?;
        let state = AppState {
            registry: Arc::new(Registry::new(config.limits.clone())),
            config: Arc::new(config),
            root: Arc::new(root),
            codex,
        };
        Ok(Self {
            acceptor,
            addr,
            state,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let registry = self.state.registry.clone();
        let retention_sweep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                registry.prune_finished_runs();
            }
        });
        tracing::info!(addr = %self.addr, root = %self.state.root.display(), "runner listening");
        let result = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(routes(self.state), shutdown, Some(Duration::from_secs(5)))
            .await;
        retention_sweep.abort();
        result.context("the runner's server failed")
    }
}
