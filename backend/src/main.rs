use backend::admin::{Cli, Command};
use backend::config::Config;
use backend::startup::Application;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    service_kit::init_tracing();
    let config = Config::from_env()?;
    if let Some(Command::Admin { what }) = cli.command {
        return backend::admin::run(what, &config.database_url).await;
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting backend");
    // Its secrets are redacted; an operator who wants it asks for DEBUG.
    tracing::debug!(?config, "configuration");
    let app = Application::build(config).await?;
    app.run_until_stopped(service_kit::stop_signal()).await
}
