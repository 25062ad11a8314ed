use frontend_proxy::config::Config;
use frontend_proxy::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::init_tracing();
    let config = Config::from_env()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting frontend-proxy"
    );
    // Its secrets are redacted; an operator who wants it asks for DEBUG.
    tracing::debug!(?config, "configuration");
    let app = Application::build(config).await?;
    app.run_until_stopped(service_kit::stop_signal()).await
}
