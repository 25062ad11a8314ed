use frontend_proxy::config::Config;
use frontend_proxy::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::init_tracing();
    let config = Config::from_env()?;
    tracing::info!(?config, "starting frontend-proxy");
    let app = Application::build(config).await?;
    app.run_until_stopped(service_kit::stop_signal()).await
}
