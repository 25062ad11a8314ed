use runner::config::Config;
use runner::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runner::telemetry::init();
    let config = Config::from_env()?;
    tracing::info!(?config, "starting runner");
    let app = Application::build(config).await?;
    app.run_until_stopped(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
