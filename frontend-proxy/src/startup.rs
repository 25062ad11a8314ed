//! Builds the proxy application: binds both listeners first (port 0 works
//! in tests), then serves until stopped: the dashboard and the API proxy on
//! `PROXY_ADDR`, previews on `PREVIEW_ADDR`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::endpoint::EmbeddedFilesEndpoint;
use poem::http::Method;
use poem::listener::TcpAcceptor;
use poem::{EndpointExt, Route, Server};
use service_kit::methods::get;
use service_kit::Routes;

use crate::config::Config;
use crate::headers::{self, DashboardHeaders};
use crate::preview::{self, Preview};
use crate::proxy::{forward, Upstream};

/// The dashboard: plain ES modules, no build step.
#[derive(rust_embed::RustEmbed)]
#[folder = "web/"]
struct Dashboard;

/// One bound listener with its `Host` check.
struct Listener {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    hosts: Arc<service_kit::AllowedHosts>,
}

impl Listener {
    async fn bind(addr: &str, variable: &str, allowed_hosts: &str) -> anyhow::Result<Self> {
        let (acceptor, addr) = service_kit::bind(addr, variable).await?;
        Ok(Self {
            acceptor,
            addr,
            hosts: Arc::new(service_kit::AllowedHosts::new(addr, allowed_hosts)),
        })
    }
}

pub struct Application {
    dashboard: Listener,
    preview: Listener,
    connections: service_kit::ConnectionLimits,
    upstream: Upstream,
    allowed_hosts: String,
    demo_mode: bool,
}

impl Application {
    /// Builds with the connection limits of the environment (`HTTP_*`).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, service_kit::connection_limits_from_env()?).await
    }

    /// Builds with the given connection limits (each listener has its own
    /// count of open connections).
    pub async fn build_with(
        config: Config,
        connections: service_kit::ConnectionLimits,
    ) -> anyhow::Result<Self> {
        let allowed_hosts = service_kit::allowed_hosts_from_env();
        let dashboard = Listener::bind(&config.proxy_addr, "PROXY_ADDR", &allowed_hosts).await?;
        let preview = Listener::bind(&config.preview_addr, "PREVIEW_ADDR", &allowed_hosts).await?;
        Ok(Self {
            dashboard,
            preview,
            connections,
            upstream: Upstream::new(&config.backend_url),
            allowed_hosts,
            demo_mode: config.demo_mode,
        })
    }

    /// The dashboard's address.
    pub fn addr(&self) -> SocketAddr {
        self.dashboard.addr
    }

    /// The previews' address.
    pub fn preview_addr(&self) -> SocketAddr {
        self.preview.addr
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        // The dashboard builds preview links from its own host name and
        // this port.
        let mode = serde_json::json!({
            "demo": self.demo_mode,
            "preview_port": self.preview.addr.port(),
        });
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
        let dashboard = Route::new()
            .nest("/api", forward)
            .nest("/docs", forward)
            .at("/health", forward)
            .at("/ready", forward)
            .nest("/", own)
            .data(self.upstream.clone())
            .around(service_kit::log_request);

        let frame_ancestors = preview::dashboard_origins(self.dashboard.addr, &self.allowed_hosts);
        let previews = Preview::new(self.upstream, &frame_ancestors);
        let policy = previews.policy();
        // Every address carries a grant after the session (see preview.rs);
        // those without one are refused.
        let preview_app = Route::new()
            .at("/:session_id", poem::get(preview::without_grant))
            .at("/:session_id/", poem::get(preview::without_grant))
            .at(
                "/:session_id/:grant",
                poem::get(preview::grant_without_slash),
            )
            .at("/:session_id/:grant/", poem::get(preview::root))
            .at("/:session_id/:grant/*path", poem::get(preview::file))
            .data(previews)
            // The log shows `<grant>` where the path has one.
            .around(|ep, req| {
                let path = preview::logged_path(req.uri().path());
                service_kit::log_request_as(ep, req, path)
            });

        let dashboard_headers = Arc::new(DashboardHeaders::new(&preview::preview_origins(
            self.dashboard.addr,
            &self.allowed_hosts,
            self.preview.addr.port(),
        )));

        tracing::info!(addr = %self.dashboard.addr, "frontend-proxy listening");
        tracing::info!(addr = %self.preview.addr, "previews listening");

        // Both servers stop on the one signal; if one fails, the other is
        // dropped with it.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown.await;
            // Nobody listening any more means both servers are gone already.
            let _ = stop.send(true);
            Ok::<(), anyhow::Error>(())
        };
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            // A dropped sender is a stop too.
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let (hosts, connections) = (self.dashboard.hosts, self.connections);
        let dashboard_server = Server::new_with_acceptor(service_kit::LimitedConnections::new(
            self.dashboard.acceptor,
            connections,
        ))
        .run_with_graceful_shutdown(
            dashboard
                .around(move |ep, req| hosts.clone().check(ep, req))
                .around(move |ep, req| connections.check_request(ep, req))
                // Outermost, so that the refusals of the `Host` check and of
                // the URL and header limits carry the headers too.
                .around(move |ep, req| headers::secure(ep, req, dashboard_headers.clone())),
            until_stopped(stopped.clone()),
            Some(Duration::from_secs(2)),
        );
        let hosts = self.preview.hosts;
        let preview_server = Server::new_with_acceptor(service_kit::LimitedConnections::new(
            self.preview.acceptor,
            connections,
        ))
        .run_with_graceful_shutdown(
            preview_app
                .around(move |ep, req| hosts.clone().check(ep, req))
                .around(move |ep, req| connections.check_request(ep, req))
                // Outermost, as the dashboard's: the `Host` check's and the
                // size limits' refusals carry the preview's policy too.
                .around(move |ep, req| preview::secure(ep, req, policy.clone())),
            until_stopped(stopped),
            Some(Duration::from_secs(2)),
        );
        tokio::try_join!(
            signal,
            async { dashboard_server.await.context("the proxy's server failed") },
            async { preview_server.await.context("the preview server failed") },
        )?;
        Ok(())
    }
}
