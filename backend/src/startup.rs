//! Builds the backend: connects and migrates Postgres, picks up the work a
//! previous process left, binds (port 0 works in tests), then serves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::listener::TcpAcceptor;
use poem::{EndpointExt, IntoEndpoint, Server};

use crate::config::AuthMode;
use crate::config::Config;
use crate::engine::Engine;
use crate::store::Store;

pub struct Application {
    acceptor: TcpAcceptor,
    connections: service_kit::ConnectionLimits,
    hosts: std::sync::Arc<service_kit::AllowedHosts>,
    addr: SocketAddr,
    engine: Arc<Engine>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        crate::git::isolate_from_user_config()
            .context("cannot isolate libgit2 from the user's git config")?;
        crate::git::register_http_transport()
            .context("cannot register the clone's http transport")?;
        crate::git::set_network_timeouts(
            config.limits.clone_connect_timeout,
            config.limits.clone_io_timeout,
        )
        .context("cannot set libgit2's network timeouts")?;
        crate::git::egress::start(
            config.clone_policy.clone(),
            config.limits.clone_connect_timeout,
            config.limits.clone_io_timeout,
        )
        .await
        .context("cannot start the clone egress proxy")?;
        std::fs::create_dir_all(&config.workspaces_root).with_context(|| {
            format!(
                "cannot create WORKSPACES_ROOT {}",
                config.workspaces_root.display()
            )
        })?;
        let root = config.workspaces_root.canonicalize()?;
        let store = Store::connect(&config.database_url, config.pool_size)
            .await
            .context("cannot connect to Postgres (DATABASE_URL)")?;
        let (acceptor, addr) = service_kit::bind(&config.addr, "BACKEND_ADDR").await?;
        if config.auth_mode == AuthMode::None
            && !addr.ip().is_loopback()
            && !config.auth_none_on_public
        {
            anyhow::bail!(
                "BACKEND_ADDR {addr} is not a loopback address and AUTH_MODE=none lets anyone \
                 who reaches it do anything: use AUTH_MODE=token (the default), or set \
                 AUTH_MODE_NONE_ON_PUBLIC=yes if this network is yours alone"
            );
        }
        if config.auth_mode == AuthMode::None {
            tracing::warn!(%addr, "AUTH_MODE=none: every request is served without authentication");
        }
        let engine = Engine::new(Arc::new(config), store, root)
            .context("cannot make the runner's client")?;
        engine.recover().await.context("cannot recover runs")?;
        engine.spawn_sweeper();
        Ok(Self {
            acceptor,
            connections: service_kit::connection_limits_from_env()?,
            hosts: std::sync::Arc::new(service_kit::AllowedHosts::new(
                addr,
                &service_kit::allowed_hosts_from_env(),
            )),
            addr,
            engine,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr, "backend listening");
        let hosts = self.hosts;
        let limits = self.connections;
        let engine = self.engine.clone();
        // In order: the server stops taking requests (and gives open ones a
        // moment), then the engine's clones, workers and relays stop.
        let served = Server::new_with_acceptor(service_kit::LimitedConnections::new(
            self.acceptor,
            self.connections,
        ))
        .run_with_graceful_shutdown(
            crate::api::app(self.engine)
                .into_endpoint()
                .around(move |ep, req| hosts.clone().check(ep, req))
                .around(move |ep, req| limits.check_request(ep, req)),
            shutdown,
            Some(Duration::from_secs(5)),
        )
        .await
        .context("the backend's server failed");
        engine.shutdown(Duration::from_secs(10)).await;
        tracing::info!("backend stopped");
        served
    }
}
