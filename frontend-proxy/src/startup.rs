//! Builds the proxy application: binds first (port 0 works in tests), then
//! serves until stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::endpoint::EmbeddedFilesEndpoint;
use poem::http::Method;
use poem::listener::TcpAcceptor;
use poem::middleware::Tracing;
use poem::{EndpointExt, Route, Server};
use service_kit::methods::get;
use service_kit::Routes;

use crate::config::Config;
use crate::proxy::{forward, Upstream};

/// The dashboard: plain ES modules, no build step.
#[derive(rust_embed::RustEmbed)]
#[folder = "web/"]
struct Dashboard;

pub struct Application {
    acceptor: TcpAcceptor,
    connections: service_kit::ConnectionLimits,
    hosts: std::sync::Arc<service_kit::AllowedHosts>,
    addr: SocketAddr,
    upstream: Upstream,
    demo_mode: bool,
}

impl Application {
    /// Builds with the connection limits of the environment (`HTTP_*`).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, service_kit::connection_limits_from_env()?).await
    }

    /// Builds with the given connection limits.
    pub async fn build_with(
        config: Config,
        connections: service_kit::ConnectionLimits,
    ) -> anyhow::Result<Self> {
        let (acceptor, addr) = service_kit::bind(&config.proxy_addr, "PROXY_ADDR").await?;
        Ok(Self {
            acceptor,
            connections,
            hosts: std::sync::Arc::new(service_kit::AllowedHosts::new(
                addr,
                &service_kit::allowed_hosts_from_env(),
            )),
            addr,
            upstream: Upstream::new(&config.backend_url),
            demo_mode: config.demo_mode,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let mode = serde_json::json!({ "demo": self.demo_mode });
        // The proxy's own routes answer GET (and HEAD) only; another method
        // is a 405 with `Allow`, a missing file a 404, both in the JSON
        // schema. What is forwarded keeps the backend's answer, its `Allow`
        // included.
        let (own, allowed) = Routes::new()
            .at(
                "/mode.json",
                get(poem::endpoint::make_sync(move |_| {
                    poem::web::Json(mode.clone())
                })),
            )
            .into_parts();
        let allowed = Arc::new(
            allowed
                .route("/", [Method::GET])
                .route("/*file", [Method::GET]),
        );
        let own = own
            .nest("/", poem::get(EmbeddedFilesEndpoint::<Dashboard>::new()))
            .around(move |ep, req| allowed.clone().check(ep, req))
            .catch_all_error(service_kit::json_error);
        let app = Route::new()
            .nest("/api", forward)
            .nest("/docs", forward)
            .at("/health", forward)
            .at("/ready", forward)
            .nest("/", own)
            .data(self.upstream)
            .with(Tracing);
        tracing::info!(addr = %self.addr, "frontend-proxy listening");
        let hosts = self.hosts;
        Server::new_with_acceptor(service_kit::LimitedConnections::new(
            self.acceptor,
            self.connections,
        ))
        .run_with_graceful_shutdown(
            app.around(move |ep, req| hosts.clone().check(ep, req)),
            shutdown,
            Some(Duration::from_secs(2)),
        )
        .await
        .context("the proxy's server failed")
    }
}
