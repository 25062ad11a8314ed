use backend::config::Config;
use backend::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    backend::telemetry::init();
    let config = Config::from_env()?;
    tracing::info!(?config, "starting backend");
    let app = Application::build(config).await?;
    app.run_until_stopped(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
